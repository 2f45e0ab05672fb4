//! `pystackd stack --locals` against real interpreters: every argument and local of the
//! target's frames must equal the target's own `repr()` of it, cut by the same documented
//! limits (tests/targets/locals_target.py), under every interpreter `tests/pythons/list`
//! finds (the free-threaded build included), plain (no thread held the GIL, no container's
//! lock was held: nothing is marked as possibly mid-update); and a container mutated while
//! it is read is shown as one of its real states or as `<changed while read>`, or, read
//! while its writer held the GIL (free-threaded: the container's own lock), marked as
//! possibly mid-update.

use std::process::Command;

use protocol::{LocalKind, ProcessStack};
use testkit::{pystackd_bin, require, Interpreter, Target};

fn stack_json(pid: u32, extra: &[&str]) -> Result<ProcessStack, String> {
    let out = Command::new(pystackd_bin())
        .args(["stack", "--no-daemon", "--json", "--locals"])
        .args(extra)
        .arg(pid.to_string())
        .output()
        .map_err(|e| format!("running pystackd: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "pystackd stack exited {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("parsing pystackd's JSON: {e}"))
}

/// Compares pystackd's locals with the target's, read as `extra` says; returns how many
/// values were compared.
fn check(i: &Interpreter, extra: &[&str]) -> Result<usize, String> {
    let target = Target::try_spawn(i, "locals_target.py", &[])?;
    let truth = target.truth();
    let worker = truth
        .thread("values")
        .ok_or("no `values` thread in the ground truth")?;
    if truth.locals.is_empty() {
        return Err("the target recorded no locals".into());
    }
    let got = stack_json(target.pid(), extra)?;
    let thread = got
        .threads
        .iter()
        .find(|t| t.os_tid == Some(worker.native_id))
        .ok_or("pystackd did not report the `values` thread")?;
    let mut failures = Vec::new();
    for want in &truth.locals {
        let Some(frame) = thread.frames.iter().find(|f| *f.function == *want.function) else {
            failures.push(format!("no frame {}", want.function));
            continue;
        };
        let Some(local) = frame.locals.iter().flatten().find(|l| l.name == want.name) else {
            failures.push(format!("{}: no local {}", want.function, want.name));
            continue;
        };
        if let Some(m) = &local.mid_update {
            failures.push(format!(
                "{}.{}: marked in a blocked target: {}",
                want.function, want.name, m.reason
            ));
        }
        let kind = local.kind.as_str();
        if kind != want.kind
            || local.type_name != want.type_name
            || local.repr != want.repr
            || local.truncated != want.truncated
        {
            failures.push(format!(
                "{}.{}: got {kind} {} {:?} (truncated {}), the target says {} {} {:?} (truncated {})",
                want.function,
                want.name,
                local.type_name,
                local.repr,
                local.truncated,
                want.kind,
                want.type_name,
                want.repr,
                want.truncated
            ));
        }
    }
    // nothing shown that the target does not have (every local of the two frames)
    for f in thread
        .frames
        .iter()
        .filter(|f| matches!(&*f.function, "values_frame" | "leaf"))
    {
        for l in f.locals.iter().flatten() {
            if !truth
                .locals
                .iter()
                .any(|w| *w.function == *f.function && w.name == l.name)
            {
                failures.push(format!("{}: unexpected local {}", f.function, l.name));
            }
        }
        if !f.locals.iter().flatten().any(|l| l.kind == LocalKind::Arg)
            && &*f.function == "values_frame"
        {
            failures.push("values_frame: no argument marked".into());
        }
    }
    if failures.is_empty() {
        Ok(truth.locals.len())
    } else {
        Err(failures.join("\n  "))
    }
}

#[test]
fn locals_equal_the_targets_own_repr() {
    let list = require!(testkit::pythons::all_with_free_threaded());
    let mut tested = Vec::new();
    let mut failures = Vec::new();
    let mut compared = 0;
    for i in &list {
        // unpaused and stopped: both plain (no thread holds the GIL) and exact
        for extra in [&[][..], &["--pause"][..]] {
            match check(i, extra) {
                Ok(n) => compared += n,
                Err(e) => failures.push(format!("[{}] {extra:?} {e}", i.label)),
            }
        }
        tested.push(i.label.clone());
    }
    eprintln!(
        "locals: {compared} values compared on {} interpreters: {}",
        tested.len(),
        tested.join(", ")
    );
    assert!(failures.is_empty(), "locals:\n{}", failures.join("\n"));
}

/// `[k, k, ...]` (all equal, `…` only past the item limit), or `<changed while read>`.
fn valid_list(repr: &str, truncated: bool) -> bool {
    if repr == "<changed while read>" || repr == "[]" {
        return true;
    }
    let Some(body) = repr.strip_prefix('[').and_then(|r| r.strip_suffix(']')) else {
        return false;
    };
    let mut items: Vec<&str> = body.split(", ").collect();
    let cut = items.last() == Some(&"…");
    if cut {
        items.pop();
    }
    cut == truncated
        && (!cut || items.len() == pyframe_reader::values::MAX_ITEMS)
        && items
            .iter()
            .all(|x| *x == items[0] && x.parse::<u32>().is_ok())
}

/// `{0: k, 1: k, ...}` (keys from 0 in order, one value), or `<changed while read>`.
fn valid_dict(repr: &str, truncated: bool) -> bool {
    if repr == "<changed while read>" || repr == "{}" {
        return true;
    }
    let Some(body) = repr.strip_prefix('{').and_then(|r| r.strip_suffix('}')) else {
        return false;
    };
    let mut items: Vec<&str> = body.split(", ").collect();
    let cut = items.last() == Some(&"…");
    if cut {
        items.pop();
    }
    let Some((_, k)) = items[0].split_once(": ") else {
        return false;
    };
    cut == truncated
        && items
            .iter()
            .enumerate()
            .all(|(i, it)| *it == format!("{i}: {k}"))
}

/// A list read while its writer is paused inside one C-level update (`lst[:] = ...` copies
/// item by item) reads back the same every time, so it can be shown half-updated: every
/// such value must carry `mid_update` naming the writer (the GIL's holder, by the target's
/// own `threading.get_native_id()`: the mutator thread's OS tid). Dicts are strict.
#[test]
fn mutated_dicts_are_never_torn_and_mid_update_lists_are_marked() {
    use pyframe_reader::{PythonProcess, StackOptions};
    let mut list = require!(testkit::pythons::distinct_builds());
    // the free-threaded build: the mutator runs in parallel with the reads, and each
    // container is updated under its own lock (docs/consistency.md)
    list.extend(testkit::pythons::matching(
        &testkit::Want::any().free_threaded(),
    ));
    let mut failures = Vec::new();
    let mut summary = Vec::new();
    let mut mixtures = Vec::new();
    for i in &list {
        let target = Target::spawn(i, "mutating_target.py", &[]);
        let mut p = PythonProcess::attach(target.pid()).expect("attach");
        let opts = StackOptions {
            locals: true,
            ..Default::default()
        };
        let (mut shown, mut changed, mut reads, mut marked) = (0, 0, 0, 0);
        // the writer, as the target itself names it (threading.get_native_id())
        let mutator = target.truth().thread("mutator").map(|t| t.native_id);
        for _ in 0..200 {
            // a walk of the running mutator may be inconsistent: that is the walker's
            // concern (stack_truth, torn_reads); only values shown are checked here
            let Ok(s) = p.stack(&opts) else { continue };
            reads += 1;
            for l in s
                .threads
                .iter()
                .flat_map(|t| &t.frames)
                .flat_map(|f| f.locals.iter().flatten())
            {
                let ok = match l.name.as_str() {
                    "lst" if !valid_list(&l.repr, l.truncated) => {
                        mixtures.push(format!(
                            "[{}] {} ({})",
                            i.label,
                            l.repr,
                            l.mid_update.as_ref().map_or("NOT MARKED", |m| &m.reason)
                        ));
                        // half updated: only ever shown marked, naming a thread that held
                        // the GIL (the mutator) or the reason none could be named (always
                        // on a free-threaded build: a lock does not name its holder)
                        match &l.mid_update {
                            Some(m) => m.thread.is_none() || m.thread == mutator,
                            None => false,
                        }
                    }
                    "lst" => valid_list(&l.repr, l.truncated),
                    "dct" => valid_dict(&l.repr, l.truncated),
                    _ => continue,
                };
                shown += 1;
                changed += usize::from(l.repr == "<changed while read>");
                marked += usize::from(l.mid_update.is_some());
                if !ok {
                    failures.push(format!("[{}] {} = {}", i.label, l.name, l.repr));
                }
            }
        }
        if shown == 0 {
            failures.push(format!("[{}] no value shown in {reads} reads", i.label));
        }
        // the text form marks them visibly
        let text = Command::new(pystackd_bin())
            .args(["stack", "--no-daemon", "--locals"])
            .arg(target.pid().to_string())
            .output()
            .expect("run pystackd");
        let text = String::from_utf8_lossy(&text.stdout);
        // a GIL build marks every list (its writer runs, so it may hold the GIL); a
        // free-threaded one those read while their lock was held: a list shown plain there
        // must be one of the list's real states
        let plain_ok = |l: &str| {
            i.free_threaded()
                && l.trim_start()
                    .strip_prefix("lst = ")
                    .map(|r| r.strip_suffix(" (arg)").unwrap_or(r))
                    .is_some_and(|r| valid_list(r, r.contains('…')))
        };
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.trim_start().starts_with("lst = "))
            .collect();
        if !lines
            .iter()
            .all(|l| l.ends_with(": may be mid-update]") || plain_ok(l))
        {
            failures.push(format!("[{}] text: lst not marked:\n{text}", i.label));
        }
        summary.push(format!(
            "{}: {reads} reads, {shown} values, {changed} changed, {marked} marked mid-update",
            i.label
        ));
    }
    eprintln!("torn locals:\n  {}", summary.join("\n  "));
    // a writer preempted inside one C-level update (`lst[:] = ...` copies item by item,
    // then moves and frees, while holding the GIL) leaves a state no Python code can see
    // but a reader from outside can; it reads back the same every time, so the re-reads
    // cannot tell: the GIL's holder at the read can (docs/json.md "Changing values")
    eprintln!(
        "mid-update list states shown (each must be marked): {}\n  {}",
        mixtures.len(),
        mixtures.join("\n  ")
    );
    assert!(failures.is_empty(), "torn values:\n{}", failures.join("\n"));
}

/// The daemon's `stack` with `"locals": true` gives the same locals; without it, frames
/// carry no `locals` member (the existing JSON is unchanged).
#[test]
fn daemon_stack_with_locals() {
    use serde_json::json;
    let py = require!(testkit::python(&testkit::Want::any()));
    let target = Target::spawn(&py, "locals_target.py", &[]);
    let d = testkit::daemon::Daemon::start(None);
    let mut c = d.connect();
    let plain = c.ok("stack", json!({"pid": target.pid()}));
    let frames = plain["threads"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["frames"].as_array().unwrap());
    for f in frames {
        assert!(f.get("locals").is_none(), "{f}");
    }
    let v = c.ok("stack", json!({"pid": target.pid(), "locals": true}));
    let got: ProcessStack = serde_json::from_value(v).unwrap();
    let worker = target.truth().thread("values").unwrap();
    let t = got
        .threads
        .iter()
        .find(|t| t.os_tid == Some(worker.native_id))
        .expect("the values thread");
    let mut compared = 0;
    for want in &target.truth().locals {
        let f = t
            .frames
            .iter()
            .find(|f| *f.function == *want.function)
            .unwrap();
        let l = f
            .locals
            .iter()
            .flatten()
            .find(|l| l.name == want.name)
            .unwrap_or_else(|| panic!("no local {}", want.name));
        assert_eq!(l.repr, want.repr, "{}", want.name);
        compared += 1;
    }
    eprintln!("daemon: {compared} locals compared ({})", py.label);
}
