//! The benchmarks' target: `bench_target.py DEPTH` (4 threads blocked DEPTH frames deep).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// Starts the target under `python` and waits until its threads are in place.
pub fn spawn_bench_target(python: &std::path::Path, depth: u32) -> Child {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/bench_target.py");
    let mut child = Command::new(python)
        .arg(script)
        .arg(depth.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn python");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    child
}
