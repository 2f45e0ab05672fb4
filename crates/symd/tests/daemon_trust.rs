//! The daemon serves a non-root client exactly what the kernel would let that client
//! read itself: for each kind of target, the daemon's answer (`pystackd stack PID`
//! through the daemon, run as the client) and the direct read (`pystackd stack
//! --no-daemon PID`, run as the same client) must end with the same exit status.
//! Real users (created here, removed at the end), real CPython targets, a real
//! daemon on a real socket. Needs root; skips with a printed reason otherwise.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::daemon::{main_thread_frames, Daemon, TempDir};
use testkit::{pystackd_bin, require, TestUser, Want};

/// An interpreter every user may run (pyenv's builds live under /root, which is 0700).
fn python() -> &'static str {
    static PY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PY.get_or_init(|| {
        let i = testkit::python(&Want::any().usable_by_others())
            .expect("users() checked that there is one");
        i.command.to_string_lossy().into_owned()
    })
}

/// Two fresh users (deleted on drop), or a skip with its reason.
fn users() -> Result<(TestUser, TestUser), testkit::Skip> {
    testkit::python(&Want::any().usable_by_others())?;
    let a = TestUser::create()?;
    let b = TestUser::create()?;
    Ok((a, b))
}

/// A Python process that runs `prelude` (may use `os`, `ctypes`, `libc`), prints
/// `ready` and sleeps in `parked()`; a line on its stdin makes it run `on_line`.
struct Py {
    child: Child,
}

const PY_TEMPLATE: &str = r#"
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
def prctl(*a):
    if libc.prctl(*a) != 0:
        raise OSError(ctypes.get_errno(), "prctl")
PRELUDE
def parked():
    print("ready", flush=True)
    sys.stdin.readline()
    ON_LINE
    time.sleep(100000)
parked()
"#;

impl Py {
    fn start(mut cmd: Command, prelude: &str, on_line: &str) -> Py {
        let script = PY_TEMPLATE
            .replace("PRELUDE", prelude)
            .replace("ON_LINE", on_line);
        let mut child = cmd
            .arg("-c")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting python");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "target did not start");
        std::thread::sleep(Duration::from_millis(50));
        Py { child }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn poke(&mut self) {
        let w = self.child.stdin.as_mut().unwrap();
        w.write_all(b"go\n").unwrap();
        w.flush().unwrap();
    }

    /// A field of its `/proc/PID/status` (first word after the name).
    fn status(&self, field: &str) -> String {
        proc_status(self.pid(), field)
    }
}

impl Drop for Py {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn proc_status(pid: u32, field: &str) -> String {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("{field} not in /proc/{pid}/status"))
        .trim()
        .to_string()
}

/// `pystackd stack --json PID`, through the daemon and directly, both as `user`
/// (`wrap`: extra argv run before pystackd, e.g. `unshare -U -r`); asserts both end
/// with `expected` and, when served, that both name the same frames.
fn agree(d: &Daemon, user: &TestUser, wrap: &[&str], pid: u32, expected: i32, case: &str) {
    let run = |direct: bool| -> Output {
        let mut c = if wrap.is_empty() {
            user.command(pystackd_bin())
        } else {
            let mut c = user.command(wrap[0]);
            c.args(&wrap[1..]).arg(pystackd_bin());
            c
        };
        c.args(["stack", "--json", &pid.to_string(), "--socket"])
            .arg(&d.socket)
            .env("PYSTACKD_CLIENT_TIMEOUT", "10");
        if direct {
            c.arg("--no-daemon");
        }
        c.output().unwrap()
    };
    let via_daemon = run(false);
    let direct = run(true);
    let code = |o: &Output| o.status.code();
    assert_eq!(
        code(&via_daemon),
        code(&direct),
        "{case}: daemon and direct read disagree:\ndaemon: {via_daemon:?}\ndirect: {direct:?}"
    );
    assert_eq!(code(&direct), Some(expected), "{case}: {direct:?}");
    if expected == 0 {
        let frames = |o: &Output| {
            let v: Value = serde_json::from_slice(&o.stdout).unwrap();
            main_thread_frames(&v, pid)
        };
        let f = frames(&via_daemon);
        assert!(f.iter().any(|(name, _)| name == "parked"), "{case}: {f:?}");
        assert_eq!(f, frames(&direct), "{case}");
    } else {
        // a denial names no uid but the client's
        let err = String::from_utf8_lossy(&via_daemon.stderr);
        for word in err.split(|c: char| !c.is_ascii_digit()) {
            if let Ok(n) = word.parse::<u32>() {
                assert!(
                    n == user.uid || n == pid || n < 10,
                    "{case}: unexpected number {n} in {err}"
                );
            }
        }
    }
    eprintln!("{case}: daemon and direct read both exit {expected}");
}

#[test]
fn daemon_and_direct_read_agree_for_every_kind_of_target() {
    let (a, b) = require!(users());
    let d = Daemon::start(None);
    let (u, g) = (a.uid, a.gid);

    // own, ordinary: served
    let own = Py::start(a.command(python()), "", "");
    agree(&d, &a, &[], own.pid(), 0, "own process");

    // own, made non-dumpable: its /proc/PID stays the user's, only the files inside
    // turn root's; the kernel refuses the user
    let nodump = Py::start(a.command(python()), "prctl(4, 0, 0, 0, 0)", "");
    {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(format!("/proc/{}", nodump.pid())).unwrap();
        assert_eq!(m.uid(), u, "premise: /proc/PID is still the user's");
    }
    agree(&d, &a, &[], nodump.pid(), 5, "own non-dumpable process");

    // the user's ids but root's capabilities kept (PR_SET_KEEPCAPS), dumpable again:
    // the kernel wants the target's permitted set within the client's
    let keepcaps = Py::start(
        Command::new(python()),
        &format!(
            "prctl(8, 1, 0, 0, 0)\nos.setgroups([])\nos.setresgid({g}, {g}, {g})\n\
             os.setresuid({u}, {u}, {u})\nprctl(4, 1, 0, 0, 0)"
        ),
        "",
    );
    assert_ne!(
        u64::from_str_radix(&keepcaps.status("CapPrm"), 16).unwrap(),
        0,
        "premise: capabilities kept"
    );
    assert_eq!(
        keepcaps.status("Uid").split_whitespace().nth(2),
        Some(&*u.to_string())
    );
    agree(
        &d,
        &a,
        &[],
        keepcaps.pid(),
        5,
        "own ids with capabilities kept",
    );

    // set-uid-like: real uid the user's, effective and saved another's
    let other = b.uid;
    let setuid = Py::start(
        Command::new(python()),
        &format!(
            "os.setgroups([])\nos.setresgid({g}, {g}, {g})\n\
             os.setresuid({u}, {other}, {other})\nprctl(4, 1, 0, 0, 0)"
        ),
        "",
    );
    assert_eq!(
        setuid
            .status("Uid")
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>(),
        [u.to_string(), other.to_string(), other.to_string()]
    );
    agree(&d, &a, &[], setuid.pid(), 5, "set-uid-like (ruid != euid)");

    // set-gid-like: the user's uids, another effective and saved gid
    let og = b.gid;
    let setgid = Py::start(
        Command::new(python()),
        &format!(
            "os.setgroups([])\nos.setresgid({g}, {og}, {og})\n\
             os.setresuid({u}, {u}, {u})\nprctl(4, 1, 0, 0, 0)"
        ),
        "",
    );
    agree(&d, &a, &[], setgid.pid(), 5, "set-gid-like (rgid != egid)");

    // another user's process, and root's
    let others = Py::start(b.command(python()), "", "");
    agree(&d, &a, &[], others.pid(), 5, "another user's process");
    let roots = Py::start(Command::new(python()), "", "");
    agree(&d, &a, &[], roots.pid(), 5, "root's process");
    // ... which the other user is served
    agree(&d, &b, &[], others.pid(), 0, "the other user's own process");

    // not a process at all
    agree(&d, &a, &[], 4_194_321, 3, "no such process");

    // exec: the same process (pid, start time) turns non-dumpable in a new image
    let mut execs = Py::start(
        a.command(python()),
        "",
        &format!(
            "os.execv({PYTHON:?}, [{PYTHON:?}, '-c', \
             'import ctypes, time; ctypes.CDLL(None).prctl(4, 0, 0, 0, 0); print(\"ready\", flush=True); time.sleep(100000)'])",
            PYTHON = python()
        ),
    );
    agree(&d, &a, &[], execs.pid(), 0, "before exec");
    execs.poke();
    let mut line = String::new();
    BufReader::new(execs.child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    // answers are reused for up to a second
    std::thread::sleep(Duration::from_millis(1200));
    agree(
        &d,
        &a,
        &[],
        execs.pid(),
        5,
        "after exec into a non-dumpable image",
    );

    // root of a user namespace of its own (unshare -U -r) against root's process
    let probe = a
        .command("unshare")
        .args(["-U", "-r", "true"])
        .status()
        .map(|s| s.success());
    if matches!(probe, Ok(true)) {
        agree(
            &d,
            &a,
            &["unshare", "-U", "-r"],
            roots.pid(),
            5,
            "user-namespace root client",
        );
        // its own process outside the namespace: the kernel refuses that too
        // (namespace rules), and so does the checker, which runs in the namespace
        agree(
            &d,
            &a,
            &["unshare", "-U", "-r"],
            own.pid(),
            5,
            "user-namespace client, own process outside the namespace",
        );
        // a process started inside the namespace, by the client as its root there:
        // the kernel lets the client read it, and the daemon serves it
        let script = format!(
            "{PYTHON} -c 'import time; print(\"ready\", flush=True); time.sleep(100)' > \"$0\" &\n\
             P=$!\n\
             until [ -s \"$0\" ]; do sleep 0.05; done\n\
             {BIN} stack --json $P --socket {sock} > /dev/null; echo daemon=$?\n\
             {BIN} stack --json --no-daemon $P > /dev/null; echo direct=$?\n\
             kill $P\n\
             for c in /proc/[0-9]*; do\n\
               tr '\\0' ' ' < $c/cmdline 2>/dev/null | grep -q '^/proc/self/exe __access-check ' || continue\n\
               head -c1 $c/environ > /dev/null 2>&1; echo checker-readable=$?\n\
             done\n",
            sock = d.socket.display(),
            PYTHON = python(),
            BIN = pystackd_bin()
        );
        let ready = d.dir.path().join("inner-ready");
        std::fs::write(&ready, "").unwrap();
        {
            use std::os::unix::fs::chown;
            chown(&ready, Some(a.uid), Some(a.gid)).unwrap();
        }
        let out = a
            .command("unshare")
            .args(["-U", "-r", "sh", "-c", &script])
            .arg(&ready)
            .env("PYSTACKD_CLIENT_TIMEOUT", "10")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("daemon=0") && text.contains("direct=0"),
            "process inside the client's namespace: {out:?}"
        );
        // its checker runs in the client's namespace with the client's powers there,
        // yet the client (root there) cannot read or ptrace it to forge its answers
        assert!(text.contains("checker-readable=1"), "{out:?}");
        assert!(!text.contains("checker-readable=0"), "{out:?}");
        eprintln!("user-namespace client, process inside its namespace: daemon and direct read both exit 0");
    } else {
        testkit::Skip::new(format!(
            "user-namespace case: unshare -U -r not permitted here: {probe:?}"
        ))
        .report();
    }

    // the daemon's counters saw the refusals; the log names the client
    let s = d.connect().ok("status", Value::Null);
    assert!(s["denied"].as_u64().unwrap() >= 6, "{s}");
    assert!(
        d.log_text().contains("access checker started"),
        "{}",
        d.log_text()
    );
}

/// With `/proc` mounted `hidepid=2` (in the daemon's own mount namespace, never the
/// host's), another user's process does not exist for the client: the daemon says
/// "no such process" (exit 3) like the client's own read in that namespace.
#[test]
fn hidepid_hides_other_users_processes_as_the_kernel_does() {
    let (a, b) = require!(users());
    let dir = TempDir::new("hidepid");
    let socket = dir.path().join("run/pystackd.sock");
    let mut cmd = Command::new("unshare");
    cmd.args([
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        "mount -t proc -o hidepid=2 proc /proc && exec \"$0\" \"$@\"",
        pystackd_bin(),
    ]);
    let probe = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg("mount -t proc -o hidepid=2 proc /proc")
        .status();
    if !matches!(probe, Ok(s) if s.success()) {
        testkit::skip!("hidepid: cannot mount a private /proc with hidepid=2: {probe:?}");
    }
    let d = Daemon::start_with(cmd, dir, socket, None);
    let ns = format!("--mount=/proc/{}/ns/mnt", d.child.id());
    let others = Py::start(b.command(python()), "", "");
    let own = Py::start(a.command(python()), "", "");
    // the direct read runs in the daemon's mount namespace (its /proc)
    let check = |pid: u32, expected: i32, case: &str| {
        let run = |direct: bool| {
            let mut c = Command::new("nsenter");
            c.arg(&ns)
                .args(["setpriv", &format!("--reuid={}", a.uid)])
                .arg(format!("--regid={}", a.gid))
                .args([
                    "--clear-groups",
                    pystackd_bin(),
                    "stack",
                    &pid.to_string(),
                    "--socket",
                ])
                .arg(&d.socket)
                .env("PYSTACKD_CLIENT_TIMEOUT", "10");
            if direct {
                c.arg("--no-daemon");
            }
            c.output().unwrap()
        };
        let (via, direct) = (run(false), run(true));
        assert_eq!(
            via.status.code(),
            direct.status.code(),
            "{case}:\ndaemon: {via:?}\ndirect: {direct:?}"
        );
        assert_eq!(direct.status.code(), Some(expected), "{case}: {direct:?}");
        eprintln!("{case}: daemon and direct read both exit {expected}");
    };
    // premise: invisible to the user there (with gid 0 it would see everything:
    // hidepid's default gid= is root's)
    let visible = Command::new("nsenter")
        .arg(&ns)
        .args([
            "setpriv",
            &format!("--reuid={}", a.uid),
            &format!("--regid={}", a.gid),
            "--clear-groups",
        ])
        .args(["test", "-e", &format!("/proc/{}", others.pid())])
        .status()
        .unwrap();
    assert!(
        !visible.success(),
        "premise: hidepid hides the other user's process"
    );
    check(others.pid(), 3, "hidepid: another user's process");
    check(own.pid(), 0, "hidepid: own process");
    // root is still served everything
    let s = d.connect().ok("stack", json!({"pid": others.pid()}));
    assert!(s["threads"].is_array(), "{s}");
}

/// Pids of the daemon's running access checkers.
fn checkers_of(daemon_pid: u32) -> Vec<u32> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1)?.parse::<u32>().ok());
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if ppid == Some(daemon_pid) && cmd.windows(14).any(|w| w == b"__access-check") {
            v.push(pid);
        }
    }
    v
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < Duration::from_secs(10), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The checkers: one per uid, running as that uid without capabilities; a killed one
/// is replaced, a stopped one costs an error (not a hung daemon), their number is
/// capped (least recently used ended first).
#[test]
fn access_checkers_are_per_uid_bounded_and_replaced() {
    let (a, b) = require!(users());
    let d = Daemon::start(Some("max_access_checkers = 1\n"));
    let dpid = d.child.id();
    let own_a = Py::start(a.command(python()), "", "");
    let own_b = Py::start(b.command(python()), "", "");
    let stack = |u: &TestUser, pid: u32| -> Output {
        u.command(pystackd_bin())
            .args(["stack", &pid.to_string(), "--socket"])
            .arg(&d.socket)
            .env("PYSTACKD_CLIENT_TIMEOUT", "20")
            .output()
            .unwrap()
    };
    let out = stack(&a, own_a.pid());
    assert!(out.status.success(), "{out:?}");
    let ch = checkers_of(dpid);
    assert_eq!(ch.len(), 1, "{ch:?}");
    // it runs as the client, holding nothing
    let c = ch[0];
    let uids = proc_status(c, "Uid");
    assert_eq!(
        uids.split_whitespace().collect::<Vec<_>>(),
        vec![a.uid.to_string(); 4]
    );
    assert_eq!(
        proc_status(c, "Gid").split_whitespace().collect::<Vec<_>>(),
        vec![a.gid.to_string(); 4]
    );
    for set in ["CapPrm", "CapEff", "CapAmb", "CapInh"] {
        assert_eq!(
            u64::from_str_radix(&proc_status(c, set), 16).unwrap(),
            0,
            "{set}"
        );
    }
    assert_eq!(proc_status(c, "NoNewPrivs"), "1");
    assert_eq!(proc_status(c, "Groups"), a.gid.to_string());
    // the user cannot read (or ptrace) its own checker: it is not dumpable
    let peek = a
        .command("head")
        .args(["-c1", &format!("/proc/{c}/environ")])
        .output()
        .unwrap();
    assert!(!peek.status.success(), "{peek:?}");

    // killed (by its own user, say): the next request starts another
    unsafe { libc::kill(c as i32, libc::SIGKILL) };
    std::thread::sleep(Duration::from_millis(1200)); // past the answer cache
    let out = stack(&a, own_a.pid());
    assert!(out.status.success(), "{out:?}");
    let ch = checkers_of(dpid);
    assert_eq!(ch.len(), 1, "{ch:?}");
    assert_ne!(ch[0], c);

    // stopped: the request fails after the timeout instead of hanging, and the
    // stopped checker is ended; the one after is served by a fresh checker
    let c = ch[0];
    unsafe { libc::kill(c as i32, libc::SIGSTOP) };
    std::thread::sleep(Duration::from_millis(1200));
    let t0 = Instant::now();
    let out = stack(&a, own_a.pid());
    let took = t0.elapsed();
    assert_eq!(out.status.code(), Some(10), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("access check"),
        "{out:?}"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
    wait_until("the stopped checker ended", || {
        !checkers_of(dpid).contains(&c)
    });
    let out = stack(&a, own_a.pid());
    assert!(out.status.success(), "{out:?}");

    // cap of 1: user b's checker replaces a's
    let out = stack(&b, own_b.pid());
    assert!(out.status.success(), "{out:?}");
    wait_until("one checker left", || checkers_of(dpid).len() == 1);
    let left = checkers_of(dpid);
    assert_eq!(
        proc_status(left[0], "Uid").split_whitespace().next(),
        Some(&*b.uid.to_string())
    );
    // root asks no checker
    let s = d.connect().ok("status", Value::Null);
    assert_eq!(s["access_checkers"], 1, "{s}");
}

/// `status` shows a non-root user its own share only; root the totals.
#[test]
fn status_is_per_user_for_unprivileged_clients() {
    let (a, b) = require!(users());
    let d = Daemon::start(None);
    let own = Py::start(a.command(python()), "", "");
    let roots = Py::start(Command::new(python()), "", "");
    let mut root = d.connect();
    root.ok("attach", json!({"pid": roots.pid()}));
    let cli = |u: &TestUser, args: &[&str]| -> Output {
        u.command(pystackd_bin())
            .args(args)
            .arg("--socket")
            .arg(&d.socket)
            .env("PYSTACKD_CLIENT_TIMEOUT", "10")
            .output()
            .unwrap()
    };
    assert!(cli(&a, &["attach", &own.pid().to_string()])
        .status
        .success());
    assert_eq!(
        cli(&a, &["stack", &roots.pid().to_string()]).status.code(),
        Some(5)
    );
    let out = cli(&a, &["status", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["uid"], a.uid, "{s}");
    // its attach and its refused stack (this status is not yet counted)
    assert_eq!(s["requests"], 2, "{s}");
    assert_eq!(s["errors"], 1, "{s}");
    assert_eq!(s["denied"], 1, "{s}");
    assert_eq!(s["connections"], 1, "{s}");
    assert_eq!(s["attached"], 1, "{s}");
    assert!(s.get("access_checkers").is_none(), "{s}");
    // another user: nothing of a's
    let out = cli(&b, &["status", "--json"]);
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["uid"], b.uid, "{s}");
    assert_eq!(
        (&s["requests"], &s["denied"], &s["attached"]),
        (&json!(0), &json!(0), &json!(0)),
        "{s}"
    );
    // root: everything
    let s = root.ok("status", Value::Null);
    assert!(s.get("uid").is_none(), "{s}");
    assert_eq!(s["attached"], 2, "{s}");
    assert_eq!(s["denied"], 1, "{s}");
    assert!(s["requests"].as_u64().unwrap() >= 5, "{s}");
    // the text form says whose numbers they are
    let out = cli(&a, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("uid {}", a.uid)), "{text}");
}

/// What the access check costs a non-root client per request, measured from a client
/// running as that user (`detach` of its own process: the check plus a map lookup),
/// both as the client sees it and as the daemon logs it (`micros` of its debug
/// record, which excludes the client's scheduling). Prints the numbers; asserts only
/// what holds under any load: starting a checker costs more than a cached answer.
#[test]
fn access_check_latency() {
    let (a, _b) = require!(users());
    let d = Daemon::start(None);
    let own = Py::start(a.command(python()), "", "");
    let script = r#"
import json, socket, sys, time
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile("rwb")
pid = int(sys.argv[2]); n = [0]
def call():
    n[0] += 1
    line = json.dumps({"jsonrpc": "2.0", "id": n[0], "method": "detach", "params": {"pid": pid}}).encode() + b"\n"
    t = time.perf_counter(); f.write(line); f.flush(); r = json.loads(f.readline()); dt = time.perf_counter() - t
    assert "result" in r, r
    return dt * 1e6
cold = call()
warm = sorted(call() for _ in range(201))[100]
uncached = []
for _ in range(5):
    time.sleep(1.1)
    uncached.append(call())
print(json.dumps({"cold": cold, "warm_median": warm, "uncached_median": sorted(uncached)[2]}))
"#;
    let out = a
        .command(python())
        .args(["-c", script])
        .arg(&d.socket)
        .arg(own.pid().to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let client: Value = serde_json::from_slice(&out.stdout).unwrap();
    // the daemon's own timing of the same requests, in order
    let needle = format!("method=detach client_uid={} ", a.uid);
    let server: Vec<f64> = d
        .log_text()
        .lines()
        .filter(|l| l.contains(&needle))
        .filter_map(|l| l.rsplit_once("micros=")?.1.trim().parse().ok())
        .collect();
    assert_eq!(server.len(), 1 + 201 + 5, "{}", d.log_text());
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (cold, warm, uncached) = (server[0], median(&server[1..202]), median(&server[202..]));
    // root's same calls (no checker) as the baseline
    let mut c = d.connect();
    for _ in 0..201 {
        c.ok("detach", json!({"pid": own.pid()}));
    }
    let root: Vec<f64> = d
        .log_text()
        .lines()
        .filter(|l| l.contains("method=detach client_uid=0 "))
        .filter_map(|l| l.rsplit_once("micros=")?.1.trim().parse().ok())
        .collect();
    eprintln!(
        "access check latency (us): daemon-side: root {:.0}, user cached {warm:.0}, \
         uncached {uncached:.0}, first (checker started) {cold:.0}; client-side (Python \
         client as the user): {client}",
        median(&root)
    );
    assert!(cold > warm, "cold {cold} warm {warm}");
}

/// A pid reused by another user's process right after the client was served the old
/// one (within the second answers are reused) is judged afresh: answers are keyed by
/// the process's start time too. The pid is reused on purpose through
/// `/proc/sys/kernel/ns_last_pid`; skipped when other processes keep taking it.
#[test]
fn a_reused_pid_is_judged_afresh() {
    let (a, _b) = require!(users());
    if std::fs::metadata("/proc/sys/kernel/ns_last_pid").is_err() {
        testkit::skip!("a_reused_pid_is_judged_afresh: no /proc/sys/kernel/ns_last_pid");
    }
    let d = Daemon::start(None);
    let stack = |pid: u32| -> Output {
        a.command(pystackd_bin())
            .args(["stack", &pid.to_string(), "--socket"])
            .arg(&d.socket)
            .env("PYSTACKD_CLIENT_TIMEOUT", "10")
            .output()
            .unwrap()
    };
    for attempt in 0..20 {
        let mut own = Py::start(a.command(python()), "", "");
        let pid = own.pid();
        let out = stack(pid);
        assert!(out.status.success(), "{out:?}");
        let _ = own.child.kill();
        let _ = own.child.wait();
        // the next process forked gets `pid` unless another one takes it first
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).unwrap();
        let roots = Py::start(Command::new(python()), "", "");
        if roots.pid() != pid {
            eprintln!("attempt {attempt}: pid {pid} was taken by another process; again");
            continue;
        }
        // well within the second the old answer is kept
        let out = stack(pid);
        assert_eq!(out.status.code(), Some(5), "{out:?}");
        let direct = a
            .command(pystackd_bin())
            .args(["stack", "--no-daemon", &pid.to_string()])
            .output()
            .unwrap();
        assert_eq!(direct.status.code(), Some(5), "{direct:?}");
        eprintln!("pid {pid} reused by root: refused as the kernel refuses it");
        return;
    }
    // chance (other processes took the pid), not a missing prerequisite
    testkit::skip_case("a_reused_pid_is_judged_afresh: could not get a pid reused in 20 tries");
}
