//! Linux: `SO_PEERCRED`; privilege is uid 0 or `CAP_SYS_PTRACE`.

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
    })
}

const CAP_SYS_PTRACE: u32 = 19;

/// Whether the peer may read any process: uid 0, or `CAP_SYS_PTRACE` in its effective
/// set (read from `/proc/PID/status` of the peer's pid; a peer that exited since
/// connecting is not privileged). Called once, right after accept; the effective uid
/// in that file must still be the peer's, so that a pid reused by a process of
/// another user does not lend it its capabilities.
pub fn has_proc_owner_privilege(_fd: RawFd, peer: &PeerCred) -> bool {
    if peer.uid == 0 {
        return true;
    }
    let Some(pid) = peer.pid else { return false };
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name));
    let euid = field("Uid:")
        .and_then(|v| v.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u32>().ok());
    euid == Some(peer.uid)
        && field("CapEff:")
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .is_some_and(|caps| caps & (1 << CAP_SYS_PTRACE) != 0)
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
