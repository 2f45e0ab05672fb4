//! The daemon's JSON-RPC handling that needs no Python target: every method's
//! parameter checking, malformed, oversized and non-UTF-8 input, notifications,
//! pipelining, counters. A real `pystackd serve` on a temporary socket.

use protocol::rpc::codes;
use serde_json::{json, Value};
use testkit::daemon::{Conn, Daemon};

#[test]
fn version_status_list_annotate() {
    let d = Daemon::start(None);
    let mut c = d.connect();
    let v = c.ok("version", Value::Null);
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["protocol"], 1);
    // params may be absent, null or {}; an array is refused (by-name params only)
    c.ok("version", json!({}));
    assert_eq!(c.err_code("version", json!([])), codes::INVALID_PARAMS);
    let s = c.ok("status", Value::Null);
    assert_eq!(s["pid"], json!(d.child.id()));
    assert_eq!(s["attached"], 0);
    assert_eq!(s["max_attached"], 256);
    // ours, plus perhaps the readiness probe not yet seen closing
    assert!(s["connections"].as_u64().unwrap() >= 1, "{s}");
    assert_eq!(s["requests"], 3, "{s}");
    assert_eq!(s["errors"], 1, "{s}");
    // root sees the daemon's totals, not one uid's share
    assert!(s.get("uid").is_none(), "{s}");
    assert_eq!(s["access_checkers"], 0, "{s}");
    let l = c.ok("list", Value::Null);
    assert_eq!(l["processes"], json!([]));
    // text without stacks comes back as it was
    let a = c.ok(
        "annotate",
        json!({"text": "foo\nbar\n", "format": "dtrace"}),
    );
    assert_eq!(a["text"], "foo\nbar\n");
    assert_eq!(a["partial"], false);
    // counters: 6 requests so far, this is the 7th
    let s = c.ok("status", Value::Null);
    assert_eq!(s["requests"], 6, "{s}");
    assert_eq!(s["errors"], 1, "{s}");
}

#[test]
fn bad_methods_and_params() {
    let d = Daemon::start(None);
    let mut c = d.connect();
    assert_eq!(c.err_code("nosuch", Value::Null), codes::METHOD_NOT_FOUND);
    assert_eq!(
        c.err_code("Stack", json!({"pid": 1})),
        codes::METHOD_NOT_FOUND
    );
    for m in ["attach", "detach", "stack"] {
        assert_eq!(c.err_code(m, Value::Null), codes::INVALID_PARAMS, "{m}");
        assert_eq!(c.err_code(m, json!({})), codes::INVALID_PARAMS, "{m}");
        assert_eq!(
            c.err_code(m, json!({"pid": "1"})),
            codes::INVALID_PARAMS,
            "{m}"
        );
        assert_eq!(
            c.err_code(m, json!({"pid": -1})),
            codes::INVALID_PARAMS,
            "{m}"
        );
        assert_eq!(
            c.err_code(m, json!({"pid": 1, "x": 1})),
            codes::INVALID_PARAMS,
            "{m}"
        );
        assert_eq!(
            c.err_code(m, json!({"pid": 0})),
            codes::INVALID_PARAMS,
            "{m}"
        );
    }
    let v = c.call("stack", json!({"pid": 1, "pause": "yes"}));
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("stack") && msg.contains("pause"), "{msg}");
    assert_eq!(c.err_code("status", json!({"a": 1})), codes::INVALID_PARAMS);
    assert_eq!(c.err_code("list", json!([1])), codes::INVALID_PARAMS);
    assert_eq!(
        c.err_code("annotate", json!({"pid": 1})),
        codes::INVALID_PARAMS
    );
    // still serving on the same connection
    c.ok("version", Value::Null);
}

#[test]
fn missing_process_is_no_such_process() {
    let d = Daemon::start(None);
    let mut c = d.connect();
    // pid_max is at most 2^22 on Linux
    let pid = 4_194_304 + 17;
    for m in ["attach", "stack"] {
        assert_eq!(
            c.err_code(m, json!({"pid": pid})),
            codes::NO_SUCH_PROCESS,
            "{m}"
        );
    }
    let r = c.ok("detach", json!({"pid": pid}));
    assert_eq!(r, json!({"pid": pid, "detached": false}));
}

fn error_of(v: &Value) -> (i64, String) {
    assert_eq!(v["id"], Value::Null, "{v}");
    (
        v["error"]["code"].as_i64().unwrap(),
        v["error"]["message"].as_str().unwrap().to_string(),
    )
}

#[test]
fn malformed_requests_get_errors_and_the_connection_survives() {
    let d = Daemon::start(None);
    let mut c = d.connect();
    let cases: &[(&[u8], i64, &str)] = &[
        (b"not json\n", codes::PARSE_ERROR, "invalid JSON"),
        (
            b"{\"jsonrpc\":\"2.0\",\n",
            codes::PARSE_ERROR,
            "invalid JSON",
        ),
        (b"\xff\xfe{}\n", codes::PARSE_ERROR, "UTF-8"),
        (
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ver\xc3\x28\"}\n",
            codes::PARSE_ERROR,
            "UTF-8",
        ),
        (
            b"[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"version\"}]\n",
            codes::INVALID_REQUEST,
            "batch",
        ),
        (b"42\n", codes::INVALID_REQUEST, "object"),
        (
            b"{\"jsonrpc\":\"2.0\",\"id\":{},\"method\":\"version\"}\n",
            codes::INVALID_REQUEST,
            "id",
        ),
        (
            b"{\"jsonrpc\":\"2.0\",\"id\":[1],\"method\":\"version\"}\n",
            codes::INVALID_REQUEST,
            "id",
        ),
    ];
    for (line, code, needle) in cases {
        c.send_raw(line);
        let (got, msg) = error_of(&c.recv());
        assert_eq!(got, *code, "{:?}: {msg}", String::from_utf8_lossy(line));
        assert!(
            msg.contains(needle),
            "{:?}: {msg}",
            String::from_utf8_lossy(line)
        );
        c.ok("version", Value::Null);
    }
    // invalid requests that carry an id are answered with it
    c.send_raw(b"{\"jsonrpc\":\"1.0\",\"id\":7,\"method\":\"version\"}\n");
    let v = c.recv();
    assert_eq!(v["id"], 7);
    assert_eq!(v["error"]["code"], codes::INVALID_REQUEST);
    c.send_raw(b"{\"jsonrpc\":\"2.0\",\"id\":\"abc\",\"params\":{}}\n");
    let v = c.recv();
    assert_eq!(v["id"], "abc");
    assert_eq!(v["error"]["code"], codes::INVALID_REQUEST);
    // blank lines are ignored
    c.send_raw(b"\n   \n");
    c.ok("version", Value::Null);
}

#[test]
fn oversized_lines_are_discarded() {
    let d = Daemon::start(None);
    let mut c = d.connect();
    let limit = 1 << 20;
    // exactly at the limit (padding after the object): accepted
    let mut line = br#"{"jsonrpc":"2.0","id":1,"method":"version"}"#.to_vec();
    line.resize(limit, b' ');
    line.push(b'\n');
    c.send_raw(&line);
    let v = c.recv();
    assert_eq!(v["id"], 1, "{v}");
    assert!(v["result"].is_object(), "{v}");
    // one byte over: refused, rest of the line thrown away
    let mut big = line.clone();
    big.insert(limit - 1, b' ');
    c.send_raw(&big);
    let (code, msg) = error_of(&c.recv());
    assert_eq!(code, codes::REQUEST_TOO_LARGE, "{msg}");
    assert!(msg.contains("1048576"), "{msg}");
    // a much larger one, written while we wait for the answer
    let huge = vec![b'x'; 8 << 20];
    let mut w = c.wr.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        w.write_all(&huge).unwrap();
        w.write_all(b"\n").unwrap();
    });
    let (code, _) = error_of(&c.recv());
    writer.join().unwrap();
    assert_eq!(code, codes::REQUEST_TOO_LARGE);
    c.ok("version", Value::Null);
    let s = c.ok("status", Value::Null);
    assert_eq!(s["errors"], 2, "{s}");
}

#[test]
fn request_size_limit_comes_from_config() {
    let d = Daemon::start(Some("max_request_bytes = 100\n"));
    let mut c = d.connect();
    c.ok("version", Value::Null);
    let mut line = br#"{"jsonrpc":"2.0","id":1,"method":"version"}"#.to_vec();
    line.resize(200, b' ');
    line.push(b'\n');
    c.send_raw(&line);
    let (code, msg) = error_of(&c.recv());
    assert_eq!(code, codes::REQUEST_TOO_LARGE);
    assert!(msg.contains("100 bytes"), "{msg}");
}

#[test]
fn notifications_get_no_reply_and_pipelined_requests_keep_order() {
    let d = Daemon::start(None);
    let mut c = d.connect();
    let mut batch = Vec::new();
    batch.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"method\":\"version\"}\n");
    batch.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"method\":\"nosuch\"}\n");
    for i in 0..200 {
        let m = ["version", "status", "list"][i % 3];
        batch.extend_from_slice(
            format!("{{\"jsonrpc\":\"2.0\",\"id\":{i},\"method\":\"{m}\"}}\n").as_bytes(),
        );
    }
    c.send_raw(&batch);
    for i in 0..200 {
        let v = c.recv();
        assert_eq!(v["id"], i, "{v}");
        assert!(v["result"].is_object(), "{v}");
    }
}

#[test]
fn client_subcommands_text_and_json() {
    let d = Daemon::start(None);
    let out = d.cli(&["status"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("uptime:") && text.contains("attached:"),
        "{text}"
    );
    let out = d.cli(&["status", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["pid"], json!(d.child.id()));
    let out = d.cli(&["list"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "No processes attached\n"
    );
    let out = d.cli(&["list", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v, json!({"processes": []}));
    // reader errors map to the CLI's exit statuses
    let out = d.cli(&["attach", "4194321"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such process"));
    let out = d.cli(&["detach", "4194321"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("was not attached"));
    let out = d.cli(&["stack", "4194321"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
}

/// The raw `id` member of a reply line, as text.
fn raw_id(line: &str) -> &str {
    let start = line.find("\"id\":").expect("id") + 5;
    let rest = &line[start..];
    let end = rest
        .find(",\"result\"")
        .or_else(|| rest.find(",\"error\""))
        .unwrap();
    &rest[..end]
}

fn recv_line(c: &mut Conn) -> String {
    use std::io::BufRead;
    let mut line = String::new();
    c.rd.read_line(&mut line).unwrap();
    line
}

#[test]
fn ids_come_back_exactly_as_sent() {
    let d = Daemon::start(None);
    let mut c = d.connect();
    for id in [
        "123456789012345678901234567890",
        "1e2",
        "-0.0",
        "1.50",
        "\"abc\"",
        "\"\\u00e9\"",
        "null",
        "42",
    ] {
        for method in ["version", "nosuch"] {
            c.send_raw(
                format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"{method}\"}}\n").as_bytes(),
            );
            let line = recv_line(&mut c);
            assert_eq!(raw_id(&line), id, "{line}");
        }
    }
}

#[test]
fn duplicate_keys_and_array_params_are_refused() {
    let d = Daemon::start(None);
    let mut c = d.connect();
    for line in [
        r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"version"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"nosuch","method":"version"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"stack","params":{"pid":1,"pid":2}}"#,
    ] {
        c.send_raw(format!("{line}\n").as_bytes());
        let v = c.recv();
        assert_eq!(v["error"]["code"], codes::INVALID_REQUEST, "{line}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("duplicate key"),
            "{v}"
        );
        // which id is meant cannot be told: none
        assert_eq!(v["id"], Value::Null, "{v}");
    }
    for m in ["stack", "attach", "status"] {
        c.send_raw(
            format!("{{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"{m}\",\"params\":[1234]}}\n")
                .as_bytes(),
        );
        let v = c.recv();
        assert_eq!(v["id"], 9, "{v}");
        assert_eq!(v["error"]["code"], codes::INVALID_PARAMS, "{m}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains("object"),
            "{v}"
        );
    }
    c.ok("version", Value::Null);
}

#[test]
fn a_client_that_does_not_read_its_replies_is_disconnected() {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let d = Daemon::start(Some("idle_timeout_secs = 2\n"));
    let c = d.connect();
    // requests for far more reply bytes than the socket buffers hold, never read
    let req = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"status\"}\n".repeat(20_000);
    let mut w = c.wr.try_clone().unwrap();
    w.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    let writer = std::thread::spawn(move || {
        // stops when the daemon stops reading (blocked on its write) or closes
        let _ = w.write_all(&req);
    });
    let t0 = Instant::now();
    // the daemon closes: first our send side errors or the writer finishes...
    writer.join().unwrap();
    // ...then, reading now, the buffered replies end in EOF instead of going on
    let mut rd = c.rd;
    rd.get_mut()
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let mut total = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match rd.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e) => panic!("connection not closed after {:?}: {e}", t0.elapsed()),
        }
    }
    let replies = total / 100;
    assert!(
        replies < 20_000,
        "all {total} bytes of replies were written"
    );
    assert!(d.log_text().contains("read no reply"), "{}", d.log_text());
    // the daemon serves others meanwhile and counts the connection gone
    let s = d.connect().ok("status", Value::Null);
    assert_eq!(s["connections"], 1, "{s}");
}

/// Root opens `n` connections (each answers), then one more: returns them and that one's
/// reply, which must be LIMIT_REACHED.
fn root_over_cap(d: &Daemon, n: usize) -> (Vec<Conn>, Conn, Value) {
    // (the readiness probe may still count as open for a moment)
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut open: Vec<Conn> = (0..n).map(|_| d.connect()).collect();
    for c in &mut open {
        c.ok("version", Value::Null);
    }
    let mut extra = d.connect();
    let v = extra.recv();
    assert_eq!(v["error"]["code"], codes::LIMIT_REACHED, "{v}");
    (open, extra, v)
}

#[test]
fn root_has_a_connection_cap_of_its_own() {
    let d = Daemon::start(Some("max_connections_root = 3\nmax_connections = 10\n"));
    let (mut open, mut extra, v) = root_over_cap(&d, 3);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_connections_root"),
        "{v}"
    );
    assert!(extra.is_closed());
    drop(open.pop());
    std::thread::sleep(std::time::Duration::from_millis(200));
    d.connect().ok("version", Value::Null);
}

#[test]
fn root_never_gets_more_than_half_of_all_connections() {
    // the file asks for more than max_connections: half of them it is
    let d = Daemon::start(Some("max_connections_root = 100\nmax_connections = 4\n"));
    let (_open, _extra, v) = root_over_cap(&d, 2);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("(2, max_connections_root)"),
        "{v}"
    );
}
