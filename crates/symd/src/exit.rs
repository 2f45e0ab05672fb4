//! Exit statuses: each failure a user can act on has its own. Those of the reader's and the
//! daemon's errors come from `protocol::ErrorKind::exit_code`; the rest are here.

pub use protocol::error::exit::{
    CODE_REUSED, DAEMON, FAILURE, NOT_EXACT, NOT_PYTHON_THREAD, OK, PARTIAL, PROBE_REMOVED,
    TRACER_MISSING, TRACER_REFUSED, USAGE,
};
use protocol::ErrorKind;

/// A process that exited while being read or traced.
pub const PROCESS_EXITED: u8 = ErrorKind::ProcessExited.exit_code();

/// The exit status for a reader error.
pub fn for_reader_error(e: &pyframe_reader::Error) -> u8 {
    e.kind().exit_code()
}
