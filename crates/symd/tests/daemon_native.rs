//! The daemon's `stack` with `"native": true` (and `"native_lines"`): a real daemon on a real
//! socket stops and unwinds a blocked target and answers what `pystackd stack --native
//! --json` prints when it reads the process itself; the Python frames under the eval frames
//! are the target's own ground truth; `pystackd stack --native` goes through the daemon when
//! one runs; bad parameters, dead and non-Python processes and unauthorized clients get the
//! errors `stack` gives.

use std::process::{Command, Output};

use serde_json::{json, Value};
use testkit::daemon::Daemon;
use testkit::{pystackd_bin, require, RunAs, Target, TestUser, Want};

fn direct(pid: u32, extra: &[&str]) -> Value {
    let out = Command::new(pystackd_bin())
        .args(["--no-daemon", "stack", "--native", "--json"])
        .args(extra)
        .arg(pid.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Per thread (sorted by tid): the frames without `unwound_by`, which may differ between
/// two unwinds of the same stack only in how a frame was found, never in what it is.
fn frames(v: &Value) -> Vec<(u64, Vec<Value>)> {
    let mut t: Vec<(u64, Vec<Value>)> = v["threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let f = t["frames"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| {
                    let mut f = f.clone();
                    f.as_object_mut().unwrap().remove("unwound_by");
                    f
                })
                .collect();
            (t["os_tid"].as_u64().unwrap(), f)
        })
        .collect();
    t.sort_by_key(|(tid, _)| *tid);
    t
}

/// The Python frames placed under each thread's eval frames, against the target's own
/// `sys._current_frames()`: (file, line, function) innermost first.
fn check_python(v: &Value, target: &Target) {
    for tt in &target.truth().threads {
        let t = v["threads"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["os_tid"].as_u64() == Some(tt.native_id))
            .unwrap_or_else(|| panic!("no thread {}", tt.native_id));
        // under their eval frames, or after the native ones where no eval frame is named
        // (a stripped build without its debug file)
        let mut py: Vec<Value> = t["frames"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|f| f["python"].as_array().cloned().unwrap_or_default())
            .collect();
        if py.is_empty() {
            py = t["unplaced_python"].as_array().cloned().unwrap_or_default();
        }
        let placed: Vec<(String, u64, String)> = py
            .iter()
            .map(|f| {
                (
                    f["filename"].as_str().unwrap().to_string(),
                    f["line"].as_u64().unwrap_or(0),
                    f["function"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let want: Vec<(String, u64, String)> = tt
            .frames
            .iter()
            .map(|f| {
                (
                    f.filename.clone(),
                    u64::from(f.line.unwrap_or(0)),
                    f.function.clone(),
                )
            })
            .collect();
        assert_eq!(placed, want, "thread {}", tt.native_id);
    }
}

/// No thread of `pid` left stopped or traced.
fn resumed(pid: u32) {
    for e in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let tid = e.unwrap().file_name();
        let tid = tid.to_string_lossy();
        let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap();
        assert!(
            status.contains("TracerPid:\t0\n"),
            "thread {tid} still traced"
        );
        let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).unwrap();
        let state = stat.rsplit_once(") ").unwrap().1.chars().next().unwrap();
        assert!(!matches!(state, 't' | 'T'), "thread {tid} in state {state}");
    }
}

#[test]
fn daemon_native_stack_is_the_direct_one() {
    let py = require!(testkit::python(&Want::any().shared().symbols()));
    let target = Target::spawn(&py, "nested_eval.py", &[]);
    let pid = target.pid();
    let d = Daemon::start(None);
    let mut c = d.connect();

    let v = c.ok("stack", json!({"pid": pid, "native": true}));
    resumed(pid);
    assert_eq!(v["pid"], pid);
    let mine = direct(pid, &[]);
    assert_eq!(frames(&v), frames(&mine), "daemon {v}\ndirect {mine}");
    assert_eq!(v["python_version"], mine["python_version"]);
    check_python(&v, &target);
    let n: usize = frames(&v).iter().map(|(_, f)| f.len()).sum();
    eprintln!(
        "{}: {} threads, {n} frames",
        target.label(),
        frames(&v).len()
    );

    // with source lines: the direct read's, inlined frames included
    let v = c.ok(
        "stack",
        json!({"pid": pid, "native": true, "native_lines": true}),
    );
    let mine = direct(pid, &["--native-lines"]);
    assert_eq!(frames(&v), frames(&mine));
    let sources = frames(&v)
        .iter()
        .flat_map(|(_, f)| f.iter().map(|f| f["source"].as_array().map_or(0, Vec::len)))
        .sum::<usize>();
    assert!(sources > n, "{sources} source frames for {n} frames");

    // one thread
    let tid = target.truth().threads[0].native_id;
    let v = c.ok("stack", json!({"pid": pid, "native": true, "tid": tid}));
    let t = v["threads"].as_array().unwrap();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0]["os_tid"], tid);
    resumed(pid);
}

#[test]
fn cli_stack_native_goes_through_the_daemon() {
    let py = require!(testkit::python(&Want::any().shared().symbols()));
    let target = Target::spawn(&py, "nested_eval.py", &[]);
    let pid = target.pid();
    let d = Daemon::start(None);
    let out = d.cli(&["stack", "--native", "--json", &pid.to_string()]);
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    check_python(&v, &target);
    // the daemon read it: it attached the process
    let list = d.connect().ok("list", Value::Null);
    assert!(
        list["processes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["pid"] == pid),
        "{list}"
    );
    // the text form, through the daemon, like the direct one
    let out = d.cli(&["stack", "--native", &pid.to_string()]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("`_PyEval_EvalFrameDefault"), "{text}");
    assert!(text.contains("[ "), "{text}");
    resumed(pid);
}

#[test]
fn bad_requests_dead_and_non_python_processes() {
    let d = Daemon::start(None);
    let mut c = d.connect();
    // parameters native does not combine with
    assert_eq!(
        c.err_code("stack", json!({"pid": 1, "native_lines": true})),
        -32602
    );
    assert_eq!(
        c.err_code("stack", json!({"pid": 1, "native": true, "locals": true})),
        -32602
    );
    assert_eq!(
        c.err_code("stack", json!({"pid": 0, "native": true})),
        -32602
    );
    assert_eq!(
        c.err_code("stack", json!({"pid": 1, "native": "yes"})),
        -32602
    );
    // a pid that held a process which has exited
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    assert_eq!(
        c.err_code("stack", json!({"pid": dead, "native": true})),
        -32001
    );
    // a process that runs no Python, left running
    let mut sleeper = Command::new("sleep").arg("60").spawn().unwrap();
    assert_eq!(
        c.err_code("stack", json!({"pid": sleeper.id(), "native": true})),
        -32002
    );
    assert!(sleeper.try_wait().unwrap().is_none());
    resumed(sleeper.id());
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    // a thread the process does not have
    if let Ok(py) = testkit::python(&Want::any().shared().symbols()) {
        let t = Target::chain(&py, 2);
        assert_eq!(
            c.err_code("stack", json!({"pid": t.pid(), "native": true, "tid": 1})),
            -32009
        );
        resumed(t.pid());
        // the CLI says so with the kind's exit status
        let out = d.cli(&["stack", "--native", "--tid", "1", &t.pid().to_string()]);
        assert_eq!(
            out.status.code(),
            Some(protocol_exit_no_such_thread()),
            "{out:?}"
        );
    }
    // the daemon goes on
    c.ok("version", Value::Null);
}

/// `ErrorKind::NoSuchThread`'s exit status, as the direct read gives it.
fn protocol_exit_no_such_thread() -> i32 {
    let py = testkit::python(&Want::any().shared().symbols()).unwrap();
    let t = Target::chain(&py, 1);
    let out = Command::new(pystackd_bin())
        .args(["--no-daemon", "stack", "--native", "--tid", "1"])
        .arg(t.pid().to_string())
        .output()
        .unwrap();
    out.status.code().unwrap()
}

fn as_user(user: &RunAs, d: &Daemon, args: &[&str]) -> Output {
    user.command(pystackd_bin())
        .args(args)
        .arg("--socket")
        .arg(&d.socket)
        .env("PYSTACKD_CLIENT_TIMEOUT", "10")
        .output()
        .unwrap()
}

#[test]
fn unprivileged_clients_get_their_own_processes_only() {
    let user = require!(TestUser::create());
    let py = require!(testkit::python(&Want::any().usable_by_others()));
    let own = Target::spawn_as(&user.run_as(), &py, "nested_eval.py", &[]);
    let root_owned = Target::chain(&py, 1);
    let d = Daemon::start(None);
    let out = as_user(
        &user.run_as(),
        &d,
        &["stack", "--native", "--json", &own.pid().to_string()],
    );
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    check_python(&v, &own);
    resumed(own.pid());
    // root's process: refused (5), and left running untouched
    let out = as_user(
        &user.run_as(),
        &d,
        &["stack", "--native", &root_owned.pid().to_string()],
    );
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("may not inspect"), "{err}");
    resumed(root_owned.pid());
}
