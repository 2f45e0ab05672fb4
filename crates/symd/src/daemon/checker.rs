//! Access checkers: the kernel decides what a non-root client may read.
//!
//! The daemon reads every process with its own privileges, so for a client that is
//! not privileged it first asks a checker: a process running with exactly the
//! client's uid and gid and no privileges (the daemon's own binary, exec'd as
//! `pystackd __access-check UID GID`, never a fork of the multi-threaded daemon). For
//! each pid the checker opens what the client's own direct read would open
//! (`/proc/PID/mem` on Linux, `/proc/PID/as` on illumos) and reports the kernel's
//! answer: allowed, denied, or no such process (which is also what a process hidden
//! from that user by `hidepid=2` looks like). With Yama `ptrace_scope` = 1 it opens
//! `/proc/PID/environ` (READ mode) instead and the daemon adds Yama's ancestry rule:
//! the only part of the decision written by hand.
//!
//! One checker per client uid, at most `max_access_checkers` (least recently used
//! ones are ended), ended after [`IDLE`] without use; a dead one is respawned, one that
//! does not answer within [`QUERY_TIMEOUT`] is killed. Answers are cached for [`TTL`]
//! per (uid, pid, start time, mode).
//!
//! Line protocol on the checker's stdin/stdout: it first writes `ok` (or `fail REASON`
//! and exits); then for each `attach PID` / `read PID` it answers `allowed`, `denied`,
//! `gone` or `error REASON`. Stdin closing ends it.

use std::collections::HashMap;
use std::io::{self, BufRead, Read, Write};
use std::os::fd::AsRawFd;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::platform::{self, Access, CheckMode, ForeignNs};

/// How long an answer is reused (per uid, pid, start time and mode).
pub const TTL: Duration = Duration::from_secs(1);
/// A checker unused for this long is ended.
pub const IDLE: Duration = Duration::from_secs(60);
/// A checker must answer a query within this.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// A new checker must be ready within this (exec, credential change).
pub const SPAWN_TIMEOUT: Duration = Duration::from_secs(5);
/// Most cached answers.
const MAX_ANSWERS: usize = 16384;
/// A uid no checker could be started for is refused for this long without trying
/// again (a daemon without the privilege to change uids would otherwise start a
/// process for every request).
const RETRY_UNAVAILABLE: Duration = Duration::from_secs(5);

/// The hidden subcommand that runs a checker.
pub const SUBCOMMAND: &str = "__access-check";

/// Why no answer could be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    /// The checker could not be set up as that user (e.g. the daemon lacks the
    /// privilege to change uid): the daemon cannot serve this uid at all.
    #[error("the daemon cannot check access as uid {uid}: {reason}")]
    Unavailable { uid: u32, reason: String },
    /// It died or did not answer in time (it was killed; the next request respawns it).
    #[error("the access check as uid {uid} failed: {reason}; retry")]
    Failed { uid: u32, reason: String },
}

/// A running checker process: ended (killed and reaped) on drop.
struct Proc {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    /// Bytes read past the last line.
    pending: Vec<u8>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn spawn(id: CheckerId, client_pid: Option<u32>) -> Result<Proc, CheckError> {
        let uid = id.uid;
        let unavailable = |reason: String| CheckError::Unavailable { uid, reason };
        // `/proc/self/exe`: this very binary, even if the file was replaced since.
        #[cfg(target_os = "linux")]
        let exe = std::path::PathBuf::from("/proc/self/exe");
        #[cfg(not(target_os = "linux"))]
        let exe = std::env::current_exe().map_err(|e| unavailable(format!("own path: {e}")))?;
        let mut cmd = Command::new(exe);
        cmd.arg(SUBCOMMAND)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // its complaints land in the daemon's log
            .stderr(Stdio::inherit());
        // (held open until the child has exec'd)
        let _ns_file = match id.ns {
            None => {
                cmd.arg(id.uid.to_string()).arg(id.gid.to_string());
                None
            }
            Some(ns) => Some(enter_namespace(&mut cmd, ns, client_pid).map_err(unavailable)?),
        };
        let mut child = cmd
            .spawn()
            .map_err(|e| unavailable(format!("starting a checker: {e}")))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(unavailable("checker without pipes".into()));
        };
        let mut p = Proc {
            child,
            stdin,
            stdout,
            pending: Vec::new(),
        };
        match p.read_line(SPAWN_TIMEOUT) {
            Ok(l) if l == "ok" => Ok(p),
            Ok(l) => Err(unavailable(
                l.strip_prefix("fail ").unwrap_or(&l).to_string(),
            )),
            Err(e) => Err(unavailable(format!("checker did not start: {e}"))),
        }
    }

    /// The checker's answer; `Ok(Err(_))` when it reported an error of the open
    /// other than a refusal or absence (it is fine, the query failed).
    fn ask(&mut self, pid: u32, mode: CheckMode) -> io::Result<Result<Access, String>> {
        let verb = match mode {
            CheckMode::Attach => "attach",
            CheckMode::Read => "read",
        };
        // a few bytes into an empty pipe: never blocks
        writeln!(self.stdin, "{verb} {pid}")?;
        let line = self.read_line(QUERY_TIMEOUT)?;
        match line.as_str() {
            "allowed" => Ok(Ok(Access::Allowed)),
            "denied" => Ok(Ok(Access::Denied)),
            "gone" => Ok(Ok(Access::NoSuchProcess)),
            other => match other.strip_prefix("error ") {
                Some(e) => Ok(Err(format!("opening the process's memory: {e}"))),
                None => Err(io::Error::other(format!(
                    "checker answered `{}`",
                    other.escape_debug()
                ))),
            },
        }
    }

    /// One line of the checker's output, waiting at most `limit` in all.
    fn read_line(&mut self, limit: Duration) -> io::Result<String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(i) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=i).collect();
                return Ok(String::from_utf8_lossy(&line[..i]).into_owned());
            }
            if self.pending.len() > 4096 {
                return Err(io::Error::other("checker wrote an overlong line"));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no answer within {limit:?}"),
                ));
            }
            let mut p = libc::pollfd {
                fd: self.stdout.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = left.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut p, 1, ms) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                continue;
            }
            let mut buf = [0u8; 256];
            match self.stdout.read(&mut buf) {
                Ok(0) => return Err(io::Error::other("checker exited")),
                Ok(k) => self.pending.extend_from_slice(&buf[..k]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// Make `cmd` a checker for the client's user namespace `ns` (Linux): the namespace
/// is opened through the client's pid and checked to be the one it had at connect,
/// and handed to the child as an inherited fd; the checker enters it itself after exec
/// (`platform::drop_to_user`). Not before exec: the process image must belong to
/// the daemon's namespace, or the client, privileged in its own namespace, could
/// ptrace the checker and forge its answers.
#[cfg(target_os = "linux")]
fn enter_namespace(
    cmd: &mut Command,
    ns: ForeignNs,
    client_pid: Option<u32>,
) -> Result<std::fs::File, String> {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;
    let pid = client_pid.ok_or("the client's pid is unknown")?;
    let f = std::fs::File::open(format!("/proc/{pid}/ns/user"))
        .map_err(|e| format!("the client's user namespace: {e}"))?;
    let m = f
        .metadata()
        .map_err(|e| format!("the client's user namespace: {e}"))?;
    if (m.dev(), m.ino()) != ns.ns {
        return Err("the client's user namespace is no longer its pid's".into());
    }
    let fd = f.as_raw_fd();
    cmd.arg(ns.uid.to_string())
        .arg(ns.gid.to_string())
        .arg("--userns")
        .arg(format!("{fd}:{:x}:{:x}", ns.cap_eff, ns.cap_prm));
    // SAFETY: between fork and exec, one async-signal-safe call on the child's copy
    // of an fd that stays open in the parent until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            // kept across exec (only this one)
            if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(f)
}

#[cfg(not(target_os = "linux"))]
fn enter_namespace(
    _cmd: &mut Command,
    _ns: ForeignNs,
    _client_pid: Option<u32>,
) -> Result<std::fs::File, String> {
    Err("user namespaces are a Linux matter".into())
}

/// Whom a checker answers for: a client uid and gid, and for a client of another
/// user namespace (Linux) that namespace with the client's ids and capabilities in
/// it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CheckerId {
    pub uid: u32,
    pub gid: u32,
    pub ns: Option<ForeignNs>,
}

/// The checker of one uid (its process is started on first use and after a failure).
struct Slot {
    id: CheckerId,
    proc: Mutex<Option<Proc>>,
    last_used: Mutex<Instant>,
    /// The last failure to start one, and when.
    unavailable: Mutex<Option<(Instant, CheckError)>>,
}

impl Slot {
    fn touch(&self) {
        *lock(&self.last_used) = Instant::now();
    }
    fn last_used(&self) -> Instant {
        *lock(&self.last_used)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // short critical sections that cannot leave the data half-changed
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// (checker, pid, start time, mode): the kernel's answer depends on the gid and the
/// namespace too.
type AnswerKey = (CheckerId, u32, u64, CheckMode);

/// The daemon's checkers and their recent answers.
#[derive(Default)]
pub struct Checkers {
    slots: Mutex<HashMap<CheckerId, Arc<Slot>>>,
    answers: Mutex<HashMap<AnswerKey, (Instant, Access)>>,
}

impl Checkers {
    /// The kernel's answer for the client `id` (whose pid, if known, is
    /// `client_pid`) opening process `pid` (which started at `start_time`) in `mode`;
    /// `max` bounds the number of checkers.
    pub fn check(
        &self,
        id: CheckerId,
        client_pid: Option<u32>,
        pid: u32,
        start_time: u64,
        mode: CheckMode,
        max: usize,
    ) -> Result<Access, CheckError> {
        let key = (id, pid, start_time, mode);
        if let Some(&(at, a)) = lock(&self.answers).get(&key) {
            if at.elapsed() < TTL {
                return Ok(a);
            }
        }
        let answer = self.ask(id, client_pid, pid, mode, max)?;
        let mut answers = lock(&self.answers);
        if answers.len() >= MAX_ANSWERS {
            answers.retain(|_, (at, _)| at.elapsed() < TTL);
            if answers.len() >= MAX_ANSWERS {
                answers.clear();
            }
        }
        answers.insert(key, (Instant::now(), answer));
        Ok(answer)
    }

    /// The cached answer, if fresh (lets callers on async workers avoid the checker).
    pub fn cached(
        &self,
        id: CheckerId,
        pid: u32,
        start_time: u64,
        mode: CheckMode,
    ) -> Option<Access> {
        lock(&self.answers)
            .get(&(id, pid, start_time, mode))
            .filter(|(at, _)| at.elapsed() < TTL)
            .map(|&(_, a)| a)
    }

    fn slot(&self, id: CheckerId, max: usize) -> Arc<Slot> {
        let mut ended = Vec::new();
        let s = self.slot_locked(id, max, &mut ended);
        // (ending a checker waits for it: not under the lock)
        drop(ended);
        s
    }

    fn slot_locked(&self, id: CheckerId, max: usize, ended: &mut Vec<Arc<Slot>>) -> Arc<Slot> {
        let mut slots = lock(&self.slots);
        if let Some(s) = slots.get(&id) {
            s.touch();
            return s.clone();
        }
        // over the cap: end the least recently used (a query running on it finishes)
        while slots.len() >= max.max(1) {
            let Some(oldest) = slots
                .iter()
                .min_by_key(|(_, s)| s.last_used())
                .map(|(&u, _)| u)
            else {
                break;
            };
            debug!(
                uid = oldest.uid,
                "ending the least recently used access checker"
            );
            ended.extend(slots.remove(&oldest));
        }
        let s = Arc::new(Slot {
            id,
            proc: Mutex::new(None),
            last_used: Mutex::new(Instant::now()),
            unavailable: Mutex::new(None),
        });
        slots.insert(id, s.clone());
        s
    }

    /// A new checker for `slot`, or the reason none could be started (remembered
    /// for [`RETRY_UNAVAILABLE`]).
    fn spawn(slot: &Slot, client_pid: Option<u32>) -> Result<Proc, CheckError> {
        let uid = slot.id.uid;
        if let Some((at, e)) = &*lock(&slot.unavailable) {
            if at.elapsed() < RETRY_UNAVAILABLE {
                return Err(e.clone());
            }
        }
        let r = Proc::spawn(slot.id, client_pid);
        match &r {
            Ok(_) => {
                info!(
                    uid,
                    gid = slot.id.gid,
                    userns = slot.id.ns.is_some(),
                    "access checker started"
                );
                *lock(&slot.unavailable) = None;
            }
            Err(e) => {
                warn!("{e}");
                *lock(&slot.unavailable) = Some((Instant::now(), e.clone()));
            }
        }
        r
    }

    fn ask(
        &self,
        id: CheckerId,
        client_pid: Option<u32>,
        pid: u32,
        mode: CheckMode,
        max: usize,
    ) -> Result<Access, CheckError> {
        let uid = id.uid;
        let slot = self.slot(id, max);
        // one query at a time per checker; a hung one holds this at most QUERY_TIMEOUT
        let mut proc = lock(&slot.proc);
        let fresh = proc.is_none();
        if fresh {
            *proc = Some(Self::spawn(&slot, client_pid)?);
        }
        let p = proc.as_mut().expect("just set");
        let first = p.ask(pid, mode);
        let result = match first {
            Ok(a) => Ok(a),
            // a checker that died since its last answer (idle-killed, killed by its
            // user): once more with a new one; a timeout is not retried
            Err(e) if !fresh && e.kind() != io::ErrorKind::TimedOut => {
                debug!(uid, "access checker lost ({e}); starting another");
                *proc = None;
                let mut p = Self::spawn(&slot, client_pid)?;
                let r = p.ask(pid, mode);
                *proc = Some(p);
                r
            }
            Err(e) => Err(e),
        };
        slot.touch();
        match result {
            Ok(Ok(a)) => Ok(a),
            Ok(Err(reason)) => Err(CheckError::Failed { uid, reason }),
            Err(e) => {
                warn!(uid, "access checker failed: {e}; ending it");
                *proc = None;
                Err(CheckError::Failed {
                    uid,
                    reason: e.to_string(),
                })
            }
        }
    }

    /// End checkers idle for `idle` (not one answering right now).
    pub fn reap_idle(&self, idle: Duration) {
        let mut slots = lock(&self.slots);
        let idle_uids: Vec<CheckerId> = slots
            .iter()
            .filter(|(_, s)| s.last_used().elapsed() >= idle && s.proc.try_lock().is_ok())
            .map(|(&u, _)| u)
            .collect();
        let ended: Vec<_> = idle_uids
            .into_iter()
            .filter_map(|u| {
                debug!(uid = u.uid, "ending an idle access checker");
                slots.remove(&u)
            })
            .collect();
        drop(slots);
        // (ending a checker waits for it: not under the lock)
        drop(ended);
        lock(&self.answers).retain(|_, (at, _)| at.elapsed() < TTL);
    }

    /// How many checkers are running (`status`).
    pub fn running(&self) -> usize {
        lock(&self.slots)
            .values()
            .filter(|s| s.proc.try_lock().map(|p| p.is_some()).unwrap_or(true))
            .count()
    }
}

/// `pystackd __access-check UID GID [--userns FD:EFF:PRM]`: the checker process (see
/// the module docs). With `--userns` it is for a client of another user namespace,
/// open as FD, which it enters; the ids are the client's there, and it keeps the
/// client's capability sets there (hexadecimal, as in `/proc/PID/status`).
pub fn child_main(uid: u32, gid: u32, userns: Option<&str>) -> ExitCode {
    let mut out = io::stdout().lock();
    let fail = |out: &mut io::StdoutLock, why: String| {
        eprintln!("pystackd access checker for uid {uid}: {why}");
        let _ = writeln!(out, "fail {why}");
        let _ = out.flush();
        ExitCode::from(crate::exit::FAILURE)
    };
    let ns = match userns.map(parse_userns) {
        None => None,
        Some(Some(c)) => Some(c),
        Some(None) => return fail(&mut out, format!("bad --userns `{}`", userns.unwrap_or(""))),
    };
    let caps = ns.map(|(_, eff, prm)| (eff, prm));
    // uid 0 only as root of a client's own namespace, never the daemon's root
    if uid == 0 && caps.is_none() {
        return fail(&mut out, "refusing to run as uid 0".into());
    }
    if let Err(e) = platform::drop_to_user(uid, gid, ns) {
        return fail(&mut out, e);
    }
    let held = platform::held_privileges(caps.unwrap_or((0, 0)));
    if !held.is_empty() {
        let list: Vec<String> = held.iter().map(|(k, v)| format!("{k} {v}")).collect();
        return fail(
            &mut out,
            format!(
                "holds other privileges than it may after the switch: {}",
                list.join(", ")
            ),
        );
    }
    if writeln!(out, "ok").and_then(|_| out.flush()).is_err() {
        return ExitCode::from(crate::exit::FAILURE);
    }
    let stdin = io::stdin().lock();
    for line in stdin.lines() {
        let Ok(line) = line else { break };
        let answer = match parse_query(&line) {
            Some((pid, mode)) => match Access::of(platform::open_as_client(pid, mode)) {
                Ok(Access::Allowed) => "allowed".to_string(),
                Ok(Access::Denied) => "denied".to_string(),
                Ok(Access::NoSuchProcess) => "gone".to_string(),
                Err(e) => format!("error {e}"),
            },
            None => format!("error bad query `{}`", line.escape_debug()),
        };
        if writeln!(out, "{answer}").and_then(|_| out.flush()).is_err() {
            break;
        }
    }
    ExitCode::from(crate::exit::OK)
}

/// `FD:EFF:PRM`, the sets in hexadecimal.
fn parse_userns(s: &str) -> Option<(i32, u64, u64)> {
    let mut it = s.split(':');
    let fd = it.next()?.parse().ok().filter(|&f: &i32| f > 2)?;
    let eff = u64::from_str_radix(it.next()?, 16).ok()?;
    let prm = u64::from_str_radix(it.next()?, 16).ok()?;
    it.next().is_none().then_some((fd, eff, prm))
}

fn parse_query(line: &str) -> Option<(u32, CheckMode)> {
    let (verb, pid) = line.split_once(' ')?;
    let mode = match verb {
        "attach" => CheckMode::Attach,
        "read" => CheckMode::Read,
        _ => return None,
    };
    Some((pid.parse().ok().filter(|&p| p > 0)?, mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries() {
        assert_eq!(parse_query("attach 12"), Some((12, CheckMode::Attach)));
        assert_eq!(parse_query("read 7"), Some((7, CheckMode::Read)));
        for bad in [
            "attach 0",
            "attach -1",
            "attach",
            "write 3",
            "attach 3 4",
            "",
        ] {
            assert_eq!(parse_query(bad), None, "{bad}");
        }
    }
}
