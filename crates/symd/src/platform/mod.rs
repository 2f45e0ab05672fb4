//! What the daemon needs from the operating system: who is at the other end of a
//! Unix socket, whether that peer may read any process, the kernel checks the access
//! checker makes as a client, and where the socket lives.
//! The reader's own OS code is in `pyframe_reader::platform`.

use std::path::PathBuf;

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
    /// Linux: the peer runs in another user namespace than the daemon (`unshare -U`,
    /// rootless containers). The kernel judges the peer's own reads in that
    /// namespace, so its access checker runs there too (see `userns`). Always false
    /// on illumos.
    pub foreign_userns: bool,
    /// With `foreign_userns`: the namespace and the peer's ids and capabilities in
    /// it, as read at connect; `None` when they could not be told (then refused).
    pub userns: Option<ForeignNs>,
}

/// A peer in another user namespace, as it was when it connected (Linux).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ForeignNs {
    /// Device and inode of the namespace (`/proc/PID/ns/user`).
    pub ns: (u64, u64),
    /// The peer's effective uid and gid as seen inside it.
    pub uid: u32,
    pub gid: u32,
    /// Its effective and permitted capability sets (they count in that namespace
    /// and those below it only).
    pub cap_eff: u64,
    pub cap_prm: u64,
}

/// The interface every OS module provides, checked by the compiler on each OS (a missing
/// function or another signature fails that OS's build; `tools/check-illumos` builds
/// illumos here).
#[allow(dead_code)]
const INTERFACE: () = {
    use std::io;
    use std::os::fd::RawFd;
    let _: fn(RawFd) -> io::Result<PeerCred> = peer_credentials;
    let _: fn(u32, CheckMode) -> io::Result<()> = open_as_client;
    let _: fn() -> u32 = ptrace_scope;
    let _: fn(u32, u32) -> bool = is_descendant;
    let _: fn(u32) -> Option<u32> = parent_pid;
    let _: fn(u32) -> Vec<(u64, Hold)> = thread_holds;
    let _: fn() -> Option<u32> = stdin_pipe_maker;
    let _: fn(u32) -> ThreadStates = ThreadStates::new;
    let _: fn(&mut ThreadStates) -> std::collections::HashSet<u64> = ThreadStates::idle;
    let _: fn(u64) -> Option<u32> = pid_of_tid;
    let _: fn(u32) -> Option<String> = executable;
    let _: fn(u32) -> Vec<u32> = children;
    let _: fn(u32) -> Option<String> = command_line;
    let _: &str = DEFAULT_RUN_DIR;
};

/// What the OS says about one thread at one moment: whether something holds it still.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Stopped by a signal or a `/proc` stop (Linux `T`, illumos `PR_STOPPED`).
    Stopped,
    /// In a tracing stop under this tracer (Linux `t` with `TracerPid`; illumos reports
    /// a traced stop as `Stopped`).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    Traced(u32),
    /// Running, runnable or blocked: free to move on its own.
    Free,
}

/// Name of the socket inside the run directory.
pub const SOCKET_NAME: &str = "pystackd.sock";

/// `/run/pystackd/pystackd.sock` on Linux, `/var/run/pystackd/pystackd.sock` on illumos.
pub fn default_socket_path() -> PathBuf {
    PathBuf::from(DEFAULT_RUN_DIR).join(SOCKET_NAME)
}

/// Which kernel check the access checker makes for a client (see
/// `daemon::checker`): what the client's own direct read would trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CheckMode {
    /// Opening the target's memory (`/proc/PID/mem` on Linux: ptrace ATTACH mode;
    /// `/proc/PID/as` on illumos): the check of the direct read itself.
    Attach,
    /// Linux with Yama `ptrace_scope` = 1 only: `/proc/PID/environ` (ptrace READ mode,
    /// which Yama leaves alone). The checker is not the client's process, so Yama's
    /// "only ancestors" part is decided by the daemon (`is_descendant`).
    Read,
}

/// The kernel's answer to a checker's open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Allowed,
    Denied,
    /// ENOENT/ESRCH: gone, or invisible to that user (`/proc` mounted `hidepid=2`).
    NoSuchProcess,
}

impl Access {
    /// The answer for the result of an `open(2)`; other errors are the caller's.
    pub fn of(r: std::io::Result<()>) -> std::io::Result<Access> {
        match r {
            Ok(()) => Ok(Access::Allowed),
            Err(e) => match e.raw_os_error() {
                Some(libc::EACCES | libc::EPERM) => Ok(Access::Denied),
                Some(libc::ENOENT | libc::ESRCH) => Ok(Access::NoSuchProcess),
                _ => Err(e),
            },
        }
    }
}

/// Capability-like state of the calling process that differs from what a checker
/// may hold (`caps`: the effective and permitted sets it must have, Linux; nothing
/// otherwise), as `(name, value)` of each difference (empty: none).
pub fn held_privileges(caps: (u64, u64)) -> Vec<(String, String)> {
    held_privileges_impl(caps)
}

/// Every descendant of `pid` as (pid, parent pid), parents before their children, each
/// level in pid order; from every process's parent pid. Processes that end while listed
/// are left out; a cycle or an absurd tree cannot loop (each pid is taken once).
pub fn descendants(pid: u32) -> Vec<(u32, u32)> {
    let mut children: std::collections::BTreeMap<u32, Vec<u32>> = Default::default();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    for e in dir.flatten() {
        let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if let Some(pp) = parent_pid(p) {
            children.entry(pp).or_default().push(p);
        }
    }
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::from([pid]);
    let mut queue = std::collections::VecDeque::from([pid]);
    while let Some(p) = queue.pop_front() {
        let mut kids = children.remove(&p).unwrap_or_default();
        kids.sort_unstable();
        for k in kids {
            if seen.insert(k) {
                out.push((k, p));
                queue.push_back(k);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_results() {
        use std::io::Error;
        assert_eq!(Access::of(Ok(())).unwrap(), Access::Allowed);
        for e in [libc::EACCES, libc::EPERM] {
            assert_eq!(
                Access::of(Err(Error::from_raw_os_error(e))).unwrap(),
                Access::Denied
            );
        }
        for e in [libc::ENOENT, libc::ESRCH] {
            assert_eq!(
                Access::of(Err(Error::from_raw_os_error(e))).unwrap(),
                Access::NoSuchProcess
            );
        }
        assert!(Access::of(Err(Error::from_raw_os_error(libc::EIO))).is_err());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn kernel_check_of_own_and_missing_processes() {
        // this test process may open its own memory (ground truth: the kernel)
        assert_eq!(
            open_as_client(std::process::id(), CheckMode::Attach)
                .map(|_| ())
                .ok(),
            Some(())
        );
        assert_eq!(
            Access::of(open_as_client(u32::MAX - 1, CheckMode::Attach)).unwrap(),
            Access::NoSuchProcess
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
        #[cfg(target_os = "linux")]
        assert_eq!(peer.privileged, uid == 0);
        assert!(!peer.foreign_userns);
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
