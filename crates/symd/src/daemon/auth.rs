//! Who may inspect which process. The daemon reads with its own privileges; it must
//! never let a client see more than the client could read by itself. The rule is
//! `platform::may_inspect`; this module applies it to a connection's client.

use pyframe_reader::platform::Credentials;

use super::peer::PeerCredentials;
use crate::platform;

/// Why a client was refused (said to the client and logged).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("uid {client_uid} may not inspect process {pid}: {reason}")]
pub struct Denied {
    pub client_uid: u32,
    pub pid: u32,
    pub reason: platform::Refusal,
}

/// Decide whether `peer` may inspect process `pid` whose ids are `target`;
/// `proc_owner` as in [`platform::may_inspect`]. Yama's scope is read on every call
/// (an administrator may raise it while the daemon runs).
pub fn check(
    peer: &PeerCredentials,
    pid: u32,
    target: &Credentials,
    proc_owner: Option<u32>,
) -> Result<(), Denied> {
    let scope = if peer.privileged {
        0
    } else {
        platform::ptrace_scope()
    };
    // The client's pid is the one the kernel recorded at connect; unknown (another
    // pid namespace) means "not an ancestor".
    let descendant = || peer.pid.is_some_and(|p| platform::is_descendant(pid, p));
    platform::may_inspect(&peer.cred(), target, proc_owner, scope, descendant).map_err(|reason| {
        Denied {
            client_uid: peer.uid,
            pid,
            reason,
        }
    })
}

pub use platform::proc_owner;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denial_names_client_target_and_reason() {
        let peer = PeerCredentials {
            uid: 1000,
            gid: 100,
            pid: None,
            privileged: false,
        };
        let root = Credentials {
            ruid: 0,
            euid: 0,
            suid: 0,
            rgid: 0,
            egid: 0,
        };
        let e = check(&peer, 9, &root, Some(0)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "uid 1000 may not inspect process 9: it runs as uid 0/0/0 (real/effective/saved)"
        );
        let privileged = PeerCredentials {
            privileged: true,
            ..peer
        };
        assert!(check(&privileged, 9, &root, Some(0)).is_ok());
    }
}
