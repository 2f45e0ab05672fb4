//! The daemon against real Python targets: attach/list/stack/detach end to end
//! (checked against the interpreter's own view of its stack), a target killed while
//! attached, and 50 clients in parallel. These need the reader.

use std::process::Command;
use std::time::{Duration, Instant};

use protocol::rpc::codes;
use serde_json::{json, Value};
use testkit::daemon::{main_thread_frames, Conn, Daemon};
use testkit::{pystackd_bin, require, Target, Want};

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
