//! Throughput of the real `pystackd annotate` binary on a large trace file, next to
//! `cat FILE > /dev/null` of the same file.
//!
//! A live CPython 3.12 target (tests/targets/nested_eval.py) is captured once with gdb, the
//! capture is rewritten into DTrace's layout (a `tid=N` line before each stack) and repeated
//! to ~200 MB (PYSTACKD_BENCH_MB overrides). Then `pystackd --no-daemon annotate --pid PID
//! < FILE > /dev/null` runs with the target alive, so every stack is a real read of the
//! process (one attached reader for the run: warm caches). Prints MB/s and stacks/s.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_pystackd");

fn timed(mut cmd: Command, input: &PathBuf) -> (f64, std::process::ExitStatus, String) {
    let t = Instant::now();
    let out = cmd
        .stdin(File::open(input).unwrap())
        .stdout(File::create("/dev/null").unwrap())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (
        t.elapsed().as_secs_f64(),
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // the build docs/benchmarks.md was measured with: 3.12 from pyenv
    let py = testkit::require!(testkit::python(&testkit::Want::version("3.12").pyenv()));
    testkit::require!(testkit::tool("gdb"));
    let dir = std::env::temp_dir().join(format!("pystackd-annotate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let target = testkit::Target::spawn(&py, "nested_eval.py", &[]);
    let pid = target.pid();

    let capture = testkit::tools::gdb_to_dtrace(&testkit::tools::gdb_all_threads(pid), pid);
    let stacks_per_capture = capture.lines().filter(|l| l.starts_with("tid=")).count();
    let mb: usize = std::env::var("PYSTACKD_BENCH_MB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let reps = (mb << 20) / capture.len().max(1) + 1;
    let file = dir.join("trace.txt");
    {
        let mut w = BufWriter::new(File::create(&file).unwrap());
        for _ in 0..reps {
            w.write_all(capture.as_bytes()).unwrap();
        }
        w.flush().unwrap();
    }
    let bytes = (capture.len() * reps) as f64;
    let stacks = (stacks_per_capture * reps) as f64;
    let mib = bytes / (1 << 20) as f64;

    // warm the page cache, then time
    let _ = timed(Command::new("cat"), &file);
    let (cat_s, _, _) = timed(Command::new("cat"), &file);
    let mut cmd = Command::new(BIN);
    cmd.args(["--no-daemon", "annotate", "--pid", &pid.to_string()]);
    let (ann_s, status, stderr) = timed(cmd, &file);
    // every stack a fresh read of the target (`--max-age 0`): a tenth of the input
    // is enough to measure it
    let small = dir.join("trace-small.txt");
    {
        let mut w = BufWriter::new(File::create(&small).unwrap());
        for _ in 0..(reps / 10).max(1) {
            w.write_all(capture.as_bytes()).unwrap();
        }
        w.flush().unwrap();
    }
    let small_reps = (reps / 10).max(1);
    let mut cmd = Command::new(BIN);
    cmd.args([
        "--no-daemon",
        "annotate",
        "--max-age",
        "0",
        "--pid",
        &pid.to_string(),
    ]);
    let (fresh_s, fresh_status, _) = timed(cmd, &small);
    let small_mib = (capture.len() * small_reps) as f64 / (1 << 20) as f64;
    let small_stacks = (stacks_per_capture * small_reps) as f64;

    println!(
        "annotate input: {mib:.1} MiB, {stacks:.0} stacks ({stacks_per_capture} per gdb capture \
         of a live CPython 3.12 nested_eval.py, DTrace layout, {reps} repetitions)"
    );
    println!(
        "cat FILE > /dev/null:                        {cat_s:7.2} s  {:9.1} MiB/s",
        mib / cat_s
    );
    println!(
        "pystackd annotate --pid PID < FILE > /dev/null: {ann_s:7.2} s  {:9.1} MiB/s  {:9.0} stacks/s  (exit {status})",
        mib / ann_s,
        stacks / ann_s
    );
    println!(
        "pystackd annotate --max-age 0 (a read per stack, {small_mib:.1} MiB): {fresh_s:7.2} s  {:9.1} MiB/s  {:9.0} stacks/s  (exit {fresh_status})",
        small_mib / fresh_s,
        small_stacks / fresh_s
    );
    println!("ratio annotate (default) / cat time: {:.1}", ann_s / cat_s);
    if !status.success() {
        println!("annotate stderr:\n{stderr}");
    }
    drop(target);
    let _ = std::fs::remove_dir_all(&dir);
}
