//! What the unpaused consistency check (docs/consistency.md) costs a warm read: the same
//! build, the same attached process, reads with and without the check alternating in
//! rounds, so that a loaded machine moves both alike. Prints each round's medians and the
//! median of the per-round ratios. Target: `bench_target.py 40` (4 threads × 40 frames,
//! blocked), interpreter from `testkit::pythons::bench_python()` (PYSTACKD_BENCH_PYTHON).
//!
//! `cargo bench -p pyframe-reader --bench check_cost` (PYSTACKD_BENCH_READS: reads per
//! half-round, default 3000; PYSTACKD_BENCH_ROUNDS, default 10).

mod support;

use std::time::Instant;

use pyframe_reader::{PythonProcess, StackOptions};

fn median_read_us(p: &mut PythonProcess, reads: usize, tid: Option<u64>) -> f64 {
    let opts = StackOptions {
        pause: false,
        tid,
        locals: false,
        skip_tids: Vec::new(),
    };
    let mut ns: Vec<u64> = (0..reads)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(p.stack(&opts).expect("warm read"));
            t.elapsed().as_nanos() as u64
        })
        .collect();
    ns.sort_unstable();
    ns[reads / 2] as f64 / 1e3
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    (v[(n - 1) / 2] + v[n / 2]) / 2.0
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: then just say so
    if !std::env::args().any(|a| a == "--bench") {
        println!("check_cost: run with `cargo bench -p pyframe-reader --bench check_cost`");
        return;
    }
    let Some(py) = testkit::pythons::bench_python() else {
        eprintln!("check_cost: skipped: no Python interpreter (set PYSTACKD_BENCH_PYTHON)");
        return;
    };
    let reads = env_or("PYSTACKD_BENCH_READS", 3000).max(1);
    let rounds = env_or("PYSTACKD_BENCH_ROUNDS", 10).max(1);
    let mut child = support::spawn_bench_target(&py.command, 40);
    let mut p = PythonProcess::attach(child.id()).expect("attach");
    let s = p.stack(&StackOptions::default()).expect("stack");
    let frames: usize = s.threads.iter().map(|t| t.frames.len()).sum();
    println!(
        "check_cost: {py} (CPython {}), {} threads, {frames} frames; {reads} reads per half-round, {rounds} rounds",
        p.version(),
        s.threads.len()
    );
    for (what, tid) in [("all threads", None), ("one thread", s.threads[0].os_tid)] {
        for _ in 0..1000 {
            p.stack(&StackOptions {
                pause: false,
                tid,
                locals: false,
                skip_tids: Vec::new(),
            })
            .expect("warm-up");
        }
        let (mut with, mut without, mut ratios) = (vec![], vec![], vec![]);
        for r in 0..rounds {
            // alternate which goes first, so a trend in the machine's load cancels out
            let order = if r % 2 == 0 {
                [false, true]
            } else {
                [true, false]
            };
            let mut t = [0.0; 2];
            for skip in order {
                p.skip_consistency_check_for_benchmarks(skip);
                t[skip as usize] = median_read_us(&mut p, reads, tid);
            }
            p.skip_consistency_check_for_benchmarks(false);
            with.push(t[0]);
            without.push(t[1]);
            ratios.push(t[0] / t[1]);
        }
        let (lo, hi) = ratios
            .iter()
            .fold((f64::MAX, f64::MIN), |(l, h), &r| (l.min(r), h.max(r)));
        println!(
            "{what}: checked {:.1} µs, unchecked {:.1} µs (medians of round medians); checked/unchecked {:.3} (rounds {lo:.3}-{hi:.3})",
            median(&mut with),
            median(&mut without),
            median(&mut ratios)
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}
