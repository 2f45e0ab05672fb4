//! The daemon's profiling sessions (`profile`, `profile_result`, `profile_stop`) on the real
//! daemon and socket: a moving target (recur_target.py, depth changing all the time) sampled
//! in the daemon gives only call paths the program has (by the structure the target states
//! about itself), in every format; a session stopped early keeps what it saw; bad
//! parameters are refused; and a real unprivileged user (`useradd`) profiles their own
//! process but neither a root process nor root's session.

use std::time::{Duration, Instant};

use protocol::rpc::codes;
use serde_json::{json, Value};
use testkit::daemon::{Conn, Daemon};
use testkit::{require, GroundTruth, Interpreter, RunAs, Target, TestUser, Want};

/// `name (file:line)` → (name, line).
fn frame(f: &str) -> Option<(&str, u32)> {
    let (name, rest) = f.rsplit_once(" (")?;
    let (_, line) = rest.strip_suffix(')')?.rsplit_once(':')?;
    Some((name, line.parse().ok()?))
}

/// Every folded line a path of the program (callers call their callees from the lines the
/// target states); the workers' samples counted.
fn check_folded(truth: &GroundTruth, text: &str) -> Result<u64, String> {
    let mut samples = 0;
    for line in text.lines() {
        let (stack, n) = line
            .rsplit_once(' ')
            .ok_or_else(|| format!("not a folded line: {line:?}"))?;
        let n: u64 = n.parse().map_err(|_| format!("bad count: {line:?}"))?;
        let frames: Vec<(&str, u32)> = stack
            .split(';')
            .map(|f| frame(f).ok_or_else(|| format!("bad frame {f:?} in {line:?}")))
            .collect::<Result<_, _>>()?;
        let outer = frames[0].0;
        if outer != "run" && outer != "<module>" {
            return Err(format!("a stack starting in {outer}: {line}"));
        }
        for w in frames.windows(2) {
            let ((caller, at), (callee, _)) = (w[0], w[1]);
            let calls = truth.callees.get(caller).cloned().unwrap_or_default();
            if !calls.iter().any(|c| c == callee) {
                return Err(format!("{callee} inside {caller}: impossible: {line}"));
            }
            let lines = truth.call_lines.get(caller).cloned().unwrap_or_default();
            if !lines.contains(&at) {
                return Err(format!("{caller} at line {at}, not a call line: {line}"));
            }
        }
        if outer == "run" {
            samples += n;
        }
    }
    Ok(samples)
}

/// Polls `profile_result` until the session has ended.
fn wait_result(c: &mut Conn, session: u64, format: &str) -> Value {
    let t0 = Instant::now();
    loop {
        let r = c.ok(
            "profile_result",
            json!({"session": session, "format": format}),
        );
        if r["state"] != "running" {
            return r;
        }
        assert!(r.get("data").is_none(), "data while running: {r}");
        assert!(t0.elapsed() < Duration::from_secs(60), "still running: {r}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn recur(py: &Interpreter, user: Option<&RunAs>) -> Target {
    let args = ["--threads", "2", "--max-depth", "300"];
    match user {
        Some(u) => Target::spawn_as(u, py, "recur_target.py", &args),
        None => Target::spawn(py, "recur_target.py", &args),
    }
}

#[test]
fn a_session_samples_a_moving_target_in_every_format() {
    let py = require!(testkit::python(&Want::version("3.12")));
    let t = recur(&py, None);
    let d = Daemon::start(None);
    let mut c = d.connect();
    let started = c.ok(
        "profile",
        json!({"pid": t.pid(), "rate": 200, "duration": 1.5, "idle": true}),
    );
    let session = started["session"].as_u64().unwrap();
    assert_eq!(started["pid"], json!(t.pid()));
    let r = wait_result(&mut c, session, "folded");
    assert_eq!(r["state"], "done", "{r}");
    assert_eq!(r["format"], "folded");
    let samples = r["samples"].as_u64().unwrap();
    let workers = check_folded(t.truth(), r["data"].as_str().unwrap()).unwrap();
    eprintln!(
        "daemon profile: {samples} reads in {:.2} s, {} dropped as torn, {workers} worker stacks",
        r["elapsed"].as_f64().unwrap(),
        r["dropped"]
    );
    assert!(workers >= 10, "{workers} worker stacks: {r}");
    // the same session in the other formats
    let s = c.ok(
        "profile_result",
        json!({"session": session, "format": "speedscope"}),
    );
    let doc: Value = serde_json::from_str(s["data"].as_str().unwrap()).unwrap();
    assert_eq!(
        doc["$schema"],
        "https://www.speedscope.app/file-format-schema.json"
    );
    assert!(!doc["profiles"].as_array().unwrap().is_empty());
    let f = c.ok(
        "profile_result",
        json!({"session": session, "format": "flamegraph"}),
    );
    let svg = f["data"].as_str().unwrap();
    assert!(
        svg.contains("<svg") && svg.contains("recur_a"),
        "{}",
        &svg[..200.min(svg.len())]
    );
    let p = c.ok(
        "profile_result",
        json!({"session": session, "format": "pprof"}),
    );
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(p["data"].as_str().unwrap())
        .unwrap();
    assert_eq!(&bytes[..2], &[0x1f, 0x8b], "gzip");

    // stopped early: what was seen is kept
    let long = c.ok(
        "profile",
        json!({"pid": t.pid(), "rate": 100, "duration": 120}),
    );
    let id = long["session"].as_u64().unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let t0 = Instant::now();
    let stopped = c.ok("profile_stop", json!({"session": id}));
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert_eq!(stopped["state"], "stopped", "{stopped}");
    assert!(stopped["elapsed"].as_f64().unwrap() < 30.0, "{stopped}");
    check_folded(t.truth(), stopped["data"].as_str().unwrap()).unwrap();

    // the process exits during a session: what was seen is kept, state exited
    let short = recur(&py, None);
    let e = c.ok(
        "profile",
        json!({"pid": short.pid(), "rate": 100, "duration": 60}),
    );
    std::thread::sleep(Duration::from_millis(500));
    drop(short);
    let r = wait_result(&mut c, e["session"].as_u64().unwrap(), "folded");
    assert_eq!(r["state"], "exited", "{r}");

    // bad parameters
    for bad in [
        json!({"pid": t.pid(), "rate": 0, "duration": 1}),
        json!({"pid": t.pid(), "rate": 100, "duration": 0}),
        json!({"pid": t.pid(), "rate": 10000, "duration": 3600}),
        json!({"pid": t.pid()}),
    ] {
        assert_eq!(
            c.err_code("profile", bad.clone()),
            codes::INVALID_PARAMS,
            "{bad}"
        );
    }
    assert_eq!(
        c.err_code("profile_result", json!({"session": 999_999})),
        codes::INVALID_PARAMS
    );
    assert_eq!(
        c.err_code("profile", json!({"pid": 999_999_999, "duration": 1})),
        codes::NO_SUCH_PROCESS
    );
}

/// One JSON-RPC call as `user`, from the host's python3 (a real unprivileged client).
fn call_as(user: &RunAs, socket: &std::path::Path, method: &str, params: Value) -> Value {
    let script = r#"
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall((json.dumps({"jsonrpc": "2.0", "id": 1, "method": sys.argv[2], "params": json.loads(sys.argv[3])}) + "\n").encode())
f = s.makefile()
print(f.readline())
"#;
    let out = user
        .command("/usr/bin/python3")
        .arg("-c")
        .arg(script)
        .arg(socket)
        .arg(method)
        .arg(params.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_user_profiles_their_own_process_only() {
    let user = require!(TestUser::create());
    let run_as = user.run_as();
    let user_py = require!(testkit::python(&Want::any().usable_by_others()));
    let own = recur(&user_py, Some(&run_as));
    let root_target = recur(&user_py, None);
    let d = Daemon::start(None);
    // a root process: refused, as the kernel would refuse the user's own read
    let r = call_as(
        &run_as,
        &d.socket,
        "profile",
        json!({"pid": root_target.pid(), "duration": 1}),
    );
    assert_eq!(r["error"]["code"], json!(codes::PERMISSION_DENIED), "{r}");
    // their own: sampled, and the result is theirs
    let r = call_as(
        &run_as,
        &d.socket,
        "profile",
        json!({"pid": own.pid(), "rate": 200, "duration": 1}),
    );
    let session = r["result"]["session"]
        .as_u64()
        .unwrap_or_else(|| panic!("{r}"));
    let t0 = Instant::now();
    let result = loop {
        let r = call_as(
            &run_as,
            &d.socket,
            "profile_result",
            json!({"session": session}),
        );
        if r["result"]["state"] != "running" {
            break r;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "{r}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(result["result"]["state"], "done", "{result}");
    check_folded(own.truth(), result["result"]["data"].as_str().unwrap()).unwrap();
    // root's session is not the user's
    let mut c = d.connect();
    let mine = c.ok("profile", json!({"pid": root_target.pid(), "duration": 30}));
    let r = call_as(
        &run_as,
        &d.socket,
        "profile_stop",
        json!({"session": mine["session"]}),
    );
    assert_eq!(r["error"]["code"], json!(codes::PERMISSION_DENIED), "{r}");
    // root may read (and stop) the user's
    let theirs = c.ok("profile_result", json!({"session": session}));
    assert_eq!(theirs["state"], "done");
    c.ok("profile_stop", json!({"session": mine["session"]}));
}

/// `pystackd record --pid` goes through the daemon when it runs: an unprivileged user
/// records their own process (exit 0, the file holds only paths of the program), with
/// `--native` too, and is refused a root process (exit 5, no file), as their `pystackd
/// stack` is.
#[test]
fn record_goes_through_the_daemon() {
    let user = require!(TestUser::create());
    let run_as = user.run_as();
    let user_py = require!(testkit::python(&Want::any().usable_by_others()));
    let own = recur(&user_py, Some(&run_as));
    let root_target = recur(&user_py, None);
    let d = Daemon::start(None);
    let out = std::env::temp_dir().join(format!(
        "pystackd-daemon-record-{}.folded",
        std::process::id()
    ));
    let record_with = |pid: u32, extra: &[&str]| {
        run_as
            .command(testkit::pystackd_bin())
            .args([
                "record",
                "--pid",
                &pid.to_string(),
                "--rate",
                "200",
                "--duration",
                "1",
            ])
            .args(extra)
            .arg("-o")
            .arg(&out)
            .arg("--socket")
            .arg(&d.socket)
            .output()
            .unwrap()
    };
    let record = |pid: u32| record_with(pid, &[]);
    let o = record(own.pid());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("through the daemon"), "{err}");
    let text = std::fs::read_to_string(&out).unwrap();
    let workers = check_folded(own.truth(), &text).unwrap();
    eprintln!("record through the daemon: {workers} worker stacks; {err}");
    assert!(workers >= 10, "{workers}: {err}");
    let _ = std::fs::remove_file(&out);
    // --native too: the daemon stops the user's own process per sample; every stack has
    // a native root, and its Python frames, taken out, are a path of the program
    let o = record_with(own.pid(), &["--native"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("through the daemon"), "{err}");
    let text = std::fs::read_to_string(&out).unwrap();
    let mut python_only = String::new();
    for line in text.lines() {
        let (stack, n) = line.rsplit_once(' ').unwrap();
        let frames: Vec<&str> = stack.split(';').collect();
        assert!(
            frame(frames[0]).is_none(),
            "a Python frame at the root: {line}"
        );
        let py: Vec<&str> = frames.into_iter().filter(|f| frame(f).is_some()).collect();
        if !py.is_empty() {
            python_only.push_str(&format!("{} {n}\n", py.join(";")));
        }
    }
    let native_workers = check_folded(own.truth(), &python_only).unwrap();
    eprintln!("record --native through the daemon: {native_workers} worker stacks; {err}");
    assert!(native_workers >= 10, "{native_workers}: {err}\n{text}");
    let _ = std::fs::remove_file(&out);
    let o = record(root_target.pid());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(5), "{err}");
    assert!(!out.exists(), "a file was left behind");
    let o = record_with(root_target.pid(), &["--native"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(5), "--native: {err}");
    assert!(!out.exists(), "a file was left behind");
}

/// `gil: true` through the real daemon: the thread hashing in C with the GIL released
/// (gil_target.py's `hash_loop`, on the CPU as much as the Python thread) is left out and
/// counted in `gil_skipped`; the Python thread holding the GIL is kept.
#[test]
fn a_gil_session_keeps_only_the_gil_holder() {
    let py = require!(testkit::python(&Want::at_least("3.8").pyenv()));
    let mut child = testkit::spawn_ready(&py, "gil_target.py", &[]);
    let d = Daemon::start(None);
    let mut c = d.connect();
    let count = |text: &str, f: &str| -> u64 {
        text.lines()
            .filter(|l| l.contains(&format!("{f} (")))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
            .sum()
    };
    let mut run = |gil: bool| {
        let s = c.ok(
            "profile",
            json!({"pid": child.id(), "rate": 200, "duration": 1.5, "gil": gil}),
        );
        wait_result(&mut c, s["session"].as_u64().unwrap(), "folded")
    };
    let with = run(true);
    let without = run(false);
    let _ = child.kill();
    let _ = child.wait();
    let (wt, wo) = (
        with["data"].as_str().unwrap_or(""),
        without["data"].as_str().unwrap_or(""),
    );
    let (h, p) = (count(wt, "hash_loop"), count(wt, "py_loop"));
    let (h2, p2) = (count(wo, "hash_loop"), count(wo, "py_loop"));
    eprintln!(
        "daemon gil [{}]: with hash_loop {h} py_loop {p} (gil_skipped {}); without {h2} {p2}",
        py.label, with["gil_skipped"]
    );
    assert!(
        p >= 20 && h2 >= 20 && h * 4 <= p && h * 4 <= h2,
        "{with}\n{without}"
    );
    assert!(with["gil_skipped"].as_u64().unwrap_or(0) >= 20, "{with}");
    assert_eq!(without["gil_skipped"].as_u64(), Some(0), "{without}");
}
