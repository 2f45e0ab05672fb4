//! illumos: `getpeerucred(3C)` for peer credentials; privilege is `proc_owner` in the
//! peer's effective privilege set of that same ucred (privileges(7)), which is what lets a process read
//! and control processes of other users through `/proc`.
//!
//! Type-checked with `tools/check-illumos`; not yet run on an illumos machine.

use std::ffi::{c_char, c_int, c_void};
use std::io;
use std::os::fd::RawFd;
use std::ptr;

use super::PeerCred;

// Not (all) in the libc crate: libc.so.1's privilege-set accessors.
extern "C" {
    fn ucred_getprivset(uc: *const libc::ucred_t, set: *const c_char) -> *const c_void;
    fn priv_ismember(set: *const c_void, name: *const c_char) -> c_int;
}

/// `PRIV_EFFECTIVE` of <priv.h>.
const PRIV_EFFECTIVE: &[u8] = b"Effective\0";
const PRIV_PROC_OWNER: &[u8] = b"proc_owner\0";

/// An owned `ucred_t`, freed with `ucred_free`.
struct Ucred(*mut libc::ucred_t);

impl Ucred {
    fn of_peer(fd: RawFd) -> io::Result<Self> {
        let mut uc: *mut libc::ucred_t = ptr::null_mut();
        // SAFETY: getpeerucred allocates a ucred_t into `uc` on success.
        if unsafe { libc::getpeerucred(fd, &mut uc) } != 0 {
            return Err(io::Error::last_os_error());
        }
        if uc.is_null() {
            return Err(io::Error::new(
                io::ErrorKind::Other,
                "getpeerucred returned no credentials",
            ));
        }
        Ok(Ucred(uc))
    }
}

impl Drop for Ucred {
    fn drop(&mut self) {
        // SAFETY: allocated by getpeerucred, freed once.
        unsafe { libc::ucred_free(self.0) }
    }
}

/// Credentials the kernel recorded for the peer of a connected Unix socket.
pub fn peer_credentials(fd: RawFd) -> io::Result<PeerCred> {
    let uc = Ucred::of_peer(fd)?;
    // SAFETY: `uc.0` is a valid ucred_t for the lifetime of `uc`.
    let (uid, gid, pid) = unsafe {
        (
            libc::ucred_geteuid(uc.0),
            libc::ucred_getegid(uc.0),
            libc::ucred_getpid(uc.0),
        )
    };
    // (uid_t)-1: the credential does not carry it (a peer in another zone)
    if uid == libc::uid_t::MAX || gid == libc::gid_t::MAX {
        return Err(io::Error::new(
            io::ErrorKind::Other,
            "peer credentials carry no user id",
        ));
    }
    Ok(PeerCred {
        uid,
        gid,
        pid: u32::try_from(pid).ok().filter(|&p| p > 0),
        privileged: has_proc_owner(&uc),
    })
}

/// Whether the peer holds `proc_owner` in its effective set, read from the same
/// `ucred_t` as its ids: the kernel took it at connect time, so neither pid reuse nor
/// a later exec of the peer can change it. With it the kernel lets a process open
/// `/proc/PID/as` and `ctl` of any process of the zone (a target with more
/// privileges than the peer also needs the peer to hold those; pystackd does not
/// extend that further than "proc_owner means any process").
fn has_proc_owner(uc: &Ucred) -> bool {
    // SAFETY: valid ucred_t; the returned set lives inside it; names are NUL-terminated.
    unsafe {
        let set = ucred_getprivset(uc.0, PRIV_EFFECTIVE.as_ptr().cast());
        !set.is_null() && priv_ismember(set, PRIV_PROC_OWNER.as_ptr().cast()) != 0
    }
}

/// No Yama on illumos: the id rules of `may_inspect` are the whole policy.
pub fn ptrace_scope() -> u32 {
    0
}

/// Only asked for at a Yama scope of 1, which illumos never reports.
pub fn is_descendant(_pid: u32, _ancestor: u32) -> bool {
    false
}

/// illumos has no cheap, stable identity of a process's executable image here: the
/// cache tells processes apart by pid and start time only (an exec keeps both).
pub fn exe_identity(_pid: u32) -> Option<(u64, u64)> {
    None
}

/// `/proc/PID`'s owner says nothing about dumpability here (a set-id process keeps
/// its ids in its credentials, which `may_inspect` already compares), so: none.
pub fn proc_owner(_pid: u32) -> Option<u32> {
    None
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
