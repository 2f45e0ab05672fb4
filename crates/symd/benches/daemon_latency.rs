//! Daemon benchmark: `stack` latency over the socket for a 40-frame target (p50,
//! p99), requests/s with 8 concurrent clients, and the daemon's RSS with 100
//! attached processes. Run with `cargo bench -p symd --bench daemon_latency`.

use std::io::{BufRead, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::daemon::{main_thread_frames, Conn, Daemon, TempDir};
use testkit::{pystackd_bin, Target, Want};

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// A daemon logging warnings only, as in production (the tests' default is debug).
fn quiet_daemon(tag: &str) -> Daemon {
    let dir = TempDir::new(tag);
    let socket = dir.path().join("pystackd.sock");
    let mut cmd = Command::new(pystackd_bin());
    cmd.env("PYSTACKD_LOG", "warn");
    Daemon::start_with(cmd, dir, socket, None)
}

/// Kills and reaps the processes even when the benchmark panics.
struct Reaper(Vec<Child>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

fn main() {
    // the build docs/benchmarks.md was measured with: 3.10 from pyenv
    let py = testkit::require!(testkit::python(&Want::version("3.10").pyenv()));
    let d = quiet_daemon("bench");
    // depth 37: <module> + 38 x level + leaf = 40 frames
    let t = Target::chain(&py, 37);
    let pid = t.pid();
    let mut c = d.connect();
    let first = c.call("stack", json!({"pid": pid}));
    if first.get("error").is_some() {
        eprintln!("the daemon cannot read stacks yet: {}", first["error"]);
        return;
    }
    let frames = main_thread_frames(&first["result"], pid).len();
    for _ in 0..100 {
        c.ok("stack", json!({"pid": pid}));
    }
    let n = 5000;
    // Round trip of one request: from writing the line to having the whole reply
    // line; the client's own JSON parsing of the reply is timed separately.
    let req = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"stack\",\"params\":{{\"pid\":{pid}}}}}\n"
    );
    let mut lat = Vec::with_capacity(n);
    let mut with_parse = Vec::with_capacity(n);
    let mut line = Vec::new();
    for _ in 0..n {
        line.clear();
        let t0 = Instant::now();
        c.wr.write_all(req.as_bytes()).unwrap();
        c.rd.read_until(b'\n', &mut line).unwrap();
        lat.push(t0.elapsed());
        let v: Value = serde_json::from_slice(&line).unwrap();
        with_parse.push(t0.elapsed());
        assert!(v.get("result").is_some(), "{v}");
    }
    lat.sort();
    with_parse.sort();
    println!(
        "stack latency, {frames}-frame target, {n} requests on one connection ({} bytes a \
         reply): p50 {:?}, p99 {:?}, max {:?}; with the client parsing the reply into a \
         serde_json::Value: p50 {:?}, p99 {:?}",
        line.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat[n - 1],
        percentile(&with_parse, 0.5),
        percentile(&with_parse, 0.99),
    );

    let run_for = Duration::from_secs(3);
    let t0 = Instant::now();
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let socket = d.socket.clone();
            std::thread::spawn(move || {
                let mut c = Conn::new(&socket);
                let mut n = 0u64;
                while t0.elapsed() < run_for {
                    c.ok("stack", json!({"pid": pid}));
                    n += 1;
                }
                n
            })
        })
        .collect();
    let total: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    println!(
        "8 concurrent clients, stack of the same target: {:.0} requests/s",
        total as f64 / t0.elapsed().as_secs_f64()
    );

    let daemon_pid = d.child.id();
    let before = rss_kib(daemon_pid);
    // 100 small targets of a cheap interpreter (3.12 starts fastest of the pyenv builds)
    let small = testkit::python(&Want::version("3.12").pyenv()).unwrap_or(py);
    let sleepers = Reaper(
        (0..100)
            .map(|_| {
                Command::new(&small.command)
                    .args(["-c", "import time; time.sleep(600)"])
                    .stdin(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect(),
    );
    std::thread::sleep(Duration::from_millis(1000));
    let d100 = quiet_daemon("bench100");
    let mut c = d100.connect();
    let base = rss_kib(d100.child.id());
    let mut attached = 0;
    for s in &sleepers.0 {
        let v = c.call("attach", json!({"pid": s.id()}));
        if v.get("error").is_none() {
            c.ok("stack", json!({"pid": s.id()}));
            attached += 1;
        } else {
            eprintln!("attach {}: {}", s.id(), v["error"]);
        }
    }
    let st: Value = c.ok("status", Value::Null);
    println!(
        "RSS (VmRSS): {} KiB idle, {} KiB with {attached} attached {} processes (after one \
         stack each; caches {} bytes); first daemon {} KiB after the runs above",
        base,
        rss_kib(d100.child.id()),
        small.label,
        st["cache"]["bytes"],
        before
    );
    drop(sleepers);
}
