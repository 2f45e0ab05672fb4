//! Thread states: `pystackd stack` says of each thread whether it runs, is blocked in the
//! kernel (naming the system call), waits for the GIL, and whether it holds the GIL.
//! Ground truth: `tests/targets/thread_state_target.py`, whose threads are named after
//! what they do (`sleep`, `lock`, `read`, `spin-N`, the main thread in `os.read` of stdin),
//! and the kernel: the test reads `/proc/PID/task/TID/syscall` itself and names the number
//! from its own table of the x86-64 calls those functions make. On every interpreter
//! `tests/pythons/list` offers, directly, with `--pause`, through the daemon and as text.

use std::process::Command;

use protocol::{ProcessStack, RunState, ThreadStack};
use testkit::daemon::Daemon;
use testkit::{pystackd_bin, require, Interpreter, Target};

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)*) => {
        if !$cond {
            return Err(format!($($fmt)*));
        }
    };
}

/// The system calls each blocking function may be in (CPython's `time.sleep` is
/// `clock_nanosleep` from 3.11, `select` before, which glibc makes `pselect6`).
fn calls_of(name: &str) -> &'static [&'static str] {
    match name {
        "sleep" => &["clock_nanosleep", "nanosleep", "pselect6", "select"],
        "lock" => &["futex"],
        "read" | "MainThread" => &["read"],
        _ => &[],
    }
}

/// The x86-64 numbers of those calls (arch/x86/entry/syscalls/syscall_64.tbl).
fn x86_64_name(nr: i64) -> Option<&'static str> {
    Some(match nr {
        0 => "read",
        23 => "select",
        35 => "nanosleep",
        202 => "futex",
        219 => "restart_syscall",
        230 => "clock_nanosleep",
        270 => "pselect6",
        _ => return None,
    })
}

/// What the kernel says thread `tid` is in now: the name of its system call's number.
/// A thread just resumed after a paused read restarts its call: asked again until the
/// kernel shows it asleep there (up to a second).
fn kernel_call(pid: u32, tid: u64) -> Option<&'static str> {
    for _ in 0..100 {
        let s = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")).ok()?;
        if let Some(nr) = s.split_whitespace().next().and_then(|n| n.parse().ok()) {
            if nr >= 0 {
                return x86_64_name(nr);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    None
}

fn stack(pid: u32, extra: &[&str]) -> Result<ProcessStack, String> {
    let pid = pid.to_string();
    let mut args = vec!["stack", "--no-daemon", "--json"];
    args.extend_from_slice(extra);
    args.push(&pid);
    let out = Command::new(pystackd_bin())
        .args(&args)
        .output()
        .map_err(|e| format!("running pystackd: {e}"))?;
    parse(out)
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

/// Every thread of the target in `got`, with the target's name for it.
fn by_name<'a>(
    target: &Target,
    got: &'a ProcessStack,
) -> Result<Vec<(String, &'a ThreadStack)>, String> {
    let truth = target.truth();
    ensure!(
        got.threads.len() == truth.threads.len(),
        "{} threads reported, the target has {}",
        got.threads.len(),
        truth.threads.len()
    );
    truth
        .threads
        .iter()
        .map(|t| {
            got.threads
                .iter()
                .find(|g| g.os_tid == Some(t.native_id))
                .map(|g| (t.name.clone(), g))
                .ok_or_else(|| format!("thread {:?} (tid {}) missing", t.name, t.native_id))
        })
        .collect()
}

/// A blocked thread: `blocked` in one of its function's calls, the one the kernel names.
fn check_blocked(pid: u32, name: &str, t: &ThreadStack, how: &str) -> Result<(), String> {
    let st = &t.state;
    ensure!(
        st.state == Some(RunState::Blocked),
        "{how}: thread {name:?}: state {:?} ({:?}), want blocked",
        st.state,
        st.state_unknown
    );
    let call = st.syscall.as_deref().unwrap_or("");
    ensure!(
        calls_of(name).contains(&call),
        "{how}: thread {name:?}: blocked in {call:?}, want one of {:?}",
        calls_of(name)
    );
    if cfg!(target_arch = "x86_64") {
        let kernel = kernel_call(pid, t.os_tid.unwrap_or(0));
        ensure!(
            kernel == Some(call),
            "{how}: thread {name:?}: pystackd says {call:?}, the kernel's number is {kernel:?}"
        );
    }
    ensure!(
        t.holds_gil == Some(false),
        "{how}: blocked thread {name:?}: holds_gil {:?} ({:?})",
        t.holds_gil,
        st.gil_unknown
    );
    Ok(())
}

/// Only blocked threads: every one blocked where it should be, nobody holds the GIL,
/// directly, paused, through the daemon, and in text. Returns threads checked.
fn blocked(i: &Interpreter, daemon: &Daemon) -> Result<usize, String> {
    let target = Target::try_spawn(i, "thread_state_target.py", &[])?;
    let pid = target.pid();
    let mut n = 0;
    for (how, got) in [
        ("direct", stack(pid, &[])?),
        ("--pause", stack(pid, &["--pause"])?),
        (
            "daemon",
            parse(daemon.cli(&["stack", "--json", &pid.to_string()]))?,
        ),
    ] {
        for (name, t) in by_name(&target, &got)? {
            check_blocked(pid, &name, t, how)?;
            n += 1;
        }
    }
    let text = Command::new(pystackd_bin())
        .args(["stack", "--no-daemon", &pid.to_string()])
        .output()
        .map_err(|e| format!("running pystackd: {e}"))?;
    let text = String::from_utf8_lossy(&text.stdout);
    for t in &target.truth().threads {
        let want = format!("Thread {} \"{}\" (blocked: ", t.native_id, t.name);
        ensure!(text.contains(&want), "text output has no {want:?}:\n{text}");
        ensure!(
            text.lines()
                .any(|l| l.starts_with(&want) && l.ends_with("; holds no GIL)")),
            "text: thread {:?} not shown holding no GIL:\n{text}",
            t.name
        );
    }
    Ok(n)
}

/// One CPU-bound thread: at a paused read it holds the GIL and ran (in user code when
/// stopped, or in the kernel without a call of its own); unpaused, it runs or its state
/// moved under the read, never blocked in a call. Returns reads checked.
fn one_spinner(i: &Interpreter) -> Result<usize, String> {
    let target = Target::try_spawn(i, "thread_state_target.py", &["1"])?;
    let pid = target.pid();
    let mut reads = 0;
    for round in 0..4 {
        let paused = round % 2 == 0;
        let got = stack(pid, if paused { &["--pause"] } else { &[] })?;
        let how = if paused { "--pause" } else { "direct" };
        for (name, t) in by_name(&target, &got)? {
            let st = &t.state;
            if name != "spin-0" {
                check_blocked(pid, &name, t, how)?;
                continue;
            }
            ensure!(
                matches!(
                    st.state,
                    Some(RunState::Running | RunState::Runnable | RunState::Unknown)
                ),
                "{how}: the spinner is {:?} ({:?})",
                st.state,
                st.syscall
            );
            ensure!(
                st.state != Some(RunState::Unknown) || st.state_unknown.is_some(),
                "{how}: unknown without a reason"
            );
            if paused {
                ensure!(
                    st.state == Some(RunState::Running),
                    "--pause: the spinner is {:?} ({:?}), want running",
                    st.state,
                    st.state_unknown
                );
                ensure!(
                    t.holds_gil == Some(true),
                    "--pause: the only runnable thread does not hold the GIL: {:?} ({:?})",
                    t.holds_gil,
                    st.gil_unknown
                );
            } else {
                // the only thread that wants the GIL never gives it up
                ensure!(
                    t.holds_gil == Some(true)
                        || (t.holds_gil.is_none() && st.gil_unknown.is_some()),
                    "direct: the spinner: holds_gil {:?} ({:?})",
                    t.holds_gil,
                    st.gil_unknown
                );
            }
        }
        reads += 1;
    }
    Ok(reads)
}

/// Several CPU-bound threads: at every paused read at most one thread holds the GIL, and
/// it is a spinner that ran; the others spin, or wait for the GIL; over the reads, some
/// spinner is seen waiting for the GIL, and exactly one holder in most reads. Returns
/// (paused reads, reads with exactly one holder, spinners seen waiting for the GIL).
fn contention(i: &Interpreter) -> Result<(usize, usize, usize), String> {
    const READS: usize = 6;
    let target = Target::try_spawn(i, "thread_state_target.py", &["3"])?;
    let pid = target.pid();
    let (mut one, mut waiting) = (0, 0);
    for _ in 0..READS {
        let got = stack(pid, &["--pause"])?;
        let threads = by_name(&target, &got)?;
        let holders: Vec<&str> = threads
            .iter()
            .filter(|(_, t)| t.holds_gil == Some(true))
            .map(|(n, _)| n.as_str())
            .collect();
        ensure!(
            holders.len() <= 1,
            "--pause: several GIL holders: {holders:?}"
        );
        for (name, t) in &threads {
            let st = &t.state;
            if !name.starts_with("spin-") {
                check_blocked(pid, name, t, "--pause")?;
                continue;
            }
            match st.state {
                Some(RunState::WaitingForGil) => {
                    ensure!(
                        st.syscall.as_deref() == Some("futex"),
                        "a spinner waits for the GIL in {:?}",
                        st.syscall
                    );
                    ensure!(
                        t.holds_gil != Some(true),
                        "{name} waits for the GIL it holds"
                    );
                    waiting += 1;
                }
                Some(RunState::Running) => {}
                // a GIL wait (a timed futex) that an earlier paused read interrupted goes
                // on as restart_syscall, whose arguments the kernel does not show, until
                // its 5 ms run out; and a spinner may sleep on another lock of the
                // hand-over: never one of the blocking calls
                Some(RunState::Blocked) => ensure!(
                    matches!(st.syscall.as_deref(), Some("futex" | "restart_syscall")),
                    "{name}: blocked in {:?}",
                    st.syscall
                ),
                other => return Err(format!("{name}: state {other:?} ({:?})", st.state_unknown)),
            }
        }
        if let [h] = holders[..] {
            ensure!(h.starts_with("spin-"), "{h} holds the GIL");
            let t = threads
                .iter()
                .find(|(n, _)| n == h)
                .map(|(_, t)| t)
                .unwrap();
            // running, or (handing the GIL over) asleep a moment on its switch mutex
            ensure!(
                t.state.state == Some(RunState::Running)
                    || (t.state.state == Some(RunState::Blocked)
                        && t.state.syscall.as_deref() == Some("futex")),
                "the GIL holder {h} is {:?} ({:?})",
                t.state.state,
                t.state.syscall
            );
            one += 1;
        }
    }
    ensure!(
        one * 2 >= READS,
        "only {one} of {READS} paused reads found one GIL holder"
    );
    ensure!(
        waiting > 0,
        "no spinner seen waiting for the GIL in {READS} paused reads"
    );
    // unpaused (a moving target): never two holders, every unknown with its reason
    for _ in 0..4 {
        let got = stack(pid, &[])?;
        let held = got
            .threads
            .iter()
            .filter(|t| t.holds_gil == Some(true))
            .count();
        ensure!(held <= 1, "direct: {held} GIL holders");
        for t in &got.threads {
            ensure!(
                t.holds_gil.is_some() || t.state.gil_unknown.is_some(),
                "direct: holds_gil null without a reason"
            );
            ensure!(
                t.state.state != Some(RunState::Unknown) || t.state.state_unknown.is_some(),
                "direct: state unknown without a reason"
            );
        }
    }
    Ok((READS, one, waiting))
}

fn every_interpreter(what: &str, mut f: impl FnMut(&Interpreter) -> Result<String, String>) {
    let list = require!(testkit::pythons::distinct_builds());
    let mut tested = Vec::new();
    let mut failures = Vec::new();
    for i in &list {
        match f(i) {
            Ok(s) => tested.push(format!("{} ({s})", i.label)),
            Err(e) => failures.push(format!("[{}] {e}", i.label)),
        }
    }
    eprintln!(
        "{what}: {} interpreters: {}",
        tested.len(),
        tested.join(", ")
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn blocked_threads_name_their_system_calls() {
    let daemon = Daemon::start(None);
    every_interpreter("blocked threads", |i| {
        blocked(i, &daemon).map(|n| format!("{n} thread states"))
    });
}

#[test]
fn a_lone_cpu_bound_thread_runs_holding_the_gil() {
    every_interpreter("one spinner", |i| {
        one_spinner(i).map(|n| format!("{n} reads"))
    });
}

#[test]
fn cpu_bound_threads_take_turns_with_the_gil() {
    every_interpreter("three spinners", |i| {
        contention(i).map(|(r, one, w)| {
            format!("{r} paused reads, {one} with one holder, {w} waits for the GIL seen")
        })
    });
}

/// `record` leaves out as idle exactly the threads `stack` shows asleep in the kernel
/// (`blocked`, `waiting_for_gil`): with one CPU-bound thread, a second of samples without
/// `--idle` holds that thread alone, with `--idle` every thread. Returns threads seen.
fn record_idle(i: &Interpreter) -> Result<usize, String> {
    let target = Target::try_spawn(i, "thread_state_target.py", &["1"])?;
    let pid = target.pid();
    let asleep: Vec<String> = by_name(&target, &stack(pid, &[])?)?
        .into_iter()
        .filter(|(_, t)| {
            matches!(
                t.state.state,
                Some(RunState::Blocked | RunState::WaitingForGil)
            )
        })
        .map(|(n, _)| n)
        .collect();
    ensure!(
        asleep.len() == target.truth().threads.len() - 1,
        "stack: asleep {asleep:?}, want every thread but spin-0"
    );
    let dir = testkit::TempDir::new("thread-state-record");
    let mut seen = 0;
    for idle in [false, true] {
        let out = dir.path().join(format!("idle-{idle}.folded"));
        let pid_s = pid.to_string();
        let mut args = vec!["record", "--pid", &pid_s, "--duration", "1", "--threads"];
        if idle {
            args.push("--idle");
        }
        let out_s = out.display().to_string();
        args.extend(["-o", &out_s]);
        let run = Command::new(pystackd_bin())
            .args(&args)
            .output()
            .map_err(|e| format!("running pystackd record: {e}"))?;
        ensure!(
            run.status.success(),
            "record exited {:?}: {}",
            run.status.code(),
            String::from_utf8_lossy(&run.stderr)
        );
        let folded = std::fs::read_to_string(&out).map_err(|e| format!("{out_s}: {e}"))?;
        let roots: std::collections::BTreeSet<&str> = folded
            .lines()
            .filter_map(|l| l.split(';').next())
            .filter_map(|r| r.strip_prefix("thread "))
            .filter_map(|r| r.split(" (").next())
            .collect();
        let want: std::collections::BTreeSet<&str> = if idle {
            target
                .truth()
                .threads
                .iter()
                .map(|t| t.name.as_str())
                .collect()
        } else {
            ["spin-0"].into()
        };
        ensure!(
            roots == want,
            "record{}: threads {roots:?}, want {want:?}",
            if idle { " --idle" } else { "" }
        );
        seen += roots.len();
    }
    Ok(seen)
}

#[test]
fn record_leaves_out_the_threads_stack_shows_asleep() {
    every_interpreter("record idle", |i| {
        record_idle(i).map(|n| format!("{n} thread roots"))
    });
}
