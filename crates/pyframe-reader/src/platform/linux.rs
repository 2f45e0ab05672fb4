//! Linux: `process_vm_readv` (falling back to `/proc/PID/mem`), `/proc/PID/maps`,
//! `/proc/PID/task`, ptrace for stopping.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, ErrorKind};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::ptrace;
use nix::sys::uio::{process_vm_readv, RemoteIoVec};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;

use super::Mapping;
use crate::error::{Error, MemoryError, Result};
use crate::memory::{Memory, MemoryExt};

/// Live process memory.
pub struct ProcessMemory {
    pid: u32,
    /// Set once `process_vm_readv` turns out to be unavailable (ENOSYS, seccomp).
    use_file: AtomicBool,
    mem_file: Option<File>,
}

pub fn open_memory(pid: u32) -> Result<ProcessMemory> {
    // (reads go through process_vm_readv; the file is the fallback where that is refused)
    let mem_file = match File::open(format!("/proc/{pid}/mem")) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == ErrorKind::NotFound => return Err(Error::NoSuchProcess { pid }),
        Err(_) => None,
    };
    let m = ProcessMemory {
        pid,
        use_file: AtomicBool::new(false),
        mem_file,
    };
    Ok(m)
}

fn errno_to_memory(e: nix::errno::Errno, addr: u64, len: usize) -> MemoryError {
    use nix::errno::Errno;
    match e {
        Errno::ESRCH => MemoryError::Gone,
        Errno::EFAULT | Errno::EIO => MemoryError::Unmapped { addr, len },
        Errno::EPERM | Errno::EACCES => MemoryError::PermissionDenied,
        other => MemoryError::Other {
            addr,
            len,
            msg: other.desc().to_string(),
        },
    }
}

impl ProcessMemory {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    fn read_file(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let f = self
            .mem_file
            .as_ref()
            .ok_or(MemoryError::PermissionDenied)?;
        match f.read_exact_at(buf, addr) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => Err(MemoryError::Unmapped {
                addr,
                len: buf.len(),
            }),
            Err(e) => Err(match e.raw_os_error() {
                Some(code) => errno_to_memory(nix::errno::Errno::from_raw(code), addr, buf.len()),
                None => MemoryError::Other {
                    addr,
                    len: buf.len(),
                    msg: e.to_string(),
                },
            }),
        }
    }
}

impl Memory for ProcessMemory {
    fn read_many(&self, reqs: &mut [(u64, &mut [u8])]) -> Result<(), MemoryError> {
        if self.use_file.load(Ordering::Relaxed) || reqs.len() == 1 {
            for (a, b) in reqs.iter_mut() {
                self.read(*a, b)?;
            }
            return Ok(());
        }
        for chunk in reqs.chunks_mut(MAX_IOV) {
            if self.read_batch(chunk).is_err() {
                // find out which one failed, with its own error
                for (a, b) in chunk.iter_mut() {
                    self.read(*a, b)?;
                }
            }
        }
        Ok(())
    }

    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        if buf.is_empty() {
            return Ok(());
        }
        if addr.checked_add(buf.len() as u64).is_none() {
            return Err(MemoryError::Unmapped {
                addr,
                len: buf.len(),
            });
        }
        if self.use_file.load(Ordering::Relaxed) {
            return self.read_file(addr, buf);
        }
        let len = buf.len();
        let remote = [RemoteIoVec {
            base: addr as usize,
            len,
        }];
        let mut local = [io::IoSliceMut::new(buf)];
        match process_vm_readv(Pid::from_raw(self.pid as i32), &mut local, &remote) {
            Ok(n) if n == len => Ok(()),
            Ok(_) => Err(MemoryError::Unmapped { addr, len }),
            Err(nix::errno::Errno::ENOSYS) | Err(nix::errno::Errno::EINVAL)
                if self.mem_file.is_some() =>
            {
                self.use_file.store(true, Ordering::Relaxed);
                let buf = local[0].as_mut();
                self.read_file(addr, buf)
            }
            Err(e) => Err(errno_to_memory(e, addr, len)),
        }
    }
}

/// `process_vm_readv` takes at most this many iovecs (`UIO_MAXIOV`).
const MAX_IOV: usize = 1024;

impl ProcessMemory {
    fn read_batch(&self, reqs: &mut [(u64, &mut [u8])]) -> Result<(), MemoryError> {
        let total: usize = reqs.iter().map(|(_, b)| b.len()).sum();
        let remote: Vec<RemoteIoVec> = reqs
            .iter()
            .map(|(a, b)| RemoteIoVec {
                base: *a as usize,
                len: b.len(),
            })
            .collect();
        let mut local: Vec<io::IoSliceMut> = reqs
            .iter_mut()
            .map(|(_, b)| io::IoSliceMut::new(b))
            .collect();
        match process_vm_readv(Pid::from_raw(self.pid as i32), &mut local, &remote) {
            Ok(n) if n == total => Ok(()),
            Ok(_) => Err(MemoryError::Unmapped {
                addr: reqs[0].0,
                len: total,
            }),
            Err(e) => Err(errno_to_memory(e, reqs[0].0, total)),
        }
    }
}

pub fn exists(pid: u32) -> bool {
    pid != 0 && std::path::Path::new(&format!("/proc/{pid}")).exists()
}

fn read_proc(pid: u32, what: &str) -> Result<String> {
    let path = format!("/proc/{pid}/{what}");
    read_proc_text(&path).map_err(|e| match e.kind() {
        ErrorKind::NotFound => Error::NoSuchProcess { pid },
        ErrorKind::PermissionDenied => Error::PermissionDenied {
            pid,
            detail: format!("cannot read {path}"),
        },
        _ => Error::io(format!("reading {path}"), e),
    })
}

/// A `/proc` text file whole, in reads of at least 16 KiB: `fs::read_to_string` asks for
/// the size first (`/proc` says 0) and then reads in growing pieces from 32 bytes, ten
/// system calls for a process's `maps` where two do. A `stat` file is one record, made
/// whole at its first read: a read that did not fill the buffer was all of it (a file of
/// many records, like `maps`, can return less before its end: read to the end).
fn read_proc_text(path: &str) -> io::Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    if path.ends_with("/stat") {
        let mut buf = vec![0u8; 4096];
        let n = loop {
            match f.read(&mut buf) {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        if n < buf.len() {
            buf.truncate(n);
            return String::from_utf8(buf).map_err(|e| io::Error::new(ErrorKind::InvalidData, e));
        }
        // (longer than any stat line: read on as any file)
        buf.truncate(n);
        f.read_to_end(&mut buf)?;
        return String::from_utf8(buf).map_err(|e| io::Error::new(ErrorKind::InvalidData, e));
    }
    let mut buf: Vec<u8> = Vec::with_capacity(16 << 10);
    loop {
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(buf.capacity());
        }
        let len = buf.len();
        buf.resize(buf.capacity(), 0);
        match f.read(&mut buf[len..]) {
            Ok(0) => {
                buf.truncate(len);
                break;
            }
            Ok(n) => buf.truncate(len + n),
            Err(e) if e.kind() == ErrorKind::Interrupted => buf.truncate(len),
            Err(e) => return Err(e),
        }
    }
    String::from_utf8(buf).map_err(|e| io::Error::new(ErrorKind::InvalidData, e))
}

/// Parse `/proc/PID/maps` text.
pub fn parse_maps(pid: u32, text: &str) -> Vec<Mapping> {
    parse_map_lines(pid, text).collect()
}

fn parse_map_lines<'a>(pid: u32, text: &'a str) -> impl Iterator<Item = Mapping> + 'a {
    // "START-END PERMS OFFSET MAJ:MIN INODE   PATH": on bytes, and only the path copied (a
    // one-shot `stack` parses every line of the target's maps)
    text.split('\n').filter_map(move |line| {
        let b = line.as_bytes();
        let mut f = b.splitn(6, |&c| c == b' ');
        let (Some(range), Some(perms), Some(offset), Some(dev), Some(inode)) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            return None;
        };
        let dash = range.iter().position(|&c| c == b'-')?;
        let (start, end, offset) = (hex(&range[..dash])?, hex(&range[dash + 1..])?, hex(offset)?);
        // the path is padded with spaces (and may hold spaces itself)
        let rest = f.next().unwrap_or(&[]);
        let pad = rest.iter().take_while(|&&c| c == b' ').count();
        let path = (pad < rest.len()).then(|| &line[line.len() - (rest.len() - pad)..]);
        let deleted = path.is_some_and(|p| p.ends_with(" (deleted)"));
        let identity = || -> Option<(u64, u64)> {
            let colon = dev.iter().position(|&c| c == b':')?;
            let (maj, min) = (hex(&dev[..colon])?, hex(&dev[colon + 1..])?);
            let inode = std::str::from_utf8(inode).ok()?.parse().ok()?;
            Some((libc::makedev(maj as u32, min as u32), inode))
        };
        let (open_path, mapped) = match path.filter(|p| p.starts_with('/')) {
            None => (None, None),
            // its name names nothing or another file now: only the kernel's handle opens it
            Some(_) if deleted => (Some(map_files_path(pid, start, end)), None),
            // the target may live in another mount namespace: its root, as it sees it
            Some(p) => (
                Some(PathBuf::from(format!("/proc/{pid}/root{p}"))),
                identity().map(|(dev, inode)| super::MappedFile { dev, inode, pid }),
            ),
        };
        // pseudo paths like [heap] stay in `path`, but only real files get open_path
        Some(Mapping {
            start,
            end,
            offset,
            read: perms.first() == Some(&b'r'),
            write: perms.get(1) == Some(&b'w'),
            exec: perms.get(2) == Some(&b'x'),
            path: path.map(str::to_string),
            open_path,
            mapped,
        })
    })
}

/// A hexadecimal field of a maps line (at most 64 bits).
fn hex(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    digits.iter().try_fold(0u64, |v, &c| {
        Some(v << 4 | u64::from((c as char).to_digit(16)?))
    })
}

/// The mappings, each file mapping with a path to open the file that is mapped by: its
/// name in the target's root (not checked here, see [`open_mapping`]), or the kernel's
/// handle on a deleted one.
pub fn mappings(pid: u32) -> Result<Vec<Mapping>> {
    Ok(parse_map_lines(pid, &read_proc(pid, "maps")?).collect())
}

/// Opens the very file mapped at `m`: by its name when that still names it (same device
/// and inode, checked on the open file), else through the kernel's handle on the mapped
/// file (`/proc/PID/map_files/START-END`: an interpreter deleted or replaced since the
/// process started, as after an upgrade; opening it needs CAP_SYS_ADMIN, so root or the
/// daemon).
pub fn open_mapping(m: &Mapping) -> io::Result<(std::fs::File, std::fs::Metadata)> {
    use std::os::unix::fs::MetadataExt;
    let open = |path: &Path| {
        let file = std::fs::File::open(path)?;
        let md = file.metadata()?;
        Ok::<_, io::Error>((file, md))
    };
    let path = m.open_path.as_ref().ok_or(ErrorKind::NotFound)?;
    let Some(f) = &m.mapped else {
        return open(path);
    };
    match open(path) {
        Ok((file, md)) if md.dev() == f.dev && md.ino() == f.inode => Ok((file, md)),
        _ => open(&map_files_path(f.pid, m.start, m.end)),
    }
}

/// The kernel's handle on the file mapped at `start..end` of process `pid`.
fn map_files_path(pid: u32, start: u64, end: u64) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/map_files/{start:x}-{end:x}"))
}

/// A path that opens the very file mapped at `m` (as [`open_mapping`] opens it), for a
/// caller that opens it later by path.
pub fn checked_open_path(m: &Mapping) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let path = m.open_path.as_ref()?;
    let Some(f) = &m.mapped else {
        return Some(path.clone());
    };
    let intact = std::fs::metadata(path).is_ok_and(|md| md.dev() == f.dev && md.ino() == f.inode);
    Some(if intact {
        path.clone()
    } else {
        map_files_path(f.pid, m.start, m.end)
    })
}

/// Start time in clock ticks since boot (field 22 of `/proc/PID/stat`): with the pid
/// it identifies a process across pid reuse.
pub fn start_time(pid: u32) -> Result<u64> {
    let stat = read_proc(pid, "stat")?;
    // comm may contain spaces and parentheses: fields start after the last ')'
    let rest = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    rest.split_whitespace()
        .nth(19)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            Error::io(
                format!("parsing /proc/{pid}/stat"),
                io::ErrorKind::InvalidData.into(),
            )
        })
}

/// Where thread `tid`'s stack pointer is while it sleeps or is stopped (`/proc/PID/task/
/// TID/syscall`); `None` while it runs: the kernel shows a running thread's registers to
/// no one.
pub fn stack_pointer(pid: u32, tid: u64) -> Option<u64> {
    syscall_line_sp(&read_short(&format!("/proc/{pid}/task/{tid}/syscall"))?)
}

/// The top of thread `tid`'s C stack: its live part runs from its stack pointer up to
/// here. glibc (and musl) put a thread's `struct pthread`, which `pthread_self()`
/// (`pthread_self`) points to, at the top of the stack they give it; the main thread's
/// stack is the process's own, whose top is the stack pointer at exec.
pub fn stack_top(pid: u32, tid: u64, pthread_self: u64) -> Option<u64> {
    if tid == u64::from(pid) {
        main_stack_top(pid)
    } else {
        (pthread_self != 0).then_some(pthread_self)
    }
}

/// The main thread's stack top: the stack pointer at exec (field 28 of `/proc/PID/stat`,
/// `startstack`); every frame the main thread pushes is below it.
fn main_stack_top(pid: u32) -> Option<u64> {
    let stat = read_proc(pid, "stat").ok()?;
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace()
        .nth(25)
        .and_then(|v| v.parse().ok())
        .filter(|&v| v != 0)
}

/// Whether process `pid` is gone or a zombie (exited, not yet reaped: it maps nothing and
/// cannot be attached to, which must be reported as an exit, not as "not Python").
pub fn has_exited(pid: u32) -> bool {
    match read_proc(pid, "stat") {
        // a leader that called pthread_exit is a zombie while its other threads run
        Ok(stat) if stat_state_exited(&stat) => !threads(pid)
            .unwrap_or_default()
            .into_iter()
            .any(|t| !thread_exited(pid, t)),
        Ok(_) => false,
        Err(_) => true,
    }
}

/// Whether `pid` is a kernel thread (`PF_KTHREAD`): it maps nothing and never did.
pub fn is_kernel_thread(pid: u32) -> bool {
    const PF_KTHREAD: u64 = 0x0020_0000;
    read_proc(pid, "stat").ok().is_some_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(6)?.parse::<u64>().ok())
            .is_some_and(|flags| flags & PF_KTHREAD != 0)
    })
}

/// Whether thread `tid` of `pid` is gone or exiting.
fn thread_exited(pid: u32, tid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")) {
        Ok(stat) => stat_state_exited(&stat),
        Err(_) => true,
    }
}

/// Exiting, zombie or dead, from a `stat` line: the state letter (after the last ')') or
/// the kernel's `PF_EXITING` flag (field 9), set from the start of the exit, before the
/// memory is released and long before the state turns to zombie.
fn stat_state_exited(stat: &str) -> bool {
    const PF_EXITING: u64 = 0x4;
    let mut fields = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace())
        .into_iter()
        .flatten();
    let state = fields.next();
    let flags: u64 = fields.nth(5).and_then(|f| f.parse().ok()).unwrap_or(0);
    matches!(state, Some("Z" | "X" | "x")) || flags & PF_EXITING != 0
}

/// The pid tracing `pid`, if any (`TracerPid` in /proc/PID/status).
fn tracer(pid: u32) -> Option<u32> {
    let status = read_proc(pid, "status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))
        .and_then(|v| v.trim().parse().ok())
        .filter(|&t| t != 0)
}

/// OS thread ids (LWPs) of the process.
pub fn threads(pid: u32) -> Result<Vec<u64>> {
    let dir = format!("/proc/{pid}/task");
    let rd = std::fs::read_dir(&dir).map_err(|e| match e.kind() {
        ErrorKind::NotFound => Error::NoSuchProcess { pid },
        _ => Error::io(format!("listing {dir}"), e),
    })?;
    let mut v: Vec<u64> = rd
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    v.sort_unstable();
    Ok(v)
}

pub fn thread_name(pid: u32, tid: u64) -> Option<String> {
    read_short(&format!("/proc/{pid}/task/{tid}/comm"))
        .map(|s| s.trim_end_matches('\n').to_string())
}

/// Each thread's id in the target's own (innermost) PID namespace, by its id here: the
/// last and first fields of `NSpid:` in `/proc/PID/task/TID/status` (the first is in the
/// namespace of our `/proc`). The target's memory (`native_thread_id`, glibc's
/// `struct pthread`) holds the former; perf, gdb and bpftrace on the host use the latter.
/// Equal pairs outside a namespace; a thread without an `NSpid:` line (kernel < 4.1)
/// maps to itself.
pub fn thread_ns_tids(pid: u32) -> Result<Vec<(u64, u64)>> {
    Ok(threads(pid)?
        .into_iter()
        .filter_map(|t| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/task/{t}/status")).ok()?;
            let ns = status
                .lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .and_then(|v| v.split_whitespace().last()?.parse().ok())
                .unwrap_or(t);
            Some((t, ns))
        })
        .collect())
}

/// The PID namespace of `pid` (the inode of `/proc/PID/ns/pid`) when it is not ours, and
/// the process's pid in it; `None` when it shares ours or cannot be told.
pub fn pid_namespace(pid: u32) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let theirs = std::fs::metadata(format!("/proc/{pid}/ns/pid")).ok()?.ino();
    let ours = std::fs::metadata("/proc/self/ns/pid").ok()?.ino();
    if theirs == ours {
        return None;
    }
    let ns_pid = thread_ns_tids(pid)
        .ok()?
        .into_iter()
        .find(|&(t, _)| t == u64::from(pid))
        .map_or(u64::from(pid), |(_, ns)| ns);
    Some((theirs, ns_pid))
}

/// Whether pystackd itself runs in a PID namespace below another (a container): processes
/// of the outer namespaces have no pid here.
pub fn in_nested_pid_namespace() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("NSpid:"))
            .is_some_and(|v| v.split_whitespace().count() > 1)
    })
}

/// glibc x86_64 keeps `tid` at this offset of `struct pthread`: the pick when several
/// offsets fit equally well (a lone thread whose namespace tid is 1 matches small flags).
const GLIBC_TID_OFFSET: usize = 0x2d0;

/// Offset of `tid` inside glibc's/musl's `struct pthread`, found by calibration: at that
/// offset the `pthread_self()` blocks of the threads hold their tids (as the target's PID
/// namespace numbers them). Thread states sharing a `pthread_t` (a subinterpreter's, one
/// `threading` preallocates for a thread not started yet) and blocks of threads that
/// ended (tid cleared, memory reused) must not spoil it: the offset where the most
/// distinct threads hold distinct live tids wins. Cached per process by the caller.
///
/// 0 is never a tid, though `/proc` shows it: a task being reaped is still listed, with
/// `NSpid: 0`, and a thread that ended has 0 in its block (the kernel clears it on exit,
/// `CLONE_CHILD_CLEARTID`). Counted as a live tid, two ended threads' zeros made glibc's
/// offset look ambiguous, and a flag word holding 0 in one block won: every tid of that
/// process was then a flag's value (2, 128) or missing (issue 16).
pub fn calibrate_pthread_tid_offset(pid: u32, mem: &dyn Memory, thread_ids: &[u64]) -> Option<u64> {
    let ns: std::collections::HashSet<u64> = thread_ns_tids(pid)
        .ok()?
        .into_iter()
        .map(|(_, n)| n)
        .filter(|&n| n != 0)
        .collect();
    const SPAN: usize = 0x800;
    let mut ids: Vec<u64> = thread_ids.iter().copied().filter(|&t| t != 0).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut blocks = Vec::new();
    for t in ids {
        let mut b = vec![0u8; SPAN];
        if mem.read(t, &mut b).is_ok() {
            blocks.push(b);
        }
    }
    let mut best: Option<(usize, usize)> = None;
    for off in (0..SPAN - 4).step_by(4) {
        let mut vals: Vec<u64> = blocks
            .iter()
            .map(|b| u32::from_le_bytes(b[off..off + 4].try_into().unwrap()) as u64)
            .filter(|v| ns.contains(v))
            .collect();
        let n = vals.len();
        vals.sort_unstable();
        vals.dedup();
        if n == 0 || vals.len() != n {
            continue;
        }
        let better = match best {
            None => true,
            Some((_, m)) => n > m || (n == m && off == GLIBC_TID_OFFSET),
        };
        if better {
            best = Some((off, n));
        }
    }
    best.map(|(off, _)| off as u64)
}

/// Map `PyThreadState.thread_id` (`pthread_self()`) values to LWP ids as we number them.
pub fn os_thread_ids(
    pid: u32,
    mem: &dyn Memory,
    thread_ids: &[u64],
    tid_offset: &mut Option<u64>,
) -> HashMap<u64, u64> {
    if tid_offset.is_none() {
        *tid_offset = calibrate_pthread_tid_offset(pid, mem, thread_ids);
    }
    let mut map = HashMap::new();
    let Some(off) = *tid_offset else { return map };
    let mut ns_tids: Vec<(u64, u64)> = thread_ns_tids(pid).unwrap_or_default();
    for &t in thread_ids {
        if t == 0 {
            continue;
        }
        if let Ok(v) = mem.read_i32(t.wrapping_add(off)) {
            if v <= 0 {
                continue;
            }
            let v = v as u64;
            if !ns_tids.iter().any(|&(_, n)| n == v) {
                // a thread started after the listing
                ns_tids = thread_ns_tids(pid).unwrap_or_default();
            }
            // a tid no live thread has is a block that outlived its thread: no answer
            if let Some(&(host, _)) = ns_tids.iter().find(|&&(_, n)| n == v) {
                map.insert(t, host);
            }
        }
    }
    map
}

/// While alive, every thread of the target is stopped (ptrace-seized and interrupted).
/// Dropping it resumes them; if pystackd dies, the kernel detaches and they resume too.
pub struct StopGuard {
    tids: Vec<Pid>,
}

pub fn stop(pid: u32) -> Result<StopGuard> {
    let mut guard = StopGuard { tids: Vec::new() };
    // threads can be created while we seize: repeat until the set is stable
    for _ in 0..10 {
        let tids = threads(pid)?;
        let mut new = false;
        for t in tids {
            let p = Pid::from_raw(t as i32);
            if guard.tids.contains(&p) {
                continue;
            }
            new = true;
            match ptrace::seize(p, ptrace::Options::empty()) {
                Ok(()) => {}
                Err(nix::errno::Errno::ESRCH) => continue, // thread exited
                // the kernel also refuses a thread that is exiting: say what happened
                Err(nix::errno::Errno::EPERM) if has_exited(pid) => {
                    return Err(Error::ProcessExited { pid })
                }
                Err(nix::errno::Errno::EPERM) if thread_exited(pid, t) => continue,
                Err(nix::errno::Errno::EPERM) => {
                    let detail = match tracer(pid) {
                        Some(by) => format!(
                            "ptrace attach refused: it is already being traced by process {by} \
                             (a debugger or tracer); detach that first"
                        ),
                        None => "ptrace attach refused: run as the process owner with \
                                 kernel.yama.ptrace_scope <= 1, or as root / with CAP_SYS_PTRACE"
                            .into(),
                    };
                    return Err(Error::PermissionDenied { pid, detail });
                }
                Err(e) => return Err(Error::io(format!("ptrace seize of thread {t}"), e.into())),
            }
            guard.tids.push(p);
            if ptrace::interrupt(p).is_ok() {
                wait_stopped(pid, t, p)?;
            }
        }
        if !new {
            return Ok(guard);
        }
    }
    Ok(guard)
}

/// Wait until seized thread `p` (`tid` of `pid`) reports its stop. Never blocks for
/// good: a thread that is exiting may never stop (the group leader of an exiting process
/// waits for its other threads, which we hold), so poll, and give up when it is gone.
fn wait_stopped(pid: u32, tid: u64, p: Pid) -> Result<()> {
    let flags = WaitPidFlag::__WALL | WaitPidFlag::WNOHANG;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        match waitpid(p, Some(flags)) {
            Ok(nix::sys::wait::WaitStatus::StillAlive) => {}
            Ok(_) | Err(_) => return Ok(()),
        }
        if has_exited(pid) {
            return Err(Error::ProcessExited { pid });
        }
        if thread_exited(pid, tid) {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(Error::io(
                format!("thread {tid} of process {pid} did not stop within 1 s (is it in uninterruptible I/O?); retry, or read it without --pause"),
                io::Error::from(ErrorKind::TimedOut),
            ));
        }
        std::thread::sleep(std::time::Duration::from_micros(50));
    }
}

/// Detach from seized thread `p`. One that is exiting cannot be detached: as its tracer
/// we must then collect its exit, or its process can never be reaped by its parent (the
/// parent's wait would block for good). Bounded: gives up after a second.
fn release(p: Pid) {
    if ptrace::detach(p, None).is_ok() {
        return;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        match waitpid(p, Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG)) {
            Ok(nix::sys::wait::WaitStatus::StillAlive) => {}
            Ok(nix::sys::wait::WaitStatus::Exited(..))
            | Ok(nix::sys::wait::WaitStatus::Signaled(..))
            | Err(_) => return,
            // some other stop (the exit event, a group stop): detach from it now
            Ok(_) => {
                if ptrace::detach(p, None).is_ok() {
                    return;
                }
            }
        }
        if std::time::Instant::now() > deadline {
            return;
        }
        std::thread::sleep(std::time::Duration::from_micros(100));
    }
}

impl StopGuard {
    /// The threads held (host tids), in the order they were stopped.
    pub fn tids(&self) -> Vec<u64> {
        self.tids.iter().map(|p| p.as_raw() as u64).collect()
    }

    /// The registers of held thread `tid`.
    #[cfg(target_arch = "x86_64")]
    pub fn registers(&self, tid: u64) -> Result<super::Registers> {
        let p = Pid::from_raw(tid as i32);
        if !self.tids.contains(&p) {
            return Err(Error::io(
                format!("thread {tid} is not stopped"),
                io::Error::from(ErrorKind::InvalidInput),
            ));
        }
        let r = ptrace::getregs(p)
            .map_err(|e| Error::io(format!("reading the registers of thread {tid}"), e.into()))?;
        Ok(super::Registers {
            pc: r.rip,
            sp: r.rsp,
            gpr: [
                r.rax, r.rdx, r.rcx, r.rbx, r.rsi, r.rdi, r.rbp, r.rsp, r.r8, r.r9, r.r10, r.r11,
                r.r12, r.r13, r.r14, r.r15,
            ],
        })
    }

    /// Only x86-64 registers are read so far.
    #[cfg(not(target_arch = "x86_64"))]
    pub fn registers(&self, tid: u64) -> Result<super::Registers> {
        Err(Error::io(
            format!("reading the registers of thread {tid}: only x86-64 is supported yet"),
            io::Error::from(ErrorKind::Unsupported),
        ))
    }
}

impl Drop for StopGuard {
    fn drop(&mut self) {
        for &p in &self.tids {
            release(p);
        }
    }
}

/// Resume a process stopped by someone else (a probe's `stop()`/`SIGSTOP`).
pub fn resume(pid: u32) -> Result<()> {
    nix::sys::signal::kill(Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGCONT)
        .map_err(|e| Error::io(format!("sending SIGCONT to {pid}"), e.into()))
}

/// A process held by a pidfd (Linux 5.3+): whether it exited is one `poll`, not a
/// read and parse of `/proc/PID/stat`.
#[derive(Debug)]
pub struct ProcessHandle(std::os::fd::OwnedFd);

impl ProcessHandle {
    /// A handle on whatever process holds `pid` now; the caller checks it is the one
    /// it meant (its start time, read after this).
    pub fn open(pid: u32) -> io::Result<ProcessHandle> {
        use std::os::fd::FromRawFd;
        let pid =
            libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        Ok(ProcessHandle(unsafe {
            std::os::fd::OwnedFd::from_raw_fd(fd as std::os::fd::RawFd)
        }))
    }

    /// A pidfd obtained elsewhere (`SO_PEERPIDFD`).
    pub fn from_fd(fd: std::os::fd::OwnedFd) -> ProcessHandle {
        ProcessHandle(fd)
    }

    /// Whether the process has exited (a pidfd turns readable then). An error of
    /// `poll` counts as exited: callers then stop trusting the pid.
    pub fn exited(&self) -> bool {
        use std::os::fd::AsRawFd;
        let mut p = libc::pollfd {
            fd: self.0.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no wait.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        n != 0
    }
}

/// Device and inode of the executable the process runs now (`/proc/PID/exe`, the
/// link followed): changes when the process execs another file, unlike its pid and start
/// time.
pub fn exe_identity(pid: u32) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/exe"))
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// What tells one exec of a process from the next, even of the same file (a reloader's
/// `os.execv(sys.executable, ...)`): the address of its `AT_RANDOM` bytes, on the initial
/// stack each exec builds at a new random place (`AT_RANDOM` (25) of `/proc/PID/auxv`,
/// (type, value) pairs of 8 bytes). `None` when unreadable.
pub fn exec_token(pid: u32) -> Option<u64> {
    const AT_RANDOM: u64 = 25;
    let b = std::fs::read(format!("/proc/{pid}/auxv")).ok()?;
    b.chunks_exact(16).find_map(|e| {
        let t = u64::from_ne_bytes(e[..8].try_into().ok()?);
        (t == AT_RANDOM).then(|| u64::from_ne_bytes(e[8..].try_into().unwrap_or_default()))
    })
}

/// Each thread's count of times it was switched onto a CPU (the third field of
/// `/proc/PID/task/TID/schedstat`, the scheduler's run count) by tid: a thread asleep at two
/// reads with the same count did not run in between. (`status`'s `*_ctxt_switches` say the
/// same, at several times the cost: `status` is long to generate.) Threads whose count
/// cannot be read are left out.
pub fn context_switches(pid: u32) -> HashMap<u64, u64> {
    let Ok(tids) = threads(pid) else {
        return HashMap::new();
    };
    tids.into_iter()
        .filter_map(|tid| {
            let s = std::fs::read(format!("/proc/{pid}/task/{tid}/schedstat")).ok()?;
            let runs = std::str::from_utf8(&s).ok()?.split_whitespace().nth(2)?;
            Some((tid, runs.parse().ok()?))
        })
        .collect()
}

/// Whether a state letter of `/proc/PID/task/TID/stat` is a thread asleep in the kernel
/// (`S` interruptible, `D` not): `blocked` or `waiting_for_gil` to `stack`, idle to
/// `record` and `top` (one classification for both).
pub fn state_is_asleep(letter: u8) -> bool {
    matches!(letter, b'S' | b'D')
}

/// What thread `tid` of `pid` is doing: its state letter in `/proc/PID/task/TID/stat`,
/// read before and after `syscall` (the system call and its arguments, which the kernel
/// itself reads only while the thread stays asleep: "running" otherwise) and `wchan` (the
/// kernel function it sleeps in). A state that moved between the reads is read again, and
/// is `Unknown` when it moved each time. `paused`: this read holds the thread stopped
/// (ptrace), and what counts is what it was doing when stopped: in a system call (the
/// kernel keeps its number and arguments through the stop) or in user code.
pub fn thread_state(pid: u32, tid: u64, paused: bool) -> super::OsThreadState {
    thread_state_named(pid, tid, paused).0
}

/// [`thread_state`] and the thread's OS name (`comm`), which `stat` holds too: one file
/// fewer to open per thread than [`thread_name`].
pub fn thread_state_named(
    pid: u32,
    tid: u64,
    paused: bool,
) -> (super::OsThreadState, Option<String>) {
    let mut comm = None;
    let state = thread_state_inner(pid, tid, paused, &mut comm);
    (state, comm)
}

fn thread_state_inner(
    pid: u32,
    tid: u64,
    paused: bool,
    comm: &mut Option<String>,
) -> super::OsThreadState {
    use super::OsThreadState as S;
    const TRIES: usize = 3;
    let base = format!("/proc/{pid}/task/{tid}");
    // stat is read before and after the others through one descriptor (pread at 0 reads
    // the file anew)
    let stat_file = match std::fs::File::open(format!("{base}/stat")) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return S::Unknown("the thread ended".to_string())
        }
        Err(e) => return S::Unknown(format!("{base}/stat: {e}")),
    };
    let mut letter = || -> std::result::Result<u8, String> {
        use std::os::unix::fs::FileExt;
        let mut buf = [0u8; 1024];
        let n = stat_file
            .read_at(&mut buf, 0)
            .map_err(|e| match e.raw_os_error() {
                // ESRCH: the thread ended after the open
                Some(libc::ESRCH) => "the thread ended".to_string(),
                _ => format!("{base}/stat: {e}"),
            })?;
        if n == 0 {
            // a task that ended after the open reads as empty
            return Err("the thread ended".to_string());
        }
        let stat = &buf[..n];
        let close = stat.iter().rposition(|&b| b == b')');
        // `PID (comm) S ...`: the name between the first `(` and the last `)`
        if let (Some(open), Some(close)) = (stat.iter().position(|&b| b == b'('), close) {
            if open < close {
                *comm = Some(String::from_utf8_lossy(&stat[open + 1..close]).into_owned());
            }
        }
        close
            .and_then(|c| stat.get(c + 2).copied())
            .ok_or_else(|| format!("{base}/stat: no state field"))
    };
    for _ in 0..TRIES {
        let before = match letter() {
            Ok(l) => l,
            Err(e) => return S::Unknown(e),
        };
        // "running", "-1 SP PC" (asleep or stopped outside a system call) or
        // "NR ARG1..ARG6 SP PC"; unreadable without ptrace rights (the state letter alone
        // is then all there is)
        let sys = read_short(&format!("{base}/syscall"));
        let wchan = if state_is_asleep(before) && !paused {
            read_short(&format!("{base}/wchan"))
                .map(|w| w.trim().to_string())
                .filter(|w| !w.is_empty() && w != "0")
        } else {
            None
        };
        let after = match letter() {
            Ok(l) => l,
            Err(e) => return S::Unknown(e),
        };
        if before != after {
            continue;
        }
        let parsed = sys.as_deref().map(parse_syscall);
        match (after, parsed) {
            (b'R', _) if !paused => return S::Running,
            (l, Some(SyscallLine::Running)) if state_is_asleep(l) && !paused => continue,
            (l, Some(SyscallLine::In(c))) if state_is_asleep(l) && !paused => {
                return S::Blocked {
                    syscall: Some(c),
                    wchan,
                }
            }
            (l, _) if state_is_asleep(l) && !paused => {
                return S::Blocked {
                    syscall: None,
                    wchan,
                }
            }
            // a futex wake was running in the kernel, not asleep (a thread handing the
            // GIL over wakes the next one): only a call that sleeps counts as blocked
            (b't' | b'T', Some(SyscallLine::In(c)))
                if paused && c.name == Some("futex") && !c.is_futex_wait() =>
            {
                return S::Running
            }
            (b't' | b'T', Some(SyscallLine::In(c))) if paused => {
                return S::Blocked {
                    syscall: Some(c),
                    wchan: None,
                }
            }
            (b't' | b'T', Some(SyscallLine::User)) if paused => return S::Running,
            (b't' | b'T', None) if paused => {
                return S::Unknown(format!(
                    "{base}/syscall could not be read (what the thread was doing when \
                     stopped is there)"
                ))
            }
            (b't' | b'T', Some(SyscallLine::Running)) if paused => continue,
            (b't' | b'T', s) => {
                return S::Stopped {
                    syscall: match s {
                        Some(SyscallLine::In(c)) => Some(c),
                        _ => None,
                    },
                }
            }
            (b'Z' | b'X', _) => return S::Unknown("the thread is exiting".into()),
            (l, _) if paused => {
                return S::Unknown(format!(
                    "state {} while the process was held stopped",
                    l as char
                ))
            }
            (l, _) => return S::Unknown(format!("state {}", l as char)),
        }
    }
    S::Unknown(format!("its state changed during each of {TRIES} reads"))
}

/// A short `/proc` text file (a thread's `syscall`, `wchan`, `comm`: one line, well under
/// 512 bytes) in one `read`, without the size probe and the read to EOF of `fs::read`:
/// a stack read opens several per thread. `None` when it cannot be read or is longer.
fn read_short(path: &str) -> Option<String> {
    use std::io::Read;
    let mut buf = [0u8; 512];
    let n = std::fs::File::open(path).ok()?.read(&mut buf).ok()?;
    (n < buf.len()).then(|| String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[derive(Debug, PartialEq, Eq)]
enum SyscallLine {
    Running,
    /// Not in a system call (`-1`): in user code, or asleep on a page fault.
    User,
    In(super::Syscall),
}

/// The stack pointer in a line of `/proc/PID/task/TID/syscall`: "-1 SP PC" or
/// "NR ARG1..ARG6 SP PC" (the second field from the end); none in "running".
fn syscall_line_sp(line: &str) -> Option<u64> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 3 {
        return None;
    }
    u64::from_str_radix(f[f.len() - 2].trim_start_matches("0x"), 16).ok()
}

/// A line of `/proc/PID/task/TID/syscall`.
fn parse_syscall(line: &str) -> SyscallLine {
    let mut f = line.split_whitespace();
    let Some(nr) = f.next().and_then(|n| n.parse::<i64>().ok()) else {
        return SyscallLine::Running;
    };
    if nr < 0 {
        return SyscallLine::User;
    }
    let mut arg = || {
        f.next()
            .and_then(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok())
            .unwrap_or(0)
    };
    let (arg0, arg1) = (arg(), arg());
    SyscallLine::In(super::Syscall {
        number: nr,
        name: syscalls::Sysno::new(nr as usize).map(|s| s.name()),
        arg0,
        arg1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `PythonProcess::lent_runners` relies on: a sleeping thread's live stack, from
    /// its stack pointer up to its `struct pthread`, holds its locals.
    #[test]
    fn a_sleeping_threads_locals_lie_between_its_stack_pointer_and_its_pthread() {
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            let local = 0u64;
            // SAFETY: plain calls without arguments
            let (tid, me) = unsafe { (libc::gettid() as u64, libc::pthread_self() as u64) };
            tx.send((tid, me, std::hint::black_box(&local) as *const u64 as u64))
                .unwrap();
            std::thread::sleep(std::time::Duration::from_millis(500));
        });
        let (tid, me, local) = rx.recv().unwrap();
        let pid = std::process::id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let sp = loop {
            if let Some(sp) = stack_pointer(pid, tid) {
                break sp;
            }
            assert!(std::time::Instant::now() < deadline, "never seen asleep");
            std::thread::yield_now();
        };
        assert!(
            sp <= local && local < me,
            "sp {sp:#x} local {local:#x} pthread {me:#x}"
        );
        t.join().unwrap();
        // the main thread's top is in its stack mapping, above where this process started
        let top = main_stack_top(pid).expect("startstack");
        let maps = parse_maps(pid, &read_proc(pid, "maps").unwrap());
        let stack = maps
            .iter()
            .find(|m| m.path.as_deref() == Some("[stack]"))
            .unwrap();
        assert!(stack.start < top && top < stack.end, "{top:#x} {stack:?}");
    }

    #[test]
    fn syscall_lines() {
        assert_eq!(parse_syscall("running\n"), SyscallLine::Running);
        assert_eq!(syscall_line_sp("running\n"), None);
        assert_eq!(
            syscall_line_sp("-1 0x7ffd1a2b3c40 0x7f0011223344\n"),
            Some(0x7ffd1a2b3c40)
        );
        assert_eq!(
            syscall_line_sp(
                "202 0x7f55aa001234 0x189 0x0 0x0 0x0 0xffffffff 0x7ffd1a2b3c40 0x7f0011223344\n"
            ),
            Some(0x7ffd1a2b3c40)
        );
        assert_eq!(
            parse_syscall("-1 0x7ffd1a2b3c40 0x7f0011223344\n"),
            SyscallLine::User
        );
        let SyscallLine::In(c) = parse_syscall(
            "202 0x7f55aa001234 0x189 0x0 0x0 0x0 0xffffffff 0x7ffd1a2b3c40 0x7f0011223344\n",
        ) else {
            panic!("a system call")
        };
        assert_eq!((c.number, c.arg0, c.arg1), (202, 0x7f55aa001234, 0x189));
        // FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME
        assert!(c.name != Some("futex") || c.is_futex_wait());
        #[cfg(target_arch = "x86_64")]
        assert_eq!(c.name, Some("futex"));
    }

    #[test]
    fn a_sleeping_thread_of_ours() {
        let (tx, rx) = std::sync::mpsc::channel();
        let h = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tx.send(unsafe { libc::gettid() } as u64).unwrap();
            std::thread::sleep(std::time::Duration::from_secs(2));
        });
        let tid = rx.recv().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        match thread_state(std::process::id(), tid, false) {
            super::super::OsThreadState::Blocked {
                syscall: Some(c), ..
            } => assert_eq!(c.display(), "clock_nanosleep"),
            other => panic!("a thread in sleep(): {other:?}"),
        }
        h.join().unwrap();
        assert!(matches!(
            thread_state(std::process::id(), tid, false),
            super::super::OsThreadState::Unknown(_)
        ));
    }

    #[test]
    fn exit_states_from_stat_lines() {
        // real lines: a sleeping python, a zombie, and one in its exit (flags with PF_EXITING)
        let sleeping = "4242 (python3) S 1 4242 1 0 -1 4194560 1000 0 0 0 5 2 0 0 20 0 1 0 99 1 2";
        let zombie = "4242 (python3) Z 1 4242 1 0 -1 4227084 1958 0 0 0 1 0 0 0 20 0 1 0 99 0 0";
        let exiting = "4242 (py (x) 3) R 1 4242 1 0 -1 4194564 1958 0 0 0 1 0 0 0 20 0 1 0 99 0 0";
        assert!(!stat_state_exited(sleeping));
        assert!(stat_state_exited(zombie));
        assert!(stat_state_exited(exiting));
        assert!(!stat_state_exited("garbage"));
        assert!(!has_exited(std::process::id()));
        assert!(!is_kernel_thread(std::process::id()));
        // kthreadd is pid 2 wherever the pid namespace is the host's
        if std::fs::read_to_string("/proc/2/comm").is_ok_and(|c| c.trim() == "kthreadd") {
            assert!(is_kernel_thread(2));
        }
    }

    #[test]
    fn parses_maps_lines() {
        let text = "55d0c8a00000-55d0c8a01000 r--p 00000000 fd:00 1234   /usr/bin/python3.11\n\
                    7f00-8f00 rw-p 00001000 00:00 0 \n\
                    7ffd1000-7ffd2000 rw-p 00000000 00:00 0                          [stack]\n\
                    garbage\n";
        let m = parse_maps(42, text);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].path.as_deref(), Some("/usr/bin/python3.11"));
        assert_eq!(
            m[0].open_path,
            Some(PathBuf::from("/proc/42/root/usr/bin/python3.11"))
        );
        assert!(m[0].read && !m[0].write);
        assert_eq!(m[1].path, None);
        assert_eq!(m[1].offset, 0x1000);
        assert_eq!(m[2].path.as_deref(), Some("[stack]"));
        assert_eq!(m[2].open_path, None);
        // the file as mapped, to check the path against when it is opened
        assert_eq!(
            m[0].mapped,
            Some(super::super::MappedFile {
                dev: libc::makedev(0xfd, 0),
                inode: 1234,
                pid: 42
            })
        );
        assert_eq!((m[1].mapped.clone(), m[2].mapped.clone()), (None, None));
        // a path with spaces; a deleted file opens only through the kernel's handle
        let text = "1000-2000 r-xp 00000000 08:01 77 /opt/my app/libpython3.12.so\n\
                    3000-4000 r-xp 00001000 08:01 78 /usr/bin/py thon (deleted)\n";
        let m = parse_maps(7, text);
        assert_eq!(m[0].path.as_deref(), Some("/opt/my app/libpython3.12.so"));
        assert_eq!(
            m[0].open_path,
            Some(PathBuf::from("/proc/7/root/opt/my app/libpython3.12.so"))
        );
        assert_eq!(m[1].path.as_deref(), Some("/usr/bin/py thon (deleted)"));
        assert_eq!(
            m[1].open_path,
            Some(PathBuf::from("/proc/7/map_files/3000-4000"))
        );
        assert_eq!((m[1].mapped.clone(), m[1].offset), (None, 0x1000));
        assert_eq!(hex(b"ffffffffffffffff"), Some(u64::MAX));
        assert_eq!(
            (hex(b""), hex(b"1ffffffffffffffff"), hex(b"12g")),
            (None, None, None)
        );
    }

    #[test]
    fn a_mapped_file_opens_as_the_file_mapped() {
        use std::os::unix::fs::MetadataExt;
        // this test binary's own mappings: its name still names it
        let maps = mappings(std::process::id()).unwrap();
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let m = maps
            .iter()
            .find(|m| m.path.as_deref() == exe.to_str())
            .expect("the executable is mapped");
        let f = m.mapped.as_ref().expect("a file mapping has its identity");
        let md = open_mapping(m).unwrap().1;
        assert_eq!((md.dev(), md.ino()), (f.dev, f.inode));
        assert_eq!(checked_open_path(m), m.open_path);
        // a name that names another file now: the kernel's handle (root has CAP_SYS_ADMIN)
        let mut moved = m.clone();
        moved.mapped = Some(super::super::MappedFile {
            inode: f.inode ^ 1,
            ..f.clone()
        });
        assert_eq!(
            checked_open_path(&moved),
            Some(map_files_path(f.pid, m.start, m.end))
        );
        if nix::unistd::geteuid().is_root() {
            let md = open_mapping(&moved).unwrap().0.metadata().unwrap();
            assert_eq!((md.dev(), md.ino()), (f.dev, f.inode));
        } else {
            eprintln!("skipped opening /proc/self/map_files: needs CAP_SYS_ADMIN");
        }
    }

    #[test]
    fn own_process_facts() {
        let pid = std::process::id();
        assert!(start_time(pid).unwrap() > 0);
        assert!(threads(pid).unwrap().contains(&(pid as u64)));
        assert!(!exists(0));
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let h = std::thread::spawn(move || {
            tx.send(nix::unistd::gettid().as_raw() as u64).unwrap();
            let _ = done_rx.recv();
        });
        let tid = rx.recv().unwrap();
        assert_ne!(tid, u64::from(pid));
        assert!(threads(pid).unwrap().contains(&tid));
        drop(done_tx);
        h.join().unwrap();
    }
}
