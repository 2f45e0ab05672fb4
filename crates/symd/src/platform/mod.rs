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
    /// May inspect any process, decided from these same connect-time credentials
    /// (Linux: uid 0; illumos: `proc_owner` in the ucred's effective set).
    pub privileged: bool,
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
    #[error("kernel.yama.ptrace_scope is 3: no process may be attached to")]
    YamaNoAttach,
    #[error("kernel.yama.ptrace_scope is 2: only root may attach to processes")]
    YamaAdminOnly,
    #[error("kernel.yama.ptrace_scope is 1: only its ancestors may attach to it, and the client is not one")]
    YamaNotAncestor,
}

/// The daemon reads processes with its own privileges, so it serves a peer only what
/// the peer could read itself: a privileged peer (see [`PeerCred::privileged`]) any
/// process; anyone else only processes whose real, effective and saved uids are all
/// the peer's effective uid and whose real and effective gids are the peer's gid.
/// That is the rule both kernels apply to ptrace and `/proc` control, so set-id
/// programs are refused. `proc_owner` (see [`proc_owner`]) is the owner of the
/// target's `/proc` entry where it tells non-dumpable processes apart (Linux makes it
/// root for a process that changed credentials; the kernel refuses to ptrace those).
///
/// On top of that, Yama's `ptrace_scope` (see [`ptrace_scope`]; 0 where there is no
/// Yama) narrows what an unprivileged peer could attach to: at 1 only its
/// descendants (`is_descendant`, asked only then; it must answer `false` when
/// unsure), at 2 nothing (only CAP_SYS_PTRACE may attach, and a peer with it but not
/// root counts as unprivileged here), at 3 (or any unknown value) nothing at all.
/// Kept free of OS calls so the decision can be tested for every scope.
pub fn may_inspect(
    peer: &PeerCred,
    target: &Credentials,
    proc_owner: Option<u32>,
    ptrace_scope: u32,
    is_descendant: impl FnOnce() -> bool,
) -> Result<(), Refusal> {
    if peer.privileged {
        return Ok(());
    }
    match ptrace_scope {
        0 | 1 => {}
        2 => return Err(Refusal::YamaAdminOnly),
        _ => return Err(Refusal::YamaNoAttach),
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
    if ptrace_scope == 1 && !is_descendant() {
        return Err(Refusal::YamaNotAncestor);
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
            privileged: false,
        };
        let may_inspect = |peer: &PeerCred, privileged: bool, t: &Credentials, o: Option<u32>| {
            let peer = PeerCred {
                privileged,
                ..*peer
            };
            may_inspect(&peer, t, o, 0, || panic!("asked for ancestry at scope 0"))
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
    fn yama_scopes() {
        let peer = PeerCred {
            uid: 1000,
            gid: 100,
            pid: Some(5),
            privileged: false,
        };
        let root = PeerCred {
            uid: 0,
            gid: 0,
            pid: Some(6),
            privileged: true,
        };
        let own = creds(1000, 1000, 1000, 100, 100);
        let other = creds(1001, 1001, 1001, 100, 100);
        // 0: the id rules alone; ancestry is not asked
        let never = || -> bool { panic!("ancestry asked") };
        assert_eq!(may_inspect(&peer, &own, None, 0, never), Ok(()));
        // 1: own processes only if they descend from the client
        assert_eq!(may_inspect(&peer, &own, None, 1, || true), Ok(()));
        assert_eq!(
            may_inspect(&peer, &own, None, 1, || false),
            Err(Refusal::YamaNotAncestor)
        );
        // ... and being an ancestor never lends another user's process
        assert!(matches!(
            may_inspect(&peer, &other, None, 1, || true),
            Err(Refusal::OtherUser { .. })
        ));
        // 2: no unprivileged client at all, even for its own child
        assert_eq!(
            may_inspect(&peer, &own, None, 2, || true),
            Err(Refusal::YamaAdminOnly)
        );
        // 3, and values Yama does not define: nothing
        for scope in [3, 4, u32::MAX] {
            assert_eq!(
                may_inspect(&peer, &own, None, scope, || true),
                Err(Refusal::YamaNoAttach)
            );
        }
        // the daemon reads as root: a root client is served at every scope
        for scope in 0..=3 {
            assert_eq!(may_inspect(&root, &other, Some(0), scope, never), Ok(()));
        }
        assert!(Refusal::YamaNotAncestor
            .to_string()
            .contains("ptrace_scope is 1"));
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
        #[cfg(target_os = "linux")]
        assert_eq!(peer.privileged, uid == 0);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn parent_chain() {
        let me = std::process::id();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        // ground truth: the kernel's own parent links, from getppid(2)
        let parent = unsafe { libc::getppid() } as u32;
        assert!(is_descendant(child.id(), me));
        if parent > 1 {
            assert!(is_descendant(child.id(), parent));
            assert!(is_descendant(me, parent));
        }
        assert!(!is_descendant(me, child.id()));
        assert!(!is_descendant(me, me));
        assert!(!is_descendant(u32::MAX, me));
        let _ = child.kill();
        let _ = child.wait();
        assert!(ptrace_scope() <= 3);
    }

    #[test]
    fn bad_descriptor_is_an_error() {
        assert!(peer_credentials(-1).is_err());
    }
}
