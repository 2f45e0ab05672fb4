//! Unpaused reads of a moving target never return an impossible stack.
//!
//! `tests/targets/recur_target.py` keeps worker threads recursing `recur_a` <-> `recur_b` to a
//! depth that changes all the time. The target states its own structure (who calls whom, the
//! lines each function calls from); a stack is possible only if, outermost first, it starts
//! where a thread starts (`run` for a worker, `<module>` for the main thread), each frame is a
//! callee of the one outside it, every frame but the innermost stands on one of its call lines,
//! and it is no deeper than the program recurses. Anything else (a chain cut short, a frame
//! reused for another call, `recur_b` inside `recur_b`) is a torn read that was returned as a
//! success: any one fails the test.
//!
//! The number of reads is `PYSTACKD_TORN_READS`, spread over every interpreter
//! `tests/pythons/list` finds, each 3.11+ interpreter taking six shares to a 3.8-3.10 one's
//! (their reads cost about a fifth: frames sit together in the data stack, not one per page).
//! `tests/run` runs this test in a release build with 1,000,000 reads (about 6 minutes
//! here); a debug build skips it unless `PYSTACKD_TORN_READS` is set. A read may be refused as
//! inconsistent (exit 8 in the CLI); the refusals are counted and printed, never counted as
//! success. `PYSTACKD_TORN_ONLY=3.11,3.12` keeps only the interpreters whose label contains
//! one of the comma-separated strings (a quicker run while working on one version).

mod support;

use std::time::Instant;

use protocol::{Frame, ThreadStack};
use pyframe_reader::{Error, PythonProcess, StackOptions};
use support::{interpreters, GroundTruth, Target};

#[derive(Default, Debug)]
struct Tally {
    reads: u64,
    ok: u64,
    refused: u64,
    impossible: u64,
    frames: u64,
    deepest: usize,
    examples: Vec<String>,
}

/// Why `t` is not a stack the target can have, or `None` if it can.
fn impossible(truth: &GroundTruth, version: (u8, u8), t: &ThreadStack) -> Option<String> {
    let frames: Vec<&Frame> = t.frames.iter().rev().collect(); // outermost first
    let Some(first) = frames.first() else {
        return Some("a Python thread with no frame".into());
    };
    if !matches!(&*first.function, "run" | "<module>") {
        return Some(format!(
            "outermost frame is {} (a thread starts in run or <module>)",
            first.function
        ));
    }
    let max = truth.max_depth.unwrap_or(0) as usize + 4;
    if frames.len() > max {
        return Some(format!(
            "{} frames, deeper than the program goes",
            frames.len()
        ));
    }
    for (i, f) in frames.iter().enumerate() {
        if !truth.files.iter().any(|p| **p == *f.filename) {
            return Some(format!("frame {i} in foreign file {}", f.filename));
        }
        if let Some(next) = frames.get(i + 1) {
            let callees = truth.callees.get(&*f.function);
            if !callees.is_some_and(|c| c.iter().any(|c| **c == *next.function)) {
                return Some(format!(
                    "{} directly inside {} (frame {i} of {})",
                    next.function,
                    f.function,
                    frames.len()
                ));
            }
            let lines = truth.call_lines.get(&*f.function);
            if !f
                .line
                .is_some_and(|l| lines.is_some_and(|ls| ls.contains(&l)))
            {
                return Some(format!(
                    "{} at line {:?}, which calls nothing (frame {i} of {})",
                    f.function,
                    f.line,
                    frames.len()
                ));
            }
        }
        // one C eval call per frame up to 3.10; from 3.11 Python-to-Python calls stay in
        // the eval call that the thread started in
        let entry = if version < (3, 11) { true } else { i == 0 };
        if f.entry != entry {
            return Some(format!(
                "{} (frame {i}) entry={} on {}.{}",
                f.function, f.entry, version.0, version.1
            ));
        }
    }
    None
}

fn hammer(interp: &support::Interpreter, reads: u64, tally: &mut Tally) -> Result<(), String> {
    let target = Target::try_spawn(interp, "recur_target.py", &[])?;
    let truth = target.truth().clone();
    let mut p = PythonProcess::attach(target.pid()).map_err(|e| format!("attach: {e}"))?;
    let opts = StackOptions::default();
    let workers = truth.worker_threads.unwrap_or(0) as usize;
    for _ in 0..reads {
        tally.reads += 1;
        // the walk's consistency is checked here, not the thread states (a few /proc
        // reads per thread, which would make this test's million reads much slower)
        match p.stack_without_states(&opts) {
            Ok(s) => {
                tally.ok += 1;
                if s.threads.len() != workers + 1 {
                    tally.impossible += 1;
                    tally.examples.push(format!("{} threads", s.threads.len()));
                }
                for t in &s.threads {
                    tally.frames += t.frames.len() as u64;
                    tally.deepest = tally.deepest.max(t.frames.len());
                    if let Some(why) = impossible(&truth, interp.version, t) {
                        tally.impossible += 1;
                        if tally.examples.len() < 5 {
                            tally.examples.push(why);
                        }
                    }
                }
            }
            Err(Error::Inconsistent { .. }) => tally.refused += 1,
            Err(e) => return Err(format!("read {}: {e}", tally.reads)),
        }
    }
    Ok(())
}

#[test]
fn unpaused_reads_of_a_recursing_target_are_never_impossible() {
    // PYSTACKD_TORN_ONLY=a,b: only interpreters whose label contains one of these
    let only = std::env::var("PYSTACKD_TORN_ONLY").unwrap_or_default();
    let list: Vec<_> = interpreters()
        .into_iter()
        .filter(|i| only.is_empty() || only.split(',').any(|o| i.label.contains(o)))
        .collect();
    if list.is_empty() {
        eprintln!("SKIP torn reads: no interpreter found by tests/pythons/list");
        return;
    }
    let asked: Option<u64> = std::env::var("PYSTACKD_TORN_READS")
        .ok()
        .and_then(|v| v.parse().ok());
    if cfg!(debug_assertions) && asked.is_none() {
        // an unoptimised reader takes 50-150 ms per read of this target: a different test
        eprintln!(
            "SKIP torn reads in a debug build: tests/run runs them in a release build \
             (set PYSTACKD_TORN_READS to run here anyway)"
        );
        return;
    }
    let total = asked.unwrap_or(1_000_000);
    let share = |i: &support::Interpreter| if i.version >= (3, 11) { 6 } else { 1 };
    let shares: u64 = list.iter().map(share).sum();
    let mut failures = Vec::new();
    let mut all = Tally::default();
    for interp in &list {
        let mut t = Tally::default();
        let start = Instant::now();
        let each = (total * share(interp)).div_ceil(shares);
        let r = hammer(interp, each, &mut t);
        let took = start.elapsed();
        eprintln!(
            "torn reads [{}]: {} reads in {:.1} s ({:.0} us each), {} ok, {} refused as inconsistent ({:.2} %), {} impossible; {} frames checked, deepest {}",
            interp.label,
            t.reads,
            took.as_secs_f64(),
            took.as_secs_f64() * 1e6 / t.reads.max(1) as f64,
            t.ok,
            t.refused,
            100.0 * t.refused as f64 / t.reads.max(1) as f64,
            t.impossible,
            t.frames,
            t.deepest,
        );
        if let Err(e) = r {
            failures.push(format!("[{}] {e}", interp.label));
        }
        if t.impossible > 0 {
            failures.push(format!(
                "[{}] {} impossible stacks returned as success, e.g.: {}",
                interp.label,
                t.impossible,
                t.examples.join("; ")
            ));
        }
        // a reader that refuses everything would pass the check above. Refusals are honest
        // (3.8-3.10 walk a page per frame and this stack changes wholesale every few hundred
        // microseconds), but a reader that refuses most reads is not useful
        if t.reads > 100 && t.ok * 10 < t.reads {
            failures.push(format!(
                "[{}] only {} of {} reads succeeded",
                interp.label, t.ok, t.reads
            ));
        }
        // the moving target must really move: a deep stack was seen
        if t.reads > 100 && t.deepest < 100 {
            failures.push(format!(
                "[{}] deepest stack seen has {} frames: the target did not recurse",
                interp.label, t.deepest
            ));
        }
        all.reads += t.reads;
        all.ok += t.ok;
        all.refused += t.refused;
        all.impossible += t.impossible;
    }
    eprintln!(
        "torn reads: {} reads over {} interpreters, {} ok, {} refused, {} impossible",
        all.reads,
        list.len(),
        all.ok,
        all.refused,
        all.impossible
    );
    // Any impossible stack fails (above, per interpreter). Before the re-read check about 3
    // reads in 100 (25 in 100 on 3.8-3.10) of this target were impossible stacks; with it
    // and before the fixes in docs/consistency.md, 1 to 3 in 1,000,000 on 3.11/3.12.
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
