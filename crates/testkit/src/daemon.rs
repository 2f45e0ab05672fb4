//! The daemon harness: a real `pystackd serve` on a temporary socket ([`Daemon`]), raw
//! line-level JSON-RPC connections with timeouts ([`Conn`]), and [`main_thread_frames`] to
//! compare a `ProcessStack` answer with a [`crate::Target`]'s ground truth.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub use crate::TempDir;

pub struct Daemon {
    pub child: Child,
    pub socket: PathBuf,
    pub log: PathBuf,
    pub dir: TempDir,
}

impl Daemon {
    /// Start `pystackd serve` with an optional config file text; waits until it answers.
    pub fn start(config: Option<&str>) -> Daemon {
        let dir = TempDir::new("d");
        let socket = dir.path().join("run/pystackd.sock");
        Self::start_in(dir, socket, config)
    }

    pub fn start_in(dir: TempDir, socket: PathBuf, config: Option<&str>) -> Daemon {
        Self::start_with(Command::new(crate::pystackd_bin()), dir, socket, config)
    }

    /// `cmd` runs the `pystackd` binary (possibly through setpriv); `serve` and its
    /// options are appended.
    pub fn start_with(
        mut cmd: Command,
        dir: TempDir,
        socket: PathBuf,
        config: Option<&str>,
    ) -> Daemon {
        let log = dir.path().join("daemon.log");
        cmd.arg("serve").arg("--socket").arg(&socket);
        if let Some(text) = config {
            let cfg = dir.path().join("pystackd.conf");
            std::fs::write(&cfg, text).unwrap();
            cmd.arg("--config").arg(cfg);
        }
        // debug records for the tests unless the caller chose a filter (benchmarks)
        if !cmd.get_envs().any(|(k, _)| k == "PYSTACKD_LOG") {
            cmd.env("PYSTACKD_LOG", "debug");
        }
        cmd.env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let child = cmd.spawn().expect("spawning pystackd serve");
        let mut d = Daemon {
            child,
            socket,
            log,
            dir,
        };
        d.wait_ready();
        d
    }

    pub fn wait_ready(&mut self) {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("daemon exited early ({st}): {}", self.log_text());
            }
            if UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("daemon did not come up: {}", self.log_text());
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("pystackd.conf")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn connect(&self) -> Conn {
        Conn::new(&self.socket)
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
    }

    /// SIGTERM and wait (bounded) for the exit.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        wait_timeout(&mut self.child, Duration::from_secs(10)).unwrap_or_else(|| {
            let _ = self.child.kill();
            panic!("daemon did not stop on SIGTERM: {}", self.log_text())
        })
    }

    /// Run the `pystackd` CLI against this daemon.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(crate::pystackd_bin())
            .args(args)
            .arg("--socket")
            .arg(&self.socket)
            .env("PYSTACKD_CLIENT_TIMEOUT", "10")
            .output()
            .unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// A raw connection: lines in, lines out, with timeouts so a test never hangs.
pub struct Conn {
    pub rd: BufReader<UnixStream>,
    pub wr: UnixStream,
    next_id: u64,
}

impl Conn {
    pub fn new(socket: &Path) -> Conn {
        let s = UnixStream::connect(socket).expect("connecting to the daemon");
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
        Conn {
            wr: s.try_clone().unwrap(),
            rd: BufReader::new(s),
            next_id: 1000,
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.wr.write_all(bytes).unwrap();
    }

    /// The next reply line, parsed.
    pub fn recv(&mut self) -> Value {
        let mut line = Vec::new();
        let n = self
            .rd
            .read_until(b'\n', &mut line)
            .expect("reading a reply");
        assert!(n > 0, "connection closed");
        assert_eq!(line.last(), Some(&b'\n'), "reply not newline-terminated");
        let v: Value = serde_json::from_slice(&line).expect("reply is JSON");
        assert_eq!(v["jsonrpc"], "2.0", "{v}");
        v
    }

    /// A request; returns the whole response object (checked to carry our id).
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut req = json!({"jsonrpc": "2.0", "id": id, "method": method});
        if !params.is_null() {
            req["params"] = params;
        }
        let mut line = serde_json::to_vec(&req).unwrap();
        line.push(b'\n');
        self.send_raw(&line);
        let v = self.recv();
        assert_eq!(v["id"], json!(id), "reply to another request: {v}");
        v
    }

    /// The `result` of a call that must succeed.
    pub fn ok(&mut self, method: &str, params: Value) -> Value {
        let v = self.call(method, params);
        assert!(v.get("error").is_none(), "{method} failed: {v}");
        v["result"].clone()
    }

    /// The error code of a call that must fail.
    pub fn err_code(&mut self, method: &str, params: Value) -> i64 {
        let v = self.call(method, params);
        assert!(v.get("result").is_none(), "{method} should fail: {v}");
        v["error"]["code"].as_i64().expect("error code")
    }

    /// Expect EOF (the daemon closed the connection).
    pub fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.rd.read(&mut b), Ok(0) | Err(_))
    }
}

/// The main thread's (function, line) pairs of a `ProcessStack` JSON, outermost first.
pub fn main_thread_frames(stack: &Value, pid: u32) -> Vec<(String, u32)> {
    let threads = stack["threads"].as_array().expect("threads");
    let main = threads
        .iter()
        .find(|t| t["os_tid"] == json!(pid))
        .unwrap_or_else(|| panic!("no thread with os_tid {pid}: {stack}"));
    let mut v: Vec<(String, u32)> = main["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["function"].as_str().unwrap().to_string(),
                f["line"].as_u64().unwrap_or(0) as u32,
            )
        })
        .collect();
    v.reverse();
    v
}
