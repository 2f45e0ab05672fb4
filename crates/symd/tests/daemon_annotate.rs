//! The daemon's `annotate` method against a real target: gdb's native stack of the target,
//! annotated by the daemon, checked against the interpreter's own view of its stack; and
//! the access check: a client that may not read the target gets its text back unannotated.

use std::process::Stdio;

use serde_json::{json, Value};
use testkit::daemon::Daemon;
use testkit::tools::gdb_bt;
use testkit::{require, Interpreter, Target, TestUser, Want};

/// One eval frame per Python frame up to 3.10: every annotation is one Python frame; with
/// symbols, so that gdb names the eval loop.
fn python() -> Result<Interpreter, testkit::Skip> {
    testkit::tool("gdb")?;
    testkit::python(&Want::version("3.10").shared().symbols())
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

#[test]
fn annotate_method_matches_the_interpreter() {
    let py = require!(python());
    let t = Target::chain(&py, 3);
    let pid = t.pid();
    let text = gdb_bt(pid);
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
        let mut want = t.main_frames();
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

#[test]
fn annotate_method_checks_access_for_every_pid() {
    let user = require!(TestUser::create());
    let py = require!(python());
    // the raw client below runs as the user
    let client_py = require!(testkit::python(&Want::any().usable_by_others()));
    // root's target: the unprivileged client must not learn its Python stack
    let t = Target::chain(&py, 2);
    let pid = t.pid();
    let text = gdb_bt(pid);
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
    let mut child = user
        .command(&client_py.command)
        .args(["-c", client])
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
