//! Linux: `SO_PEERCRED`; privilege is uid 0 as `SO_PEERCRED` reports it; Yama's
//! `ptrace_scope`.

use std::io;
use std::os::fd::RawFd;

use super::PeerCred;

/// Credentials the kernel recorded for the peer of a connected Unix socket.
pub fn peer_credentials(fd: RawFd) -> io::Result<PeerCred> {
    let mut uc = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `uc` and `len` are valid for writes of the sizes passed.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut uc as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let pid = u32::try_from(uc.pid).ok().filter(|&p| p > 0);
    let (foreign_userns, userns) = match (pid, own_user_namespace()) {
        (Some(p), Some(own)) => match peer_user_namespace(fd, p, uc.uid, uc.gid, own) {
            Ok(None) => (false, None),
            Ok(Some(ns)) => (true, Some(ns)),
            // could not tell: judged foreign (and refused, having no namespace)
            Err(()) => (true, None),
        },
        // a peer in another pid namespace (pid 0) is judged by its uid alone
        _ => (false, None),
    };
    Ok(PeerCred {
        uid: uc.uid,
        gid: uc.gid,
        pid,
        privileged: is_privileged_uid(uc.uid) && !foreign_userns,
        foreign_userns,
        userns,
    })
}

/// `SO_PEERPIDFD` (Linux 6.5+) on the architectures where it is 77.
const SO_PEERPIDFD: Option<libc::c_int> = if cfg!(any(
    target_arch = "x86_64",
    target_arch = "x86",
    target_arch = "aarch64",
    target_arch = "arm",
    target_arch = "riscv64",
    target_arch = "loongarch64",
    target_arch = "s390x"
)) {
    Some(77)
} else {
    None
};

fn ns_identity(path: &str) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

fn own_user_namespace() -> Option<(u64, u64)> {
    ns_identity("/proc/self/ns/user")
}

/// The user namespace of the peer process `pid` if it is not `own`, with the peer's
/// ids in it (its `uid`/`gid` as the daemon sees them, translated through the
/// namespace's maps) and its capability sets. Read through `/proc/PID`; with
/// `SO_PEERPIDFD` (Linux 6.5+) the pid is known to be the peer's own as long as its
/// pidfd shows it running after the reads (a pid is not reused before its process
/// is reaped); without (older kernels), a peer that exited right after connecting
/// could have its pid reused in between. `Err` when anything cannot be read.
fn peer_user_namespace(
    fd: RawFd,
    pid: u32,
    uid: u32,
    gid: u32,
    own: (u64, u64),
) -> Result<Option<super::ForeignNs>, ()> {
    use std::os::fd::FromRawFd;
    let pidfd = SO_PEERPIDFD.and_then(|opt| {
        let mut pfd: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `pfd` and `len` are valid for writes of the sizes passed.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&mut pfd as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        // SAFETY: a fresh descriptor that nothing else owns.
        (rc == 0 && pfd >= 0).then(|| {
            pyframe_reader::platform::ProcessHandle::from_fd(unsafe {
                std::os::fd::OwnedFd::from_raw_fd(pfd)
            })
        })
    });
    let ns = ns_identity(&format!("/proc/{pid}/ns/user")).ok_or(())?;
    let result = if ns == own {
        None
    } else {
        let map = |what: &str, id: u32| -> Result<u32, ()> {
            let text = std::fs::read_to_string(format!("/proc/{pid}/{what}")).map_err(|_| ())?;
            inner_id(&text, id).ok_or(())
        };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|_| ())?;
        let cap = |name: &str| -> Result<u64, ()> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
                .ok_or(())
        };
        Some(super::ForeignNs {
            ns,
            uid: map("uid_map", uid)?,
            gid: map("gid_map", gid)?,
            cap_eff: cap("CapEff")?,
            cap_prm: cap("CapPrm")?,
        })
    };
    // still the peer (and still in that namespace) after the reads
    let still = ns_identity(&format!("/proc/{pid}/ns/user")) == Some(ns);
    match pidfd {
        Some(h) if h.exited() => Err(()),
        _ if !still => Err(()),
        _ => Ok(result),
    }
}

/// The id inside a user namespace of `outer` (an id of the reader's namespace), from
/// the namespace's `uid_map`/`gid_map` text as read from outside it
/// (`inside outside count` lines).
fn inner_id(map: &str, outer: u32) -> Option<u32> {
    map.lines().find_map(|l| {
        let mut f = l.split_whitespace().map(|v| v.parse::<u64>().ok());
        let (inside, outside, count) = (f.next()??, f.next()??, f.next()??);
        let o = u64::from(outer);
        (outside <= o && o < outside + count)
            .then(|| u32::try_from(inside + (o - outside)).ok())
            .flatten()
    })
}

/// Privilege is decided from the credentials the kernel captured at connect time
/// only, and only by the uid: `SO_PEERCRED` translates it into the daemon's user
/// namespace, so root of a user namespace (`unshare -U -r`) is its unprivileged
/// outer uid here. Capabilities are not looked at: `CapEff` in `/proc/PID/status` is
/// relative to the peer's own user namespace, and reading it by pid after connect
/// races pid reuse and exec. A non-root client holding CAP_SYS_PTRACE is therefore
/// served as an ordinary user.
fn is_privileged_uid(uid: u32) -> bool {
    uid == 0
}

/// In the access checker, before it answers anything: become exactly `uid`/`gid`
/// (supplementary groups: just `gid`), with no capabilities and no way to regain any.
/// From root, `setresuid` to a non-zero uid clears the permitted, effective and
/// ambient sets; a daemon running as another uid with capabilities (systemd's
/// `DynamicUser=` with `AmbientCapabilities=CAP_SETUID CAP_SETGID ...`) keeps them
/// across that call, so they are set explicitly too. The caller then checks with
/// [`held_privileges`](super::held_privileges) that it really holds nothing more.
///
/// `userns` (fd, effective, permitted): a checker for a client of another user
/// namespace, which it finds open as that fd and enters first (`setns`, after emptying its supplementary
/// groups, which that namespace may not let it set); `uid`/`gid` are the client's
/// ids there, and it keeps the client's (effective, permitted) capabilities there,
/// as the kernel counts them for the client's own reads. Entering after exec keeps
/// the process image the daemon's namespace's: the client, privileged in its own,
/// cannot ptrace the (non-dumpable) checker.
pub fn drop_to_user(
    uid: u32,
    gid: u32,
    userns: Option<(libc::c_int, u64, u64)>,
) -> Result<(), String> {
    let os = |what: &str| format!("{what}: {}", io::Error::last_os_error());
    // SAFETY: plain syscalls on this single-threaded process's credentials.
    unsafe {
        if let Some((fd, _, _)) = userns {
            if libc::setgroups(0, std::ptr::null()) != 0 {
                return Err(os("setgroups"));
            }
            if libc::setns(fd, libc::CLONE_NEWUSER) != 0 {
                return Err(os("setns"));
            }
            libc::close(fd);
        } else if libc::setgroups(1, &gid) != 0 {
            return Err(os("setgroups"));
        }
        if libc::setresgid(gid, gid, gid) != 0 {
            return Err(os("setresgid"));
        }
        if libc::setresuid(uid, uid, uid) != 0 {
            return Err(os("setresuid"));
        }
        // (a uid change makes it so already; said explicitly, and checked below)
        if libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 {
            return Err(os("prctl(PR_SET_DUMPABLE)"));
        }
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(os("prctl(PR_SET_NO_NEW_PRIVS)"));
        }
        // (EINVAL: a kernel before 4.3 has no ambient set)
        if libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        ) != 0
            && io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL)
        {
            return Err(os("prctl(PR_CAP_AMBIENT_CLEAR_ALL)"));
        }
        if libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) != 0 {
            return Err("still dumpable".into());
        }
    }
    let caps = userns.map_or((0, 0), |(_, eff, prm)| (eff, prm));
    set_capabilities(caps).map_err(|e| format!("capset: {e}"))?;
    let (mut r, mut e, mut s) = (0, 0, 0);
    // SAFETY: three valid out-pointers each time.
    unsafe { libc::getresuid(&mut r, &mut e, &mut s) };
    if (r, e, s) != (uid, uid, uid) {
        return Err(format!("uids are {r}/{e}/{s} after setresuid({uid})"));
    }
    unsafe { libc::getresgid(&mut r, &mut e, &mut s) };
    if (r, e, s) != (gid, gid, gid) {
        return Err(format!("gids are {r}/{e}/{s} after setresgid({gid})"));
    }
    Ok(())
}

/// Set the (effective, permitted) capability sets, the inheritable one empty (only
/// lowering them is allowed, and that is all the checker does). `capset(2)` through
/// the raw syscall: the libc crate has no wrapper.
fn set_capabilities((eff, prm): (u64, u64)) -> io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let word = |v: u64, i: u32| (v >> (32 * i)) as u32;
    let data = [0, 1].map(|i| Data {
        effective: word(eff, i),
        permitted: word(prm, i),
        inheritable: 0,
    });
    // SAFETY: a valid v3 header and the two data words v3 reads.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Capability sets of this process other than `(eff, prm)` expected (`CapEff`,
/// `CapPrm`; `CapAmb` and `CapInh` must be empty) in `/proc/self/status`; an
/// unreadable file counts as holding something.
pub(super) fn held_privileges_impl((eff, prm): (u64, u64)) -> Vec<(String, String)> {
    let status = match std::fs::read_to_string("/proc/self/status") {
        Ok(s) => s,
        Err(e) => return vec![("/proc/self/status".into(), e.to_string())],
    };
    let mut held = Vec::new();
    for (name, want) in [
        ("CapPrm", prm),
        ("CapEff", eff),
        ("CapAmb", 0),
        ("CapInh", 0),
    ] {
        let v = status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim);
        match v.map(|v| u64::from_str_radix(v, 16)) {
            Some(Ok(got)) if got == want => {}
            // (CapAmb is absent before Linux 4.3: nothing held there)
            None if name == "CapAmb" => {}
            _ => held.push((name.to_string(), v.unwrap_or("missing").to_string())),
        }
    }
    held
}

/// What the client's direct read would ask of the kernel, made by the checker as the
/// client: opening `/proc/PID/mem` runs `ptrace_may_access` in ATTACH mode (uids,
/// gids, dumpable, capability subset, user namespaces, Yama, LSMs); `environ` runs it
/// in READ mode. The file is closed at once, nothing is read.
pub fn open_as_client(pid: u32, mode: super::CheckMode) -> io::Result<()> {
    let what = match mode {
        super::CheckMode::Attach => "mem",
        super::CheckMode::Read => "environ",
    };
    std::fs::File::open(format!("/proc/{pid}/{what}")).map(drop)
}

/// Yama's `/proc/sys/kernel/yama/ptrace_scope`: 0 when Yama is not built in (the file
/// is absent); an unreadable or unknown value counts as the strictest, 3.
pub fn ptrace_scope() -> u32 {
    match std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope") {
        Ok(s) => s
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|&v| v <= 3)
            .unwrap_or(3),
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(_) => 3,
    }
}

/// Whether `ancestor` is on the parent chain of `pid` (the chain is walked through
/// `/proc/PID/stat` up to pid 1). Any read or parse failure, or a chain longer than
/// any real one, answers `false`.
pub fn is_descendant(pid: u32, ancestor: u32) -> bool {
    const MAX_DEPTH: usize = 4096;
    if ancestor == 0 || pid == ancestor {
        return false;
    }
    let mut cur = pid;
    for _ in 0..MAX_DEPTH {
        let Some(ppid) = parent_pid(cur) else {
            return false;
        };
        if ppid == ancestor {
            return true;
        }
        if ppid <= 1 {
            return false;
        }
        cur = ppid;
    }
    false
}

/// The 4th field of `/proc/PID/stat`, after the parenthesised command name (which
/// may itself hold spaces and parentheses, hence the last `)`).
pub(super) fn parent_pid(pid: u32) -> Option<u32> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Every thread of `pid` with what holds it, from `/proc/PID/task/TID/{stat,status}`.
/// Threads that vanish while listed are left out; an unreadable process gives nothing.
pub fn thread_holds(pid: u32) -> Vec<(u64, super::Hold)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in dir.flatten() {
        let Some(tid) = e.file_name().to_str().and_then(|s| s.parse::<u64>().ok()) else {
            continue;
        };
        let base = format!("/proc/{pid}/task/{tid}");
        let Ok(stat) = std::fs::read(format!("{base}/stat")) else {
            continue;
        };
        let Some(state) = stat
            .iter()
            .rposition(|&b| b == b')')
            .and_then(|c| stat.get(c + 2).copied())
        else {
            continue;
        };
        let hold = match state {
            b'T' => super::Hold::Stopped,
            b't' => {
                let tracer = std::fs::read_to_string(format!("{base}/status"))
                    .ok()
                    .and_then(|s| {
                        s.lines()
                            .find_map(|l| l.strip_prefix("TracerPid:"))
                            .and_then(|v| v.trim().parse::<u32>().ok())
                    })
                    .unwrap_or(0);
                if tracer == 0 {
                    // a tracing stop whose tracer just left: held by nobody we know
                    super::Hold::Stopped
                } else {
                    super::Hold::Traced(tracer)
                }
            }
            _ => super::Hold::Free,
        };
        out.push((tid, hold));
    }
    out
}

/// The process that handed this one its standard input as a pipe, when it is a tracer's
/// `pipe` command (gdb: `pipe thread apply all bt | pystackd annotate`): following our
/// parents while their own standard input is the same pipe (the shell gdb starts), the
/// first one whose standard input is something else made the pipe. `None` when standard
/// input is no pipe or the chain cannot be read.
pub fn stdin_pipe_maker() -> Option<u32> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    const MAX_CHAIN: usize = 8;
    let ours = std::fs::metadata("/proc/self/fd/0").ok()?;
    if !ours.file_type().is_fifo() {
        return None;
    }
    let mut cur = std::process::id();
    for _ in 0..MAX_CHAIN {
        let parent = parent_pid(cur)?;
        if parent <= 1 {
            return None;
        }
        match std::fs::metadata(format!("/proc/{parent}/fd/0")) {
            Ok(m) if m.dev() == ours.dev() && m.ino() == ours.ino() => cur = parent,
            _ => return Some(parent),
        }
    }
    None
}

/// The process a thread id belongs to (`Tgid:` of `/proc/TID/status`; Linux thread ids
/// are unique system-wide), `None` if no such thread exists.
pub fn pid_of_tid(tid: u64) -> Option<u32> {
    let tid = u32::try_from(tid).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
        .filter(|&p: &u32| p != 0)
}

/// Executable path as the kernel reports it (the loader when started via `ld.so`).
pub fn executable(pid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(|p| p.display().to_string())
}

/// The processes `pid` started that still run (its threads' `/proc/PID/task/TID/children`;
/// a kernel without that file: every process whose parent is `pid`, from `/proc`).
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut found_file = false;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let path = t.path().join("children");
            if let Ok(text) = std::fs::read_to_string(&path) {
                found_file = true;
                out.extend(
                    text.split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
        }
    }
    if !found_file {
        if let Ok(all) = std::fs::read_dir("/proc") {
            out.extend(
                all.flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                    .filter(|&p| parent_pid(p) == Some(pid)),
            );
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// The command line of `pid`, its arguments joined by spaces (`/proc/PID/cmdline`).
pub fn command_line(pid: u32) -> Option<String> {
    let b = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let text: Vec<String> = b
        .split(|&c| c == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    (!text.is_empty()).then(|| text.join(" "))
}

/// Default directory of the daemon's socket.
pub const DEFAULT_RUN_DIR: &str = "/run/pystackd";

/// Which threads of a process are asleep in the kernel (`S` sleeping, `D` uninterruptible:
/// I/O, locks, sleeps, the GIL): idle for a profiler, the threads `stack` shows `blocked` or
/// `waiting_for_gil` (`pyframe_reader::platform::state_is_asleep`, one classification). Asked once per sample, so each thread's
/// `/proc/PID/task/TID/stat` stays open and is read again from its start (opening it anew
/// and listing the task directory each time was a third of `record`'s CPU per sample); the
/// list of threads is refreshed every [`ThreadStates::RELIST`]: a thread newer than that
/// counts as not idle (kept, never left out unseen).
pub struct ThreadStates {
    pid: u32,
    files: std::collections::HashMap<u64, std::fs::File>,
    listed: Option<std::time::Instant>,
}

impl ThreadStates {
    pub const RELIST: std::time::Duration = std::time::Duration::from_millis(100);

    pub fn new(pid: u32) -> Self {
        ThreadStates {
            pid,
            files: Default::default(),
            listed: None,
        }
    }

    /// The idle threads now.
    pub fn idle(&mut self) -> std::collections::HashSet<u64> {
        use std::os::unix::fs::FileExt;
        if self.listed.is_none_or(|t| t.elapsed() >= Self::RELIST) {
            self.relist();
        }
        let mut buf = [0u8; 512];
        let mut idle = std::collections::HashSet::new();
        self.files.retain(|&tid, f| {
            // a thread that has exited reads as an error (ESRCH): forget it
            let Ok(n) = f.read_at(&mut buf, 0) else {
                return false;
            };
            let stat = &buf[..n];
            if let Some(close) = stat.iter().rposition(|&b| b == b')') {
                if stat
                    .get(close + 2)
                    .is_some_and(|&l| pyframe_reader::platform::state_is_asleep(l))
                {
                    idle.insert(tid);
                }
            }
            true
        });
        idle
    }

    fn relist(&mut self) {
        self.listed = Some(std::time::Instant::now());
        let Ok(dir) = std::fs::read_dir(format!("/proc/{}/task", self.pid)) else {
            self.files.clear();
            return;
        };
        let now: std::collections::HashSet<u64> = dir
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok())
            .collect();
        self.files.retain(|tid, _| now.contains(tid));
        for tid in now {
            if let std::collections::hash_map::Entry::Vacant(e) = self.files.entry(tid) {
                if let Ok(f) = std::fs::File::open(format!("/proc/{}/task/{tid}/stat", self.pid)) {
                    e.insert(f);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_process_of_a_thread() {
        let pid = std::process::id();
        assert_eq!(super::pid_of_tid(u64::from(pid)), Some(pid));
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let h = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tx.send(unsafe { libc::gettid() } as u64).unwrap();
            let _ = done_rx.recv();
        });
        let tid = rx.recv().unwrap();
        assert_eq!(super::pid_of_tid(tid), Some(pid));
        drop(done_tx);
        h.join().unwrap();
        assert_eq!(super::pid_of_tid(u64::MAX), None);
    }

    #[test]
    fn ids_inside_a_namespace() {
        // unshare -U -r by uid 1000: "0 1000 1"; a rootless container's range
        let map = "         0       1000          1\n         1     100000      65536\n";
        assert_eq!(super::inner_id(map, 1000), Some(0));
        assert_eq!(super::inner_id(map, 100000), Some(1));
        assert_eq!(super::inner_id(map, 165535), Some(65536));
        assert_eq!(super::inner_id(map, 165536), None);
        assert_eq!(super::inner_id(map, 0), None);
        assert_eq!(super::inner_id("", 5), None);
    }
}
