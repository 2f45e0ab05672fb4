//! Typed errors. Nothing in this crate panics on bad input: every malformed file,
//! mismatching debug file or failed download comes back as one of these.

use std::io;
use std::path::PathBuf;

use crate::elf::BuildId;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Not ELF, truncated, or with headers that point outside the file.
    #[error("{}: not a usable ELF file: {reason}", path.display())]
    BadElf { path: PathBuf, reason: String },
    /// A candidate debug file whose build-id is not the binary's: refused, never used.
    #[error("{}: build-id {} does not match the binary's {expected}", path.display(), found.as_ref().map(|b| b.to_string()).unwrap_or_else(|| "(none)".into()))]
    BuildIdMismatch {
        path: PathBuf,
        expected: BuildId,
        found: Option<BuildId>,
    },
    /// A `.gnu_debuglink` candidate whose CRC32 is not the one the binary records.
    #[error("{}: CRC32 {found:08x} does not match the .gnu_debuglink CRC {expected:08x}", path.display())]
    CrcMismatch {
        path: PathBuf,
        expected: u32,
        found: u32,
    },
    #[error("{}: bad DWARF: {reason}", path.display())]
    BadDwarf { path: PathBuf, reason: String },
    /// A compressed section claiming more than the configured limit once inflated.
    #[error("{}: section {section} would take {size} bytes, over the limit of {limit}", path.display())]
    SectionTooLarge {
        path: PathBuf,
        section: String,
        size: u64,
        limit: u64,
    },
    #[error("no mapping of the process contains {addr:#x}")]
    NoMapping { addr: u64 },
    #[error("{addr:#x} is in an anonymous mapping (no file: JIT code, heap or stack)")]
    AnonymousMapping { addr: u64 },
    #[error("{addr:#x} is at file offset {file_offset:#x} of {path}, in no PT_LOAD segment")]
    NotInSegment {
        addr: u64,
        file_offset: u64,
        path: String,
    },
    #[error("listing the mappings of process {pid}: {source}")]
    Mappings {
        pid: u32,
        #[source]
        source: pyframe_reader::Error,
    },
    #[error(transparent)]
    Debuginfod(#[from] DebuginfodError),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    pub(crate) fn bad_elf(path: impl Into<PathBuf>, reason: impl ToString) -> Error {
        Error::BadElf {
            path: path.into(),
            reason: reason.to_string(),
        }
    }
}

/// Why debuginfod gave no file.
#[derive(Debug, thiserror::Error)]
pub enum DebuginfodError {
    #[error("debuginfod: no server configured (DEBUGINFOD_URLS is empty)")]
    NotConfigured,
    #[error("debuginfod: no server has debuginfo for build-id {build_id}")]
    NotFound { build_id: BuildId },
    /// A recent query for this build-id failed; not asked again until the entry expires.
    #[error("debuginfod: build-id {build_id} failed recently (negative cache, retried after {ttl_secs}s)")]
    NegativelyCached { build_id: BuildId, ttl_secs: u64 },
    #[error("debuginfod: {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("debuginfod: {url}: timed out")]
    Timeout { url: String },
    #[error("debuginfod: {url}: reply larger than the limit of {limit} bytes")]
    TooLarge { url: String, limit: u64 },
    #[error("debuginfod: {url}: HTTP status {status}")]
    Status { url: String, status: u16 },
    /// The server sent a file that is not ELF or whose build-id is not the one asked for.
    #[error("debuginfod: {url}: wrong content: {reason}")]
    WrongContent { url: String, reason: String },
    #[error("debuginfod cache {}: {source}", path.display())]
    Cache {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}
