//! The plan interpreter agrees with the reader's walker on real interpreters: for every
//! thread of stopped targets (blocking and moving ones), running the capture plan for that
//! thread and resolving what it captured gives exactly the walker's frames (function,
//! file, line, eval-call grouping), and the eBPF bytecode, run by `capture::ebpf::emulate`,
//! takes the same capture. This is what makes the renderers, which only translate the
//! plan's steps, trustworthy where they cannot run (D on Linux).

mod common;

use capture::interpret;
use capture::plan::ThreadMatch;
use capture::{Os, Plan, Resolved, Resolver};
use pyframe_reader::{PythonProcess, StackOptions};

const TARGETS: &[(&str, &[&str])] = &[
    ("main_target.py", &[]),
    ("nested_eval.py", &[]),
    ("recur_target.py", &["--threads", "2"]),
];

#[test]
fn plan_interpreter_agrees_with_walker() {
    let interps = common::interpreters();
    if interps.is_empty() {
        common::skip("no interpreters from tests/pythons/list");
        return;
    }
    let mut failures = Vec::new();
    let mut compared = 0usize;
    let mut ebpf_compared = 0usize;
    for (label, _, python) in &interps {
        for (script, args) in TARGETS {
            let target = match common::Target::spawn(python, script, args) {
                Ok(t) => t,
                Err(e) => {
                    failures.push(format!("{label}: {e}"));
                    continue;
                }
            };
            let mut process = match PythonProcess::attach(target.pid()) {
                Ok(p) => p,
                Err(e) => {
                    failures.push(format!("{label} {script}: attach: {e}"));
                    continue;
                }
            };
            let plan = Plan::for_process(&process, Os::Linux, capture::plan::MAX_DEPTH).unwrap();
            // stop the target: the walker and the plan must see the same memory
            let guard = pyframe_reader::platform::stop(target.pid()).expect("stop target");
            // read as held stopped: the unpaused re-read checks are for a running target
            // (one stopped in the middle of a frame push read as "moved", every attempt)
            let stack = process
                .stack_held(
                    &guard,
                    &StackOptions {
                        pause: false,
                        tid: None,
                        locals: false,
                        skip_tids: Vec::new(),
                    },
                )
                .expect("walker reads the stopped target");
            let mut resolver = Resolver::new(process.layout());
            // every capture with its resolution, for the batch check below
            let mut all: Vec<(capture::Capture, Vec<Resolved>)> = Vec::new();
            for t in &stack.threads {
                let key = match plan.thread_match {
                    ThreadMatch::NativeThreadId { .. } => t.os_tid.expect("native id"),
                    // thread_id is the value the tracer compares with the FS base
                    _ => t.thread_id,
                };
                let captured = interpret::run(&plan, process.memory(), key)
                    .unwrap_or_else(|e| panic!("{label} {script}: plan fails: {e}"));
                let what = format!("{label} {script} tid {:?}", t.os_tid);
                // the eBPF rendering, run by the emulator, takes the same capture
                match capture::ebpf::emulate_capture(
                    &plan,
                    process.memory(),
                    target.pid(),
                    t.os_tid.unwrap_or(1) as u32,
                    t.thread_id,
                ) {
                    Ok(r) if r.read_failed => failures.push(format!("{what}: eBPF read failed")),
                    // compared in the slot form every tracer's output takes (a -1 `f_lasti`
                    // of a frame not started reads as an odd offset there)
                    Ok(r) if r.capture != slot_form(&captured) => failures.push(format!(
                        "{what}: eBPF capture differs:\n ebpf {:?}\n plan {:?}",
                        r.capture, captured
                    )),
                    Ok(_) => ebpf_compared += 1,
                    Err(e) => failures.push(format!("{what}: eBPF emulation: {e}")),
                }
                if captured.no_thread {
                    failures.push(format!("{what}: plan finds no thread state"));
                    continue;
                }
                let resolved = resolver.resolve(process.memory(), &captured);
                all.push((captured.clone(), resolved.clone()));
                let mut got = Vec::new();
                for r in resolved {
                    match r {
                        Resolved::Frame(f) => got.push(f),
                        Resolved::Mismatch(m) => failures.push(format!("{what}: {m}")),
                    }
                }
                let key =
                    |f: &protocol::Frame| (f.function.clone(), f.filename.clone(), f.line, f.entry);
                let got: Vec<_> = got.iter().map(key).collect();
                let want: Vec<_> = t.frames.iter().map(key).collect();
                let same = if captured.truncated {
                    // deeper than the plan's steps: the plan's frames are the walker's first
                    // ones (the last one's grouping lies past the cut)
                    got.len() <= want.len()
                        && got.iter().zip(&want).enumerate().all(|(i, (g, w))| {
                            g == w || (i + 1 == got.len() && (&g.0, &g.1, g.2) == (&w.0, &w.1, w.2))
                        })
                } else {
                    got == want
                };
                if !same {
                    failures.push(format!(
                        "{what}: plan {:?}\n walker {:?}",
                        got.iter().map(|f| (&*f.0, f.2, f.3)).collect::<Vec<_>>(),
                        want.iter().map(|f| (&*f.0, f.2, f.3)).collect::<Vec<_>>()
                    ));
                }
                compared += 1;
            }
            // the batch resolution (record --engine kernel: each code object read once)
            // gives what one capture at a time gives, with a fresh resolver and a warm one,
            // also for a capture whose code object's identity no longer matches
            let changed = all
                .iter()
                .find(|(c, _)| !c.frames.is_empty())
                .map(|(c, _)| {
                    let mut c = c.clone();
                    c.frames[0].ident ^= 1 << 48;
                    let r = resolver.resolve(process.memory(), &c);
                    (c, r)
                });
            all.extend(changed);
            let refs: Vec<&capture::Capture> = all.iter().map(|(c, _)| c).collect();
            let fresh = Resolver::new(process.layout()).resolve_batch(process.memory(), &refs);
            let warm = resolver.resolve_batch(process.memory(), &refs);
            for batch in [fresh, warm] {
                for ((c, one), b) in all.iter().zip(&batch) {
                    if one != b {
                        failures.push(format!(
                            "{label} {script}: batch resolution differs for {c:?}:\n one {one:?}\n batch {b:?}"
                        ));
                    }
                }
            }
            // a code object "freed and reused": what the probe saw no longer matches
            if let Some(t) = stack.threads.iter().find(|t| !t.frames.is_empty()) {
                let key = match plan.thread_match {
                    ThreadMatch::NativeThreadId { .. } => t.os_tid.unwrap_or(0),
                    _ => t.thread_id,
                };
                let mut c = interpret::run(&plan, process.memory(), key).unwrap();
                if let Some(f0) = c.frames.first_mut() {
                    f0.ident ^= 1 << 48;
                    let r = resolver.resolve(process.memory(), &c);
                    if !matches!(r[0], Resolved::Mismatch(capture::Mismatch::Identity { .. })) {
                        failures.push(format!(
                            "{label} {script}: changed identity resolved: {:?}",
                            r[0]
                        ));
                    }
                    // another object at the address (a tuple, a string...): the thread state
                    // is no Python object at all
                    c.frames[0].code = stack.threads[0].thread_id.max(0x1000);
                    let r = resolver.resolve(process.memory(), &c);
                    if r[0].frame().is_some() {
                        failures.push(format!("{label} {script}: non-code object resolved"));
                    }
                    c.frames[0].code = 0x10;
                    let r = resolver.resolve(process.memory(), &c);
                    if !matches!(
                        r[0],
                        Resolved::Mismatch(capture::Mismatch::Unreadable { .. })
                    ) {
                        failures.push(format!(
                            "{label} {script}: unmapped code resolved: {:?}",
                            r[0]
                        ));
                    }
                }
            }
            // a thread that is not Python: no thread state
            let none = interpret::run(&plan, process.memory(), 1).unwrap();
            if !none.no_thread {
                failures.push(format!("{label} {script}: key 1 found a thread state"));
            }
            drop(guard);
        }
    }
    eprintln!(
        "plan vs walker: {compared} threads compared; eBPF (emulated) vs plan: {ebpf_compared}"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        ebpf_compared >= compared,
        "every thread compared with the eBPF rendering too"
    );
}

/// `c` as the slot form reads back: an odd offset (3.9's `f_lasti` of -1 for a frame not
/// started) is the entry flag plus the even offset below it.
fn slot_form(c: &capture::Capture) -> capture::Capture {
    let mut c = c.clone();
    for f in &mut c.frames {
        if f.offset & 1 != 0 {
            f.offset &= !1;
            f.entry = true;
        }
    }
    c
}
