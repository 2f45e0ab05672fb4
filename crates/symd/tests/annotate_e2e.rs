//! `pystackd annotate` end to end with real tools: native stacks of real targets taken by
//! gdb (every interpreter) and bpftrace (where it works), annotated by the binary, and every
//! inserted `[ file:line (func) ]` line checked against the target's own view of its stack:
//! the annotations of one native stack, top to bottom, must be exactly the Python frames of
//! that thread, innermost first, nothing missing and nothing invented. Plain lines only where
//! annotate could show the thread held (gdb's `pipe` command, `--stopped`); text annotated
//! after gdb let go is `[~ ... ]` throughout, with exit status 11.

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testkit::pythons::{self, Build, Launch};
use testkit::tools::{annotate, gdb_all_threads, gdb_to_dtrace, header_tid, names_eval_loop};
use testkit::{pystackd_bin, require, FrameTruth, Interpreter, Target, Want};

/// (filename, line, function) as annotate prints them.
type Ann = (String, Option<u32>, String);

fn truth_frames(frames: &[FrameTruth]) -> Vec<Ann> {
    frames
        .iter()
        .map(|f| (f.filename.clone(), f.line, f.function.clone()))
        .collect()
}

/// Parses `[ file:line (func) ]` (None for anything else, `[~ ... ]` included).
fn parse_annotation(line: &str) -> Option<Ann> {
    parse_marked(line, "[ ")
}

/// Parses `[~ file:line (func) ]`: frames read later than the stack was taken.
fn parse_later(line: &str) -> Option<Ann> {
    parse_marked(line, "[~ ")
}

fn parse_marked(line: &str, open: &str) -> Option<Ann> {
    let l = line.trim().strip_prefix(open)?.strip_suffix(" ]")?;
    let (loc, func) = l.rsplit_once(" (")?;
    let (file, ln) = loc.rsplit_once(':')?;
    Some((
        file.to_string(),
        ln.parse().ok(),
        func.strip_suffix(')')?.to_string(),
    ))
}

type Parse = fn(&str) -> Option<Ann>;

/// The annotations of the output (plain, or `[~` ones with `later`), per stack, keyed by the
/// stack's thread id. A line of the other kind is an error.
fn annotations_by_tid(out: &str, later: bool) -> Result<HashMap<u64, Vec<Ann>>, String> {
    let (want, other): (Parse, Parse) = if later {
        (parse_later, parse_annotation)
    } else {
        (parse_annotation, parse_later)
    };
    let mut map: HashMap<u64, Vec<Ann>> = HashMap::new();
    let mut cur: Option<u64> = None;
    for line in out.lines() {
        if other(line).is_some() {
            return Err(format!(
                "{} line where {} were expected: {line}",
                if later { "a plain" } else { "a [~" },
                if later { "[~ lines" } else { "plain lines" }
            ));
        }
        if let Some(a) = want(line) {
            let tid = cur.ok_or_else(|| format!("annotation before any thread: {line}"))?;
            map.entry(tid).or_default().push(a);
        } else if let Some(t) = header_tid(line) {
            if map.contains_key(&t) {
                return Err(format!("thread {t} twice"));
            }
            map.insert(t, Vec::new());
            cur = Some(t);
        }
    }
    Ok(map)
}

/// Checks every Python thread of the ground truth against its stack's annotations.
fn check(target: &Target, out: &str, what: &str, later: bool) -> Result<usize, String> {
    let got = annotations_by_tid(out, later).map_err(|e| format!("{what}: {e}\n{out}"))?;
    let truth = target.truth();
    let mut checked = 0;
    for t in &truth.threads {
        let want = truth_frames(&t.frames);
        let have = got.get(&t.native_id).cloned().unwrap_or_default();
        if have != want {
            return Err(format!(
                "{what}: thread {} ({}):\n  want {want:?}\n  have {have:?}\n--- output ---\n{out}",
                t.native_id, t.name
            ));
        }
        checked += want.len();
    }
    // nothing invented for threads the interpreter does not know
    for (tid, anns) in &got {
        if !anns.is_empty() && !truth.threads.iter().any(|t| t.native_id == *tid) {
            return Err(format!("{what}: annotations for unknown thread {tid}"));
        }
    }
    Ok(checked)
}

/// Debian's `-dbg` debug files of this build's version (tests/run fetches 3.14 and 3.15),
/// handed to annotate as `PYSTACKD_DEBUG_ROOT`.
fn debug_root(interp: &Interpreter) -> Option<std::path::PathBuf> {
    if !matches!(interp.build, Build::Debian(_)) {
        return None;
    }
    let d =
        testkit::pythons::debug_info_root().join(format!("py{}/root/usr/lib/debug", interp.xy()));
    d.join(".build-id").is_dir().then_some(d)
}

/// Whether pystackd can name what gdb could not: the build's debug files, and gdb able to
/// unwind at all (through its own ld.so gdb loads no symbols of the program and its
/// backtraces end in garbage).
fn has_debug_info(interp: &Interpreter) -> bool {
    interp.build == Build::Debian(Launch::Direct) && debug_root(interp).is_some()
}

/// `[= module`symbol+0xoff (named by pystackd) ]`: a native frame the tracer left unnamed.
fn is_named_line(line: &str) -> bool {
    let t = line.trim();
    t.starts_with("[= ") && t.ends_with(" (named by pystackd) ]")
}

/// `gdb -batch -p PID -ex 'pipe thread apply all bt | pystackd annotate ARGS'`: annotate's
/// output and exit status (printed by the shell gdb starts).
fn gdb_pipe_annotate(pid: u32, args: &str) -> (String, Option<i32>) {
    let cmd = format!(
        "pipe thread apply all bt | {} --no-daemon annotate {args}; echo pystackd-exit=$?",
        pystackd_bin()
    );
    let out = Command::new("gdb")
        .args(["-batch", "-nx", "-p", &pid.to_string(), "-ex", &cmd])
        .stdin(Stdio::null())
        .output()
        .expect("gdb runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let code = text
        .lines()
        .find_map(|l| l.strip_prefix("pystackd-exit="))
        .and_then(|c| c.trim().parse().ok());
    (text, code)
}

fn run_gdb_case(interp: &Interpreter, script: &str) -> Result<String, String> {
    let target = Target::try_spawn(interp, script, &[])?;
    let pid = target.pid();
    let gdb = gdb_all_threads(pid);
    // where gdb could not name the eval loop, pystackd names it from the build's debug info
    // (Debian 3.14/3.15's `.cold` part; a program gdb loaded no symbols of)
    if !names_eval_loop(&gdb) && !has_debug_info(interp) {
        testkit::skip_case(format!(
            "{}: gdb names no eval-loop function ({})",
            target.label(),
            if interp.build == Build::Debian(Launch::Ldso) {
                "started through its own ld.so, gdb loads no symbols of the program"
            } else {
                "the loop body is in the unexported _PyEval_EvalFrameDefault.cold of this build"
            }
        ));
        return Ok(String::new());
    }
    let pid_s = pid.to_string();
    let mut total = 0;
    // gdb's own `pipe` command: gdb holds the target while annotate reads it, so every line
    // is plain (exact), exit 0
    for (what, args) in [
        ("gdb pipe --pid", format!("--pid {pid}")),
        ("gdb pipe, LWP headers", String::new()),
    ] {
        let what = format!("{} / {what}", target.label());
        let (text, code) = gdb_pipe_annotate(pid, &args);
        if code != Some(0) {
            return Err(format!("{what}: annotate exit {code:?}\n{text}"));
        }
        total += check(&target, &text, &what, false)?;
    }
    // the same text annotated after gdb let the target go: still right for these blocked
    // threads, but nothing shows that, so every line is `[~`, exit 11
    let dtrace = gdb_to_dtrace(&gdb, pid);
    for (what, args, input) in [
        ("gdb --pid", vec!["--pid", pid_s.as_str()], &gdb),
        ("gdb, LWP headers", vec![], &gdb),
        (
            "dtrace layout --pid",
            vec!["--pid", pid_s.as_str()],
            &dtrace,
        ),
        (
            "dtrace layout --format dtrace",
            vec!["--pid", pid_s.as_str(), "--format", "dtrace"],
            &dtrace,
        ),
    ] {
        let what = format!("{} / {what}", target.label());
        let out = annotate(&args, input);
        let text = String::from_utf8_lossy(&out.stdout);
        if out.status.code() != Some(11) {
            return Err(format!(
                "{what}: exit {:?} (want 11: read later)\n{}\n{text}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        total += check(&target, &text, &what, true)?;
        // only lines were added
        let stripped: Vec<&str> = text
            .lines()
            .filter(|l| parse_later(l).is_none() && !is_named_line(l))
            .collect();
        let want: Vec<&str> = input.lines().collect();
        if stripped != want {
            let at = stripped.iter().zip(&want).position(|(a, b)| a != b);
            return Err(format!(
                "{what}: the input was changed (first difference at {at:?}: {:?} against {:?})",
                at.and_then(|i| stripped.get(i)),
                at.and_then(|i| want.get(i))
            ));
        }
    }
    if total == 0 {
        return Err(format!("{}: no Python frame checked", target.label()));
    }
    Ok(format!(
        "ok {}: {total} annotations checked",
        target.label()
    ))
}

#[test]
fn gdb_stacks_of_every_interpreter() {
    require!(testkit::tool("gdb"));
    let list = require!(pythons::all());
    // the debug files of the Debian builds that have them: annotate (a child, inheriting
    // this) names with them what gdb left as `??`
    let roots: Vec<String> = list
        .iter()
        .filter_map(debug_root)
        .map(|d| d.display().to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    std::env::set_var("PYSTACKD_DEBUG_ROOT", roots.join(":"));
    let mut failures = Vec::new();
    let mut checked = 0;
    for interp in &list {
        for script in ["nested_eval.py", "main_target.py"] {
            match run_gdb_case(interp, script) {
                Ok(msg) => {
                    if msg.starts_with("ok") {
                        checked += 1;
                    }
                    eprintln!("{msg}");
                }
                Err(e) => failures.push(e),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(checked > 0, "no interpreter could be checked");
}

// ---- bpftrace ----

fn tracefs_ready() -> bool {
    let p = std::path::Path::new("/sys/kernel/tracing/events");
    if p.exists() {
        return true;
    }
    let _ = Command::new("mount")
        .args(["-t", "tracefs", "tracefs", "/sys/kernel/tracing"])
        .status();
    p.exists()
}

/// The file holding the eval loop's callees: libpython when the interpreter has one, else
/// the executable.
fn libpython_of(pid: u32) -> Option<String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let paths: Vec<&str> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .collect();
    paths
        .iter()
        .find(|p| p.contains("libpython3"))
        .or_else(|| paths.iter().find(|p| p.contains("python3")))
        .map(|p| p.to_string())
}

fn process_state(pid: u32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit_once(") ")?.1.chars().next()
}

/// One bpftrace capture of a running target, stopped by the probe (`signal("SIGSTOP")`),
/// annotated with `--stopped`, which must resume it. nested_eval's and main_target's threads
/// block, so the probe would never fire there: busy_target runs Python all the time and
/// calls `PyObject_GetAttr` at once.
fn run_bpftrace(interp: &Interpreter) -> Result<String, String> {
    let mut target = Target::try_spawn(interp, "busy_target.py", &[])?;
    let pid = target.pid();
    let Some(lib) = libpython_of(pid) else {
        return Err(format!("{}: no python mapping", target.label()));
    };
    let prog = format!(
        "uprobe:{lib}:PyObject_GetAttr /pid == {pid}/ {{ printf(\"pid=%d tid=%d\\n\", pid, tid); \
         print(ustack(perf)); signal(\"SIGSTOP\"); exit(); }}"
    );
    let bt = Command::new("timeout")
        .args(["60", "bpftrace", "--unsafe", "-e", &prog])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("bpftrace: {e}"))?;
    let text = String::from_utf8_lossy(&bt.stdout).into_owned();
    if !bt.status.success() || !text.contains("pid=") {
        // bpftrace installed but not working here (kernel, lockdown): a missing tool
        return Err(format!(
            "SKIP {}: bpftrace failed: {:?} {}",
            target.label(),
            bt.status,
            String::from_utf8_lossy(&bt.stderr)
        ));
    }
    // the probe stopped the target; annotate reads it and resumes it
    let deadline = Instant::now() + Duration::from_secs(5);
    while process_state(pid) != Some('T') && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if process_state(pid) != Some('T') {
        return Err(format!(
            "{}: the probe did not stop the target",
            target.label()
        ));
    }
    let out = annotate(&["--stopped"], &text);
    let ann = String::from_utf8_lossy(&out.stdout).into_owned();
    std::thread::sleep(Duration::from_millis(200));
    let state = process_state(pid);
    if state == Some('T') || !target.is_running() {
        return Err(format!(
            "{}: not running after annotate --stopped (state {state:?})",
            target.label()
        ));
    }
    let anns: Vec<Ann> = ann.lines().filter_map(parse_annotation).collect();
    let has_eval = text.contains("_PyEval_EvalFrameDefault");
    let summary = String::from_utf8_lossy(&out.stderr).into_owned();
    if let Some(l) = ann.lines().find(|l| parse_later(l).is_some()) {
        return Err(format!(
            "{}: the target was stopped at the probe, yet a [~ line: {l}\n{summary}",
            target.label()
        ));
    }
    if !has_eval && interp.frame_pointers() {
        return Err(format!(
            "{}: built with frame pointers, yet bpftrace's ustack shows no eval frame:\n{text}",
            target.label()
        ));
    }
    if !has_eval {
        testkit::skip_case(format!(
            "{} (the probe stopped it, annotate --stopped resumed it): ustack shows no eval \
             frame, so nothing to check (no frame pointers?): {}",
            target.label(),
            text.lines().take(6).collect::<Vec<_>>().join(" | ")
        ));
        return Ok(String::new());
    }
    // A busy thread's stack moves on between the probe and our read only if it runs: it
    // is stopped, so its Python frames must be complete and in the program's files or the
    // standard library, innermost first, ending in the thread's entry point.
    let truth = target.truth();
    for (f, _, func) in &anns {
        if !(truth.is_program_file(f) || truth.is_stdlib_file(f)) {
            return Err(format!(
                "{}: unexpected file {f} ({func})\n{ann}",
                target.label()
            ));
        }
    }
    if interp.frame_pointers() && (out.status.code() != Some(0) || anns.is_empty()) {
        return Err(format!(
            "{}: full ustack of a stopped target, yet exit {:?} with {} plain lines\n{summary}\n{ann}",
            target.label(),
            out.status.code(),
            anns.len()
        ));
    }
    if out.status.code() == Some(0) && !anns.is_empty() {
        Ok(format!(
            "ok {}: bpftrace stack annotated with {} frames, target resumed",
            target.label(),
            anns.len()
        ))
    } else {
        Ok(format!(
            "PARTIAL {}: exit {:?}, {} annotations; {summary}\n{text}",
            target.label(),
            out.status.code(),
            anns.len()
        ))
    }
}

#[test]
fn bpftrace_stopped_target() {
    require!(testkit::root("for bpftrace"));
    require!(testkit::tool("bpftrace"));
    if !tracefs_ready() {
        testkit::skip!("no tracefs at /sys/kernel/tracing");
    }
    // a frame-pointer build, a static one started directly, a shared one with symbols and
    // without frame pointers, at most: bpftrace starts take seconds
    let mut picks = Vec::new();
    for want in [
        Want::any().frame_pointers(),
        Want::version("3.14").debian().direct(),
        Want::version("3.12").pyenv(),
    ] {
        match testkit::python(&want) {
            Ok(i) => picks.push(i),
            Err(skip) => skip.report(),
        }
    }
    let mut failures = Vec::new();
    for interp in &picks {
        match run_bpftrace(interp) {
            Ok(msg) if msg.is_empty() => {}
            Ok(msg) => eprintln!("{msg}"),
            Err(e) if e.starts_with("SKIP ") => {
                testkit::Skip::new(&e[5..]).report();
            }
            Err(e) => failures.push(e),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// In the middle of a pipe: a stack comes out as soon as it is complete (its blank line
/// read), while the input is still open.
#[test]
fn output_streams_before_input_ends() {
    use std::io::{BufRead, BufReader};
    require!(testkit::tool("gdb"));
    let interp = require!(testkit::python(&Want::version("3.12").shared().symbols()));
    let target = Target::spawn(&interp, "nested_eval.py", &[]);
    let pid = target.pid();
    let dtrace = gdb_to_dtrace(&gdb_all_threads(pid), pid);
    // the first stack only, with the blank line that ends it
    let first_end = dtrace
        .match_indices("\ntid=")
        .nth(1)
        .map(|(p, _)| p + 1)
        .expect("two stacks");
    let mut child = Command::new(pystackd_bin())
        .args(["--no-daemon", "annotate", "--pid", &pid.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&dtrace.as_bytes()[..first_end]).unwrap();
    stdin.write_all(b"\n").unwrap();
    stdin.flush().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if parse_later(&line).is_some() {
                let _ = tx.send(line);
                break;
            }
        }
    });
    let got = rx.recv_timeout(Duration::from_secs(20));
    drop(stdin);
    let _ = child.wait();
    let line = got.expect("an annotation line while the input was still open");
    let ann = parse_later(&line).unwrap();
    assert!(
        target
            .truth()
            .threads
            .iter()
            .any(|t| t.frames.first().map(|f| &f.function) == Some(&ann.2)),
        "{line}"
    );
}
