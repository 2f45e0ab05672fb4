//! Who may inspect which process. The daemon reads with its own privileges; it must
//! never let a client see more than the client could read by itself. For a client
//! that is not privileged the kernel decides, asked by an access checker running as
//! the client (`super::checker`); this module turns its answer into the daemon's.

use super::checker::{CheckError, CheckerId, Checkers};
use super::peer::PeerCredentials;
use crate::platform::{self, Access, CheckMode};

/// Why a client was refused (said to the client and logged). Names the client's uid
/// only: never the target's ids, which may be another user's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("uid {client_uid} may not inspect process {pid}: {reason}")]
pub struct Denied {
    pub client_uid: u32,
    pub pid: u32,
    pub reason: Refusal,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The checker's open as the client was refused by the kernel.
    #[error(
        "the kernel does not let that user read its memory (as for `pystackd stack --no-daemon`)"
    )]
    Kernel,
    #[error("kernel.yama.ptrace_scope is 1: only its ancestors may attach to it, and the client is not one")]
    YamaNotAncestor,
    /// No checker can run as the client: refused rather than guessed.
    #[error("{0}")]
    Unavailable(String),
    #[error("the client runs in another user namespace than the daemon, which the daemon could not examine; read it with `pystackd stack --no-daemon`")]
    ForeignUserNamespace,
}

/// The access decision for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    Denied(Denied),
    /// Not there for this client (exited, or hidden from it by `hidepid`).
    NoSuchProcess,
    /// The checker failed (died, hung): no answer; the client may retry.
    Failed(CheckError),
}

/// Decide whether `peer` may inspect process `pid` (identified by `start_time`).
/// Yama's scope is read on every call (an administrator may raise it while the daemon
/// runs).
pub fn check(
    checkers: &Checkers,
    max_checkers: usize,
    peer: &PeerCredentials,
    pid: u32,
    start_time: u64,
) -> Outcome {
    if peer.privileged {
        return Outcome::Allowed;
    }
    if let Some(refused) = foreign(peer, pid) {
        return refused;
    }
    let scope = platform::ptrace_scope();
    let answer = checkers.check(
        checker_of(peer),
        peer.pid,
        pid,
        start_time,
        mode_for(scope),
        max_checkers,
    );
    decide(peer, pid, answer, scope, || descends_from_client(peer, pid))
}

/// The decision when a fresh cached answer exists; `None` when the checker must be
/// asked (callers on an async worker then move to the blocking pool).
pub fn check_cached(
    checkers: &Checkers,
    peer: &PeerCredentials,
    pid: u32,
    start_time: u64,
) -> Option<Outcome> {
    if peer.privileged {
        return Some(Outcome::Allowed);
    }
    if let Some(refused) = foreign(peer, pid) {
        return Some(refused);
    }
    let scope = platform::ptrace_scope();
    let a = checkers.cached(checker_of(peer), pid, start_time, mode_for(scope))?;
    Some(decide(peer, pid, Ok(a), scope, || {
        descends_from_client(peer, pid)
    }))
}

/// The checker that answers for `peer`: its ids, and for a client of another user
/// namespace that namespace (the checker runs inside it: the kernel judges the
/// client's reads there, refusing it processes outside even with matching uids).
fn checker_of(peer: &PeerCredentials) -> CheckerId {
    CheckerId {
        uid: peer.uid,
        gid: peer.gid,
        ns: peer.userns,
    }
}

/// A client of another user namespace the daemon could not examine: refused.
fn foreign(peer: &PeerCredentials, pid: u32) -> Option<Outcome> {
    (peer.foreign_userns && peer.userns.is_none()).then_some(Outcome::Denied(Denied {
        client_uid: peer.uid,
        pid,
        reason: Refusal::ForeignUserNamespace,
    }))
}

/// Yama 1 restricts ATTACH to ancestors, and the checker is nobody's ancestor: then
/// the kernel is asked in READ mode and ancestry is checked by hand.
fn mode_for(scope: u32) -> CheckMode {
    if scope == 1 {
        CheckMode::Read
    } else {
        CheckMode::Attach
    }
}

/// The client's pid is the one the kernel recorded at connect; unknown (another pid
/// namespace) means "not an ancestor".
fn descends_from_client(peer: &PeerCredentials, pid: u32) -> bool {
    peer.pid.is_some_and(|p| platform::is_descendant(pid, p))
}

/// The checker's answer, plus at Yama scope 1 the kernel's ancestry rule (asked only
/// then): a target that declared a ptracer with `PR_SET_PTRACER` is still refused.
fn decide(
    peer: &PeerCredentials,
    pid: u32,
    answer: Result<Access, CheckError>,
    scope: u32,
    is_descendant: impl FnOnce() -> bool,
) -> Outcome {
    let denied = |reason| {
        Outcome::Denied(Denied {
            client_uid: peer.uid,
            pid,
            reason,
        })
    };
    match answer {
        Ok(Access::Allowed) if scope == 1 && !is_descendant() => denied(Refusal::YamaNotAncestor),
        Ok(Access::Allowed) => Outcome::Allowed,
        Ok(Access::Denied) => denied(Refusal::Kernel),
        Ok(Access::NoSuchProcess) => Outcome::NoSuchProcess,
        Err(e @ CheckError::Unavailable { .. }) => denied(Refusal::Unavailable(e.to_string())),
        Err(e) => Outcome::Failed(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: PeerCredentials = PeerCredentials {
        uid: 1000,
        gid: 100,
        pid: Some(5),
        privileged: false,
        foreign_userns: false,
        userns: None,
    };

    #[test]
    fn denial_names_the_client_only() {
        let o = decide(&PEER, 9, Ok(Access::Denied), 0, || unreachable!());
        let Outcome::Denied(d) = o else {
            panic!("{o:?}")
        };
        let msg = d.to_string();
        assert!(
            msg.starts_with("uid 1000 may not inspect process 9: the kernel"),
            "{msg}"
        );
        // no other uid than the client's appears
        assert!(!msg.contains(" 0/") && !msg.contains("uid 0"), "{msg}");
    }

    #[test]
    fn answers_and_yama_1() {
        let never = || -> bool { panic!("ancestry asked") };
        assert_eq!(
            decide(&PEER, 9, Ok(Access::Allowed), 0, never),
            Outcome::Allowed
        );
        assert_eq!(
            decide(&PEER, 9, Ok(Access::NoSuchProcess), 0, never),
            Outcome::NoSuchProcess
        );
        // scope 1: the READ-mode answer and ancestry both needed
        assert_eq!(
            decide(&PEER, 9, Ok(Access::Allowed), 1, || true),
            Outcome::Allowed
        );
        let o = decide(&PEER, 9, Ok(Access::Allowed), 1, || false);
        assert!(
            matches!(&o, Outcome::Denied(d) if d.reason == Refusal::YamaNotAncestor),
            "{o:?}"
        );
        // being an ancestor never lends what the kernel refused
        assert!(matches!(
            decide(&PEER, 9, Ok(Access::Denied), 1, || true),
            Outcome::Denied(_)
        ));
        // 2 and 3: the kernel itself refuses the capability-less checker
        assert!(matches!(
            decide(&PEER, 9, Ok(Access::Denied), 2, never),
            Outcome::Denied(_)
        ));
        assert_eq!(mode_for(1), CheckMode::Read);
        for s in [0, 2, 3] {
            assert_eq!(mode_for(s), CheckMode::Attach);
        }
        // no checker: refused, saying why; a failed one: no answer
        let e = CheckError::Unavailable {
            uid: 1000,
            reason: "setresuid: Operation not permitted".into(),
        };
        let o = decide(&PEER, 9, Err(e), 0, never);
        assert!(
            matches!(&o, Outcome::Denied(d) if d.to_string().contains("setresuid")),
            "{o:?}"
        );
        let e = CheckError::Failed {
            uid: 1000,
            reason: "timeout".into(),
        };
        assert!(matches!(
            decide(&PEER, 9, Err(e), 0, never),
            Outcome::Failed(_)
        ));
    }

    #[test]
    fn privileged_peers_skip_the_checker() {
        let root = PeerCredentials {
            uid: 0,
            gid: 0,
            pid: None,
            privileged: true,
            foreign_userns: false,
            userns: None,
        };
        // an empty pool would have to spawn for anyone else
        let c = Checkers::default();
        assert_eq!(check(&c, 1, &root, 1, 0), Outcome::Allowed);
        assert_eq!(c.running(), 0);
        // nor does a client of another user namespace: refused outright
        let foreign = PeerCredentials {
            foreign_userns: true,
            ..PEER
        };
        let o = check(&c, 1, &foreign, 1, 0);
        assert!(
            matches!(&o, Outcome::Denied(d) if d.reason == Refusal::ForeignUserNamespace),
            "{o:?}"
        );
        assert_eq!(c.running(), 0);
    }
}
