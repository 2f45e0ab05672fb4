//! A real `perf script` capture (fixtures/perf, see the README there) annotated with the Python
//! stacks the target recorded about itself at capture time (the `.truth.json` beside it).

mod common;
use common::*;
use stacktext::Options;

const CAPTURE: &str = "perf/script-syscalls-dwarf-pyenv3.11.7.txt";
const TRUTH: &str = "perf/script-syscalls-dwarf-pyenv3.11.7.truth.json";

/// Frames of syscall_loop.py's threads that C code calls (so on 3.11 each starts an eval-loop
/// call): `sort_key` by sorted(), `spinner` by Thread.run's `self._target(*args)` (a
/// CALL_FUNCTION_EX, which 3.11 runs through PyObject_Call), `_bootstrap` by the thread's C
/// start function; and the main thread's `<module>`. The JSON cannot say this: Python code
/// does not see where an eval call starts.
const CALLED_FROM_C: &[&str] = &["sort_key", "spinner", "_bootstrap", "<module>"];

/// (file, line, function) of one Python frame.
type PyFrame = (String, u32, String);

struct Truth {
    pid: u32,
    threads: Vec<(u64, Vec<PyFrame>)>,
}

fn truth() -> Truth {
    let v: serde_json::Value = serde_json::from_slice(&fixture(TRUTH)).expect("truth JSON");
    let threads = v["threads"]
        .as_array()
        .expect("threads")
        .iter()
        .map(|t| {
            let frames = t["frames"]
                .as_array()
                .expect("frames")
                .iter()
                .map(|f| {
                    (
                        f["filename"].as_str().expect("filename").to_string(),
                        f["line"].as_u64().expect("line") as u32,
                        f["function"].as_str().expect("function").to_string(),
                    )
                })
                .collect();
            (t["native_id"].as_u64().expect("native_id"), frames)
        })
        .collect();
    Truth {
        pid: v["pid"].as_u64().expect("pid") as u32,
        threads,
    }
}

fn source(t: &Truth) -> FakeSource {
    let threads = t
        .threads
        .iter()
        .map(|(tid, frames)| {
            let fs = frames
                .iter()
                .map(|(file, line, func)| {
                    frame(file, func, *line, CALLED_FROM_C.contains(&func.as_str()))
                })
                .collect();
            thread(Some(*tid), fs)
        })
        .collect();
    let mut src = FakeSource::with(t.pid, threads);
    // perf's default header for a tracepoint names the thread only
    for (tid, _) in &t.threads {
        src.tids.insert(*tid, t.pid);
    }
    src
}

#[test]
fn perf_script_dwarf_callchains_of_a_real_capture() {
    let input = fixture(CAPTURE);
    let t = truth();
    let mut src = source(&t);
    let (out, sum) = run(&input, &mut src, &Options::default());
    assert_eq!(without_added(&out, &input), input, "input passes through");

    // Per sample: its tid from the header, its added lines, and what each added block follows.
    let text = String::from_utf8(out).unwrap();
    let mut samples = 0;
    for sample in text.split("\n\n").filter(|s| !s.trim().is_empty()) {
        let mut ls = sample.lines();
        let header = ls.next().unwrap();
        let tid: u64 = header.split_whitespace().nth(1).unwrap().parse().unwrap();
        let want = &t.threads.iter().find(|(id, _)| *id == tid).expect("tid").1;
        let mut have = Vec::new();
        let mut prev = header;
        let mut blocks = 0;
        for l in sample.lines().skip(1) {
            if is_annotation(l.as_bytes()) {
                if !is_annotation(prev.as_bytes()) {
                    blocks += 1;
                    assert!(
                        prev.contains(" _PyEval_EvalFrameDefault+0x"),
                        "block under {prev:?}"
                    );
                }
                have.push(parse_annotation(l.as_bytes()));
            }
            prev = l;
        }
        assert_eq!(&have, want, "sample of thread {tid}:\n{sample}");
        // spin..sort_key, spinner, run.._bootstrap: one block per eval-loop call
        assert_eq!(blocks, 3, "{sample}");
        samples += 1;
    }
    assert_eq!(samples, 6);
    assert_eq!(
        (sum.stacks, sum.annotated, sum.unannotated_total()),
        (6, 6, 0)
    );
    assert_eq!(src.asked.len(), 6);
    assert!(src.asked.iter().all(|&p| p == t.pid));
}
