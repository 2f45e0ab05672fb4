//! Socket-level OS specifics of the daemon: the default socket path and the peer
//! credentials of a connected client.
//!
//! TODO: switch to `crate::platform::{default_socket_path, peer_credentials}` when
//! that module lands; the signatures here are meant to be the same.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::PathBuf;

/// Who is at the other end of a Unix socket, as the kernel saw it at connect time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCredentials {
    /// Effective uid.
    pub uid: u32,
    /// Effective gid.
    pub gid: u32,
    pub pid: Option<u32>,
}

pub fn default_socket_path() -> PathBuf {
    if cfg!(target_os = "illumos") {
        PathBuf::from("/var/run/pystackd/pystackd.sock")
    } else {
        PathBuf::from("/run/pystackd/pystackd.sock")
    }
}

#[cfg(target_os = "linux")]
pub fn peer_credentials(fd: BorrowedFd<'_>) -> io::Result<PeerCredentials> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes and describe a `ucred`.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(PeerCredentials {
        uid: cred.uid,
        gid: cred.gid,
        pid: u32::try_from(cred.pid).ok().filter(|&p| p != 0),
    })
}

#[cfg(any(target_os = "illumos", target_os = "solaris"))]
pub fn peer_credentials(fd: BorrowedFd<'_>) -> io::Result<PeerCredentials> {
    let mut uc: *mut libc::ucred_t = std::ptr::null_mut();
    // SAFETY: getpeerucred allocates `uc`, freed below.
    if unsafe { libc::getpeerucred(fd.as_raw_fd(), &mut uc) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `uc` is a valid ucred from getpeerucred.
    let (uid, gid, pid) = unsafe {
        let r = (
            libc::ucred_geteuid(uc),
            libc::ucred_getegid(uc),
            libc::ucred_getpid(uc),
        );
        libc::ucred_free(uc);
        r
    };
    Ok(PeerCredentials {
        uid,
        gid,
        pid: u32::try_from(pid).ok().filter(|&p| p != 0),
    })
}
