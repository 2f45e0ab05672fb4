//! `pystackd record` on a moving target (tests/targets/recur_target.py: worker threads
//! recurse recur_a <-> recur_b to a depth that changes all the time): every recorded stack
//! must be a call path the program can have, by the structure the target states about itself
//! (who calls whom, from which lines), on every interpreter, unpaused and with --pause. And
//! the three output formats, and what happens with bad input.

use std::process::Command;
use std::time::{Duration, Instant};

use testkit::{pystackd_bin, require, GroundTruth, Interpreter, Target, TempDir};

/// `name (file:line)` → (name, line).
fn frame(f: &str) -> Option<(&str, u32)> {
    let (name, rest) = f.rsplit_once(" (")?;
    let (_, line) = rest.strip_suffix(')')?.rsplit_once(':')?;
    Some((name, line.parse().ok()?))
}

/// Checks every folded line against the program's structure; the workers' samples counted.
fn check_folded(truth: &GroundTruth, text: &str) -> Result<u64, String> {
    let max = truth.max_depth.unwrap_or(1000) as usize + 8;
    let mut samples = 0;
    for line in text.lines() {
        let (stack, n) = line
            .rsplit_once(' ')
            .ok_or_else(|| format!("not a folded line: {line:?}"))?;
        let n: u64 = n.parse().map_err(|_| format!("bad count: {line:?}"))?;
        let frames: Vec<(&str, u32)> = stack
            .split(';')
            .map(|f| frame(f).ok_or_else(|| format!("bad frame {f:?} in {line:?}")))
            .collect::<Result<_, _>>()?;
        let short = || {
            let names: Vec<&str> = frames.iter().map(|f| f.0).collect();
            names.join(";")
        };
        let outer = frames[0].0;
        if outer != "run" && outer != "<module>" {
            return Err(format!("a stack starting in {outer}: {}", short()));
        }
        if frames.len() > max {
            return Err(format!(
                "{} frames, deeper than the program goes",
                frames.len()
            ));
        }
        for w in frames.windows(2) {
            let ((caller, line), (callee, _)) = (w[0], w[1]);
            let calls = truth.callees.get(caller).cloned().unwrap_or_default();
            if !calls.iter().any(|c| c == callee) {
                return Err(format!("{callee} inside {caller}: impossible: {}", short()));
            }
            let lines = truth.call_lines.get(caller).cloned().unwrap_or_default();
            if !lines.contains(&line) {
                return Err(format!(
                    "{caller} at line {line}, not a line it calls from ({lines:?}): {}",
                    short()
                ));
            }
        }
        if outer == "run" {
            samples += n;
        }
    }
    Ok(samples)
}

fn record(pid: u32, args: &[&str], out: &std::path::Path) -> std::process::Output {
    Command::new(pystackd_bin())
        .args(["record", "--pid", &pid.to_string(), "-o"])
        .arg(out)
        .args(args)
        .output()
        .unwrap()
}

fn case(py: &Interpreter, pause: bool) -> Result<u64, String> {
    // Depth 50-300, changing all the time: deep enough to move under every read, shallow
    // enough that an unpaused read of the debug build is caught still often enough to
    // give samples on a loaded machine (at depth 950 on 3.8-3.10 most reads move).
    let target = Target::try_spawn(
        py,
        "recur_target.py",
        &["--threads", "2", "--max-depth", "300"],
    )?;
    let tmp = TempDir::new("record");
    let out = tmp.path().join("p.folded");
    let mut args = vec!["--rate", "200"];
    // unpaused, most reads of a moving stack are dropped (never recorded wrong): longer
    args.extend(if pause {
        ["--duration", "1", "--pause"]
    } else {
        ["--duration", "3", "--idle"]
    });
    let o = record(target.pid(), &args, &out);
    let err = String::from_utf8_lossy(&o.stderr);
    if !o.status.success() {
        return Err(format!("{}: exit {:?}: {err}", py.label, o.status.code()));
    }
    let text = std::fs::read_to_string(&out).unwrap();
    let n = check_folded(target.truth(), &text).map_err(|e| format!("{}: {e}", py.label))?;
    // enough stacks to have tested something; how many is the benchmarks' business
    if n < 10 {
        return Err(format!(
            "{}: only {n} samples of the workers: {err}",
            py.label
        ));
    }
    Ok(n)
}

#[test]
fn every_recorded_stack_is_a_call_path_of_the_program() {
    let list = require!(testkit::pythons::distinct_builds());
    let mut failures = Vec::new();
    for py in &list {
        for pause in [false, true] {
            if pause && !testkit::is_root() {
                continue;
            }
            match case(py, pause) {
                Ok(n) => eprintln!("ok {} (pause {pause}): {n} worker samples valid", py.label),
                Err(e) => failures.push(e),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn flame_graph_speedscope_and_folded_outputs() {
    let py = require!(testkit::python(&testkit::Want::any()));
    let target = Target::spawn(&py, "recur_target.py", &["--threads", "1"]);
    let tmp = TempDir::new("record-formats");
    // flame graph: an SVG with the program's functions in it
    let svg = tmp.path().join("p.svg");
    let o = record(target.pid(), &["--duration", "0.5"], &svg);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(
        text.starts_with("<?xml") && text.contains("<svg"),
        "{}",
        &text[..200.min(text.len())]
    );
    assert!(
        text.contains("recur_a (") && text.contains("run ("),
        "no frames in the SVG"
    );
    // speedscope: the file format's shape, every sample's frame indices in range
    let json = tmp.path().join("p.json");
    let o = record(target.pid(), &["--duration", "0.5", "--threads"], &json);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(
        v["$schema"],
        "https://www.speedscope.app/file-format-schema.json"
    );
    let frames = v["shared"]["frames"].as_array().unwrap();
    assert!(frames.iter().any(|f| f["name"] == "recur_b"));
    let mut total = 0;
    for p in v["profiles"].as_array().unwrap() {
        assert_eq!(p["type"], "sampled");
        let samples = p["samples"].as_array().unwrap();
        assert_eq!(samples.len(), p["weights"].as_array().unwrap().len());
        assert_eq!(p["endValue"].as_u64(), Some(samples.len() as u64));
        for s in samples {
            for i in s.as_array().unwrap() {
                assert!((i.as_u64().unwrap() as usize) < frames.len());
            }
        }
        total += samples.len();
    }
    assert!(total > 0, "no samples in {v}");
    // --threads: one root per thread
    let folded = tmp.path().join("p.folded");
    let o = record(target.pid(), &["--duration", "0.5", "--threads"], &folded);
    assert!(o.status.success());
    let text = std::fs::read_to_string(&folded).unwrap();
    assert!(text.lines().all(|l| l.starts_with("thread ")), "{text}");
}

#[test]
fn bad_input_fails_clearly_and_an_exit_still_writes_the_file() {
    let py = require!(testkit::python(&testkit::Want::any()));
    let tmp = TempDir::new("record-bad");
    // an unwritable output: fails before sampling, at once
    let mut target = Target::spawn(&py, "recur_target.py", &["--threads", "1"]);
    let t0 = Instant::now();
    let o = record(
        target.pid(),
        &["--duration", "30"],
        std::path::Path::new("/nonexistent/dir/p.svg"),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/dir/p.svg"));
    // no such process: exit 3, no file left behind
    let gone = tmp.path().join("gone.svg");
    let o = record(999_999_999, &[], &gone);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!gone.exists());
    // the target exits mid-recording: the file is written with what was seen
    let out = tmp.path().join("exit.folded");
    let pid = target.pid();
    let rec = std::thread::spawn(move || {
        Command::new(pystackd_bin())
            .args([
                "record",
                "--pid",
                &pid.to_string(),
                "--duration",
                "30",
                "-o",
            ])
            .arg(&out)
            .output()
            .map(|o| (o, out))
            .unwrap()
    });
    std::thread::sleep(Duration::from_millis(700));
    target.kill();
    let (o, out) = rec.join().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("the process exited"), "{err}");
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.lines().count() > 0, "nothing written: {err}");
}

/// pprof: `go tool pprof` (Debian's golang-go) reads the file and reports the program's
/// functions at the top.
#[test]
fn go_tool_pprof_reads_the_profile() {
    require!(testkit::tool("go"));
    let py = require!(testkit::python(&testkit::Want::any()));
    let target = Target::spawn(&py, "recur_target.py", &["--threads", "1"]);
    let tmp = TempDir::new("record-pprof");
    let out = tmp.path().join("cpu.pprof");
    let o = record(target.pid(), &["--duration", "1", "--rate", "200"], &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let top = Command::new("go")
        .args(["tool", "pprof", "-top", "-nodecount=10"])
        .arg(&out)
        .env("HOME", tmp.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&top.stdout);
    assert!(
        top.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&top.stderr)
    );
    // flat samples land in the innermost functions; cumulative ones include run
    assert!(
        ["recur_a", "recur_b", "leaf", "step"]
            .iter()
            .any(|f| text.contains(f)),
        "{text}"
    );
    let cum = Command::new("go")
        .args(["tool", "pprof", "-top", "-cum", "-nodecount=3"])
        .arg(&out)
        .env("HOME", tmp.path())
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&cum.stdout).contains("run"),
        "{}",
        String::from_utf8_lossy(&cum.stdout)
    );
}
