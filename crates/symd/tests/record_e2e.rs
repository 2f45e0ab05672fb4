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

/// `record --pid` of `target` with `args` into `out`, the target killed after `after`: the
/// recording's exit 0, its "the process exited", and the file's text (returned with stderr).
fn record_until_killed(
    target: &mut Target,
    args: &[&str],
    out: std::path::PathBuf,
    after: Duration,
) -> (String, String) {
    let pid = target.pid();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let rec = std::thread::spawn(move || {
        Command::new(pystackd_bin())
            .args(["record", "--pid", &pid.to_string()])
            .args(&args)
            .args(["--duration", "30", "-o"])
            .arg(&out)
            .output()
            .map(|o| (o, out))
            .unwrap()
    });
    std::thread::sleep(after);
    target.kill();
    let (o, out) = rec.join().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("the process exited"), "{err}");
    (std::fs::read_to_string(&out).unwrap(), err)
}

fn record(pid: u32, args: &[&str], out: &std::path::Path) -> std::process::Output {
    Command::new(pystackd_bin())
        .args(["record", "--pid", &pid.to_string(), "-o"])
        .arg(out)
        .args(args)
        .output()
        .unwrap()
}

/// How `record` takes its samples in a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The default: unpaused reads.
    Read,
    /// `--pause` (root).
    Pause,
    /// `--engine kernel` (root).
    Kernel,
}

impl Mode {
    const ALL: [Mode; 3] = [Mode::Read, Mode::Pause, Mode::Kernel];

    fn args(self) -> &'static [&'static str] {
        match self {
            Mode::Read => &[],
            Mode::Pause => &["--pause"],
            // the targets recurse to 300: every frame captured
            Mode::Kernel => &["--engine", "kernel", "--depth", "256"],
        }
    }
}

fn case(py: &Interpreter, mode: Mode) -> Result<u64, String> {
    // Depth 50-300, changing all the time: deep enough to move under every read, shallow
    // enough that an unpaused read of the debug build is caught still often enough to
    // give samples on a loaded machine (at depth 950 on 3.8-3.10 most reads move).
    // (--engine kernel captures 256 frames at most: the stack stays below)
    let max = if mode == Mode::Kernel { "240" } else { "300" };
    let target = Target::try_spawn(
        py,
        "recur_target.py",
        &["--threads", "2", "--max-depth", max],
    )?;
    let tmp = TempDir::new("record");
    let out = tmp.path().join("p.folded");
    // unpaused, most reads of a moving stack are dropped (never recorded wrong): longer;
    // in the kernel, samples are cheap: many
    let mut args = match mode {
        Mode::Read => vec!["--rate", "200", "--duration", "3", "--idle"],
        Mode::Pause => vec!["--rate", "200", "--duration", "1"],
        Mode::Kernel => vec!["--rate", "2000", "--duration", "1"],
    };
    args.extend(mode.args());
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
        for mode in Mode::ALL {
            if mode != Mode::Read && !testkit::is_root() {
                continue;
            }
            match case(py, mode) {
                Ok(n) => eprintln!("ok {} ({mode:?}): {n} worker samples valid", py.label),
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
    let (text, err) = record_until_killed(&mut target, &[], out, Duration::from_millis(700));
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

/// The flame graph as a person sees it: Debian's Chromium, headless, renders the SVG
/// (its own script included) without a console error, and the screenshot shows a tower
/// of frame boxes, not an empty page. Narrow boxes keep the function name.
#[test]
fn flame_graph_renders_in_headless_chromium() {
    require!(testkit::tool("chromium"));
    let py = require!(testkit::python(&testkit::Want::any()));
    let target = Target::spawn(
        &py,
        "recur_target.py",
        // shallow, so that the whole graph fits the window (a 950-deep one is 15,000 px high)
        &["--threads", "1", "--min-depth", "5", "--max-depth", "30"],
    );
    let tmp = TempDir::new("record-chromium");
    let svg = tmp.path().join("profile.svg");
    let o = record(target.pid(), &["--duration", "1", "--rate", "200"], &svg);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(&svg).unwrap();
    // every cut label still starts with its function name
    for label in text.split("<text ").skip(1).filter_map(|t| {
        let body = &t[t.find('>')? + 1..];
        Some(&body[..body.find("</text>")?])
    }) {
        assert!(!label.starts_with(".."), "label cut at its start: {label}");
    }
    let png = tmp.path().join("shot.png");
    let (w, h) = (1200u32, 800u32);
    let out = Command::new("timeout")
        .arg("120")
        .arg("chromium")
        .args([
            "--headless=new",
            "--no-sandbox", // the tests run as root
            "--disable-gpu",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!(
            "--user-data-dir={}",
            tmp.path().join("chromium").display()
        ))
        .arg(format!("--window-size={w},{h}"))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", svg.display()))
        .env("HOME", tmp.path())
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "chromium failed: {log}");
    let console_errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("CONSOLE") && (l.contains("Uncaught") || l.contains("Error")))
        .collect();
    assert!(console_errors.is_empty(), "{console_errors:#?}");
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (w, h));
    let channels = info.color_type.samples();
    assert!(channels >= 3, "{:?}", info.color_type);
    // inferno's "hot" palette: red high, blue low; the background is pale grey-yellow
    let mut hot = 0usize;
    let mut rows = std::collections::BTreeSet::new();
    for y in 0..h as usize {
        for x in 0..w as usize {
            let p = &buf[(y * w as usize + x) * channels..][..3];
            if p[0] >= 200 && p[2] <= 60 {
                hot += 1;
                rows.insert(y / 16); // one frame row is 16 px high
            }
        }
    }
    let share = hot as f64 / f64::from(w * h);
    eprintln!(
        "chromium screenshot: {:.1} % frame pixels in {} frame rows",
        share * 100.0,
        rows.len()
    );
    assert!(
        share > 0.02,
        "hardly any frame boxes in the screenshot ({share:.4})"
    );
    // the target recurses: its stacks are far more than a few frames high
    assert!(rows.len() >= 8, "only {} rows of frames", rows.len());
    if std::env::var_os("PYSTACKD_KEEP_SCREENSHOT").is_some() {
        let keep = std::env::temp_dir().join("pystackd-flamegraph.png");
        std::fs::copy(&png, &keep).unwrap();
        eprintln!("screenshot kept: {}", keep.display());
    }
}

/// What tests/targets/top_target.py says about its own time (cumulative since its worker
/// started; rewritten whole every 0.5 s).
fn own_times(path: &std::path::Path) -> (f64, f64, f64) {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let f = |k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k} in {v}"));
    (f("heavy_s"), f("light_s"), f("wall_s"))
}

/// One interpreter: the share of the worker's samples in heavy() and light() against the
/// share of its time the target measured in each, over the same seconds.
fn share_case(py: &Interpreter, mode: Mode) -> Result<String, String> {
    let tmp = TempDir::new("record-shares");
    let shares = tmp.path().join("shares.json");
    let target = Target::try_spawn(py, "top_target.py", &[shares.to_str().unwrap()])?;
    let label = format!("{} ({mode:?})", py.label);
    std::thread::sleep(Duration::from_millis(300)); // first rounds, reporter started
    let before = own_times(&shares);
    let out = tmp.path().join("p.folded");
    let mut args = vec!["--duration", "3", "--rate", "200"];
    args.extend(mode.args());
    let o = record(target.pid(), &args, &out);
    std::thread::sleep(Duration::from_millis(700)); // a report written after the recording
    let after = own_times(&shares);
    let err = String::from_utf8_lossy(&o.stderr);
    if !o.status.success() {
        return Err(format!("{label}: exit {:?}: {err}", o.status.code()));
    }
    let text = std::fs::read_to_string(&out).unwrap();
    let (mut heavy, mut light, mut worker) = (0u64, 0u64, 0u64);
    for line in text.lines() {
        let Some((stack, n)) = line.rsplit_once(' ') else {
            continue;
        };
        let n: u64 = n.parse().map_err(|_| format!("{label}: bad line {line}"))?;
        let mut frames = stack.split(';').filter_map(frame);
        if frames.next().map(|f| f.0) != Some("run") {
            continue; // the main thread (blocked) and the reporter
        }
        worker += n;
        match frames.next_back().map(|f| f.0) {
            Some("heavy") => heavy += n,
            Some("light") => light += n,
            _ => {}
        }
    }
    if worker < 200 {
        return Err(format!("{label}: {worker} worker samples: {err}"));
    }
    let wall = after.2 - before.2;
    let measured = (
        100.0 * (after.0 - before.0) / wall,
        100.0 * (after.1 - before.1) / wall,
    );
    let shown = (
        100.0 * heavy as f64 / worker as f64,
        100.0 * light as f64 / worker as f64,
    );
    let said = format!(
        "{label}: {worker} worker samples: heavy {:.1} % (the target measured {:.1} %), light {:.1} % ({:.1} %)",
        shown.0, measured.0, shown.1, measured.1
    );
    // a few points: 600 samples give about 2 points of sampling error. Reads the target
    // moved under are dropped (and counted on stderr), and they are not spread evenly: a
    // thread moves under a read more often near a call or return, so every dropped read
    // may have been a sample of either path; the bound widens by their share.
    let dropped: f64 = err
        .lines()
        .rev()
        .find_map(|l| {
            let head = &l[..l.find(" dropped as torn")?];
            head.rsplit(' ').next()?.parse().ok()
        })
        .unwrap_or(0.0);
    // Reads retried after a torn first walk are displaced in time the same way: taken at
    // the first moment after their scheduled one when the thread held still, which is
    // more often inside the longer path. On fast builds (Debian's and the host's static
    // interpreters) a fifth of the reads are retried and the longer path's share comes out
    // 10-14 points high (measured 2026-12-06, also at the commit whose CI run had passed):
    // the bound widens by their share too, said in the message (docs/record.md).
    let retried: f64 = err
        .lines()
        .rev()
        .find_map(|l| {
            let head = &l[..l.find(" read again after a torn first walk")?];
            head.rsplit('(').next()?.trim().parse().ok()
        })
        .unwrap_or(0.0);
    let total = worker as f64 + dropped;
    // the same bound with and without --pause (issue 13: unpaused shares were once let off
    // by 15 points, as a bias toward the longer path; see sample.rs for what was measured)
    // A sampler starved of CPU (a loaded machine: other test binaries, builds) takes its
    // samples in clusters whenever it gets a core, not spread over the run: both modes then
    // miss by up to 10 points (issue 13: pyenv-3.12 --pause 78.8 against 71.0 at 20-70 of
    // 200 samples/s). Below 70 % of the requested samples the bound widens by 7 points,
    // said in the message.
    let starved = total < 0.7 * 600.0;
    let bound = 8.0 + 100.0 * (dropped + retried) / total + if starved { 7.0 } else { 0.0 };
    let said = format!(
        "{said} ({dropped} reads dropped as torn, {retried} read again{}: bound {bound:.1} points)",
        if starved {
            format!("; starved: {total} of 600 samples taken")
        } else {
            String::new()
        }
    );
    if (shown.0 - measured.0).abs() > bound || (shown.1 - measured.1).abs() > bound {
        return Err(format!("{said}; stderr: {err}"));
    }
    Ok(said)
}

/// record's shares of time per path are the ones the target measures itself, on every
/// provisioned build, unpaused and (as root) with --pause and with --engine kernel (the
/// worker never blocks, so its CPU time is its wall time: the kernel engine's samples of
/// CPU time measure the same shares).
#[test]
fn recorded_shares_match_what_the_target_measures() {
    let list = require!(testkit::pythons::distinct_builds());
    let mut failures = Vec::new();
    for py in &list {
        if !py.supported() {
            testkit::skip_case(format!("{}: not a supported build", py.label));
            continue;
        }
        for mode in Mode::ALL {
            if mode != Mode::Read && !testkit::is_root() {
                continue;
            }
            // a statistical check on a shared machine: a miss is measured once more, on a
            // new target, and fails only when the second measurement misses too (CI saw
            // 8.4 points once, with no read dropped, while the machine ran other tests)
            match share_case(py, mode).or_else(|first| {
                eprintln!("measured again: {first}");
                share_case(py, mode).map_err(|second| format!("{first}\nthen: {second}"))
            }) {
                Ok(said) => eprintln!("ok {said}"),
                Err(e) => failures.push(e),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `record -- COMMAND` on every interpreter: the program is started (its output passes
/// through), sampled from its start until it exits, its exit status told; every sample of
/// the target's own file is a path the program has (`<module>` > phase > busy_leaf), and
/// most samples are in busy_leaf, where it spends its time. A command that never becomes
/// CPython is stopped (exit 4, no file), one that cannot start is said (exit 1).
#[test]
fn a_started_command_is_recorded_until_it_exits() {
    let list = require!(testkit::pythons::all());
    let tmp = TempDir::new("record-command");
    let script = testkit::targets_dir().join("command_target.py");
    let path = ["<module>", "phase", "busy_leaf"];
    let mut failures = Vec::new();
    for py in &list {
        let out = tmp.path().join(format!("{}.folded", py.label));
        let o = Command::new(pystackd_bin())
            .args(["record", "--rate", "200", "-o"])
            .arg(&out)
            .arg("--")
            .arg(&py.command)
            .arg(&script)
            .arg("1.0")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        if o.status.code() != Some(0)
            || !String::from_utf8_lossy(&o.stdout).contains("done")
            || !err.contains("exited with status 3")
        {
            failures.push(format!(
                "[{}] status {:?}: {err}",
                py.label,
                o.status.code()
            ));
            continue;
        }
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        let (mut busy, mut total) = (0u64, 0u64);
        for line in text.lines() {
            let Some((stack, n)) = line.rsplit_once(' ') else {
                failures.push(format!("[{}] bad line {line:?}", py.label));
                continue;
            };
            let n: u64 = n.parse().unwrap_or(0);
            total += n;
            // the target's own frames, outermost first
            let own: Vec<&str> = stack
                .split(';')
                .filter(|f| f.contains("command_target.py:"))
                .filter_map(|f| frame(f).map(|(name, _)| name))
                .collect();
            if !path.starts_with(&own) {
                failures.push(format!("[{}] not a path of the program: {line}", py.label));
            }
            if own.len() == 3 {
                busy += n;
            }
        }
        eprintln!(
            "record -- COMMAND [{}]: {busy} of {total} samples in busy_leaf",
            py.label
        );
        if busy < 20 || busy * 2 < total {
            failures.push(format!(
                "[{}] {busy} of {total} samples in busy_leaf",
                py.label
            ));
        }
    }
    // never CPython: stopped after a while, exit 4, no file
    let out = tmp.path().join("sleep.folded");
    let t0 = Instant::now();
    let o = Command::new(pystackd_bin())
        .args(["record", "-o"])
        .arg(&out)
        .args(["--", "sleep", "60"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(
        err.contains("is not a CPython process") && err.contains("stopping it"),
        "{err}"
    );
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
    assert!(!out.exists());
    // cannot start: exit 1, said
    let o = Command::new(pystackd_bin())
        .args(["record", "-o"])
        .arg(tmp.path().join("none.folded"))
        .args(["--", "/nonexistent/program"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot start /nonexistent/program"), "{err}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `--engine kernel`: the flags it cannot honour are refused before anything starts (exit 2,
/// naming the flag, no file), and a target that exits mid-recording still gets its file.
#[test]
fn kernel_engine_refuses_what_it_cannot_do_and_survives_an_exit() {
    require!(testkit::root("to load BPF programs"));
    let py = require!(testkit::python(&testkit::Want::any()));
    let tmp = TempDir::new("record-kernel");
    // shallower than the 64 frames the engine captures by default
    let mut target = Target::spawn(
        &py,
        "recur_target.py",
        &["--threads", "1", "--max-depth", "50", "--min-depth", "10"],
    );
    for flag in ["--pause", "--idle", "--gil", "--native", "--subprocesses"] {
        let out = tmp.path().join("refused.folded");
        let o = record(target.pid(), &["--engine", "kernel", flag], &out);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{flag}: {err}");
        assert!(
            err.contains(flag) && err.contains("--engine kernel"),
            "{err}"
        );
        assert!(!out.exists(), "{flag}: a file was left behind");
    }
    let out = tmp.path().join("exit.folded");
    let (text, err) = record_until_killed(
        &mut target,
        &["--engine", "kernel", "--rate", "1000"],
        out,
        Duration::from_millis(1500),
    );
    let truth = target.truth().clone();
    let n = check_folded(&truth, &text).unwrap_or_else(|e| panic!("{e}"));
    assert!(n > 100, "{n} worker samples before the exit: {err}");
}
