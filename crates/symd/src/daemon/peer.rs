//! The client at the other end of a connection, as the kernel identified it when it
//! connected (the OS specifics are in `crate::platform`).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use crate::platform;

/// Who the client is, taken once per connection: the kernel records the credentials
/// at connect time, so they cannot change for the connection's life. (The platform's
/// type: one struct from the kernel's answer to every access decision.)
pub type PeerCredentials = platform::PeerCred;

/// The credentials of the peer of a connected Unix socket.
pub fn of(fd: BorrowedFd<'_>) -> io::Result<PeerCredentials> {
    platform::peer_credentials(fd.as_raw_fd())
}
