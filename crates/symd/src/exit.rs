//! Exit statuses: each failure a user can act on has its own.

use pyframe_reader::Error;

pub const OK: u8 = 0;
/// A generic failure (I/O, internal).
pub const FAILURE: u8 = 1;
// 2: bad command line (clap exits with it itself)
pub const NO_SUCH_PROCESS: u8 = 3;
pub const NOT_PYTHON: u8 = 4;
pub const PERMISSION_DENIED: u8 = 5;
pub const UNSUPPORTED_VERSION: u8 = 6;
pub const PROCESS_EXITED: u8 = 7;
pub const INCONSISTENT: u8 = 8;
/// annotate: some stacks could not be annotated (the output is still complete).
pub const PARTIAL: u8 = 9;
/// The daemon could not be reached or answered with an error.
pub const DAEMON: u8 = 10;
/// trace: the tracer (bpftrace) is not installed.
pub const TRACER_MISSING: u8 = 12;
/// trace: the tracer refused to run (not root, no tracefs, probe not found, program
/// rejected).
pub const TRACER_REFUSED: u8 = 13;
/// trace: no firing was on a thread that runs Python (no thread state, or no frames).
pub const NOT_PYTHON_THREAD: u8 = 14;
/// trace: some captured code objects were freed and their memory reused before they could
/// be resolved (those frames are reported, not guessed).
pub const CODE_REUSED: u8 = 15;

pub fn for_reader_error(e: &Error) -> u8 {
    match e {
        Error::NoSuchProcess { .. } => NO_SUCH_PROCESS,
        Error::NotPython { .. } => NOT_PYTHON,
        Error::PermissionDenied { .. } => PERMISSION_DENIED,
        Error::UnsupportedVersion { .. } => UNSUPPORTED_VERSION,
        Error::ProcessExited { .. } => PROCESS_EXITED,
        Error::Inconsistent { .. } => INCONSISTENT,
        _ => FAILURE,
    }
}
