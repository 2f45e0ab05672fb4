//! The daemon's life: socket creation and permissions, stale sockets, a second
//! instance, signals (SIGTERM/SIGINT stop, SIGHUP reloads), systemd socket
//! activation, and clients facing a dead, restarted or stopped daemon.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::daemon::{main_thread_frames, wait_timeout, Conn, Daemon, TempDir};
use testkit::{pystackd_bin, Target, Want};

#[test]
fn creates_socket_and_removes_it_on_sigterm_and_sigint() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let mut d = Daemon::start(None);
        let meta = std::fs::symlink_metadata(&d.socket).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o666);
        let dir = std::fs::metadata(d.socket.parent().unwrap()).unwrap();
        assert_eq!(dir.permissions().mode() & 0o777, 0o755);
        d.connect().ok("version", Value::Null);
        d.signal(sig);
        let st = wait_timeout(&mut d.child, Duration::from_secs(10)).expect("daemon stops");
        assert!(st.success(), "{st}: {}", d.log_text());
        assert!(!d.socket.exists(), "socket left behind after signal {sig}");
    }
}

#[test]
fn stale_socket_is_replaced() {
    let dir = TempDir::new("stale");
    let socket = dir.path().join("s.sock");
    drop(UnixListener::bind(&socket).unwrap()); // the file stays, nobody listens
    assert!(socket.exists());
    let d = Daemon::start_in(dir, socket, None);
    d.connect().ok("version", Value::Null);
    assert!(
        d.log_text().contains("removed stale socket"),
        "{}",
        d.log_text()
    );
}

#[test]
fn refuses_a_second_instance_and_foreign_files() {
    let d = Daemon::start(None);
    let out = Command::new(pystackd_bin())
        .args(["serve", "--socket"])
        .arg(&d.socket)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already serving"),
        "{out:?}"
    );
    // the first one is untouched
    d.connect().ok("version", Value::Null);

    let dir = TempDir::new("file");
    let path = dir.path().join("not-a-socket");
    std::fs::write(&path, "precious").unwrap();
    let out = Command::new(pystackd_bin())
        .args(["serve", "--socket"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a socket"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
}

#[test]
fn bad_config_refuses_to_start() {
    let dir = TempDir::new("badcfg");
    let cfg = dir.path().join("c.conf");
    std::fs::write(&cfg, "max_attached = 3\nno_such_key = 1\n").unwrap();
    let out = Command::new(pystackd_bin())
        .args(["serve", "--socket"])
        .arg(dir.path().join("s.sock"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(":2:") && err.contains("no_such_key"), "{err}");
}

fn max_attached(d: &Daemon) -> Value {
    d.connect().ok("status", Value::Null)["max_attached"].clone()
}

fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(10) {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn sighup_reloads_the_config() {
    let d = Daemon::start(Some("# test\nmax_attached = 7\nlog_level = \"info\"\n"));
    assert_eq!(max_attached(&d), json!(7));
    std::fs::write(d.config_path(), "max_attached = 9\n").unwrap();
    d.signal(libc::SIGHUP);
    assert!(
        wait_for(|| max_attached(&d) == json!(9)),
        "{}",
        d.log_text()
    );
    // a broken file leaves the running configuration alone
    std::fs::write(d.config_path(), "max_attached = many\n").unwrap();
    d.signal(libc::SIGHUP);
    assert!(
        wait_for(|| d.log_text().contains("keeping the running one")),
        "{}",
        d.log_text()
    );
    assert_eq!(max_attached(&d), json!(9));
}

#[test]
fn systemd_socket_activation() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let dir = TempDir::new("sd");
    let socket = dir.path().join("activated.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let fd = listener.as_raw_fd();
    let mut cmd = Command::new("/bin/sh");
    // LISTEN_PID must be the daemon's own pid: set it in the shell that execs it.
    cmd.arg("-c")
        .arg("LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" serve --socket /nonexistent/dir/x.sock")
        .arg(pystackd_bin())
        .env("PYSTACKD_LOG", "debug")
        .stderr(std::process::Stdio::piped());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself would keep close-on-exec: clear it explicitly
            if (fd != 3 && libc::dup2(fd, 3) < 0) || libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    drop(listener); // the daemon holds its own copy
    let mut c = Conn::new(&socket);
    assert_eq!(c.ok("status", Value::Null)["pid"], json!(child.id()));
    drop(c);
    // SAFETY: kill(2) on our child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let st = wait_timeout(&mut child, Duration::from_secs(10)).expect("daemon stops");
    assert!(st.success());
    // systemd owns the socket file: the daemon leaves it
    assert!(socket.exists());
    assert!(!std::path::Path::new("/nonexistent/dir").exists());
}

#[test]
fn clients_get_a_clear_error_while_the_daemon_is_down_and_after_restart() {
    // without one (a printed skip, a failure under PYSTACKD_STRICT=1), the restart is
    // checked without a Python target
    let target = match testkit::python(&Want::version("3.10")) {
        Ok(py) => Some(Target::chain(&py, 2)),
        Err(skip) => {
            skip.report();
            None
        }
    };
    let mut d = Daemon::start(None);
    let out = d.cli(&["status"]);
    assert!(out.status.success());
    let mut c = d.connect();
    c.ok("version", Value::Null);
    if let Some(t) = &target {
        let s = c.ok("stack", json!({"pid": t.pid()}));
        assert_eq!(main_thread_frames(&s, t.pid()), t.main_frames());
    }
    // killed hard: the socket file stays behind
    d.child.kill().unwrap();
    d.child.wait().unwrap();
    assert!(d.socket.exists());
    assert!(c.is_closed(), "the old connection must see EOF");
    for args in [&["status"][..], &["list", "--json"], &["attach", "1"]] {
        let t0 = Instant::now();
        let out = d.cli(args);
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{args:?} took too long"
        );
        assert_eq!(out.status.code(), Some(10), "{args:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("daemon is not running"), "{err}");
    }
    // restart on the same path: the stale socket is taken over
    let socket = d.socket.clone();
    let dir = std::mem::replace(&mut d.dir, TempDir::new("unused"));
    let d2 = Daemon::start_in(dir, socket, None);
    let out = d2.cli(&["status", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["pid"], json!(d2.child.id()));
    // the new daemon attaches afresh and reads the same stack
    if let Some(t) = &target {
        let mut c = d2.connect();
        let s = c.ok("stack", json!({"pid": t.pid()}));
        assert_eq!(main_thread_frames(&s, t.pid()), t.main_frames());
        assert_eq!(c.ok("status", Value::Null)["attached"], 1);
    }
}

#[test]
fn a_stopped_daemon_times_out_instead_of_hanging() {
    let d = Daemon::start(None);
    d.signal(libc::SIGSTOP);
    let t0 = Instant::now();
    let out = Command::new(pystackd_bin())
        .args(["status", "--socket"])
        .arg(&d.socket)
        .env("PYSTACKD_CLIENT_TIMEOUT", "1.5")
        .output()
        .unwrap();
    let took = t0.elapsed();
    d.signal(libc::SIGCONT);
    assert_eq!(out.status.code(), Some(10), "{out:?}");
    assert!(took < Duration::from_secs(8), "took {took:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("did not answer"), "{err}");
    d.connect().ok("version", Value::Null);
}

#[test]
fn stack_falls_back_or_reports_daemon_errors() {
    // --no-daemon and a dead socket both read directly: for a missing pid that is
    // the reader's "no such process" (exit 3) without any daemon message.
    let dir = TempDir::new("nod");
    for extra in [&["--no-daemon"][..], &[]] {
        let out = Command::new(pystackd_bin())
            .args(["stack", "4194321", "--socket"])
            .arg(dir.path().join("none.sock"))
            .args(extra)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains("pystackd: daemon") && !err.contains("daemon is not running"),
            "{extra:?}: {err}"
        );
        assert_eq!(out.status.code(), Some(3), "{extra:?}: {out:?}");
    }
}

/// The arguments after the binary in `ExecStart=` of the shipped unit file.
fn unit_exec_args() -> Vec<String> {
    let unit =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../systemd/pystackd.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart= in pystackd.service");
    line.split_whitespace()
        .skip(1)
        .map(str::to_string)
        .collect()
}

#[test]
fn activated_by_systemd_socket_activate_with_the_units_command_line() {
    let Some(tool) = testkit::which("systemd-socket-activate") else {
        testkit::skip!("systemd-socket-activate missing (Debian package systemd)");
    };
    let dir = TempDir::new("sda");
    let socket = dir.path().join("pystackd.sock");
    let args = unit_exec_args();
    assert_eq!(
        args,
        ["serve"],
        "the unit's ExecStart changed: update this test"
    );
    let child = Command::new(tool)
        .arg("--listen")
        .arg(&socket)
        .arg(pystackd_bin())
        .args(&args)
        .env("PYSTACKD_LOG", "debug")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // killed even when an assertion fails
    let mut child = KillOnDrop(child);
    // the socket file appears at bind(), before listen(): retry until it accepts
    let t0 = Instant::now();
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(t0.elapsed() < Duration::from_secs(10), "no socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    // the first connection started the daemon, which took over the listening socket
    let mut c = Conn::new(&socket);
    let s = c.ok("status", Value::Null);
    assert_eq!(s["pid"], json!(child.0.id()), "{s}");
    drop(c);
    Conn::new(&socket).ok("version", Value::Null);
    // SAFETY: kill(2) on our child.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    let st = wait_timeout(&mut child.0, Duration::from_secs(10)).expect("daemon stops");
    assert!(st.success(), "{st}");
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn log_level_option_as_the_smf_method_passes_it() {
    let dir = TempDir::new("loglevel");
    let socket = dir.path().join("run/pystackd.sock");
    let log = dir.path().join("log");
    // what smf/method/svc-pystackd runs: serve --socket PATH --log-level LEVEL
    let mut child = Command::new(pystackd_bin())
        .args(["serve", "--socket"])
        .arg(&socket)
        .args(["--log-level", "debug"])
        .env_remove("PYSTACKD_LOG")
        .env("RUST_LOG", "error")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let mut c = loop {
        if let Ok(s) = std::os::unix::net::UnixStream::connect(&socket) {
            drop(s);
            break Conn::new(&socket);
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "daemon did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    c.ok("version", Value::Null);
    drop(c);
    // SAFETY: kill(2) on our child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(wait_timeout(&mut child, Duration::from_secs(10)).is_some_and(|s| s.success()));
    // debug records appear although RUST_LOG says error: the option wins
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("DEBUG") && text.contains("client connected"),
        "{text}"
    );

    let out = Command::new(pystackd_bin())
        .args(["serve", "--socket"])
        .arg(dir.path().join("x.sock"))
        .args(["--log-level", "info,=[bad"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--log-level"));
}
