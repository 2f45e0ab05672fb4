//! Target programs of `tests/targets/` and the ground truth they write about themselves.
//!
//! A target is started with a private path to write its ground truth to (its own
//! `sys._current_frames()` view for the blocking targets, its functions for
//! `busy_target.py`), prints `READY`, and exits when its stdin closes. [`Target::spawn`] waits
//! for `READY` and for the main thread to be back in its blocking read; dropping the
//! [`Target`] kills and reaps it.
//!
//! `chain_target.py DEPTH` is the small one (one thread: `<module>`, `DEPTH + 1` x `level`,
//! `leaf`): [`Target::chain`], and [`Target::main_frames`] for its stack.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::{Interpreter, RunAs};

/// How long a target may take to print READY (Debian 3.9 under a loaded 2-core machine with
/// cold caches takes a few seconds; 30 s is far beyond any normal start).
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// What a target wrote about itself (see tests/targets/groundtruth.py and busy_target.py).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct GroundTruth {
    pub pid: u32,
    /// `platform.python_version()`, e.g. `3.13.5`.
    pub version: String,
    /// `main_target`, `nested_eval`, `chain_target`, `busy_target`, ...
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
    /// main_target, chain_target: recursion depth.
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
    /// locals_target: each recorded variable with its own repr(), cut by pystackd's limits.
    #[serde(default)]
    pub locals: Vec<LocalTruth>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SelfCheck {
    pub samples: u32,
    pub functions_seen: Vec<String>,
}

/// One variable as locals_target.py saw it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LocalTruth {
    pub function: String,
    pub name: String,
    /// `arg`, `local`, `cell`, `free`.
    pub kind: String,
    #[serde(rename = "type")]
    pub type_name: String,
    pub repr: String,
    pub truncated: bool,
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
    /// names_target.py: whether the thread was started through `threading` (false: by
    /// `_thread.start_new_thread`, it has no `threading` name); absent in other targets.
    #[serde(default)]
    pub threading: Option<bool>,
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
        Self::start(None, interp, script, args)
    }

    /// [`Target::spawn`] as another user (the interpreter must be usable by them:
    /// [`crate::Want::usable_by_others`]).
    pub fn spawn_as(user: &RunAs, interp: &Interpreter, script: &str, args: &[&str]) -> Target {
        Self::start(Some(user), interp, script, args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `chain_target.py DEPTH`: one thread, `<module>`, `DEPTH + 1` x `level`, `leaf`.
    pub fn chain(interp: &Interpreter, depth: u32) -> Target {
        Self::spawn(interp, "chain_target.py", &[&depth.to_string()])
    }

    /// [`Target::chain`] as another user.
    pub fn chain_as(user: &RunAs, interp: &Interpreter, depth: u32) -> Target {
        Self::spawn_as(user, interp, "chain_target.py", &[&depth.to_string()])
    }

    /// The main thread's `(function, line)` pairs from the ground truth, outermost first (a
    /// frame without a line is 0).
    pub fn main_frames(&self) -> Vec<(String, u32)> {
        let main = self
            .truth
            .main_thread()
            .unwrap_or_else(|| panic!("{}: no MainThread in the ground truth", self.label));
        main.frames
            .iter()
            .rev()
            .map(|f| (f.function.clone(), f.line.unwrap_or(0)))
            .collect()
    }

    fn start(
        run_as: Option<&RunAs>,
        interp: &Interpreter,
        script: &str,
        args: &[&str],
    ) -> Result<Target, String> {
        let script_path = if Path::new(script).is_absolute() {
            PathBuf::from(script)
        } else {
            crate::targets_dir().join(script)
        };
        let dir = private_dir()?;
        let truth_path = dir.join("truth.json");
        let stderr_path = dir.join("stderr");
        let stderr = fs::File::create(&stderr_path)
            .map_err(|e| format!("{}: {e}", stderr_path.display()))?;
        let what = match run_as {
            Some(u) => format!("{} under {} as uid {}", script, interp.label, u.uid),
            None => format!("{} under {}", script, interp.label),
        };
        let mut cmd = match run_as {
            Some(u) => {
                // the target writes its ground truth into the directory
                let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o777));
                u.command(&interp.command)
            }
            None => Command::new(&interp.command),
        };
        // -E -s: no PYTHON* variables or user site-packages; -B: no __pycache__ in the tree
        let mut child = cmd
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
            truth: GroundTruth::default(),
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
        while !main_thread_reads_stdin(pid) {
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

    /// Kills the target and reaps it now (a test of a process that goes away).
    pub fn kill(&mut self) {
        self.child.kill().expect("kill the target");
        self.child.wait().expect("reap the target");
    }

    /// Writes `line` and a newline to the target's stdin (targets that take commands
    /// there, e.g. names_target.py).
    pub fn send_line(&mut self, line: &str) -> std::io::Result<()> {
        use std::io::Write;
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| std::io::Error::other("stdin closed"))?;
        stdin.write_all(format!("{line}\n").as_bytes())?;
        stdin.flush()
    }

    /// Whether the process is still running (not reaped).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// Whether the process's main thread is blocked in `read(0, ...)` (x86_64 syscall 0).
fn main_thread_reads_stdin(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/syscall"))
        .map(|s| s.starts_with("0 0x0 "))
        .unwrap_or(true) // cannot tell (no access): do not wait
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

/// A program of tests/targets (or a path) that prints `READY` when set up, started under
/// `interp` with `args` (no ground-truth file), returned once it said so. Panics with what
/// it printed instead. The caller kills and reaps it.
pub fn spawn_ready(interp: &Interpreter, script: &str, args: &[&str]) -> Child {
    let path = if Path::new(script).is_absolute() {
        PathBuf::from(script)
    } else {
        crate::targets_dir().join(script)
    };
    let mut child = Command::new(&interp.command)
        .arg(&path)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: starting {}: {e}", interp.label, path.display()));
    let mut first = String::new();
    let read = BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut first);
    if read.is_err() || first.trim() != "READY" {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "{}: {} printed {first:?} instead of READY",
            interp.label,
            path.display()
        );
    }
    child
}
