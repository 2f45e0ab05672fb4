//! Everything that differs between operating systems, behind one narrow interface.
//! No other module of the reader uses `cfg(target_os)`.
//!
//! Each OS module provides the same free functions and the `ProcessMemory` and
//! `StopGuard` types: open process memory, list mappings with object paths, process
//! start time and credentials, threads and their names, stopping and resuming a
//! process, and mapping `PyThreadState.thread_id` values to OS thread ids.

use std::path::PathBuf;

/// Parsers of illumos `/proc` structures: plain byte-slice code, built (and tested) on
/// every OS.
pub mod illumos_procfs;

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::*;

#[cfg(target_os = "illumos")]
mod illumos;
#[cfg(target_os = "illumos")]
pub use illumos::*;

/// One mapping of the target's address space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// Offset in the mapped object.
    pub offset: u64,
    pub read: bool,
    pub write: bool,
    pub exec: bool,
    /// The object's path as the target sees it (Linux: from `/proc/PID/maps`; illumos:
    /// resolved from `/proc/PID/path/<object>`), `None` for anonymous memory.
    pub path: Option<String>,
    /// A path this process can open to read the mapped object (`/proc/PID/root/...`,
    /// `/proc/PID/path/...`): the target may live in another mount namespace or zone.
    pub open_path: Option<PathBuf>,
}

impl Mapping {
    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }
    pub fn basename(&self) -> Option<&str> {
        self.path
            .as_deref()
            .map(|p| p.rsplit('/').next().unwrap_or(p))
    }
}

/// Real and effective ids of a process, for the daemon's access check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credentials {
    pub ruid: u32,
    pub euid: u32,
    pub suid: u32,
    pub rgid: u32,
    pub egid: u32,
}
