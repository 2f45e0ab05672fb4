//! The client at the other end of a connection, as the kernel identified it when it
//! connected (the OS specifics are in `crate::platform`).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use crate::platform;

/// Who the client is, taken once per connection: the kernel records the credentials
/// at connect time, so they cannot change for the connection's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCredentials {
    /// Effective uid.
    pub uid: u32,
    /// Effective gid.
    pub gid: u32,
    pub pid: Option<u32>,
    /// May inspect every process: on Linux uid 0 (as `SO_PEERCRED` reports it, in the
    /// daemon's user namespace), on illumos `proc_owner` in the effective set of the
    /// ucred taken at connect time.
    pub privileged: bool,
    /// In another user namespace than the daemon (Linux), see
    /// `platform::PeerCred::foreign_userns`.
    pub foreign_userns: bool,
    /// That namespace, and the client's ids and capabilities in it.
    pub userns: Option<platform::ForeignNs>,
}

impl PeerCredentials {
    pub fn of(fd: BorrowedFd<'_>) -> io::Result<PeerCredentials> {
        let cred = platform::peer_credentials(fd.as_raw_fd())?;
        Ok(PeerCredentials {
            uid: cred.uid,
            gid: cred.gid,
            pid: cred.pid,
            privileged: cred.privileged,
            foreign_userns: cred.foreign_userns,
            userns: cred.userns,
        })
    }
}
