//! Who may inspect which process. The daemon usually runs as root; it must never let a
//! client see more than the client could read by itself. A client may inspect a
//! process when its effective uid is 0, or when it owns the process the way the kernel
//! requires for ptrace: the target's real, effective and saved uids all equal the
//! client's uid and its real and effective gids equal the client's gid (so setuid and
//! setgid programs are refused, as ptrace refuses them).

use pyframe_reader::platform::Credentials;

use super::peer::PeerCredentials;

/// Why a client was refused (said to the client and logged).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("uid {client_uid} may not inspect process {pid}: {reason}")]
pub struct Denied {
    pub client_uid: u32,
    pub pid: u32,
    pub reason: String,
}

/// Decide whether `peer` may inspect process `pid` whose ids are `target`.
/// `proc_owner` is the owner of the process's `/proc` entry where the OS has one that
/// tells non-dumpable processes apart (Linux makes it root for them).
pub fn check(
    peer: &PeerCredentials,
    pid: u32,
    target: &Credentials,
    proc_owner: Option<u32>,
) -> Result<(), Denied> {
    if peer.uid == 0 {
        return Ok(());
    }
    let deny = |reason: String| {
        Err(Denied {
            client_uid: peer.uid,
            pid,
            reason,
        })
    };
    let uids = [target.ruid, target.euid, target.suid];
    if uids.iter().any(|&u| u != peer.uid) {
        return deny(format!(
            "it runs as uid {}/{}/{} (real/effective/saved)",
            target.ruid, target.euid, target.suid
        ));
    }
    if target.rgid != peer.gid || target.egid != peer.gid {
        return deny(format!(
            "its group ids {}/{} (real/effective) differ from the client's {}",
            target.rgid, target.egid, peer.gid
        ));
    }
    if let Some(owner) = proc_owner {
        if owner != peer.uid {
            return deny("it is not dumpable (it changed credentials)".into());
        }
    }
    Ok(())
}

/// Owner of `/proc/PID` (Linux: root for non-dumpable processes).
pub fn proc_owner(pid: u32) -> Option<u32> {
    if cfg!(target_os = "linux") {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(format!("/proc/{pid}"))
            .ok()
            .map(|m| m.uid())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, gid: u32) -> PeerCredentials {
        PeerCredentials {
            uid,
            gid,
            pid: None,
        }
    }
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
    fn root_may_inspect_anything() {
        assert!(check(&peer(0, 0), 1, &creds(5, 6, 7, 8, 9), Some(0)).is_ok());
    }

    #[test]
    fn owner_may_inspect_own_process() {
        assert!(check(
            &peer(1000, 100),
            9,
            &creds(1000, 1000, 1000, 100, 100),
            Some(1000)
        )
        .is_ok());
    }

    #[test]
    fn others_and_setuid_programs_are_refused() {
        let p = peer(1000, 100);
        // another user's process
        assert!(check(&p, 9, &creds(0, 0, 0, 0, 0), Some(0)).is_err());
        // setuid root program started by the client
        assert!(check(&p, 9, &creds(1000, 0, 0, 100, 100), Some(0)).is_err());
        // saved uid still root
        assert!(check(&p, 9, &creds(1000, 1000, 0, 100, 100), Some(1000)).is_err());
        // setgid program
        assert!(check(&p, 9, &creds(1000, 1000, 1000, 100, 5), Some(1000)).is_err());
        // dropped privileges: ids match but the process is not dumpable
        let e = check(&p, 9, &creds(1000, 1000, 1000, 100, 100), Some(0)).unwrap_err();
        assert!(e.to_string().contains("dumpable"), "{e}");
    }
}
