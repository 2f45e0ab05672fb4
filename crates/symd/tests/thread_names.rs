//! Thread names: `pystackd stack` shows each thread's `threading` name (`MainThread`,
//! `threading.Thread(name=...)`, a name set after start), and the OS's name for a thread
//! `threading` does not know (`_thread.start_new_thread`), with `os_name` always the OS's.
//! Ground truth: `tests/targets/names_target.py`'s own view of its threads, on every
//! interpreter `tests/pythons/list` offers (the free-threaded build included), read directly,
//! through the daemon and as text.

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
    // an attached reader: the names from its cache equal the target's too
    let mut p = PythonProcess::attach(target.pid()).map_err(|e| e.to_string())?;
    for _ in 0..5 {
        let s = p
            .stack(&StackOptions::default())
            .map_err(|e| e.to_string())?;
        checked += compare(&target, &s, "library")?;
    }
    Ok(checked)
}

#[test]
fn threading_names_equal_the_targets_own() {
    // the free-threaded build too: its objects' fields sit behind a longer header
    let list = require!(testkit::pythons::all_with_free_threaded());
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

/// An attached reader (the daemon's, `record`'s) follows the target: a rename shows
/// within [`NAMES_TTL`] (plus a read), a thread started later is named within
/// `NEW_THREAD_RECHECK` of `threading` registering it; no thread ever shows another's name.
#[test]
fn renames_and_new_threads_show_on_an_attached_reader() {
    use pyframe_reader::names::NAMES_TTL;
    use std::time::{Duration, Instant};
    let mut list = require!(testkit::pythons::distinct_builds());
    list.extend(testkit::pythons::matching(
        &testkit::Want::any().free_threaded(),
    ));
    let mut failures = Vec::new();
    let mut tested = Vec::new();
    for i in &list {
        let r = (|| -> Result<String, String> {
            let mut target = Target::try_spawn(i, "names_target.py", &[])?;
            let renamed = target
                .truth()
                .threads
                .iter()
                .find(|t| t.name == "renamed")
                .map(|t| t.native_id)
                .ok_or("no renamed thread in the truth")?;
            let mut p = PythonProcess::attach(target.pid()).map_err(|e| e.to_string())?;
            let name_of = |p: &mut PythonProcess, pred: &dyn Fn(&protocol::ThreadStack) -> bool| {
                p.stack(&StackOptions::default())
                    .map(|s| s.threads.into_iter().find(|t| pred(t)).and_then(|t| t.name))
                    .map_err(|e| e.to_string())
            };
            ensure!(
                name_of(&mut p, &|t| t.os_tid == Some(renamed))?.as_deref() == Some("renamed"),
                "first read: not \"renamed\""
            );
            // once every thread is older than NAMES_TTL: one read of the map serves the
            // reads of the next second (none appears, none is renamed)
            std::thread::sleep(NAMES_TTL);
            let before = p.thread_name_reads();
            let started = Instant::now();
            for _ in 0..5 {
                p.stack(&StackOptions::default())
                    .map_err(|e| e.to_string())?;
            }
            let reads = p.thread_name_reads() - before;
            ensure!(
                reads == 1 || started.elapsed() >= NAMES_TTL,
                "five reads within {:?} read the threading names {reads} times",
                started.elapsed()
            );
            // each change alone: the rename (no thread appears: seen through the TTL), then
            // a new thread (seen once threading registered it)
            let mut wait = |p: &mut PythonProcess,
                            what: &str,
                            seen: &dyn Fn(&protocol::ThreadStack) -> bool|
             -> Result<Option<Duration>, String> {
                target.send_line(what).map_err(|e| e.to_string())?;
                let sent = Instant::now();
                while sent.elapsed() < NAMES_TTL * 3 + Duration::from_secs(2) {
                    let s = p
                        .stack(&StackOptions::default())
                        .map_err(|e| e.to_string())?;
                    for t in &s.threads {
                        // never a name from another thread
                        let n = t.name.as_deref();
                        ensure!(
                            t.os_tid == Some(renamed)
                                || !matches!(n, Some("renamed" | "renamed-again")),
                            "thread {:?} named {n:?}",
                            t.os_tid
                        );
                    }
                    if s.threads.iter().any(seen) {
                        return Ok(Some(sent.elapsed()));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(None)
            };
            let rename_seen = wait(&mut p, "rename renamed-again", &|t| {
                t.os_tid == Some(renamed) && t.name.as_deref() == Some("renamed-again")
            })?;
            let start_seen = wait(&mut p, "start late-starter", &|t| {
                t.name.as_deref() == Some("late-starter")
            })?;
            let limit = NAMES_TTL + Duration::from_millis(900);
            ensure!(
                rename_seen.is_some_and(|d| d < limit),
                "rename seen after {rename_seen:?} (limit {limit:?})"
            );
            let limit = Duration::from_millis(600);
            ensure!(
                start_seen.is_some_and(|d| d < limit),
                "new thread named after {start_seen:?} (limit {limit:?})"
            );
            Ok(format!(
                "{} (rename after {:?}, new thread after {:?})",
                i.label,
                rename_seen.unwrap_or_default(),
                start_seen.unwrap_or_default()
            ))
        })();
        match r {
            Ok(line) => tested.push(line),
            Err(e) => failures.push(format!("[{}] {e}", i.label)),
        }
    }
    eprintln!(
        "renames and new threads: passed on {} interpreters:\n  {}",
        tested.len(),
        tested.join("\n  ")
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
