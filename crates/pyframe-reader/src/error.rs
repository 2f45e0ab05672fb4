use std::io;

/// What went wrong reading a Python process. Each variant is a distinct outcome the
/// CLI maps to its own exit status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no such process: {pid}{}", nested_note())]
    NoSuchProcess { pid: u32 },
    #[error("permission denied reading process {pid}: {detail}")]
    PermissionDenied { pid: u32, detail: String },
    #[error("process {pid} does not look like a CPython process: {reason}")]
    NotPython { pid: u32, reason: String },
    #[error(
        "CPython {version} is not supported (pystackd knows {} GIL builds and free-threaded {})",
        crate::layout::supported(),
        crate::layout::supported_free_threaded()
    )]
    UnsupportedVersion { version: String },
    /// A feature this build cannot be read for (the stacks of it can).
    #[error("{what} is not supported on CPython {version}: {why}")]
    UnsupportedFeature {
        what: &'static str,
        version: String,
        why: &'static str,
    },
    #[error("process {pid} exited while being read")]
    ProcessExited { pid: u32 },
    /// The target changed under us on every retry (torn reads of a running process).
    #[error("could not get a consistent read of process {pid} after {attempts} attempts: {last}")]
    Inconsistent {
        pid: u32,
        attempts: u32,
        last: String,
    },
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("reading {path}: {detail}")]
    Binary { path: String, detail: String },
}

impl Error {
    /// What kind of failure this is: its exit status, RPC code, hint and whether it lasts
    /// come from the kind (`protocol::ErrorKind`).
    pub fn kind(&self) -> protocol::ErrorKind {
        use protocol::ErrorKind as K;
        match self {
            Error::NoSuchProcess { .. } => K::NoSuchProcess,
            Error::NotPython { .. } => K::NotPython,
            Error::PermissionDenied { .. } | Error::Memory(MemoryError::PermissionDenied) => {
                K::PermissionDenied
            }
            Error::UnsupportedVersion { .. } | Error::UnsupportedFeature { .. } => {
                K::UnsupportedVersion
            }
            Error::ProcessExited { .. } | Error::Memory(MemoryError::Gone) => K::ProcessExited,
            Error::Inconsistent { .. } => K::Inconsistent,
            Error::Binary { .. } => K::BadBinary,
            Error::Memory(_) | Error::Io { .. } => K::Internal,
        }
    }

    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Why a pid may be invisible here: we run in a PID namespace below the target's.
fn nested_note() -> &'static str {
    if crate::platform::in_nested_pid_namespace() {
        " (pystackd runs in a PID namespace of its own, a container, which shows no \
         process outside it: run pystackd on the host or in the target's namespace)"
    } else {
        ""
    }
}

/// A failed read of remote memory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemoryError {
    #[error("address {addr:#x} (+{len}) is not mapped in the target")]
    Unmapped { addr: u64, len: usize },
    #[error("the process is gone")]
    Gone,
    #[error("permission denied")]
    PermissionDenied,
    #[error("read of {len} bytes at {addr:#x} failed: {msg}")]
    Other { addr: u64, len: usize, msg: String },
    /// A value read from the target fails validation (a torn or garbage read).
    #[error("invalid data: {0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
