//! Whole-process cost of printing a blocked target's stacks: `pystackd stack PID`
//! next to `py-spy dump --pid PID` and `austin -w PID`, same target, same run.
//! Target: 4 threads × 40 frames (crates/pyframe-reader/benches/bench_target.py).
//! Tools are looked up on PATH and in $PYSTACKD_BENCH_VENV/bin (tests/bench/setup
//! installs them); a missing tool is reported and skipped.
//!
//! cargo bench -p symd --bench stack_process

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn find_tool(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Ok(v) = std::env::var("PYSTACKD_BENCH_VENV") {
        dirs.push(PathBuf::from(v).join("bin"));
    }
    if let Ok(home) = std::env::var("HOME") {
        dirs.push(PathBuf::from(home).join(".cache/pystackd/bench-venv/bin"));
    }
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time_cmd(label: &str, cmd: &[String], runs: usize) -> Option<Duration> {
    // one warm-up run, which must succeed
    let ok = Command::new(&cmd[0])
        .args(&cmd[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !matches!(ok, Ok(s) if s.success()) {
        println!("{label:<28} skipped: `{}` failed ({ok:?})", cmd.join(" "));
        return None;
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let s = Command::new(&cmd[0])
            .args(&cmd[1..])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        times.push(t.elapsed());
        assert!(
            matches!(s, Ok(s) if s.success()),
            "{label} failed during the run"
        );
    }
    let mut sorted = times.clone();
    let med = median(&mut sorted);
    let p90 = sorted[(sorted.len() * 9 / 10).min(sorted.len() - 1)];
    println!(
        "{label:<28} median {:>8.2} ms   p90 {:>8.2} ms   min {:>8.2} ms   ({runs} runs)",
        med.as_secs_f64() * 1e3,
        p90.as_secs_f64() * 1e3,
        sorted[0].as_secs_f64() * 1e3
    );
    Some(med)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing special: run
    // a short version then
    let runs: usize = std::env::var("PYSTACKD_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if std::env::args().any(|a| a == "--bench") {
            50
        } else {
            3
        });
    let Some(py) = testkit::pythons::bench_python() else {
        println!("stack_process: skipped: no Python interpreter (set PYSTACKD_BENCH_PYTHON)");
        return;
    };
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../pyframe-reader/benches/bench_target.py"
    );
    let mut child = Command::new(&py.command)
        .arg(script)
        .arg("40")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let pid = child.id().to_string();
    println!("target: {py} {script} 40 (pid {pid}): 4 threads x 40 frames");
    let me = env!("CARGO_BIN_EXE_pystackd").to_string();
    let ours = time_cmd(
        "pystackd stack",
        &[
            me.clone(),
            "stack".into(),
            "--no-daemon".into(),
            pid.clone(),
        ],
        runs,
    )
    .or_else(|| time_cmd("pystackd stack", &[me, "stack".into(), pid.clone()], runs));
    let mut peers = Vec::new();
    match find_tool("py-spy") {
        Some(t) => peers.push((
            "py-spy dump",
            time_cmd(
                "py-spy dump",
                &[
                    t.display().to_string(),
                    "dump".into(),
                    "--pid".into(),
                    pid.clone(),
                ],
                runs,
            ),
        )),
        None => println!(
            "py-spy dump                  skipped: py-spy not installed (pip install py-spy)"
        ),
    }
    match find_tool("austin") {
        Some(t) => peers.push((
            "austin -w",
            time_cmd(
                "austin -w",
                &[t.display().to_string(), "-w".into(), pid.clone()],
                runs,
            ),
        )),
        None => println!(
            "austin -w                    skipped: austin not installed (pip install austin-dist)"
        ),
    }
    if let Some(o) = ours {
        for (name, t) in peers {
            if let Some(t) = t {
                println!(
                    "ratio pystackd / {name}: {:.2}",
                    o.as_secs_f64() / t.as_secs_f64()
                );
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}
