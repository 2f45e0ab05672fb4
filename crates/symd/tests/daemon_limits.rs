//! Limits a client cannot exceed, and the daemon keeps under them: connections per uid and
//! idle connections; the attached-process cache: the least recently used process is
//! evicted at `max_attached`; a non-root uid over `max_attached_per_uid` is refused an
//! attach (its reads still work, uncached) and never evicts another's process; and a
//! cached process that exec()s another image is re-attached, never read with stale
//! state.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use protocol::rpc::codes;
use serde_json::{json, Value};
use testkit::daemon::{main_thread_frames, Conn, Daemon};
use testkit::{require, Interpreter, RunAs, Target, Want};

/// An unprivileged uid (Debian's `nobody`; numeric, so it needs no passwd entry).
const OTHER_UID: u32 = RunAs::NOBODY.uid;

/// "3.12, shared, with symbols".
fn py312() -> Want {
    Want::version("3.12").shared().symbols()
}

// ---- connections ----

/// Opens three connections as the calling user without sending anything, prints the
/// first line the third one receives (or `NONE` after 10 s), then whether the daemon
/// closed it (`CLOSED`) or not (`OPEN`).
const THIRD_CONNECTION: &str = r#"
import socket, sys
conns = []
for _ in range(3):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sys.argv[1])
    conns.append(s)
s = conns[2]
s.settimeout(10)
f = s.makefile("rb")
line = f.readline()
print(line.decode().strip() or "NONE")
try:
    print("CLOSED" if f.read(1) == b"" else "OPEN")
except socket.timeout:
    print("OPEN")
"#;

#[test]
fn connections_over_the_per_uid_cap_are_refused() {
    require!(testkit::root("to switch to another uid"));
    require!(testkit::tool("setpriv"));
    // an interpreter the unprivileged uid may run (pyenv's builds live under a 0700 /root)
    let py = require!(testkit::python(&Want::any().usable_by_others()));
    let d = Daemon::start(Some("max_connections_per_uid = 2\n"));
    let out = RunAs::NOBODY
        .command(&py.command)
        .args(["-c", THIRD_CONNECTION])
        .arg(&d.socket)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let v: Value = serde_json::from_str(lines.next().unwrap_or_default()).expect("a JSON line");
    assert_eq!(
        v["error"]["code"],
        serde_json::json!(protocol::rpc::codes::LIMIT_REACHED),
        "{v}"
    );
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains(&format!("uid {OTHER_UID}")) && msg.contains("max_connections_per_uid"),
        "{v}"
    );
    assert_eq!(lines.next(), Some("CLOSED"), "{text}");
    // root is exempt: more connections than the per-uid cap all work
    let mut conns: Vec<Conn> = (0..3).map(|_| d.connect()).collect();
    for c in &mut conns {
        c.ok("version", Value::Null);
    }
    let s = conns[0].ok("status", Value::Null);
    assert!(s["connections"].as_u64().unwrap() >= 3, "{s}");
}

#[test]
fn idle_connections_are_closed() {
    let d = Daemon::start(Some("idle_timeout_secs = 1\n"));
    let mut busy = d.connect();
    let mut idle = d.connect();
    let t0 = Instant::now();
    // a client that keeps sending stays connected past the timeout
    while t0.elapsed() < Duration::from_millis(2500) {
        busy.ok("version", Value::Null);
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(idle.is_closed(), "idle connection still open");
    busy.ok("status", Value::Null);
    assert!(d.log_text().contains("idle for"), "{}", d.log_text());
}

// ---- the attached-process cache ----

/// The pids of `list`, sorted.
fn listed(c: &mut Conn) -> Vec<u32> {
    let l = c.ok("list", Value::Null);
    let mut v: Vec<u32> = l["processes"]
        .as_array()
        .expect("processes")
        .iter()
        .map(|p| p["pid"].as_u64().unwrap() as u32)
        .collect();
    v.sort_unstable();
    v
}

fn sorted(mut v: Vec<u32>) -> Vec<u32> {
    v.sort_unstable();
    v
}

#[test]
fn the_least_recently_used_process_is_evicted_at_max_attached() {
    let py = require!(testkit::python(&py312()));
    let ts: Vec<Target> = (0..3).map(|i| Target::chain(&py, i)).collect();
    let [a, b, c] = [ts[0].pid(), ts[1].pid(), ts[2].pid()];
    let d = Daemon::start(Some("max_attached = 2\n"));
    let mut conn = d.connect();

    assert_eq!(conn.ok("attach", json!({"pid": a}))["newly_attached"], true);
    assert_eq!(conn.ok("attach", json!({"pid": b}))["newly_attached"], true);
    // using `a` makes `b` the least recently used
    let s = conn.ok("stack", json!({"pid": a}));
    assert_eq!(main_thread_frames(&s, a), ts[0].main_frames());

    // full: attaching `c` evicts `b` instead of refusing
    assert_eq!(conn.ok("attach", json!({"pid": c}))["newly_attached"], true);
    assert_eq!(listed(&mut conn), sorted(vec![a, c]));
    let st = conn.ok("status", Value::Null);
    assert_eq!(
        (st["attached"].clone(), st["max_attached"].clone()),
        (json!(2), json!(2))
    );
    assert!(
        d.log_text().contains("evicted"),
        "no eviction logged: {}",
        d.log_text()
    );

    // the evicted process still answers (attached afresh), which evicts the now least
    // recently used `a` (`c` was attached after `a` was last read)
    let s = conn.ok("stack", json!({"pid": b}));
    assert_eq!(main_thread_frames(&s, b), ts[1].main_frames());
    assert_eq!(listed(&mut conn), sorted(vec![b, c]));
    // re-attaching `b` finds it cached; `a` comes back in place of `c`
    assert_eq!(
        conn.ok("attach", json!({"pid": b}))["newly_attached"],
        false
    );
    assert_eq!(conn.ok("attach", json!({"pid": a}))["newly_attached"], true);
    assert_eq!(listed(&mut conn), sorted(vec![a, b]));
    for (t, pid) in ts.iter().zip([a, b, c]) {
        let s = conn.ok("stack", json!({"pid": pid}));
        assert_eq!(main_thread_frames(&s, pid), t.main_frames(), "pid {pid}");
    }
}

/// Sends each JSON request of argv[2..] on one connection to the socket argv[1] and
/// prints each reply line.
const CLIENT: &str = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.settimeout(30)
f = s.makefile("rwb")
for req in sys.argv[2:]:
    f.write(req.encode() + b"\n")
    f.flush()
    print(f.readline().decode().strip(), flush=True)
"#;

/// The replies to `requests` (method, params) sent by a client running as
/// [`OTHER_UID`].
fn other_user_calls(d: &Daemon, py: &Interpreter, requests: &[(&str, Value)]) -> Vec<Value> {
    let mut cmd = RunAs::NOBODY.command(&py.command);
    cmd.args(["-c", CLIENT]).arg(&d.socket);
    for (i, (method, params)) in requests.iter().enumerate() {
        let req = json!({"jsonrpc": "2.0", "id": i + 1, "method": method, "params": params});
        cmd.arg(req.to_string());
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let replies: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("reply {l:?}: {e}")))
        .collect();
    assert_eq!(replies.len(), requests.len(), "{out:?}");
    for (i, r) in replies.iter().enumerate() {
        assert_eq!(r["id"], json!(i + 1), "{r}");
    }
    replies
}

#[test]
fn a_uid_over_its_attach_limit_is_refused_and_evicts_nobody() {
    require!(testkit::root("to switch to another uid"));
    require!(testkit::tool("setpriv"));
    let py = require!(testkit::python(&Want::any().usable_by_others()));
    // root's target and two of the other user's own
    let root_t = Target::chain(&py, 1);
    let mine: Vec<Target> = (0..2)
        .map(|i| Target::chain_as(&RunAs::NOBODY, &py, i + 2))
        .collect();
    let (r, m1, m2) = (root_t.pid(), mine[0].pid(), mine[1].pid());
    let d = Daemon::start(Some("max_attached = 2\nmax_attached_per_uid = 1\n"));
    let mut root = d.connect();
    root.ok("attach", json!({"pid": r}));

    let replies = other_user_calls(
        &d,
        &py,
        &[
            ("attach", json!({"pid": m1})),
            ("attach", json!({"pid": m2})),
            ("stack", json!({"pid": m2})),
            ("stack", json!({"pid": m1})),
            ("list", Value::Null),
        ],
    );
    // the first fills the cache (max_attached = 2) and the uid's share
    assert_eq!(
        replies[0]["result"]["newly_attached"], true,
        "{}",
        replies[0]
    );
    // the second is refused: no eviction of root's process for a capped uid
    let e = &replies[1]["error"];
    assert_eq!(e["code"], json!(codes::LIMIT_REACHED), "{}", replies[1]);
    let msg = e["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains(&format!("uid {OTHER_UID}")) && msg.contains("max_attached_per_uid"),
        "{msg}"
    );
    // ... but its stack is still read (uncached)
    let s = &replies[2]["result"];
    assert_eq!(
        main_thread_frames(s, m2),
        mine[1].main_frames(),
        "{}",
        replies[2]
    );
    let s = &replies[3]["result"];
    assert_eq!(
        main_thread_frames(s, m1),
        mine[0].main_frames(),
        "{}",
        replies[3]
    );
    // the uid sees only its own process attached
    let l: Vec<u32> = replies[4]["result"]["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pid"].as_u64().unwrap() as u32)
        .collect();
    assert_eq!(l, vec![m1], "{}", replies[4]);

    // root's process was never evicted, and the uncached read left no entry
    assert_eq!(listed(&mut root), sorted(vec![r, m1]));
    assert!(!d.log_text().contains("evicted"), "{}", d.log_text());

    // after a detach the uid may attach another
    let replies = other_user_calls(
        &d,
        &py,
        &[
            ("detach", json!({"pid": m1})),
            ("attach", json!({"pid": m2})),
        ],
    );
    assert_eq!(replies[0]["result"]["detached"], true, "{}", replies[0]);
    assert_eq!(
        replies[1]["result"]["newly_attached"], true,
        "{}",
        replies[1]
    );
    assert_eq!(listed(&mut root), sorted(vec![r, m2]));

    // root is exempt from the per-uid cap and may evict at the global one
    let root_t2 = Target::chain(&py, 0);
    root.ok("stack", json!({"pid": r}));
    assert_eq!(
        root.ok("attach", json!({"pid": root_t2.pid()}))["newly_attached"],
        true
    );
    assert_eq!(listed(&mut root), sorted(vec![r, root_t2.pid()]));
}

/// Prints its own stack as a JSON line `[[function, line], ...]` (outermost first), ending
/// in `leaf` called through `argv[1]` levels of `level`, then sleeps.
const TARGET_SCRIPT: &str = r#"
import json, sys, time, traceback
def leaf():
    frames = traceback.extract_stack()[:-1]
    here = sys._getframe().f_lineno
    print(json.dumps([[f.name, f.lineno] for f in frames] + [["leaf", here + 2]]), flush=True)
    time.sleep(100000)
def level(n):
    if n == 0:
        leaf()
    else:
        level(n - 1)
level(int(sys.argv[1]))
"#;

/// Prints its own stack (as [`TARGET_SCRIPT`] does), waits for a line on stdin, then
/// exec()s argv[1] running argv[2] (a script) with argv[3..]: same pid, same start
/// time, another program.
const EXEC_SCRIPT: &str = r#"
import json, os, sys, traceback
def before_exec():
    frames = traceback.extract_stack()[:-1]
    here = sys._getframe().f_lineno
    print(json.dumps([[f.name, f.lineno] for f in frames] + [["before_exec", here + 2]]), flush=True)
    sys.stdin.readline()
    os.execv(sys.argv[1], [sys.argv[1], "-c"] + sys.argv[2:])
before_exec()
"#;

/// A Python target that exec()s on request.
struct ExecTarget {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl ExecTarget {
    fn start(python: &Path, then: &Path, depth: u32) -> (ExecTarget, Vec<(String, u32)>) {
        let mut child = Command::new(python)
            .arg("-c")
            .arg(EXEC_SCRIPT)
            .arg(then)
            .arg(TARGET_SCRIPT)
            .arg(depth.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting python");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut t = ExecTarget {
            child,
            stdin,
            stdout,
        };
        let before = t.read_stack();
        (t, before)
    }

    /// The stack the (current) program printed; then lets it reach its wait.
    fn read_stack(&mut self) -> Vec<(String, u32)> {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let v =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("target output {line:?}: {e}"));
        std::thread::sleep(Duration::from_millis(100));
        v
    }

    /// exec() the second program; its stack.
    fn exec(&mut self) -> Vec<(String, u32)> {
        self.stdin.write_all(b"go\n").unwrap();
        self.stdin.flush().unwrap();
        self.read_stack()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ExecTarget {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_time(pid: u32) -> u64 {
    // field 22 of /proc/PID/stat, counted after the parenthesised command name
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    rest.split(' ').nth(19).unwrap().parse().unwrap()
}

/// Attach, exec, and check that `stack`, `list` and `attach` describe the new image.
fn exec_is_noticed(first: &Interpreter, then: &Interpreter) {
    let then_version = then.full_version();
    let (first, then) = (first.command.as_path(), then.command.as_path());
    let (mut t, before) = ExecTarget::start(first, then, 2);
    let pid = t.pid();
    let d = Daemon::start(None);
    let mut c = d.connect();
    let a = c.ok("attach", json!({"pid": pid}));
    assert_eq!(a["newly_attached"], true);
    let s = c.ok("stack", json!({"pid": pid}));
    assert_eq!(main_thread_frames(&s, pid), before, "{s}");
    let started = start_time(pid);

    let after = t.exec();
    // the kernel keeps both: the cache key alone cannot tell
    assert_eq!(start_time(pid), started);
    assert!(after.iter().any(|(f, _)| f == "leaf"), "{after:?}");

    // a privileged client's inline read (pidfd still open across exec) and then a
    // second read of the re-attached process
    for _ in 0..2 {
        let s = c.ok("stack", json!({"pid": pid}));
        assert_eq!(s["python_version"], json!(then_version), "{s}");
        assert_eq!(main_thread_frames(&s, pid), after, "{s}");
    }
    let l = c.ok("list", Value::Null);
    let procs = l["processes"].as_array().unwrap();
    assert_eq!(procs.len(), 1, "{l}");
    assert_eq!(procs[0]["pid"], json!(pid));
    assert_eq!(procs[0]["python_version"], json!(then_version), "{l}");
    assert_eq!(
        c.ok("attach", json!({"pid": pid}))["newly_attached"],
        false,
        "the re-attached process should be cached"
    );
}

#[test]
fn exec_into_another_interpreter_is_reattached() {
    let first = require!(testkit::python(&py312()));
    let then = require!(testkit::python(&Want::version("3.11").shared().symbols()));
    exec_is_noticed(&first, &then);
}

/// An exec of the same executable keeps pid, start time and the device and inode of
/// /proc/PID/exe, so nothing tells the cache; the old image's addresses then give
/// inconsistent reads, and the daemon drops the entry and attaches afresh (once, within
/// the same request).
#[test]
fn exec_of_the_same_interpreter_with_another_script_is_reattached() {
    let py = require!(testkit::python(&py312()));
    exec_is_noticed(&py, &py);
}
