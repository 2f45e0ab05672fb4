//! The listening socket: bound at a path (its directory made, a stale socket taken over,
//! a live daemon's left alone) or handed over by systemd socket activation.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener as StdListener, UnixStream as StdStream};
use std::path::{Path, PathBuf};

use tracing::{info, warn};

/// Where the listening socket came from; decides who removes it at exit.
pub enum Origin {
    /// We bound it at this path (device and inode, to remove only our own socket).
    Bound { path: PathBuf, dev: u64, ino: u64 },
    /// Passed by systemd socket activation: systemd owns the path.
    Activated,
}

impl Origin {
    /// Remove the socket file if it is still the one we created.
    pub fn cleanup(&self) {
        if let Origin::Bound { path, dev, ino } = self {
            if let Ok(m) = std::fs::symlink_metadata(path) {
                if m.dev() == *dev && m.ino() == *ino {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
    }
}

/// The first socket passed by systemd (`LISTEN_PID`/`LISTEN_FDS`, fd 3), if any.
pub fn activated_listener() -> io::Result<Option<StdListener>> {
    // listenfd checks LISTEN_PID against us, and removes the variables so that children
    // do not think the sockets are theirs.
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() > 1 {
        warn!(
            "systemd passed {} sockets; using the first (fd 3)",
            fds.len()
        );
    }
    let Some(l) = fds.take_unix_listener(0)? else {
        return Ok(None);
    };
    // The access checkers are spawned children: fd 3 must not leak into them.
    let flags = nix::fcntl::fcntl(l.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFD)?;
    let flags = nix::fcntl::FdFlag::from_bits_truncate(flags) | nix::fcntl::FdFlag::FD_CLOEXEC;
    nix::fcntl::fcntl(l.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFD(flags))?;
    l.set_nonblocking(true)?;
    Ok(Some(l))
}

/// Bind the socket at `path`: create its directory (0755) if missing, take over a
/// stale socket left by a dead daemon, refuse when another daemon answers on it.
pub fn bind(path: &Path) -> Result<(StdListener, Origin), String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .map_err(|e| format!("creating {}: {e}", dir.display()))?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_socket() => {
            return Err(format!(
                "{} exists and is not a socket; not touching it",
                path.display()
            ))
        }
        Ok(_) => match StdStream::connect(path) {
            Ok(_) => {
                return Err(format!(
                    "another pystackd daemon is already serving {}",
                    path.display()
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                std::fs::remove_file(path)
                    .map_err(|e| format!("removing stale socket {}: {e}", path.display()))?;
                info!("removed stale socket {}", path.display());
            }
            Err(e) => return Err(format!("probing {}: {e}", path.display())),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{}: {e}", path.display())),
    }
    let l = StdListener::bind(path).map_err(|e| format!("binding {}: {e}", path.display()))?;
    // World-connectable on purpose: unprivileged users are meant to use the daemon,
    // and no request is served on the strength of having connected. Every request is
    // authorised by the peer credentials the kernel attaches to the connection
    // (SO_PEERCRED / getpeerucred), which a client cannot forge. The directory stays
    // 0755 and root's, so nobody else can replace the socket.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .map_err(|e| format!("chmod {}: {e}", path.display()))?;
    l.set_nonblocking(true)
        .map_err(|e| format!("socket {}: {e}", path.display()))?;
    let m = std::fs::symlink_metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((
        l,
        Origin::Bound {
            path: path.to_path_buf(),
            dev: m.dev(),
            ino: m.ino(),
        },
    ))
}
