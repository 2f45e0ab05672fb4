//! The daemon against real Python targets: attach/list/stack/detach end to end
//! (checked against the interpreter's own view of its stack), a target killed while
//! attached, and 50 clients in parallel; the `annotate` method: gdb's native stack of the
//! target, annotated by the daemon, checked against the interpreter's own view of its stack,
//! and the access check: a client that may not read the target gets its text back
//! unannotated. These need the reader.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use protocol::rpc::codes;
use serde_json::{json, Value};
use testkit::daemon::{main_thread_frames, Conn, Daemon};
use testkit::tools::gdb_bt;
use testkit::{pystackd_bin, require, Interpreter, Target, TestUser, Want};

/// One eval frame per Python frame up to 3.10.
fn py310() -> Want {
    Want::version("3.10")
}

#[test]
fn every_method_end_to_end() {
    let py = require!(testkit::python(&py310()));
    let t = Target::chain(&py, 3);
    let pid = t.pid();
    let d = Daemon::start(None);
    let mut c = d.connect();

    let a = c.ok("attach", json!({"pid": pid}));
    assert_eq!(a["pid"], json!(pid));
    assert_eq!(a["python_version"], t.truth().version);
    assert_eq!(a["newly_attached"], true);
    assert!(
        a["python_binary"].as_str().unwrap().contains("python3.10"),
        "{a}"
    );
    assert!(a["os_threads"].as_u64().unwrap() >= 1, "{a}");
    let again = c.ok("attach", json!({"pid": pid}));
    assert_eq!(again["newly_attached"], false);

    let l = c.ok("list", Value::Null);
    let procs = l["processes"].as_array().unwrap();
    assert_eq!(procs.len(), 1, "{l}");
    assert_eq!(procs[0]["pid"], json!(pid));

    for params in [json!({"pid": pid}), json!({"pid": pid, "pause": true})] {
        let s = c.ok("stack", params);
        assert_eq!(s["pid"], json!(pid));
        assert_eq!(s["python_version"], t.truth().version);
        assert_eq!(main_thread_frames(&s, pid), t.main_frames(), "{s}");
    }
    let one = c.ok("stack", json!({"pid": pid, "tid": pid}));
    assert_eq!(one["threads"].as_array().unwrap().len(), 1, "{one}");

    // same data as `pystackd stack --json`, through the daemon and directly
    for extra in [&[][..], &["--no-daemon"]] {
        let out = Command::new(pystackd_bin())
            .args(["stack", &pid.to_string(), "--json", "--socket"])
            .arg(&d.socket)
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{extra:?}: {out:?}");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(main_thread_frames(&v, pid), t.main_frames(), "{extra:?}");
    }
    let s = c.ok("status", Value::Null);
    assert_eq!(s["attached"], 1);
    let l = c.ok("list", Value::Null);
    assert!(
        l["processes"][0]["stacks_read"].as_u64().unwrap() >= 4,
        "{l}"
    );

    // CLI forms
    let out = d.cli(&["list"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&pid.to_string()));
    let out = d.cli(&["detach", &pid.to_string()]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(c.ok("list", Value::Null)["processes"], json!([]));
    let r = c.ok("detach", json!({"pid": pid}));
    assert_eq!(r["detached"], false);
    let out = d.cli(&["attach", &pid.to_string(), "--json"]);
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["python_version"], t.truth().version);
}

#[test]
fn non_python_process_is_refused() {
    let mut sleeper = Command::new("sleep").arg("1000").spawn().unwrap();
    let d = Daemon::start(None);
    let mut c = d.connect();
    let code = c.err_code("attach", json!({"pid": sleeper.id()}));
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert_eq!(code, codes::NOT_PYTHON);
    assert_eq!(c.ok("list", Value::Null)["processes"], json!([]));
}

#[test]
fn target_killed_while_attached() {
    let py = require!(testkit::python(&py310()));
    let mut t = Target::chain(&py, 1);
    let pid = t.pid();
    let d = Daemon::start(Some("sweep_interval_secs = 1\n"));
    let mut c = d.connect();
    c.ok("attach", json!({"pid": pid}));
    c.ok("stack", json!({"pid": pid}));
    t.kill();
    let code = c.err_code("stack", json!({"pid": pid}));
    assert!(
        code == codes::NO_SUCH_PROCESS || code == codes::PROCESS_EXITED,
        "code {code}"
    );
    assert_eq!(c.ok("list", Value::Null)["processes"], json!([]));

    // the periodic sweep drops a dead process nobody asks about
    let mut t2 = Target::chain(&py, 1);
    let pid2 = t2.pid();
    c.ok("attach", json!({"pid": pid2}));
    t2.kill();
    let t0 = Instant::now();
    while c.ok("status", Value::Null)["attached"] != 0 {
        assert!(t0.elapsed() < Duration::from_secs(10), "not swept");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(d.log_text().contains("exited"), "{}", d.log_text());
}

#[test]
fn fifty_clients_in_parallel() {
    let py = require!(testkit::python(&py310()));
    let t = Target::chain(&py, 5);
    let pid = t.pid();
    let expected = t.main_frames().clone();
    let d = Daemon::start(None);
    let socket = d.socket.clone();
    let workers: Vec<_> = (0..50)
        .map(|w| {
            let socket = socket.clone();
            let expected = expected.clone();
            std::thread::spawn(move || {
                let mut c = Conn::new(&socket);
                // every request gets its own reply (Conn checks the id) and succeeds
                let mut replies = 0;
                let mut stacks = 0;
                for i in 0..200 {
                    replies += 1;
                    match (w + i) % 4 {
                        0 => {
                            c.ok("status", Value::Null);
                        }
                        1 => {
                            c.ok("version", Value::Null);
                        }
                        2 => {
                            c.ok("list", Value::Null);
                        }
                        _ => {
                            let s = c.ok("stack", json!({"pid": pid}));
                            assert_eq!(main_thread_frames(&s, pid), expected);
                            stacks += 1;
                        }
                    }
                }
                (replies, stacks)
            })
        })
        .collect();
    let (mut replies, mut stacks) = (0, 0);
    for w in workers {
        let (r, s) = w.join().expect("a client failed");
        replies += r;
        stacks += s;
    }
    assert_eq!((replies, stacks), (50 * 200, 50 * 200 / 4));
    let s = d.connect().ok("status", Value::Null);
    assert_eq!(s["requests"], 50 * 200, "{s}");
    assert_eq!(s["errors"], 0, "{s}");
    assert_eq!(s["attached"], 1, "{s}");
}

// ---- the annotate method ----

/// One eval frame per Python frame up to 3.10: every annotation is one Python frame; with
/// symbols, so that gdb names the eval loop.
fn gdb_python() -> Result<Interpreter, testkit::Skip> {
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
    let py = require!(gdb_python());
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
    let py = require!(gdb_python());
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
