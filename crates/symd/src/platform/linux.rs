//! Linux: `SO_PEERCRED`; privilege is uid 0 as `SO_PEERCRED` reports it; Yama's
//! `ptrace_scope`.

use std::io;
use std::os::fd::RawFd;

use super::PeerCred;

/// Credentials the kernel recorded for the peer of a connected Unix socket.
pub fn peer_credentials(fd: RawFd) -> io::Result<PeerCred> {
    let mut uc = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `uc` and `len` are valid for writes of the sizes passed.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut uc as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(PeerCred {
        uid: uc.uid,
        gid: uc.gid,
        pid: u32::try_from(uc.pid).ok().filter(|&p| p > 0),
        privileged: is_privileged_uid(uc.uid),
    })
}

/// Privilege is decided from the credentials the kernel captured at connect time
/// only, and only by the uid: `SO_PEERCRED` translates it into the daemon's user
/// namespace, so root of a user namespace (`unshare -U -r`) is its unprivileged
/// outer uid here. Capabilities are not looked at: `CapEff` in `/proc/PID/status` is
/// relative to the peer's own user namespace, and reading it by pid after connect
/// races pid reuse and exec. A non-root client holding CAP_SYS_PTRACE is therefore
/// served as an ordinary user.
fn is_privileged_uid(uid: u32) -> bool {
    uid == 0
}

/// Owner of `/proc/PID`: the kernel makes it root for a process that is not dumpable
/// (it changed credentials), which ptrace refuses to anyone but a privileged caller.
pub fn proc_owner(pid: u32) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}"))
        .ok()
        .map(|m| m.uid())
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
            std::os::fd::OwnedFd::from_raw_fd(fd as RawFd)
        }))
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

/// Yama's `/proc/sys/kernel/yama/ptrace_scope`: 0 when Yama is not built in (the file
/// is absent); an unreadable or unknown value counts as the strictest, 3.
pub fn ptrace_scope() -> u32 {
    match std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope") {
        Ok(s) => s
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|&v| v <= 3)
            .unwrap_or(3),
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(_) => 3,
    }
}

/// Whether `ancestor` is on the parent chain of `pid` (the chain is walked through
/// `/proc/PID/stat` up to pid 1). Any read or parse failure, or a chain longer than
/// any real one, answers `false`.
pub fn is_descendant(pid: u32, ancestor: u32) -> bool {
    const MAX_DEPTH: usize = 4096;
    if ancestor == 0 || pid == ancestor {
        return false;
    }
    let mut cur = pid;
    for _ in 0..MAX_DEPTH {
        let Some(ppid) = parent_pid(cur) else {
            return false;
        };
        if ppid == ancestor {
            return true;
        }
        if ppid <= 1 {
            return false;
        }
        cur = ppid;
    }
    false
}

/// The 4th field of `/proc/PID/stat`, after the parenthesised command name (which
/// may itself hold spaces and parentheses, hence the last `)`).
fn parent_pid(pid: u32) -> Option<u32> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Device and inode of the executable the process runs now (`/proc/PID/exe`, the
/// link followed): changes when the process execs, unlike its pid and start time.
pub fn exe_identity(pid: u32) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/exe"))
        .ok()
        .map(|m| (m.dev(), m.ino()))
}
