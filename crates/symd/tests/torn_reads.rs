//! Unpaused reads of a moving target never return an impossible stack.
//!
//! `tests/targets/recur_target.py` keeps worker threads recursing `recur_a` <-> `recur_b` to a
//! depth that changes all the time. The target states its own structure (who calls whom, the
//! lines each function calls from); a stack is possible only if, outermost first, it starts
//! where a thread starts (`run` for a worker, `<module>` for the main thread), each frame is a
//! callee of the one outside it, every frame but the innermost stands on one of its call lines,
//! and it is no deeper than the program recurses. Anything else (a chain cut short, a frame
//! reused for another call, `recur_b` inside `recur_b`) is a torn read that was returned as a
//! success: any one fails the test. One read in 100 is the first walk of a fresh attach (a
//! one-shot `stack`'s, which fetches differently: nothing is known in advance).
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
    /// Reads that were a fresh attach's first walk.
    cold: u64,
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
    for n in 0..reads {
        tally.reads += 1;
        // every 100th read is the first walk of a fresh attach, as a one-shot `stack`
        // makes it (nothing fetched in advance: the threads' ways to their frames are
        // fetched a level at a time for all threads together)
        let mut fresh;
        let reader = if n % 100 == 99 {
            tally.cold += 1;
            fresh = PythonProcess::attach(target.pid()).map_err(|e| format!("attach: {e}"))?;
            &mut fresh
        } else {
            &mut p
        };
        // the walk's consistency is checked here, not the thread states (a few /proc
        // reads per thread, which would make this test's million reads much slower)
        match reader.stack_without_states(&opts) {
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
            "torn reads [{}]: {} reads ({} first walks of a fresh attach) in {:.1} s ({:.0} us each), {} ok, {} refused as inconsistent ({:.2} %), {} impossible; {} frames checked, deepest {}",
            interp.label,
            t.reads,
            t.cold,
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

/// The walk's one-read contradiction checks on real frames. The re-read above cannot catch
/// a thread that rebuilt the same chain at the same addresses between the walk and the
/// re-read, so a caller read at a moment it had no callee must fail the walk by itself:
/// on 3.12/3.13 a caller whose `stacktop` holds -1 (it was running), on 3.11/3.14/3.15 a
/// caller that does not stand on an instruction that calls inline (`layout::CallSites`).
///
/// `inline_calls.py` blocks under a chain of every kind of inline call, warmed up. Read
/// straight from its memory: every caller holds a stack depth / stands on a call-site
/// opcode (the CPython behaviour the checks rely on), and an unpaused read returns the
/// target's own stack (the checks refuse no real stack). Then the innermost frame with an
/// inline callee (`inner`) is made to look as a torn read sees it (running; standing on its
/// first instruction, a `LOAD_GLOBAL`, as the target's own `dis` places it): the read must be refused, naming that frame; put back,
/// the read returns the target's stack again. With a `sys.monitoring` tool watching lines
/// and calls (3.12+: instrumented opcodes), the read is exact too.
#[test]
fn a_caller_read_without_its_callee_is_refused() {
    use pyframe_reader::code::CodeCache;
    use pyframe_reader::layout::FrameLayout;
    use pyframe_reader::objects::Types;
    use pyframe_reader::walker::Walker;
    use std::os::unix::fs::FileExt;

    if let Err(s) = testkit::root("to write a blocked target's memory") {
        s.report();
        return;
    }
    let mut checked = Vec::new();
    for interp in interpreters().iter().filter(|i| i.version >= (3, 11)) {
        let target =
            Target::try_spawn(interp, "inline_calls.py", &[]).unwrap_or_else(|e| panic!("{e}"));
        let truth: Vec<(String, u32)> = target.main_frames();
        let mut p = PythonProcess::attach(target.pid()).expect("attach");
        let FrameLayout::Interpreter(fl) = p.layout().frame else {
            panic!("[{}] 3.11+ without interpreter frames", interp.label)
        };
        let main_stack = |p: &mut PythonProcess| -> Result<Vec<(String, u32)>, Error> {
            let s = p.stack_without_states(&StackOptions::default())?;
            Ok(s.threads
                .iter()
                .find(|t| t.frames.iter().any(|f| &*f.function == "leaf"))
                .expect("the main thread in leaf")
                .frames
                .iter()
                .rev()
                .map(|f| (f.function.to_string(), f.line.unwrap_or(0)))
                .collect())
        };
        assert_eq!(
            main_stack(&mut p).expect("unpaused read"),
            truth,
            "[{}]",
            interp.label
        );
        let raw = {
            let mut types = Types::default();
            let mut codes = CodeCache::default();
            let mut w = Walker::new(p.memory(), p.layout(), &mut types, &mut codes);
            w.walk(p.runtime_address())
                .expect("walk of a blocked target")
        };
        let main = raw
            .iter()
            .find(|t| t.frames.iter().any(|f| &*f.function == "leaf"))
            .expect("a thread in leaf");
        let mem = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/{}/mem", target.pid()))
            .expect("open /proc/PID/mem");
        let read = |addr: u64, n: usize| {
            let mut b = vec![0u8; n];
            mem.read_exact_at(&mut b, addr).expect("read target memory");
            b
        };
        let names: Vec<&str> = main.frames.iter().map(|f| &*f.function).collect();
        // the innermost frame with a callee it called inline (`inner`, calling `leaf`)
        let at = (1..names.len())
            .find(|&i| !main.frames[i - 1].entry)
            .expect("an inline call on the stack");
        let victim_name = names[at];
        let (victim, victim_code) = main.frame_addrs[at];
        let code_start = victim_code + p.layout().code.code_adaptive.expect("3.11+ bytecode");
        // (offset, bytes as found, bytes that make the frame look torn)
        let (what, off, saved, torn) = if let Some(off) = fl.running_stacktop {
            // every frame with a callee it called inline holds a stack depth; leaf, and
            // a frame whose callee it entered through C, runs (in a C call)
            let top = |a: u64| i32::from_le_bytes(read(a + off, 4).try_into().unwrap());
            assert_eq!(
                top(main.frame_addrs[0].0),
                -1,
                "[{}] leaf runs",
                interp.label
            );
            for (i, &(a, _)) in main.frame_addrs.iter().enumerate().skip(1) {
                if main.frames[i - 1].entry {
                    assert_eq!(top(a), -1, "[{}] {} runs", interp.label, names[i]);
                    continue;
                }
                assert!(
                    top(a) >= 0,
                    "[{}] {} holds stacktop {}",
                    interp.label,
                    names[i],
                    top(a)
                );
            }
            (
                "stacktop",
                off,
                read(victim + off, 4),
                (-1i32).to_le_bytes().to_vec(),
            )
        } else if let Some(sites) = fl.call_sites {
            // every frame with a callee it called inline (not an entry frame: 3.11 makes
            // some of these calls through C) stands on a call site
            for (i, &(a, _)) in main.frame_addrs.iter().enumerate().skip(1) {
                if main.frames[i - 1].entry {
                    continue;
                }
                let instr = u64::from_le_bytes(read(a + fl.instr, 8).try_into().unwrap());
                let op = read(instr - 2 * sites.back_units, 1)[0];
                assert!(
                    sites.contains(op),
                    "[{}] {} stands on opcode {op}",
                    interp.label,
                    names[i]
                );
            }
            let first = first_instruction(interp, victim_name);
            let instr = code_start + first + 2 * sites.back_units;
            (
                "instruction",
                fl.instr,
                read(victim + fl.instr, 8),
                instr.to_le_bytes().to_vec(),
            )
        } else {
            panic!("[{}] a 3.11+ layout with neither check", interp.label)
        };
        mem.write_all_at(&torn, victim + off)
            .expect("write the frame");
        let refused = main_stack(&mut p);
        mem.write_all_at(&saved, victim + off)
            .expect("restore the frame");
        match refused {
            Err(Error::Inconsistent { last, .. }) => assert!(
                last.contains(&format!("frame {victim:#x} ")) && last.contains("callee"),
                "[{}] refused for another reason: {last}",
                interp.label
            ),
            other => panic!(
                "[{}] {victim_name} with a torn {what} was read as {other:?}",
                interp.label
            ),
        }
        assert_eq!(
            main_stack(&mut p).expect("read after restoring"),
            truth,
            "[{}]",
            interp.label
        );
        drop(target);
        if interp.version >= (3, 12) {
            // instrumented code (a debugger or coverage tool watching lines and calls)
            let target = Target::try_spawn(interp, "inline_calls.py", &["--monitor"])
                .unwrap_or_else(|e| panic!("{e}"));
            let mut p = PythonProcess::attach(target.pid()).expect("attach");
            assert_eq!(
                main_stack(&mut p).expect("unpaused read of instrumented code"),
                target.main_frames(),
                "[{}] --monitor",
                interp.label
            );
        }
        checked.push(format!("{} ({what} of {victim_name})", interp.label));
    }
    eprintln!(
        "torn callers refused, real ones read exactly: {}",
        checked.join(", ")
    );
    if checked.is_empty() {
        testkit::Skip::new("no 3.11+ interpreter in tests/pythons/list").report();
    }
}

/// Byte offset of the first instruction after `RESUME` in `inline_calls.py`'s function
/// `name`, as the interpreter's own `dis` places it.
fn first_instruction(interp: &support::Interpreter, name: &str) -> u64 {
    let path = testkit::targets_dir().join("inline_calls.py");
    let script = format!(
        "import dis\nsrc = open({path:?}).read()\nco = compile(src, {path:?}, 'exec')\n\
         f = [c for c in co.co_consts if hasattr(c, 'co_name') and c.co_name == {name:?}][0]\n\
         ins = list(dis.get_instructions(f))\n\
         r = [i for i, x in enumerate(ins) if x.opname == 'RESUME'][0]\n\
         print(ins[r + 1].offset)",
        path = path.display().to_string(),
    );
    let out = std::process::Command::new(&interp.command)
        .args(["-E", "-s", "-c", &script])
        .output()
        .expect("run the interpreter");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("an offset")
}
