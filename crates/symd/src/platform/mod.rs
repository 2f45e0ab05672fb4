//! What the daemon needs from the operating system: who is at the other end of a
//! Unix socket, whether that peer may read any process, and where the socket lives.
//! The reader's own OS code is in `pyframe_reader::platform`.

use std::path::PathBuf;

use pyframe_reader::platform::Credentials;

#[cfg(target_os = "illumos")]
mod illumos;
#[cfg(target_os = "illumos")]
pub use illumos::*;
#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::*;

/// Credentials of a socket peer, taken by the kernel when it connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    /// Effective uid.
    pub uid: u32,
    /// Effective gid.
    pub gid: u32,
    /// `None` when the kernel does not say (illumos: a peer in another zone).
    pub pid: Option<u32>,
}

/// Name of the socket inside the run directory.
pub const SOCKET_NAME: &str = "pystackd.sock";

/// `/run/pystackd/pystackd.sock` on Linux, `/var/run/pystackd/pystackd.sock` on illumos.
pub fn default_socket_path() -> PathBuf {
    PathBuf::from(pyframe_reader::platform::DEFAULT_RUN_DIR).join(SOCKET_NAME)
}

/// Why a peer may not inspect a process (said to the client and logged).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("it runs as uid {ruid}/{euid}/{suid} (real/effective/saved)")]
    OtherUser { ruid: u32, euid: u32, suid: u32 },
    #[error("its group ids {rgid}/{egid} (real/effective) differ from the client's {gid}")]
    OtherGroup { rgid: u32, egid: u32, gid: u32 },
    #[error("it is not dumpable (it changed credentials)")]
    NotDumpable,
}

/// The daemon reads processes with its own privileges, so it serves a peer only what
/// the peer could read itself: a privileged peer (see `has_proc_owner_privilege`) any
/// process; anyone else only processes whose real, effective and saved uids are all
/// the peer's effective uid and whose real and effective gids are the peer's gid.
/// That is the rule both kernels apply to ptrace and `/proc` control, so set-id
/// programs are refused. `proc_owner` (see [`proc_owner`]) is the owner of the
/// target's `/proc` entry where it tells non-dumpable processes apart (Linux makes it
/// root for a process that changed credentials; the kernel refuses to ptrace those).
pub fn may_inspect(
    peer: &PeerCred,
    peer_privileged: bool,
    target: &Credentials,
    proc_owner: Option<u32>,
) -> Result<(), Refusal> {
    if peer_privileged {
        return Ok(());
    }
    if [target.ruid, target.euid, target.suid]
        .iter()
        .any(|&u| u != peer.uid)
    {
        return Err(Refusal::OtherUser {
            ruid: target.ruid,
            euid: target.euid,
            suid: target.suid,
        });
    }
    if target.rgid != peer.gid || target.egid != peer.gid {
        return Err(Refusal::OtherGroup {
            rgid: target.rgid,
            egid: target.egid,
            gid: peer.gid,
        });
    }
    if proc_owner.is_some_and(|owner| owner != peer.uid) {
        return Err(Refusal::NotDumpable);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(ruid: u32, euid: u32, suid: u32, rgid: u32, egid: u32) -> Credentials {
        Credentials {
            ruid,
            euid,
            suid,
            rgid,
            egid,
        }
    }

    #[test]
    fn inspect_rule() {
        let peer = PeerCred {
            uid: 1000,
            gid: 100,
            pid: Some(5),
        };
        let own = creds(1000, 1000, 1000, 100, 100);
        assert_eq!(may_inspect(&peer, false, &own, Some(1000)), Ok(()));
        assert_eq!(may_inspect(&peer, false, &own, None), Ok(()));
        // another user's process
        let e = may_inspect(&peer, false, &creds(1001, 1001, 1001, 100, 100), None);
        assert!(matches!(e, Err(Refusal::OtherUser { .. })), "{e:?}");
        // set-uid programs: effective or saved id differs
        assert!(may_inspect(&peer, false, &creds(1000, 0, 0, 100, 100), None).is_err());
        assert!(may_inspect(&peer, false, &creds(1000, 1000, 0, 100, 100), None).is_err());
        // set-gid program
        let e = may_inspect(&peer, false, &creds(1000, 1000, 1000, 100, 5), None);
        assert!(matches!(e, Err(Refusal::OtherGroup { .. })), "{e:?}");
        // dropped privileges: ids match but the process is not dumpable
        let e = may_inspect(&peer, false, &own, Some(0)).unwrap_err();
        assert!(e.to_string().contains("dumpable"), "{e}");
        // privileged peers may read anything
        assert_eq!(
            may_inspect(&peer, true, &creds(0, 0, 0, 0, 0), Some(0)),
            Ok(())
        );
    }

    #[test]
    fn socket_path_is_in_the_run_dir() {
        let p = default_socket_path();
        assert!(p.ends_with("pystackd/pystackd.sock"), "{}", p.display());
        assert!(p.is_absolute());
    }

    #[test]
    fn peer_of_a_socket_pair_is_this_process() {
        use std::os::fd::AsRawFd;
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let peer = peer_credentials(a.as_raw_fd()).unwrap();
        // ground truth from the kernel's own view of this process
        let uid = unsafe { libc::geteuid() };
        let gid = unsafe { libc::getegid() };
        assert_eq!((peer.uid, peer.gid), (uid, gid));
        assert_eq!(peer.pid, Some(std::process::id()));
        assert_eq!(
            has_proc_owner_privilege(a.as_raw_fd(), &peer),
            uid == 0 || peer_has_ptrace_cap()
        );
    }

    /// Whether this test process itself holds CAP_SYS_PTRACE (Linux) or proc_owner.
    fn peer_has_ptrace_cap() -> bool {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                let l = s.lines().find(|l| l.starts_with("CapEff:"))?.to_string();
                u64::from_str_radix(l["CapEff:".len()..].trim(), 16).ok()
            })
            .is_some_and(|caps| caps & (1 << 19) != 0)
    }

    #[test]
    fn bad_descriptor_is_an_error() {
        assert!(peer_credentials(-1).is_err());
    }
}
