//! Everything that differs between operating systems, behind one narrow interface.
//! No other module of the reader uses `cfg(target_os)`.
//!
//! Each OS module provides the same free functions and the `ProcessMemory` and
//! `StopGuard` types: open process memory, list mappings with object paths, process
//! start time, threads and their names, stopping and resuming a
//! process, mapping `PyThreadState.thread_id` values to OS thread ids, and thread ids
//! between the target's PID namespace and ours (Linux; illumos zones share one pid space).

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

/// The interface every OS module provides, checked by the compiler on each OS (a missing
/// function or another signature fails that OS's build; `tools/check-illumos` builds
/// illumos here).
#[allow(dead_code, clippy::type_complexity)]
const INTERFACE: () = {
    use crate::error::Result;
    use crate::memory::Memory;
    use std::collections::HashMap;
    let _: fn(u32) -> Result<ProcessMemory> = open_memory;
    let _: fn(u32) -> bool = exists;
    let _: fn(u32) -> bool = has_exited;
    let _: fn(u32) -> bool = is_kernel_thread;
    let _: fn(u32) -> Result<Vec<Mapping>> = mappings;
    let _: fn(&Mapping) -> std::io::Result<(std::fs::File, std::fs::Metadata)> = open_mapping;
    let _: fn(&Mapping) -> Option<PathBuf> = checked_open_path;
    let _: fn(u32) -> Result<u64> = start_time;
    let _: fn(u32) -> Result<Vec<u64>> = threads;
    let _: fn(u32, u64) -> Option<String> = thread_name;
    let _: fn(u32) -> Result<Vec<(u64, u64)>> = thread_ns_tids;
    let _: fn(u32) -> Option<(u64, u64)> = pid_namespace;
    let _: fn() -> bool = in_nested_pid_namespace;
    let _: fn(u32, &dyn Memory, &[u64]) -> Option<u64> = calibrate_pthread_tid_offset;
    let _: fn(u32, &dyn Memory, &[u64], &mut Option<u64>) -> HashMap<u64, u64> = os_thread_ids;
    let _: fn(u32) -> Result<StopGuard> = stop;
    let _: fn(&StopGuard) -> Vec<u64> = StopGuard::tids;
    let _: fn(&StopGuard, u64) -> Result<Registers> = StopGuard::registers;
    let _: fn(u32) -> Result<()> = resume;
    let _: fn(u32) -> std::io::Result<ProcessHandle> = ProcessHandle::open;
    let _: fn(&ProcessHandle) -> bool = ProcessHandle::exited;
    let _: fn(u32) -> Option<(u64, u64)> = exe_identity;
    let _: fn(u32) -> Option<u64> = exec_token;
    let _: fn(u32, u64, bool) -> OsThreadState = thread_state;
    let _: fn(u32, u64, bool) -> (OsThreadState, Option<String>) = thread_state_named;
    let _: fn(u8) -> bool = state_is_asleep;
    let _: fn(u32) -> HashMap<u64, u64> = context_switches;
};

/// What the OS says one thread is doing, read consistently or `Unknown` with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OsThreadState {
    /// On a CPU, or (Linux `R`, which does not tell them apart) ready to run. A thread
    /// stopped by this read (`paused`) that was in user code when stopped.
    Running,
    /// Ready to run, waiting for a CPU (illumos `SRUN`).
    Runnable,
    /// Asleep in the kernel, in this system call when the OS says. A thread stopped by
    /// this read that was in a system call when stopped.
    Blocked {
        syscall: Option<Syscall>,
        wchan: Option<String>,
    },
    /// Stopped by a signal or a debugger (not by this read), in this system call if any.
    Stopped {
        syscall: Option<Syscall>,
    },
    Unknown(String),
}

/// A system call a thread is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Syscall {
    pub number: i64,
    /// The name where the number is known (`futex`, `clock_nanosleep`).
    pub name: Option<&'static str>,
    /// Its first argument (a futex's address: what a thread waiting for the GIL sleeps on).
    pub arg0: u64,
    /// Its second (a futex's operation: waits and wakes are told apart by it).
    pub arg1: u64,
}

impl Syscall {
    /// A `futex` call that may sleep (`FUTEX_WAIT`, `FUTEX_WAIT_BITSET`, `FUTEX_LOCK_PI`,
    /// `FUTEX_LOCK_PI2`; not a wake): the operation is the low 7 bits of the second
    /// argument (above them: the private and clock flags).
    pub fn is_futex_wait(&self) -> bool {
        self.name == Some("futex") && matches!(self.arg1 & 0x7f, 0 | 6 | 9 | 13)
    }
}

impl Syscall {
    /// The name, or `syscall_N` for a number without one.
    pub fn display(&self) -> String {
        match self.name {
            Some(n) => n.to_string(),
            None => format!("syscall_{}", self.number),
        }
    }
}

/// The registers of a stopped thread an unwinder starts from (`pystackd stack --native`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Registers {
    /// Instruction pointer.
    pub pc: u64,
    /// Stack pointer.
    pub sp: u64,
    /// General-purpose registers by their DWARF number (x86-64: 0 rax, 1 rdx, 2 rcx,
    /// 3 rbx, 4 rsi, 5 rdi, 6 rbp, 7 rsp, 8-15 r8-r15).
    pub gpr: [u64; 16],
}

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
    /// On Linux not yet checked to name the very file mapped (a `statx` each, and most
    /// mappings are never opened): open it with [`open_mapping`], or take
    /// [`checked_open_path`].
    pub open_path: Option<PathBuf>,
    /// Linux: the mapped file as the kernel mapped it, to check `open_path` against.
    pub mapped: Option<MappedFile>,
}

/// A mapped file as the kernel names it: device and inode, and the process that maps it
/// (Linux: whose `/proc/PID/map_files/START-END` opens that very file whatever its name
/// names now; opening it needs CAP_SYS_ADMIN, so root or the daemon).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedFile {
    pub dev: u64,
    pub inode: u64,
    pub pid: u32,
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
