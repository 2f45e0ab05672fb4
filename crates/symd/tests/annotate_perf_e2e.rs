//! `pystackd annotate` on real `perf record` / `perf script` output: tests/targets/syscall_loop.py
//! spins on one syscall line with a fixed Python stack; perf samples every syscall entry with a
//! DWARF-unwound native stack; annotate (no --pid: the thread ids come from perf's headers)
//! must put under the eval-loop frames of every sample exactly the Python frames the target
//! recorded for that thread, innermost first, as `[~ ... ]` lines: they were read after the
//! sample, and nothing shows the thread had not moved (exit status 11).
//!
//! And a moving target (tests/targets/recur_target.py, `cpu-clock` samples): its Python stack
//! changes all the time, so what annotate reads later is mostly not the sample's stack; not
//! one plain `[ ... ]` line may come out.

use std::process::{Command, Stdio};
use std::time::Instant;

use testkit::{pystackd_bin, require, Interpreter, Target};

type Ann = (String, Option<u32>, String);

/// Whether a line is a plain (claimed exact) annotation.
fn is_plain_annotation(line: &str) -> bool {
    let t = line.trim();
    t.starts_with("[ ") && t.ends_with(" ]")
}

/// Parses `[~ file:line (func) ]` (None for anything else).
fn parse_annotation(line: &str) -> Option<Ann> {
    let l = line.trim().strip_prefix("[~ ")?.strip_suffix(" ]")?;
    let (loc, func) = l.rsplit_once(" (")?;
    let (file, ln) = loc.rsplit_once(':')?;
    Some((
        file.to_string(),
        ln.parse().ok(),
        func.strip_suffix(')')?.to_string(),
    ))
}

/// A frame line naming an eval-loop function (what annotate must annotate).
fn is_eval_frame(line: &str) -> bool {
    line.starts_with('\t')
        && (line.contains(" _PyEval_EvalFrameDefault") || line.contains(" _TAIL_CALL_"))
}

/// The thread id of a default `perf script` header: `comm tid [cpu] time: event: ...` (comm
/// may hold spaces: the first all-digit token after the first one).
fn header_tid(header: &str) -> Option<u64> {
    header
        .split_whitespace()
        .skip(1)
        .find_map(|t| t.parse().ok())
}

enum Outcome {
    Checked { samples: usize, frames: usize },
    Skip(String),
}

/// Records `pid` with perf; Err(reason) when perf cannot record (no permission, no support).
fn perf_record_script(pid: u32, dir: &std::path::Path) -> Result<String, String> {
    // thousands of samples already: perf script's DWARF unwinding is the slow part
    perf_record(pid, dir, &["-e", "raw_syscalls:sys_enter"], "0.02")
}

fn perf_record(
    pid: u32,
    dir: &std::path::Path,
    event: &[&str],
    seconds: &str,
) -> Result<String, String> {
    let data = dir.join(format!("perf-{pid}.data"));
    let rec = Command::new("perf")
        .args(["record", "-q", "-o"])
        .arg(&data)
        .args(event)
        .args(["--call-graph", "dwarf,16384", "-p", &pid.to_string()])
        .args(["--", "sleep", seconds])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("perf record: {e}"))?;
    if !rec.status.success() {
        return Err(format!(
            "perf record failed ({}): {}",
            rec.status,
            String::from_utf8_lossy(&rec.stderr).trim()
        ));
    }
    let script = Command::new("perf")
        .args(["script", "-i"])
        .arg(&data)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("perf script: {e}"));
    let _ = std::fs::remove_file(&data);
    let script = script?;
    if !script.status.success() {
        return Err(format!("perf script failed ({})", script.status));
    }
    Ok(String::from_utf8_lossy(&script.stdout).into_owned())
}

fn annotate(input: &str) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(pystackd_bin());
    cmd.args(["--no-daemon", "annotate"]);
    let out = testkit::tools::output_with_input(cmd, input);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn run_case(interp: &Interpreter, dir: &std::path::Path) -> Result<Outcome, String> {
    let target = Target::try_spawn(interp, "syscall_loop.py", &[])?;
    let what = target.label().to_string();
    let script = perf_record_script(target.pid(), dir).map_err(|e| format!("PERF: {e}"))?;
    let (code, out, err) = annotate(&script);
    let truth = target.truth();
    let mut samples = 0;
    let mut frames = 0;
    let mut with_eval = 0;
    if let Some(l) = out.lines().find(|l| is_plain_annotation(l)) {
        return Err(format!(
            "{what}: a plain line for a read after the sample: {l}"
        ));
    }
    for sample in out.split("\n\n").filter(|s| !s.trim().is_empty()) {
        let mut lines = sample.lines();
        let header = lines.next().unwrap_or_default();
        let has_eval = sample.lines().any(is_eval_frame);
        let have: Vec<Ann> = sample.lines().filter_map(parse_annotation).collect();
        if !has_eval {
            if !have.is_empty() {
                return Err(format!(
                    "{what}: annotations without eval frames:\n{sample}"
                ));
            }
            continue;
        }
        with_eval += 1;
        let tid = header_tid(header).ok_or_else(|| format!("{what}: header {header:?}"))?;
        let t = truth
            .threads
            .iter()
            .find(|t| t.native_id == tid)
            .ok_or_else(|| format!("{what}: sample of unknown thread {tid}:\n{sample}"))?;
        let want: Vec<Ann> = t
            .frames
            .iter()
            .map(|f| (f.filename.clone(), f.line, f.function.clone()))
            .collect();
        if have != want {
            return Err(format!(
                "{what}: sample of thread {tid} ({}):\n  want {want:?}\n  have {have:?}\n{sample}\n--- summary ---\n{err}",
                t.name
            ));
        }
        samples += 1;
        frames += have.len();
    }
    if with_eval == 0 {
        return Ok(Outcome::Skip(format!(
            "{what}: perf's stacks name no eval-loop function (no symbols for it)"
        )));
    }
    if code != Some(11) || !err.contains("read later") {
        return Err(format!(
            "{what}: annotate exit {code:?} (want 11, read later)\n{err}"
        ));
    }
    Ok(Outcome::Checked { samples, frames })
}

/// The moving target under `cpu-clock` sampling: Ok(number of `[~` lines) when no plain
/// line came out and the exit status says the output is not exact.
fn run_moving_case(interp: &Interpreter, dir: &std::path::Path) -> Result<Outcome, String> {
    let target = Target::try_spawn(interp, "recur_target.py", &["--threads", "2"])?;
    let what = format!("{} (moving)", target.label());
    let script = perf_record(target.pid(), dir, &["-e", "cpu-clock", "-F", "997"], "0.2")
        .map_err(|e| format!("PERF: {e}"))?;
    let with_eval = script
        .split("\n\n")
        .filter(|s| s.lines().any(is_eval_frame))
        .count();
    if with_eval == 0 {
        return Ok(Outcome::Skip(format!(
            "{what}: perf's stacks name no eval-loop function (no symbols for it)"
        )));
    }
    let (code, out, err) = annotate(&script);
    if let Some(l) = out.lines().find(|l| is_plain_annotation(l)) {
        return Err(format!(
            "{what}: a plain line for a moving thread read after its sample: {l}"
        ));
    }
    let later = out.lines().filter_map(parse_annotation).count();
    if !matches!(code, Some(9 | 11)) {
        return Err(format!(
            "{what}: exit {code:?}, want 11 or 9 (never 0)\n{err}"
        ));
    }
    if later > 0 && !err.contains("read later") {
        return Err(format!(
            "{what}: the summary does not say 'read later'\n{err}"
        ));
    }
    Ok(Outcome::Checked {
        samples: with_eval,
        frames: later,
    })
}

#[test]
fn perf_script_samples_of_every_interpreter() {
    require!(testkit::root("for perf record -p"));
    require!(testkit::tool("perf"));
    // a Debian build's -direct twin is the -ldso build's binary and libraries, only started
    // differently: left out, which keeps the test well under a minute
    let list = require!(testkit::pythons::distinct_builds());
    let dir = std::env::temp_dir().join(format!("pystackd-perf-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut covered = Vec::new();
    for interp in &list {
        let t0 = Instant::now();
        match run_moving_case(interp, &dir) {
            Ok(Outcome::Checked { samples, frames }) => eprintln!(
                "ok {} (moving): {samples} samples with eval frames, 0 plain lines, {frames} [~ lines",
                interp.label
            ),
            Ok(Outcome::Skip(why)) => testkit::skip_case(why),
            Err(e) if e.starts_with("PERF: ") => {}
            Err(e) => failures.push(e),
        }
        match run_case(interp, &dir) {
            Ok(Outcome::Checked { samples, frames }) => {
                eprintln!(
                    "ok {}: {samples} samples, {frames} annotations checked ({:?})",
                    interp.label,
                    t0.elapsed()
                );
                covered.push(interp.label.clone());
            }
            Ok(Outcome::Skip(why)) => testkit::skip_case(why),
            Err(e) if e.starts_with("PERF: ") => {
                let _ = std::fs::remove_dir_all(&dir);
                // perf installed but not working here (kernel, permissions): a missing tool
                testkit::skip!("{}", &e[6..]);
            }
            Err(e) => failures.push(e),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!(
        "covered {}: {covered:?} in {:?}",
        covered.len(),
        started.elapsed()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(
        !covered.is_empty(),
        "no interpreter gave perf stacks with eval frames"
    );
}
