//! The daemon's `annotate` method against a real target: gdb's native stack of the target,
//! annotated by the daemon, checked against the interpreter's own view of its stack; and
//! the access check: a client that may not read the target gets its text back unannotated.

mod daemon_common;

use std::process::{Command, Stdio};

use daemon_common::*;
use serde_json::{json, Value};

/// One eval frame per Python frame up to 3.10: every annotation is one Python frame.
const PY: &str = "3.10.13";
const USER: &str = "pystackd-test";

fn gdb_stack(pid: u32) -> Option<String> {
    let out = Command::new("gdb")
        .args(["-batch", "-nx", "-p", &pid.to_string(), "-ex", "bt"])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `(function, line)` of every `[ file:line (function) ]` line, top to bottom.
/// The `[~ file:line (func) ]` lines: the daemon reads the process when the text arrives,
/// after gdb let go of it, so no line may be plain.
fn annotations(text: &str) -> Vec<(String, u32)> {
    assert!(
        !text.lines().any(|l| l.trim().starts_with("[ ")),
        "a plain line for a read later than the stack:\n{text}"
    );
    text.lines()
        .filter_map(|l| {
            let l = l.trim().strip_prefix("[~ ")?.strip_suffix(" ]")?;
            let (loc, func) = l.rsplit_once(" (")?;
            let line = loc.rsplit_once(':')?.1.parse().ok()?;
            Some((func.strip_suffix(')')?.to_string(), line))
        })
        .collect()
}

macro_rules! setup_or_skip {
    () => {{
        let Some(py) = pyenv_python(PY) else {
            eprintln!("skipped: Python {PY} not installed under pyenv");
            return;
        };
        if Command::new("gdb").arg("--version").output().is_err() {
            eprintln!("skipped: gdb not installed (apt-get install gdb)");
            return;
        }
        py
    }};
}

#[test]
fn annotate_method_matches_the_interpreter() {
    let py = setup_or_skip!();
    let t = Target::start(&py, 3);
    let pid = t.pid();
    let text = gdb_stack(pid).expect("gdb runs");
    assert!(text.contains("_PyEval_EvalFrameDefault"), "{text}");
    let d = Daemon::start(None);
    let mut c = d.connect();

    for params in [
        json!({"pid": pid, "text": text}),
        json!({"pid": pid, "text": text, "format": "gdb"}),
        // the pid from the text: `pid=` printed before the stack
        json!({"text": format!("pid={pid} tid={pid}\n{text}")}),
    ] {
        let r = c.ok("annotate", params.clone());
        let out = r["text"].as_str().unwrap();
        let mut want = t.expected.clone();
        want.reverse(); // innermost first, as the annotation lines read top to bottom
        assert_eq!(annotations(out), want, "{params}\n{out}");
        assert_eq!(r["partial"], false, "{r}");
        assert_eq!(r["summary"]["annotated"], 1, "{r}");
        assert_eq!(r["summary"]["read_later"], 1, "{r}");
        // only lines were added
        let stripped: Vec<&str> = out
            .lines()
            .filter(|l| !l.trim_start().starts_with("[~ "))
            .collect();
        let orig: Vec<&str> = params["text"].as_str().unwrap().lines().collect();
        assert_eq!(stripped, orig);
    }
    assert_eq!(
        c.err_code("annotate", json!({"text": text, "format": "nonsense"})),
        protocol::rpc::codes::INVALID_PARAMS
    );
    // no pid anywhere (gdb's header of a single-threaded attach names none): unannotated
    let r = c.ok("annotate", json!({"text": text}));
    assert_eq!(r["partial"], true, "{r}");
    assert!(annotations(r["text"].as_str().unwrap()).is_empty(), "{r}");
}

fn test_user() -> Option<(u32, u32)> {
    if !is_root() {
        eprintln!("skipped: needs root to create a user and switch to it");
        return None;
    }
    let id = |flag: &str| -> Option<u32> {
        let o = Command::new("id").args([flag, USER]).output().ok()?;
        String::from_utf8_lossy(&o.stdout).trim().parse().ok()
    };
    if id("-u").is_none() {
        let _ = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
            ])
            .arg(USER)
            .status();
    }
    match (id("-u"), id("-g")) {
        (Some(u), Some(g)) => Some((u, g)),
        _ => {
            eprintln!("skipped: cannot create user {USER}");
            None
        }
    }
}

#[test]
fn annotate_method_checks_access_for_every_pid() {
    let py = setup_or_skip!();
    let Some((uid, gid)) = test_user() else {
        return;
    };
    // root's target: the unprivileged client must not learn its Python stack
    let t = Target::start(&py, 2);
    let pid = t.pid();
    let text = gdb_stack(pid).expect("gdb runs");
    let d = Daemon::start(None);
    let req = serde_json::to_string(&json!({
        "jsonrpc": "2.0", "id": 1, "method": "annotate",
        "params": {"pid": pid, "text": text}
    }))
    .unwrap();
    // a raw client running as the user: Python's socket module, one request line
    let client = "import socket,sys\n\
s=socket.socket(socket.AF_UNIX)\n\
s.connect(sys.argv[1])\n\
s.sendall(sys.stdin.buffer.read())\n\
sys.stdout.write(s.makefile().readline())\n";
    let python = "/usr/bin/python3";
    if !std::path::Path::new(python).exists() {
        eprintln!("skipped: {python} absent (the raw client)");
        return;
    }
    let mut child = Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--clear-groups")
        .args([python, "-c", client])
        .arg(&d.socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(req.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    let r = &v["result"];
    assert_eq!(r["partial"], true, "{v}");
    assert_eq!(r["text"].as_str(), Some(text.as_str()), "{v}");
    assert_eq!(r["summary"]["annotated"], 0, "{v}");
    let details = r["summary"]["details"].to_string();
    assert!(details.contains("may not inspect"), "{details}");
    let s = d.connect().ok("status", Value::Null);
    assert!(s["denied"].as_u64().unwrap() >= 1, "{s}");
    // root may
    let r = d
        .connect()
        .ok("annotate", json!({"pid": pid, "text": text}));
    assert!(!annotations(r["text"].as_str().unwrap()).is_empty(), "{r}");
}
