//! Exit statuses: each failure a user can act on has its own. Those of the reader's and the
//! daemon's errors come from `protocol::ErrorKind::exit_code`; the rest are here.

pub use protocol::error::exit::{DAEMON, FAILURE, NOT_EXACT, OK, PARTIAL, USAGE};

/// The exit status for a reader error.
pub fn for_reader_error(e: &pyframe_reader::Error) -> u8 {
    e.kind().exit_code()
}
