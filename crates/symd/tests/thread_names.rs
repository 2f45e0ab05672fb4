//! Thread names: `pystackd stack` shows each thread's `threading` name (`MainThread`,
//! `threading.Thread(name=...)`, a name set after start), and the OS's name for a thread
//! `threading` does not know (`_thread.start_new_thread`), with `os_name` always the OS's.
//! Ground truth: `tests/targets/names_target.py`'s own view of its threads, on every
//! interpreter `tests/pythons/list` offers, read directly, through the daemon and as text.

use std::process::Command;

use protocol::ProcessStack;
use pyframe_reader::{PythonProcess, StackOptions};
use testkit::daemon::Daemon;
use testkit::{pystackd_bin, require, Interpreter, Target};

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)*) => {
        if !$cond {
            return Err(format!($($fmt)*));
        }
    };
}

fn parse(out: std::process::Output) -> Result<ProcessStack, String> {
    ensure!(
        out.status.success(),
        "pystackd stack exited {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).map_err(|e| format!("parsing pystackd's JSON: {e}"))
}

/// Every thread of the truth, by native id: `name` and `os_name` as the target saw them.
/// Returns the number of threads checked.
fn compare(target: &Target, got: &ProcessStack, how: &str) -> Result<usize, String> {
    let truth = target.truth();
    ensure!(
        got.threads.len() == truth.threads.len(),
        "{how}: {} threads reported, the target has {}",
        got.threads.len(),
        truth.threads.len()
    );
    let mut raw = 0;
    for t in &truth.threads {
        let g = got
            .threads
            .iter()
            .find(|g| g.os_tid == Some(t.native_id))
            .ok_or_else(|| format!("{how}: thread {:?} (tid {}) missing", t.name, t.native_id))?;
        ensure!(
            g.thread_id == t.ident,
            "{how}: thread {:?}: thread_id {:#x} != the target's ident {:#x}",
            t.name,
            g.thread_id,
            t.ident
        );
        ensure!(
            g.name.as_deref() == Some(t.name.as_str()),
            "{how}: thread tid {} ({}): name {:?}, the target calls it {:?}",
            t.native_id,
            if t.threading == Some(false) {
                "started by _thread: the OS name"
            } else {
                "threading"
            },
            g.name,
            t.name
        );
        ensure!(
            g.os_name.is_some() && g.os_name == t.os_name,
            "{how}: thread {:?}: os_name {:?}, the OS says {:?}",
            t.name,
            g.os_name,
            t.os_name
        );
        if t.threading == Some(false) {
            raw += 1;
        }
    }
    ensure!(
        raw == 1,
        "{how}: {raw} threads not started by threading, want 1"
    );
    Ok(truth.threads.len())
}

fn check(i: &Interpreter, daemon: &Daemon) -> Result<usize, String> {
    let target = Target::try_spawn(i, "names_target.py", &[])?;
    let pid = target.pid().to_string();
    let mut checked = 0;
    let direct = Command::new(pystackd_bin())
        .args(["stack", "--no-daemon", "--json", &pid])
        .output()
        .map_err(|e| format!("running pystackd: {e}"))?;
    checked += compare(&target, &parse(direct)?, "--no-daemon")?;
    // twice through the daemon: the second read answers from its cached map
    for n in 0..2 {
        let via = parse(daemon.cli(&["stack", "--json", &pid]))?;
        checked += compare(&target, &via, &format!("daemon read {}", n + 1))?;
    }
    // the text form shows the threading names
    let text = Command::new(pystackd_bin())
        .args(["stack", "--no-daemon", &pid])
        .output()
        .map_err(|e| format!("running pystackd: {e}"))?;
    let text = String::from_utf8_lossy(&text.stdout);
    for t in &target.truth().threads {
        let line = format!("Thread {} \"{}\"", t.native_id, t.name);
        ensure!(text.contains(&line), "text output has no {line:?}:\n{text}");
    }
    // the reader reads the map once while no thread appears
    let mut p = PythonProcess::attach(target.pid()).map_err(|e| e.to_string())?;
    let started = std::time::Instant::now();
    for _ in 0..5 {
        let s = p
            .stack(&StackOptions::default())
            .map_err(|e| e.to_string())?;
        checked += compare(&target, &s, "library")?;
    }
    ensure!(
        p.thread_name_reads() == 1 || started.elapsed() >= pyframe_reader::names::NAMES_TTL,
        "five reads within a second read the threading names {} times",
        p.thread_name_reads()
    );
    Ok(checked)
}

#[test]
fn threading_names_equal_the_targets_own() {
    let list = require!(testkit::pythons::all());
    let daemon = Daemon::start(None);
    let mut tested = Vec::new();
    let mut failures = Vec::new();
    let mut threads = 0;
    for i in &list {
        match check(i, &daemon) {
            Ok(n) => {
                threads += n;
                tested.push(i.label.clone());
            }
            Err(e) => failures.push(format!("[{}] {e}", i.label)),
        }
    }
    eprintln!(
        "thread names: {threads} thread names checked on {} interpreters: {}",
        tested.len(),
        tested.join(", ")
    );
    assert!(
        failures.is_empty(),
        "thread names:\n{}",
        failures.join("\n")
    );
}
