//! Test support for integration tests against real CPython processes.
//!
//! * [`interpreters`]: every CPython 3.8..3.15 that `tests/pythons/list` finds (pyenv builds,
//!   Debian builds laid out by `tests/pythons/provision`, the host's); its `#SKIP` lines are
//!   printed so that what a run did not cover is visible.
//! * [`Target`]: a running target program of `tests/targets/`, started with a private
//!   ground-truth path; `spawn` waits for its `READY` line; dropping it kills and reaps it.
//! * [`GroundTruth`]: the JSON the target wrote about itself (its own `sys._current_frames()`
//!   view for the blocking targets; the list of its functions for `busy_target.py`).
//!
//! Use from an integration test of this crate with `mod support;`.
#![allow(dead_code)] // each test binary uses a different part

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use serde::Deserialize;

/// How long a target may take to print READY (Debian 3.9 under a loaded 2-core machine with
/// cold caches takes a few seconds; 30 s is far beyond any normal start).
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// One interpreter from `tests/pythons/list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interpreter {
    /// e.g. `pyenv-3.10.13`, `debian-3.13-ldso`, `debian-3.13-direct`, `host-3.11`.
    pub label: String,
    /// (major, minor) as the interpreter reports it.
    pub version: (u8, u8),
    /// What to execute (a Debian `-ldso`/`-direct` command is a shell script that `exec`s,
    /// so the spawned pid is the interpreter's).
    pub command: PathBuf,
}

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    // CARGO_MANIFEST_DIR is crates/symd
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/symd has a grandparent")
        .to_path_buf()
}

/// Directory of the target programs.
pub fn targets_dir() -> PathBuf {
    workspace_root().join("tests").join("targets")
}

/// The `pystackd` binary cargo built for this test run.
pub fn pystackd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pystackd"))
}

/// Every interpreter available for tests (cached; the `#SKIP` lines are printed once per test
/// binary with eprintln).
pub fn interpreters() -> Vec<Interpreter> {
    static LIST: OnceLock<Vec<Interpreter>> = OnceLock::new();
    LIST.get_or_init(|| {
        let script = workspace_root().join("tests").join("pythons").join("list");
        let out = match Command::new("bash")
            .arg(&script)
            .stderr(Stdio::inherit())
            .output()
        {
            Ok(o) if o.status.success() => o,
            Ok(o) => {
                eprintln!(
                    "SKIP: {} failed ({}): no interpreters",
                    script.display(),
                    o.status
                );
                return Vec::new();
            }
            Err(e) => {
                eprintln!(
                    "SKIP: cannot run {}: {e}: no interpreters",
                    script.display()
                );
                return Vec::new();
            }
        };
        let (list, skips) = parse_list(&String::from_utf8_lossy(&out.stdout));
        for s in &skips {
            eprintln!("SKIP: {s}");
        }
        list
    })
    .clone()
}

/// Parses `tests/pythons/list` output into interpreters and skip messages.
pub fn parse_list(text: &str) -> (Vec<Interpreter>, Vec<String>) {
    let mut list = Vec::new();
    let mut skips = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.splitn(3, '\t').collect();
        if fields[0] == "#SKIP" {
            skips.push(fields[1..].join(" "));
            continue;
        }
        let parsed = match fields.as_slice() {
            [label, xy, cmd] => parse_xy(xy).map(|version| Interpreter {
                label: label.to_string(),
                version,
                command: PathBuf::from(cmd),
            }),
            _ => None,
        };
        match parsed {
            Some(i) => list.push(i),
            None => skips.push(format!("unparsable line from tests/pythons/list: {line:?}")),
        }
    }
    (list, skips)
}

fn parse_xy(s: &str) -> Option<(u8, u8)> {
    let (a, b) = s.split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// What a target wrote about itself (see tests/targets/groundtruth.py and busy_target.py).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct GroundTruth {
    pub pid: u32,
    /// `platform.python_version()`, e.g. `3.13.5`.
    pub version: String,
    /// `main_target`, `nested_eval` or `busy_target`.
    pub target: String,
    /// Blocking targets: every thread, as the interpreter saw it while blocked.
    #[serde(default)]
    pub threads: Vec<ThreadTruth>,
    /// The program's own source files (absolute paths, as `co_filename` holds them).
    #[serde(default)]
    pub files: Vec<String>,
    /// `co_filename`s of code run through exec()/compile() (no file behind them).
    #[serde(default)]
    pub exec_filenames: Vec<String>,
    /// Directory of the interpreter's standard library (`threading.py`'s directory).
    #[serde(default)]
    pub stdlib_dir: Option<String>,
    /// `sys.executable`.
    #[serde(default)]
    pub executable: Option<String>,
    /// main_target: recursion depth of the deep-recursion thread.
    #[serde(default)]
    pub depth: Option<u32>,
    /// busy_target: number of busy worker threads (started with `_thread`, unnamed).
    #[serde(default)]
    pub worker_threads: Option<u32>,
    /// busy_target: every `co_name` of the code objects compiled from its file.
    #[serde(default)]
    pub functions: Vec<String>,
    /// busy_target --self-check: what the target's own sampling saw.
    #[serde(default)]
    pub self_check: Option<SelfCheck>,
    /// recur_target: function -> the lines it makes its calls from (its `# CALL` lines).
    #[serde(default)]
    pub call_lines: HashMap<String, Vec<u32>>,
    /// recur_target: function -> the functions it calls.
    #[serde(default)]
    pub callees: HashMap<String, Vec<String>>,
    /// recur_target: bounds of the worker threads' recursion depth.
    #[serde(default)]
    pub min_depth: Option<u32>,
    #[serde(default)]
    pub max_depth: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SelfCheck {
    pub samples: u32,
    pub functions_seen: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ThreadTruth {
    /// `threading.get_ident()` (= `pthread_self()` on Linux).
    pub ident: u64,
    /// `threading.get_native_id()` (the kernel thread id).
    pub native_id: u64,
    /// `threading.Thread.name`.
    pub name: String,
    /// The OS's name for the thread (`/proc/self/task/TID/comm`); 3.14+ sets it from `name`.
    #[serde(default)]
    pub os_name: Option<String>,
    /// Innermost first.
    pub frames: Vec<FrameTruth>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FrameTruth {
    pub filename: String,
    /// `f_lineno` (None where the interpreter reports no line).
    pub line: Option<u32>,
    /// `co_name`.
    pub function: String,
    /// `co_qualname` (3.11+).
    #[serde(default)]
    pub qualname: Option<String>,
    /// `co_firstlineno`.
    pub first_line: u32,
}

impl GroundTruth {
    pub fn thread(&self, name: &str) -> Option<&ThreadTruth> {
        self.threads.iter().find(|t| t.name == name)
    }

    pub fn main_thread(&self) -> Option<&ThreadTruth> {
        self.thread("MainThread")
    }

    /// Threads by kernel thread id.
    pub fn by_native_id(&self) -> HashMap<u64, &ThreadTruth> {
        self.threads.iter().map(|t| (t.native_id, t)).collect()
    }

    /// Whether `filename` is one of the program's files or exec'd code.
    pub fn is_program_file(&self, filename: &str) -> bool {
        self.files.iter().any(|f| f == filename)
            || self.exec_filenames.iter().any(|f| f == filename)
    }

    /// Whether `filename` lies in the interpreter's standard library.
    pub fn is_stdlib_file(&self, filename: &str) -> bool {
        match &self.stdlib_dir {
            Some(dir) => Path::new(filename).starts_with(dir),
            None => false,
        }
    }
}

/// A running target program; killed and reaped on drop.
pub struct Target {
    child: Child,
    // held open: the target exits when its stdin closes
    stdin: Option<ChildStdin>,
    dir: PathBuf,
    truth: GroundTruth,
    label: String,
}

impl Target {
    /// Starts `script` (a file name in tests/targets, or a path) under `interp` with `args`
    /// after the ground-truth path, and waits for READY. Panics with the target's stderr if it
    /// does not get there.
    pub fn spawn(interp: &Interpreter, script: &str, args: &[&str]) -> Target {
        Self::try_spawn(interp, script, args).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_spawn(interp: &Interpreter, script: &str, args: &[&str]) -> Result<Target, String> {
        let script_path = if Path::new(script).is_absolute() {
            PathBuf::from(script)
        } else {
            targets_dir().join(script)
        };
        let dir = private_dir()?;
        let truth_path = dir.join("truth.json");
        let stderr_path = dir.join("stderr");
        let stderr = fs::File::create(&stderr_path)
            .map_err(|e| format!("{}: {e}", stderr_path.display()))?;
        let what = format!("{} under {}", script, interp.label);
        // -E -s: no PYTHON* variables or user site-packages; -B: no __pycache__ in the tree
        let mut child = Command::new(&interp.command)
            .args(["-E", "-s", "-B"])
            .arg(&script_path)
            .arg(&truth_path)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("{what}: cannot start {}: {e}", interp.command.display()))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut target = Target {
            child,
            stdin,
            dir,
            truth: GroundTruth {
                pid: 0,
                version: String::new(),
                target: String::new(),
                threads: Vec::new(),
                files: Vec::new(),
                exec_filenames: Vec::new(),
                stdlib_dir: None,
                executable: None,
                depth: None,
                worker_threads: None,
                functions: Vec::new(),
                self_check: None,
                call_lines: HashMap::new(),
                callees: HashMap::new(),
                min_depth: None,
                max_depth: None,
            },
            label: what.clone(),
        };
        let fail = |t: &mut Target, msg: String| -> String {
            let _ = t.child.kill();
            let status = t.child.wait().map(|s| s.to_string()).unwrap_or_default();
            let err = fs::read_to_string(&stderr_path).unwrap_or_default();
            format!("{what}: {msg} (exit: {status})\n--- target stderr ---\n{err}---")
        };

        // READY arrives on stdout; read it on a thread so the wait can time out
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next();
            let _ = tx.send(first);
            // keep draining so a chatty target never blocks on a full pipe
            for _ in lines {}
        });
        let started = Instant::now();
        match rx.recv_timeout(READY_TIMEOUT) {
            Ok(Some(Ok(line))) if line.trim_end() == "READY" => {}
            Ok(Some(Ok(line))) => {
                return Err(fail(&mut target, format!("expected READY, got {line:?}")))
            }
            Ok(Some(Err(e))) => return Err(fail(&mut target, format!("reading stdout: {e}"))),
            Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(fail(&mut target, "exited before READY".into()))
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(fail(
                    &mut target,
                    format!("no READY within {:?}", started.elapsed()),
                ))
            }
        }
        let text = match fs::read_to_string(&truth_path) {
            Ok(t) => t,
            Err(e) => return Err(fail(&mut target, format!("{}: {e}", truth_path.display()))),
        };
        target.truth = match serde_json::from_str(&text) {
            Ok(t) => t,
            Err(e) => return Err(fail(&mut target, format!("bad ground truth: {e}"))),
        };
        // READY is printed just before the main thread returns into its blocking read of
        // stdin: wait until the kernel shows it there, or a read can catch it a frame early
        let pid = target.child.id();
        let blocked = Instant::now();
        while !Self::main_thread_reads_stdin(pid) {
            if blocked.elapsed() > Duration::from_secs(10) {
                eprintln!(
                    "[{}] main thread not seen in read(0) after 10 s",
                    target.label
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if target.truth.pid != target.child.id() {
            // a wrapper that forks instead of exec'ing: pid() and Drop would be wrong
            let msg = format!(
                "target pid {} is not the spawned pid {}",
                target.truth.pid,
                target.child.id()
            );
            return Err(fail(&mut target, msg));
        }
        Ok(target)
    }

    /// Whether the process's main thread is blocked in `read(0, ...)` (x86_64 syscall 0).
    fn main_thread_reads_stdin(pid: u32) -> bool {
        fs::read_to_string(format!("/proc/{pid}/syscall"))
            .map(|s| s.starts_with("0 0x0 "))
            .unwrap_or(true) // cannot tell (no access): do not wait
    }

    /// Process id of the target (the interpreter itself).
    pub fn pid(&self) -> u32 {
        self.truth.pid
    }

    /// The ground truth the target wrote before READY.
    pub fn truth(&self) -> &GroundTruth {
        &self.truth
    }

    /// `SCRIPT under LABEL`, for messages.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Whether the process is still running (not reaped).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.stdin.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A fresh directory under the system temp dir, unique per process and call.
fn private_dir() -> Result<PathBuf, String> {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "pystackd-target-{}-{n}-{nanos}",
        std::process::id()
    ));
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

/// The text of line `line` (1-based) of `path`, if it is a readable file.
pub fn source_line(path: &str, line: u32) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    text.lines()
        .nth(line.checked_sub(1)? as usize)
        .map(str::to_owned)
}

/// Whether `tool arg` runs (e.g. `have("gdb", "--version")`).
pub fn have(tool: &str, arg: &str) -> bool {
    Command::new(tool)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// `gdb -batch -p PID -ex 'thread apply all bt'`, as a user would run it.
pub fn gdb_all_threads(pid: u32) -> String {
    let out = Command::new("gdb")
        .args(["-batch", "-nx", "-p", &pid.to_string()])
        .args(["-ex", "thread apply all bt"])
        .stdin(Stdio::null())
        .output()
        .expect("gdb runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `pystackd --no-daemon annotate ARGS` with `input` on its standard input.
pub fn annotate(args: &[&str], input: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(pystackd_bin())
        .arg("--no-daemon")
        .arg("annotate")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pystackd runs");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_string();
    let w = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let out = child.wait_with_output().unwrap();
    w.join().unwrap();
    out
}
