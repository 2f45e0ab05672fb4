//! illumos: `pread` on `/proc/PID/as`, the binary `/proc` files (`map`, `psinfo`,
//! `cred`, parsed by [`super::illumos_procfs`]), `/proc/PID/lwp/` for threads and `ctl`
//! messages for stopping. See proc(5).
//!
//! Type-checked with `tools/check-illumos`; not yet run on an illumos machine.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::illumos_procfs::{self as procfs, ctl_message, PCRUN, PCSET, PCSTOP, PR_RLC};
use super::Mapping;
use crate::error::{Error, MemoryError, Result};
use crate::memory::Memory;

/// Largest `/proc` file read whole (`map` holds 104 bytes per mapping).
const MAX_PROC_FILE: u64 = 64 << 20;

const PRIVILEGE_HINT: &str = "reading or stopping another user's process needs the \
                              proc_owner privilege (see docs/illumos.md)";

/// Live process memory: the target's address space as the file `/proc/PID/as`.
pub struct ProcessMemory {
    pid: u32,
    as_file: File,
}

fn proc_path(pid: u32, what: &str) -> String {
    format!("/proc/{pid}/{what}")
}

/// Map an error opening or reading `/proc/PID/...` to the reader's error.
fn proc_error(pid: u32, path: &str, e: io::Error) -> Error {
    match e.kind() {
        // a /proc file of a process that has exited reads as ENOENT
        ErrorKind::NotFound => Error::NoSuchProcess { pid },
        ErrorKind::PermissionDenied => Error::PermissionDenied {
            pid,
            detail: format!("cannot open {path}: {PRIVILEGE_HINT}"),
        },
        _ if e.raw_os_error() == Some(libc::EBUSY) => Error::io(
            format!(
                "{path} is held exclusively by another controlling process \
                 (a debugger, or dtrace -p/-c)"
            ),
            e,
        ),
        _ => Error::io(format!("reading {path}"), e),
    }
}

pub fn open_memory(pid: u32) -> Result<ProcessMemory> {
    if !exists(pid) {
        return Err(Error::NoSuchProcess { pid });
    }
    let path = proc_path(pid, "as");
    let as_file = File::open(&path).map_err(|e| proc_error(pid, &path, e))?;
    Ok(ProcessMemory { pid, as_file })
}

fn errno_to_memory(e: &io::Error, addr: u64, len: usize) -> MemoryError {
    match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ESRCH) => MemoryError::Gone,
        Some(libc::EIO) | Some(libc::EFAULT) | Some(libc::ENXIO) | Some(libc::EINVAL) => {
            MemoryError::Unmapped { addr, len }
        }
        Some(libc::EPERM) | Some(libc::EACCES) => MemoryError::PermissionDenied,
        // the descriptor went stale: the target exec'd a set-id or unreadable image
        Some(libc::EAGAIN) => MemoryError::Other {
            addr,
            len,
            msg: "the process image was replaced (exec); reopen the process".into(),
        },
        _ => MemoryError::Other {
            addr,
            len,
            msg: e.to_string(),
        },
    }
}

impl ProcessMemory {
    pub fn pid(&self) -> u32 {
        self.pid
    }
}

impl Memory for ProcessMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        if buf.is_empty() {
            return Ok(());
        }
        let len = buf.len();
        // the file offset is a signed off_t: higher addresses are never user memory
        match addr.checked_add(len as u64) {
            Some(end) if end <= i64::MAX as u64 => {}
            _ => return Err(MemoryError::Unmapped { addr, len }),
        }
        match self.as_file.read_exact_at(buf, addr) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
                Err(MemoryError::Unmapped { addr, len })
            }
            Err(e) => Err(errno_to_memory(&e, addr, len)),
        }
    }
}

pub fn exists(pid: u32) -> bool {
    pid != 0 && Path::new(&proc_path(pid, "psinfo")).exists()
}

fn read_proc_bytes(pid: u32, what: &str) -> Result<Vec<u8>> {
    let path = proc_path(pid, what);
    let f = File::open(&path).map_err(|e| proc_error(pid, &path, e))?;
    let mut v = Vec::new();
    f.take(MAX_PROC_FILE)
        .read_to_end(&mut v)
        .map_err(|e| proc_error(pid, &path, e))?;
    Ok(v)
}

fn bad_data(pid: u32, what: &str) -> Error {
    Error::io(
        format!("parsing /proc/{pid}/{what}"),
        ErrorKind::InvalidData.into(),
    )
}

fn psinfo(pid: u32) -> Result<procfs::PsInfo> {
    procfs::parse_psinfo(&read_proc_bytes(pid, "psinfo")?).ok_or_else(|| bad_data(pid, "psinfo"))
}

/// Mappings from the `prmap_t` records of `/proc/PID/map`; object paths from the
/// `/proc/PID/path/<pr_mapname>` links.
/// Whether process `pid` is gone or a zombie (no LWPs left).
pub fn has_exited(pid: u32) -> bool {
    match psinfo(pid) {
        Ok(p) => p.nlwp == 0,
        Err(_) => true,
    }
}

/// illumos shows no kernel threads as processes with an empty address space that
/// pystackd could be pointed at, except the system processes, which map nothing.
pub fn is_kernel_thread(pid: u32) -> bool {
    psinfo(pid).is_ok_and(|p| p.nlwp > 0 && mappings(pid).is_ok_and(|m| m.is_empty()))
}

/// Opens the file mapped at `m`: `/proc/PID/path` and `/proc/PID/object` name the mapped
/// object itself.
pub fn open_mapping(m: &Mapping) -> io::Result<(File, std::fs::Metadata)> {
    let file = File::open(m.open_path.as_ref().ok_or(ErrorKind::NotFound)?)?;
    let md = file.metadata()?;
    Ok((file, md))
}

/// The path that opens the file mapped at `m` (already the mapped object itself here).
pub fn checked_open_path(m: &Mapping) -> Option<std::path::PathBuf> {
    m.open_path.clone()
}

pub fn mappings(pid: u32) -> Result<Vec<Mapping>> {
    let maps = procfs::parse_prmaps(&read_proc_bytes(pid, "map")?);
    Ok(procfs::mappings_from_prmaps(pid, &maps, |name| {
        std::fs::read_link(proc_path(pid, &format!("path/{name}")))
            .ok()
            .map(|p| p.display().to_string())
    }))
}

/// Start time in nanoseconds since the epoch (`psinfo_t.pr_start`): with the pid it
/// identifies a process across pid reuse.
pub fn start_time(pid: u32) -> Result<u64> {
    Ok(psinfo(pid)?.start_time_ns())
}

/// LWP ids of the process (`/proc/PID/lwp/` entries).
pub fn threads(pid: u32) -> Result<Vec<u64>> {
    let dir = proc_path(pid, "lwp");
    let rd = std::fs::read_dir(&dir).map_err(|e| proc_error(pid, &dir, e))?;
    let mut v: Vec<u64> = rd
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    v.sort_unstable();
    Ok(v)
}

/// `pthread_setname_np` name of an LWP (`/proc/PID/lwp/N/lwpname`), `None` if unnamed.
/// Thread `tid`'s stack pointer while it sleeps or is stopped. Not read on illumos yet
/// (`lwpstatus`'s `pr_reg` would give it for a stopped LWP): a lent subinterpreter
/// state's thread stays unknown there, and says so.
pub fn stack_pointer(_pid: u32, _tid: u64) -> Option<u64> {
    None
}

/// The top of thread `tid`'s C stack (not read on illumos yet, see [`stack_pointer`]).
pub fn stack_top(_pid: u32, _tid: u64, _pthread_self: u64) -> Option<u64> {
    None
}

pub fn thread_name(pid: u32, tid: u64) -> Option<String> {
    let f = File::open(proc_path(pid, &format!("lwp/{tid}/lwpname"))).ok()?;
    let mut b = Vec::new();
    f.take(4096).read_to_end(&mut b).ok()?;
    procfs::parse_lwpname(&b)
}

/// Zones share the system's pid space (a zone's processes have the same pids inside it
/// and in the global zone): every LWP id is its own.
pub fn thread_ns_tids(pid: u32) -> Result<Vec<(u64, u64)>> {
    Ok(threads(pid)?.into_iter().map(|t| (t, t)).collect())
}

/// Zones share the pid space: no process is in a pid namespace of its own.
pub fn pid_namespace(_pid: u32) -> Option<(u64, u64)> {
    None
}

/// Zones share the pid space: every process is visible from the global zone.
pub fn in_nested_pid_namespace() -> bool {
    false
}

/// Linux finds the LWP id inside `struct pthread` by calibration; on illumos
/// `pthread_self()` is the LWP id itself, so there is no offset to find.
pub fn calibrate_pthread_tid_offset(
    _pid: u32,
    _mem: &dyn Memory,
    _thread_ids: &[u64],
) -> Option<u64> {
    None
}

/// Map `PyThreadState.thread_id` (`pthread_self()`) values to LWP ids. On illumos a
/// `pthread_t` is the LWP id (DTrace's `tid`), so the map is the identity, restricted to
/// LWPs the process has now when they can be listed.
pub fn os_thread_ids(
    pid: u32,
    _mem: &dyn Memory,
    thread_ids: &[u64],
    _tid_offset: &mut Option<u64>,
) -> HashMap<u64, u64> {
    let live: Option<HashSet<u64>> = threads(pid).ok().map(|v| v.into_iter().collect());
    thread_ids
        .iter()
        .copied()
        .filter(|&t| t > 0 && t <= i32::MAX as u64)
        .filter(|t| live.as_ref().map_or(true, |l| l.contains(t)))
        .map(|t| (t, t))
        .collect()
}

/// While alive, every LWP of the target is stopped (`PCSTOP` on its `ctl` file).
/// Dropping it writes `PCRUN`; run-on-last-close (`PR_RLC`) makes the kernel set the
/// target running if pystackd dies first.
pub struct StopGuard {
    ctl: File,
}

fn open_ctl(pid: u32) -> Result<File> {
    let path = proc_path(pid, "ctl");
    OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|e| proc_error(pid, &path, e))
}

pub fn stop(pid: u32) -> Result<StopGuard> {
    let mut ctl = open_ctl(pid)?;
    // PCSTOP directs every LWP to stop and waits until all have
    ctl.write_all(&ctl_message(&[PCSET, PR_RLC, PCSTOP]))
        .map_err(|e| proc_error(pid, &proc_path(pid, "ctl"), e))?;
    Ok(StopGuard { ctl })
}

impl StopGuard {
    /// The LWPs held: `PCSTOP` stops them all; not listed one by one here yet.
    pub fn tids(&self) -> Vec<u64> {
        Vec::new()
    }

    /// Not supported yet on illumos (the registers are in `/proc/PID/lwp/LWP/lwpstatus`).
    pub fn registers(&self, tid: u64) -> Result<super::Registers> {
        Err(Error::io(
            format!(
                "reading the registers of thread {tid}: stack --native is not supported yet \
                 on illumos"
            ),
            std::io::Error::from(std::io::ErrorKind::Unsupported),
        ))
    }
}

impl Drop for StopGuard {
    fn drop(&mut self) {
        let _ = self.ctl.write_all(&ctl_message(&[PCRUN, 0]));
    }
}

/// Resume a process stopped by someone else: DTrace's `stop()` action and `pstop(1)`
/// leave it stopped on `PR_REQUESTED`, which `PCRUN` on the process `ctl` file ends for
/// every LWP (what `prun(1)` does). A process that is not stopped is left alone.
pub fn resume(pid: u32) -> Result<()> {
    let mut ctl = open_ctl(pid)?;
    match ctl.write_all(&ctl_message(&[PCRUN, 0])) {
        Ok(()) => Ok(()),
        // EBUSY from PCRUN: no LWP is stopped, nothing to do
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(()),
        Err(e) => Err(proc_error(pid, &proc_path(pid, "ctl"), e)),
    }
}

/// No pidfd here: [`ProcessHandle::open`] always fails and callers compare start
/// times instead.
#[derive(Debug)]
pub struct ProcessHandle(());

impl ProcessHandle {
    pub fn open(_pid: u32) -> io::Result<ProcessHandle> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "no pidfd on illumos",
        ))
    }

    pub fn exited(&self) -> bool {
        true
    }
}

/// illumos has no cheap, stable identity of a process's executable image here: the
/// cache tells processes apart by pid and start time only (an exec keeps both).
pub fn exe_identity(_pid: u32) -> Option<(u64, u64)> {
    None
}

/// No per-exec token read here: an exec of the same file is not told apart on illumos.
pub fn exec_token(_pid: u32) -> Option<u64> {
    None
}

/// Whether an `lwpsinfo` `pr_sname` is an LWP asleep in the kernel (`S`): `blocked` to
/// `stack`, idle to `record` and `top` (one classification for both).
pub fn state_is_asleep(sname: u8) -> bool {
    sname == b'S'
}

/// What LWP `tid` of `pid` is doing: `pr_sname` of its `lwpsinfo` read before and after
/// its `lwpstatus` (`pr_flags`, `pr_syscall`, `pr_sysarg[0]`); a state that moved between
/// the reads is read again, `Unknown` when it moved each time. System calls are named where
/// `illumos_procfs::syscall_name` knows them, else given by number. `paused`: this read holds the LWP stopped,
/// and what counts is whether it was in a system call when stopped.
/// [`thread_state`] and the LWP's name.
pub fn thread_state_named(
    pid: u32,
    tid: u64,
    paused: bool,
) -> (super::OsThreadState, Option<String>) {
    (thread_state(pid, tid, paused), thread_name(pid, tid))
}

pub fn thread_state(pid: u32, tid: u64, paused: bool) -> super::OsThreadState {
    use super::OsThreadState as S;
    const TRIES: usize = 3;
    let base = format!("/proc/{pid}/lwp/{tid}");
    let sname = || -> std::result::Result<u8, String> {
        let b = std::fs::read(format!("{base}/lwpsinfo")).map_err(|e| match e.kind() {
            ErrorKind::NotFound => "the thread ended".to_string(),
            _ => format!("{base}/lwpsinfo: {e}"),
        })?;
        b.get(procfs::LWPSINFO_SNAME)
            .copied()
            .ok_or_else(|| format!("{base}/lwpsinfo: too short"))
    };
    for _ in 0..TRIES {
        let before = match sname() {
            Ok(s) => s,
            Err(e) => return S::Unknown(e),
        };
        let status = std::fs::read(format!("{base}/lwpstatus"))
            .ok()
            .and_then(|b| procfs::parse_lwpstatus(&b));
        let after = match sname() {
            Ok(s) => s,
            Err(e) => return S::Unknown(e),
        };
        if before != after {
            continue;
        }
        let syscall = status.filter(|s| s.syscall > 0).map(|s| super::Syscall {
            number: i64::from(s.syscall),
            name: procfs::syscall_name(i64::from(s.syscall)),
            arg0: s.arg0,
            arg1: 0,
        });
        return match after {
            b'O' if !paused => S::Running,
            b'R' if !paused => S::Runnable,
            s if state_is_asleep(s) && !paused => S::Blocked {
                syscall: syscall
                    .filter(|_| status.is_some_and(|s| s.flags & procfs::PR_ASLEEP != 0)),
                wchan: None,
            },
            b'T' if paused => match (status, syscall) {
                (None, _) => S::Unknown(format!("{base}/lwpstatus could not be read")),
                (Some(_), Some(c)) => S::Blocked {
                    syscall: Some(c),
                    wchan: None,
                },
                (Some(_), None) => S::Running,
            },
            b'T' => S::Stopped { syscall },
            b'Z' => S::Unknown("the thread is exiting".into()),
            s => S::Unknown(format!("state {}", s as char)),
        };
    }
    S::Unknown(format!("its state changed during each of {TRIES} reads"))
}

/// Each LWP's context switches: not read on illumos yet (`lwpusage`'s `pr_vctx` and
/// `pr_ictx`), so values read while a GIL was free are marked as possibly mid-update.
pub fn context_switches(_pid: u32) -> HashMap<u64, u64> {
    HashMap::new()
}
