//! Per-stack read time with warm caches: a blocked target, 4 threads × 40 frames.
//! The interpreter: `testkit::pythons::bench_python()` (PYSTACKD_BENCH_PYTHON, a label of
//! tests/pythons/list, else pyenv's 3.12/3.11/3.10).

mod support;

use criterion::{criterion_group, criterion_main, Criterion};
use pyframe_reader::{PythonProcess, StackOptions};

fn bench(c: &mut Criterion) {
    let Some(py) = testkit::pythons::bench_python() else {
        eprintln!("warm_read: skipped: no Python interpreter (set PYSTACKD_BENCH_PYTHON)");
        return;
    };
    let mut child = support::spawn_bench_target(&py.command, 40);
    let mut p = PythonProcess::attach(child.id()).expect("attach");
    let s = p.stack(&StackOptions::default()).expect("stack");
    let frames: usize = s.threads.iter().map(|t| t.frames.len()).sum();
    eprintln!(
        "warm_read: {py} {} threads, {frames} frames",
        s.threads.len()
    );
    let mut g = c.benchmark_group(format!("python{}", p.version()));
    g.bench_function("stack_all_threads_warm", |b| {
        b.iter(|| p.stack(&StackOptions::default()).unwrap())
    });
    // `--locals`: the same read plus every frame's arguments and locals (goal: at most
    // twice a plain read)
    let with_locals = StackOptions {
        locals: true,
        ..Default::default()
    };
    g.bench_function("stack_all_threads_warm_locals", |b| {
        b.iter(|| p.stack(&with_locals).unwrap())
    });
    // thread names (`threading`): none at all (the read before names existed), and the
    // map read again (sys.modules → threading._active → names, twice) at every read; the
    // plain read above uses the cache (re-read when a thread appears or after 1 s)
    use pyframe_reader::names::BenchMode;
    for (name, mode) in [
        ("stack_all_threads_warm_no_names", BenchMode::Off),
        ("stack_all_threads_warm_names_reread", BenchMode::Reread),
    ] {
        p.thread_names_mode_for_benchmarks(mode);
        g.bench_function(name, |b| {
            b.iter(|| p.stack(&StackOptions::default()).unwrap())
        });
    }
    p.thread_names_mode_for_benchmarks(BenchMode::Cached);
    let tid = s.threads[0].os_tid;
    g.bench_function("stack_one_thread_warm", |b| {
        b.iter(|| {
            p.stack(&StackOptions {
                pause: false,
                tid,
                locals: false,
                skip_tids: Vec::new(),
            })
            .unwrap()
        })
    });
    g.finish();
    let _ = child.kill();
    let _ = child.wait();
}

criterion_group!(benches, bench);
criterion_main!(benches);
