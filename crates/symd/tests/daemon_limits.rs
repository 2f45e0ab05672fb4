//! Resource limits a client cannot exceed: connections per uid and idle connections.

use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::daemon::{Conn, Daemon};
use testkit::{require, RunAs, Want};

/// An unprivileged uid (Debian's `nobody`; numeric, so it needs no passwd entry).
const OTHER_UID: u32 = RunAs::NOBODY.uid;

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
