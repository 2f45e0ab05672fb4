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
        // zones: the kernel's own check of the checker's open covers them
        foreign_userns: false,
        userns: None,
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

/// No Yama on illumos: the kernel's check of the checker's open is the whole policy.
pub fn ptrace_scope() -> u32 {
    0
}

/// Only asked for at a Yama scope of 1, which illumos never reports.
pub fn is_descendant(_pid: u32, _ancestor: u32) -> bool {
    false
}

// libc.so.1's privilege-set calls (privileges(7), setppriv(2)).
extern "C" {
    fn priv_str_to_set(
        buf: *const c_char,
        sep: *const c_char,
        end: *mut *const c_char,
    ) -> *mut c_void;
    fn priv_allocset() -> *mut c_void;
    fn priv_freeset(set: *mut c_void);
    fn priv_isequalset(a: *const c_void, b: *const c_void) -> c_int;
    fn setppriv(op: c_int, which: *const c_char, set: *const c_void) -> c_int;
    fn getppriv(which: *const c_char, set: *mut c_void) -> c_int;
}

/// `PRIV_SET` of `priv_op_t` in <sys/priv.h> (PRIV_ON, PRIV_OFF, PRIV_SET).
const PRIV_SET: c_int = 2;
const PRIV_SETS: [&[u8]; 4] = [b"Inheritable\0", b"Limit\0", b"Permitted\0", PRIV_EFFECTIVE];

/// An owned `priv_set_t`.
struct PrivSet(*mut c_void);

impl PrivSet {
    fn basic() -> Result<PrivSet, String> {
        // SAFETY: NUL-terminated strings; a NULL return is checked.
        let p = unsafe {
            priv_str_to_set(
                b"basic\0".as_ptr().cast(),
                b",\0".as_ptr().cast(),
                ptr::null_mut(),
            )
        };
        if p.is_null() {
            return Err(format!(
                "priv_str_to_set(basic): {}",
                io::Error::last_os_error()
            ));
        }
        Ok(PrivSet(p))
    }
}

impl Drop for PrivSet {
    fn drop(&mut self) {
        // SAFETY: allocated by libc's priv_*set, freed once.
        unsafe { priv_freeset(self.0) }
    }
}

/// In the access checker: become exactly `uid`/`gid` (supplementary groups: `gid`)
/// holding the `basic` privileges only, in every set. Not an empty set: the kernel's
/// `priv_proc_cred_perm` also wants the target's privileges to be a subset of the
/// opener's, so an empty set would be refused every ordinary process; `basic` is
/// what an ordinary user's process holds. Needs `proc_setid` in the daemon.
pub fn drop_to_user(
    uid: u32,
    gid: u32,
    _userns: Option<(libc::c_int, u64, u64)>,
) -> Result<(), String> {
    let os = |what: &str| format!("{what}: {}", io::Error::last_os_error());
    let gid_t = gid as libc::gid_t;
    // SAFETY: plain calls on this single-threaded process's credentials.
    unsafe {
        if libc::setgroups(1, &gid_t) != 0 {
            return Err(os("setgroups"));
        }
        if libc::setgid(gid_t) != 0 {
            return Err(os("setgid"));
        }
        if libc::setuid(uid as libc::uid_t) != 0 {
            return Err(os("setuid"));
        }
    }
    let basic = PrivSet::basic()?;
    for which in PRIV_SETS {
        // SAFETY: a valid set and a NUL-terminated set name.
        if unsafe { setppriv(PRIV_SET, which.as_ptr().cast(), basic.0) } != 0 {
            return Err(os("setppriv"));
        }
    }
    // SAFETY: plain getters.
    let ids = unsafe {
        (
            libc::getuid(),
            libc::geteuid(),
            libc::getgid(),
            libc::getegid(),
        )
    };
    if ids != (uid as _, uid as _, gid as _, gid as _) {
        return Err(format!("ids are {ids:?} after setuid({uid})/setgid({gid})"));
    }
    Ok(())
}

/// Privilege sets of this process that hold more than `basic`.
pub(super) fn held_privileges_impl(_caps: (u64, u64)) -> Vec<(String, String)> {
    let basic = match PrivSet::basic() {
        Ok(b) => b,
        Err(e) => return vec![("basic".into(), e)],
    };
    let mut held = Vec::new();
    for which in PRIV_SETS {
        let name = String::from_utf8_lossy(&which[..which.len() - 1]).into_owned();
        // SAFETY: a fresh set, filled by getppriv, compared, freed by PrivSet.
        let set = PrivSet(unsafe { priv_allocset() });
        if set.0.is_null() || unsafe { getppriv(which.as_ptr().cast(), set.0) } != 0 {
            held.push((name, "unreadable".into()));
        } else if unsafe { priv_isequalset(set.0, basic.0) } == 0 {
            held.push((name, "more or other than basic".into()));
        }
    }
    held
}

/// What the client's direct read would ask of the kernel, made by the checker as the
/// client: opening `/proc/PID/as` for reading (`priv_proc_cred_perm`: zone, ids,
/// privilege subset, set-id processes). Closed at once, nothing read. `Read` is a
/// Linux (Yama) mode and never asked here.
pub fn open_as_client(pid: u32, _mode: super::CheckMode) -> io::Result<()> {
    std::fs::File::open(format!("/proc/{pid}/as")).map(drop)
}

/// `PR_STOPPED` of `lwpstatus_t.pr_flags` (<sys/procfs.h>): the LWP is stopped.
const PR_STOPPED: i32 = 0x0000_0001;

/// Every LWP of `pid` with what holds it: `pr_flags` (the first `int` of
/// `/proc/PID/lwp/LWPID/lwpstatus`) says whether it is stopped. illumos does not name the
/// controlling process of a stop, so no LWP is reported as traced.
pub fn thread_holds(pid: u32) -> Vec<(u64, super::Hold)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/lwp")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in dir.flatten() {
        let Some(lwp) = e.file_name().to_str().and_then(|s| s.parse::<u64>().ok()) else {
            continue;
        };
        let Ok(b) = std::fs::read(format!("/proc/{pid}/lwp/{lwp}/lwpstatus")) else {
            continue;
        };
        let Some(flags) = b
            .get(..4)
            .map(|f| i32::from_ne_bytes([f[0], f[1], f[2], f[3]]))
        else {
            continue;
        };
        let hold = if flags & PR_STOPPED != 0 {
            super::Hold::Stopped
        } else {
            super::Hold::Free
        };
        out.push((lwp, hold));
    }
    out
}

/// illumos names no tracer of a stopped LWP, so a tracer's pipe proves nothing here.
pub fn stdin_pipe_maker() -> Option<u32> {
    None
}

/// The process a thread id belongs to: on illumos an LWP id is only unique inside its
/// process (every process has an LWP 1), so a bare thread id names no process.
pub fn pid_of_tid(_tid: u64) -> Option<u32> {
    None
}

/// Executable path as the kernel resolved it (`/proc/PID/path/a.out`).
pub fn executable(pid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/path/a.out"))
        .ok()
        .map(|p| p.display().to_string())
}

/// Default directory of the daemon's socket.
pub const DEFAULT_RUN_DIR: &str = "/var/run/pystackd";

/// `pr_sname` of LP64 `lwpsinfo_t` (after `pr_flag`, `pr_lwpid`, `pr_addr`, `pr_wchan`,
/// `pr_stype`, `pr_state`).
const LWPSINFO_SNAME: usize = 26;

/// LWPs of `pid` sleeping in the kernel (`pr_sname` `S`): idle for a profiler.
fn idle_threads(pid: u32) -> std::collections::HashSet<u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/lwp")) else {
        return Default::default();
    };
    dir.flatten()
        .filter_map(|e| {
            let lwp = e.file_name().to_str()?.parse::<u64>().ok()?;
            let b = std::fs::read(format!("/proc/{pid}/lwp/{lwp}/lwpsinfo")).ok()?;
            b.get(LWPSINFO_SNAME)
                .is_some_and(|&s| pyframe_reader::platform::state_is_asleep(s))
                .then_some(lwp)
        })
        .collect()
}

/// Which LWPs of a process are sleeping (`lwpsinfo` `pr_sname` `S`): idle for a profiler.
pub struct ThreadStates {
    pid: u32,
}

impl ThreadStates {
    pub fn new(pid: u32) -> Self {
        ThreadStates { pid }
    }

    /// The idle LWPs now.
    pub fn idle(&mut self) -> std::collections::HashSet<u64> {
        idle_threads(self.pid)
    }
}

/// The processes `pid` started that still run: every `/proc` entry whose `pr_ppid` is
/// `pid` (illumos has no per-process list of children).
pub fn children(pid: u32) -> Vec<u32> {
    let mut out: Vec<u32> = std::fs::read_dir("/proc")
        .map(|all| {
            all.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter(|&p| parent_pid(p) == Some(pid))
                .collect()
        })
        .unwrap_or_default();
    out.sort_unstable();
    out
}

/// The command line of `pid` as `ps` shows it (`pr_psargs` of `/proc/PID/psinfo`, the
/// first 80 bytes).
pub fn command_line(pid: u32) -> Option<String> {
    let b = std::fs::read(format!("/proc/{pid}/psinfo")).ok()?;
    let p = pyframe_reader::platform::illumos_procfs::parse_psinfo(&b)?;
    (!p.psargs.is_empty()).then_some(p.psargs)
}

/// `pr_ppid` of `/proc/PID/psinfo`.
pub(super) fn parent_pid(pid: u32) -> Option<u32> {
    let b = std::fs::read(format!("/proc/{pid}/psinfo")).ok()?;
    pyframe_reader::platform::illumos_procfs::parse_psinfo(&b).map(|p| p.ppid)
}
