//! `pystackd stack` against real interpreters: the output must equal the target's own
//! view of its stacks (`sys._current_frames()`, written before it blocks), frame for
//! frame, for every thread, under every interpreter `tests/pythons/list` finds.

use std::process::Command;
use std::time::Duration;

use protocol::ProcessStack;
use pyframe_reader::{Error, PythonProcess, StackOptions};
use testkit::{pystackd_bin, require, Interpreter, RunAs, Target, Want};

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)*) => {
        if !$cond {
            return Err(format!($($fmt)*));
        }
    };
}

/// Runs `check` on every interpreter, the free-threaded builds included (their stacks
/// read like the GIL builds'), collecting every failure before failing.
fn for_each_interpreter(what: &str, check: impl Fn(&Interpreter) -> Result<(), String>) {
    let list = require!(testkit::pythons::all_with_free_threaded());
    let mut tested = Vec::new();
    let mut failures = Vec::new();
    for i in &list {
        match check(i) {
            Ok(()) => tested.push(i.label.clone()),
            Err(e) => failures.push(format!("[{}] {e}", i.label)),
        }
    }
    eprintln!(
        "{what}: passed on {} interpreters: {}",
        tested.len(),
        tested.join(", ")
    );
    assert!(failures.is_empty(), "{what}:\n{}", failures.join("\n"));
}

fn stack_json(pid: u32, extra: &[&str]) -> Result<ProcessStack, String> {
    let out = Command::new(pystackd_bin())
        .args(["stack", "--no-daemon", "--json"])
        .args(extra)
        .arg(pid.to_string())
        .output()
        .map_err(|e| format!("running pystackd: {e}"))?;
    ensure!(
        out.status.success(),
        "pystackd stack exited {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).map_err(|e| format!("parsing pystackd's JSON: {e}"))
}

/// Compare every ground-truth thread with pystackd's view of it.
fn compare(target: &Target, got: &ProcessStack, version: (u8, u8)) -> Result<(), String> {
    let truth = target.truth();
    ensure!(
        got.pid == target.pid(),
        "pid {} != {}",
        got.pid,
        target.pid()
    );
    ensure!(
        got.python_version == truth.version,
        "version {} != the target's {}",
        got.python_version,
        truth.version
    );
    ensure!(
        got.threads.len() == truth.threads.len(),
        "{} threads reported, the target has {}",
        got.threads.len(),
        truth.threads.len()
    );
    for t in &truth.threads {
        let g = got
            .threads
            .iter()
            .find(|g| g.os_tid == Some(t.native_id))
            .ok_or_else(|| format!("thread {} (tid {}) missing", t.name, t.native_id))?;
        let want: Vec<(&str, Option<u32>, &str)> = t
            .frames
            .iter()
            .map(|f| (f.filename.as_str(), f.line, f.function.as_str()))
            .collect();
        let have: Vec<(&str, Option<u32>, &str)> = g
            .frames
            .iter()
            .map(|f| (&*f.filename, f.line, &*f.function))
            .collect();
        if want != have {
            let mut msg = format!("thread {}: frames differ (truth | pystackd)\n", t.name);
            for i in 0..want.len().max(have.len()) {
                let (a, b) = (want.get(i), have.get(i));
                msg += &format!("  {} {:?} | {:?}\n", if a == b { "  " } else { "!=" }, a, b);
            }
            return Err(msg);
        }
        for (f, h) in t.frames.iter().zip(&g.frames) {
            ensure!(
                h.first_line == f.first_line,
                "{}: first line {} != {}",
                f.function,
                h.first_line,
                f.first_line
            );
            if version >= (3, 11) {
                ensure!(
                    h.qualname.as_deref() == f.qualname.as_deref(),
                    "qualname {:?} != {:?}",
                    h.qualname,
                    f.qualname
                );
            }
        }
        ensure!(
            g.frames.last().is_none_or(|f| f.entry),
            "thread {}: outermost frame is not an entry frame",
            t.name
        );
    }
    Ok(())
}

#[test]
fn stack_json_equals_ground_truth() {
    for_each_interpreter("stack --json vs ground truth (main_target)", |interp| {
        let target = Target::try_spawn(interp, "main_target.py", &[])?;
        let got = stack_json(target.pid(), &[])?;
        compare(&target, &got, interp.version)
    });
}

#[test]
fn stack_json_equals_ground_truth_nested_eval() {
    for_each_interpreter("stack --json vs ground truth (nested_eval)", |interp| {
        let target = Target::try_spawn(interp, "nested_eval.py", &[])?;
        let got = stack_json(target.pid(), &[])?;
        compare(&target, &got, interp.version)?;
        // up to 3.10 every frame is its own eval call; from 3.11 several are
        let entries: usize = got
            .threads
            .iter()
            .flat_map(|t| &t.frames)
            .filter(|f| f.entry)
            .count();
        let frames: usize = got.threads.iter().map(|t| t.frames.len()).sum();
        if interp.version <= (3, 10) {
            ensure!(entries == frames, "{entries} entry frames of {frames}");
        } else {
            ensure!(
                entries < frames && entries > got.threads.len(),
                "{entries} entry frames of {frames}"
            );
        }
        Ok(())
    });
}

#[test]
fn paused_stack_and_one_thread() {
    for_each_interpreter("stack --pause --tid", |interp| {
        let target = Target::try_spawn(interp, "main_target.py", &[])?;
        let main = target
            .truth()
            .main_thread()
            .ok_or("no main thread")?
            .clone();
        let got = stack_json(
            target.pid(),
            &["--pause", "--tid", &target.pid().to_string()],
        )?;
        ensure!(
            got.threads.len() == 1,
            "{} threads for one --tid",
            got.threads.len()
        );
        ensure!(
            got.threads[0].os_tid == Some(main.native_id),
            "wrong thread"
        );
        ensure!(
            got.threads[0].frames.len() == main.frames.len(),
            "frames differ"
        );
        // resumed: not left in a stopped state
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", target.pid()))
            .map_err(|e| e.to_string())?;
        let state = stat
            .rsplit_once(')')
            .and_then(|x| x.1.trim_start().chars().next());
        ensure!(
            !matches!(state, Some('t') | Some('T')),
            "target left stopped: {state:?}"
        );
        Ok(())
    });
}

/// A running (never blocking) target read 500 times: no crash, and every frame returned
/// exists in the program (errors for torn reads are allowed; wrong frames are not).
#[test]
fn busy_target_read_500_times() {
    for_each_interpreter("busy target x500", |interp| {
        let target = Target::try_spawn(interp, "busy_target.py", &[])?;
        let truth = target.truth().clone();
        let mut p = PythonProcess::attach(target.pid()).map_err(|e| format!("attach: {e}"))?;
        let (mut ok, mut inconsistent, mut frames) = (0, 0, 0);
        for _ in 0..500 {
            match p.stack(&StackOptions::default()) {
                Ok(s) => {
                    ok += 1;
                    for t in &s.threads {
                        for f in &t.frames {
                            frames += 1;
                            ensure!(
                                truth.functions.iter().any(|g| **g == *f.function),
                                "function {:?} is not in the program",
                                f.function
                            );
                            ensure!(
                                truth.is_program_file(&f.filename)
                                    || truth.is_stdlib_file(&f.filename),
                                "file {:?} is not in the program",
                                f.filename
                            );
                            ensure!(
                                f.line.is_none_or(|l| l >= f.first_line),
                                "line {:?} before first line {}",
                                f.line,
                                f.first_line
                            );
                        }
                    }
                }
                Err(Error::Inconsistent { .. }) => inconsistent += 1,
                Err(e) => return Err(format!("read failed: {e}")),
            }
        }
        eprintln!(
            "[{}] busy: {ok} reads ok ({frames} frames), {inconsistent} inconsistent",
            interp.label
        );
        ensure!(ok >= 450, "only {ok} of 500 reads succeeded");
        Ok(())
    });
}

fn run_stack(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(pystackd_bin())
        .arg("stack")
        .arg("--no-daemon")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn no_such_process() {
    // a pid that cannot exist (above pid_max)
    let (code, err) = run_stack(&["4194305"]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("no such process"), "{err}");
}

#[test]
fn not_a_python_process() {
    let mut child = Command::new("sleep").arg("60").spawn().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let (code, err) = run_stack(&[&child.id().to_string()]);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(code, Some(4), "{err}");
    assert!(
        err.contains("does not look like a CPython process"),
        "{err}"
    );
}

#[test]
fn unsupported_version() {
    // tests/pythons/list offers pyenv's 3.6 and 3.7 builds for this
    let old = require!(testkit::python(&Want::any().unsupported()));
    let minor = old.xy();
    let mut child = Command::new(&old.command)
        .args(["-c", "import time; time.sleep(60)"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (code, err) = run_stack(&[&child.id().to_string()]);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(code, Some(6), "{err}");
    assert!(
        err.contains(&format!("CPython {minor} is not supported")),
        "{err}"
    );
}

#[test]
fn permission_denied_for_another_user() {
    require!(testkit::root("to switch users"));
    require!(testkit::tool("setpriv"));
    let interp = require!(testkit::python(&Want::any()));
    let target = Target::spawn(&interp, "main_target.py", &[]);
    // a copy of the binary any user can run (the build tree may sit under /root)
    let dir = std::env::temp_dir().join(format!("pystackd-perm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bin = dir.join("pystackd");
    std::fs::copy(pystackd_bin(), &bin).unwrap();
    Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(&dir)
        .status()
        .unwrap();
    let out = RunAs::NOBODY
        .command(&bin)
        .args(["stack", "--no-daemon", &target.pid().to_string()])
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    let out = out.expect("setpriv runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(
        err.contains("permission denied") && err.contains("ptrace"),
        "{err}"
    );
}

#[test]
fn process_exits_while_attached() {
    let interp = require!(testkit::python(&Want::any()));
    let target = Target::spawn(&interp, "main_target.py", &[]);
    let mut p = PythonProcess::attach(target.pid()).unwrap();
    p.stack(&StackOptions::default()).unwrap();
    drop(target); // kills and reaps it
    match p.stack(&StackOptions::default()) {
        Err(Error::ProcessExited { .. }) => {}
        other => panic!("expected ProcessExited, got {other:?}"),
    }
}

/// Function and file names of every compact `str` kind (UCS1, UCS2, UCS4).
#[test]
fn stack_json_equals_ground_truth_wide_unicode() {
    for_each_interpreter("stack --json vs ground truth (wide_unicode)", |interp| {
        let target = Target::try_spawn(interp, "wide_unicode.py", &[])?;
        let got = stack_json(target.pid(), &[])?;
        compare(&target, &got, interp.version)?;
        let names: Vec<&str> = got
            .threads
            .iter()
            .flat_map(|t| &t.frames)
            .map(|f| &*f.function)
            .collect();
        ensure!(
            names.contains(&"関数_\u{20000}"),
            "no UCS4 function name in {names:?}"
        );
        ensure!(
            got.threads
                .iter()
                .flat_map(|t| &t.frames)
                .any(|f| f.filename.ends_with("ユニコード_\u{1F600}.py")),
            "no UCS4 file name"
        );
        Ok(())
    });
}
