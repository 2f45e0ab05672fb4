//! What can go wrong, once: each kind carries its JSON-RPC code (it is on the wire), the
//! CLI's exit status, whether it is a lasting property of the process (not worth retrying
//! per stack), and the hint printed with it. A new kind touches this enum only.

use serde::{Deserialize, Serialize};

use crate::rpc::codes;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    NoSuchProcess,
    /// The process runs, but has no thread with that id.
    NoSuchThread,
    NotPython,
    PermissionDenied,
    UnsupportedVersion,
    ProcessExited,
    /// A running target never held still for one walk.
    Inconsistent,
    /// The interpreter's binary could not be read or parsed.
    BadBinary,
    /// Anything else (I/O, a bug).
    Internal,
    // --- about the request, not the process (the daemon's answers)
    ParseError,
    InvalidRequest,
    MethodNotFound,
    InvalidParams,
    RequestTooLarge,
    LimitReached,
}

/// Exit statuses that belong to no error kind.
pub mod exit {
    pub const OK: u8 = 0;
    /// A generic failure (I/O, internal).
    pub const FAILURE: u8 = 1;
    /// Bad command line (clap exits with it itself).
    pub const USAGE: u8 = 2;
    /// annotate: some stacks could not be annotated (the output is still complete).
    pub const PARTIAL: u8 = 9;
    /// The daemon could not be reached or answered with an error of its own.
    pub const DAEMON: u8 = 10;
    /// annotate: every stack was annotated, but some only from a later read (`[~ ... ]`).
    pub const NOT_EXACT: u8 = 11;
    /// trace: the tracer (bpftrace) is not installed.
    pub const TRACER_MISSING: u8 = 12;
    /// trace: the tracer refused to run (not root, no tracefs, probe not found, program
    /// rejected).
    pub const TRACER_REFUSED: u8 = 13;
    /// trace: no firing was on a thread that runs Python (no thread state, or no frames).
    pub const NOT_PYTHON_THREAD: u8 = 14;
    /// trace: some captured code objects were freed and their memory reused before they
    /// could be resolved (those frames are reported, not guessed).
    pub const CODE_REUSED: u8 = 15;
    /// `--tid` names no Python thread of the process (kind `NoSuchThread`).
    pub const NO_SUCH_THREAD: u8 = 16;
    /// trace: a uprobe's breakpoint was missing from the process during the trace (the
    /// kernel removed it, or never placed it): that probe's later calls were not traced.
    pub const PROBE_REMOVED: u8 = 17;
}

impl ErrorKind {
    const ALL: [ErrorKind; 15] = [
        ErrorKind::NoSuchProcess,
        ErrorKind::NoSuchThread,
        ErrorKind::NotPython,
        ErrorKind::PermissionDenied,
        ErrorKind::UnsupportedVersion,
        ErrorKind::ProcessExited,
        ErrorKind::Inconsistent,
        ErrorKind::BadBinary,
        ErrorKind::Internal,
        ErrorKind::ParseError,
        ErrorKind::InvalidRequest,
        ErrorKind::MethodNotFound,
        ErrorKind::InvalidParams,
        ErrorKind::RequestTooLarge,
        ErrorKind::LimitReached,
    ];

    /// The JSON-RPC error code (docs/protocol.md).
    pub const fn rpc_code(self) -> i64 {
        use ErrorKind::*;
        match self {
            NoSuchProcess => codes::NO_SUCH_PROCESS,
            NoSuchThread => codes::NO_SUCH_THREAD,
            NotPython => codes::NOT_PYTHON,
            PermissionDenied => codes::PERMISSION_DENIED,
            UnsupportedVersion => codes::UNSUPPORTED_VERSION,
            ProcessExited => codes::PROCESS_EXITED,
            Inconsistent => codes::INCONSISTENT_READ,
            BadBinary | Internal => codes::INTERNAL_ERROR,
            ParseError => codes::PARSE_ERROR,
            InvalidRequest => codes::INVALID_REQUEST,
            MethodNotFound => codes::METHOD_NOT_FOUND,
            InvalidParams => codes::INVALID_PARAMS,
            RequestTooLarge => codes::REQUEST_TOO_LARGE,
            LimitReached => codes::LIMIT_REACHED,
        }
    }

    /// The kind an RPC error code stands for (`Internal` for codes this build does not know).
    pub fn from_rpc_code(code: i64) -> ErrorKind {
        Self::ALL
            .into_iter()
            // BadBinary shares INTERNAL_ERROR; the wire cannot tell them apart
            .filter(|k| *k != ErrorKind::BadBinary)
            .find(|k| k.rpc_code() == code)
            .unwrap_or(ErrorKind::Internal)
    }

    /// The CLI's exit status (README, `--help`).
    pub const fn exit_code(self) -> u8 {
        use ErrorKind::*;
        match self {
            NoSuchProcess => 3,
            NoSuchThread => exit::NO_SUCH_THREAD,
            NotPython => 4,
            PermissionDenied => 5,
            UnsupportedVersion => 6,
            ProcessExited => 7,
            Inconsistent => 8,
            BadBinary | Internal => exit::FAILURE,
            ParseError | InvalidRequest | MethodNotFound | InvalidParams | RequestTooLarge
            | LimitReached => exit::DAEMON,
        }
    }

    /// A property of the process rather than of one read: asking again for the next stack
    /// of the same process gives the same answer.
    pub const fn lasts(self) -> bool {
        use ErrorKind::*;
        matches!(
            self,
            NoSuchProcess
                | NotPython
                | PermissionDenied
                | UnsupportedVersion
                | ProcessExited
                | BadBinary
        )
    }

    /// What the user can do about it.
    pub const fn hint(self) -> Option<&'static str> {
        use ErrorKind::*;
        Some(match self {
            PermissionDenied => {
                "reading another process's memory needs ptrace access: run as the process owner \
                 (with kernel.yama.ptrace_scope <= 1 on Linux), or as root / with CAP_SYS_PTRACE \
                 (proc_owner on illumos)"
            }
            NotPython => {
                "pass the pid of a CPython interpreter process (`pystackd stack --help` lists \
                 the versions)"
            }
            Inconsistent => "the target changed too fast to read; retry, or use --pause",
            NoSuchProcess => "check the pid (ps -ef | grep python)",
            NoSuchThread => "list the process's threads with `pystackd stack PID`",
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_maps_back() {
        for k in ErrorKind::ALL {
            let back = ErrorKind::from_rpc_code(k.rpc_code());
            if k == ErrorKind::BadBinary {
                assert_eq!(back, ErrorKind::Internal);
            } else {
                assert_eq!(back, k);
            }
            assert_eq!(back.exit_code(), k.exit_code(), "{k:?}");
        }
        assert_eq!(ErrorKind::from_rpc_code(-1), ErrorKind::Internal);
    }

    #[test]
    fn request_errors_are_the_daemons() {
        assert_eq!(ErrorKind::InvalidParams.exit_code(), exit::DAEMON);
        assert!(!ErrorKind::Inconsistent.lasts());
        assert!(ErrorKind::NotPython.lasts());
    }
}
