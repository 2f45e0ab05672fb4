//! `pystackd annotate` on stacks of real targets in two layouts that name the process in
//! ways needing care, checked against the targets' own view of their stacks:
//!  - a DTrace aggregation keyed `@[pid, tid, ustack()]` (the integer keys on one line before
//!    each stack, `" %8d"` each, as libdtrace's `dt_print_aggs` prints them; the count after
//!    it): annotated with `--keys pid,tid` and no `--pid`, refused without `--keys` and with
//!    the columns swapped;
//!  - records of two processes whose `pid=`/`tid=` lines got interleaved: refused, while a
//!    clean record in the same input is annotated.
//!
//! No DTrace on Linux: gdb's `thread apply all bt` of the live target, rewritten into
//! DTrace's layout (testkit::tools::gdb_to_dtrace), gives the real native stacks.

use std::collections::HashMap;

use testkit::tools::{annotate, gdb_all_threads, gdb_to_dtrace, names_eval_loop};
use testkit::{require, Target, Want};

type Ann = (String, Option<u32>, String);

/// `[ file:line (func) ]` or `[~ file:line (func) ]`: these cases annotate text taken by gdb
/// earlier (read later, `[~`); what they check is which process and thread each stack gets.
fn parse_annotation(line: &str) -> Option<Ann> {
    let t = line.trim();
    let l = t
        .strip_prefix("[ ")
        .or_else(|| t.strip_prefix("[~ "))?
        .strip_suffix(" ]")?;
    let (loc, func) = l.rsplit_once(" (")?;
    let (file, ln) = loc.rsplit_once(':')?;
    Some((
        file.to_string(),
        ln.parse().ok(),
        func.strip_suffix(')')?.to_string(),
    ))
}

/// The per-thread stacks of `gdb_to_dtrace`'s text: (tid, frame lines).
fn stacks(dtrace: &str) -> Vec<(u64, String)> {
    let mut v: Vec<(u64, String)> = Vec::new();
    for line in dtrace.lines() {
        if let Some(t) = line.strip_prefix("tid=") {
            v.push((t.trim().parse().expect("tid"), String::new()));
        } else if !line.trim().is_empty() {
            if let Some(last) = v.last_mut() {
                last.1.push_str(line);
                last.1.push('\n');
            }
        }
    }
    v
}

/// `@[k..., ustack()] = count()` as `dt_print_aggs` prints it after `printa`'s newline.
fn aggregation(stacks: &[(u64, String)], keys: impl Fn(u64) -> Vec<u64>) -> String {
    let mut out = String::from("\n");
    for (tid, frames) in stacks {
        for k in keys(*tid) {
            out.push_str(&format!(" {k:8}"));
        }
        out.push('\n');
        out.push_str(frames);
        out.push_str(&format!(" {:16}\n", 1));
    }
    out
}

/// The annotations of each stack of the output, in order (stacks end at their count line).
fn annotations_per_stack(out: &str) -> Vec<Vec<Ann>> {
    let mut all = vec![Vec::new()];
    for line in out.lines() {
        if let Some(a) = parse_annotation(line) {
            all.last_mut().unwrap().push(a);
        } else if line.trim() == "1" {
            all.push(Vec::new());
        }
    }
    all.pop();
    all
}

fn run_keys_case(target: &Target) -> Result<String, String> {
    let pid = target.pid();
    let gdb = gdb_all_threads(pid);
    if !names_eval_loop(&gdb) {
        return Err(format!(
            "{}: gdb names no eval-loop function of a build with symbols",
            target.label()
        ));
    }
    let st = stacks(&gdb_to_dtrace(&gdb, pid));
    let truth = target.truth();
    let want: HashMap<u64, Vec<Ann>> = truth
        .threads
        .iter()
        .map(|t| {
            let frames = t
                .frames
                .iter()
                .map(|f| (f.filename.clone(), f.line, f.function.clone()))
                .collect();
            (t.native_id, frames)
        })
        .collect();
    let what = target.label();

    // --keys pid,tid, no --pid: each stack's process and thread from its key line
    let input = aggregation(&st, |tid| vec![u64::from(pid), tid]);
    let out = annotate(&["--keys", "pid,tid"], &input);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr);
    // every stack annotated, from a read later than gdb's: exit 11, no plain line
    if out.status.code() != Some(11) || text.lines().any(|l| l.trim().starts_with("[ ")) {
        return Err(format!(
            "{what}: --keys pid,tid exit {:?} (want 11, every line [~)\n{err}\n{text}",
            out.status
        ));
    }
    let got = annotations_per_stack(&text);
    if got.len() != st.len() {
        return Err(format!(
            "{what}: {} stacks, {} read\n{text}",
            st.len(),
            got.len()
        ));
    }
    let mut checked = 0;
    for ((tid, _), have) in st.iter().zip(&got) {
        let w = want.get(tid).cloned().unwrap_or_default();
        if *have != w {
            return Err(format!(
                "{what}: thread {tid}:\n  want {w:?}\n  have {have:?}\n{text}"
            ));
        }
        checked += w.len();
    }
    if checked == 0 {
        return Err(format!("{what}: no Python frame checked"));
    }
    let stripped: Vec<&str> = text
        .lines()
        .filter(|l| parse_annotation(l).is_none())
        .collect();
    if stripped != input.lines().collect::<Vec<_>>() {
        return Err(format!("{what}: the input was changed"));
    }

    // without --keys, and with the columns swapped: nothing annotated, the reason said.
    // (Swapped keys of the main thread, whose tid is the pid, are the same keys: left out.)
    let others: Vec<(u64, String)> = st
        .iter()
        .filter(|(t, _)| *t != u64::from(pid))
        .cloned()
        .collect();
    let mut cases = vec![(
        vec![],
        input.clone(),
        "aggregation key columns not named (--keys)",
    )];
    if !others.is_empty() {
        cases.push((
            vec!["--keys", "pid,tid"],
            aggregation(&others, |tid| vec![tid, u64::from(pid)]),
            "aggregation key columns are not pid and tid",
        ));
    }
    for (args, input, reason) in cases {
        let out = annotate(&args, &input);
        let text = String::from_utf8_lossy(&out.stdout);
        let err = String::from_utf8_lossy(&out.stderr);
        if text.lines().any(|l| parse_annotation(l).is_some()) {
            return Err(format!("{what}: {args:?} annotated a stack\n{text}"));
        }
        if out.status.code() != Some(9) || !err.contains(reason) {
            return Err(format!(
                "{what}: {args:?}: exit {:?}, want 9 and '{reason}' on stderr:\n{err}",
                out.status
            ));
        }
    }
    Ok(format!(
        "ok {what}: {checked} annotations from @[pid, tid, ustack()] keys"
    ))
}

#[test]
fn aggregation_keys_on_real_stacks() {
    require!(testkit::tool("gdb"));
    // builds whose eval loop gdb names
    let list = require!(testkit::pythons::pythons(&Want::any().pyenv()));
    let mut failures = Vec::new();
    let mut ok = 0;
    for interp in &list {
        let target = match Target::try_spawn(interp, "nested_eval.py", &[]) {
            Ok(t) => t,
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        match run_keys_case(&target) {
            Ok(m) => {
                ok += usize::from(m.starts_with("ok"));
                eprintln!("{m}");
            }
            Err(e) => failures.push(e),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(ok > 0, "no interpreter could be checked");
}

/// Two real targets, sampled by "two CPUs" whose `printf("pid=%d tid=%d\n")` lines came out
/// before either stack: the first stack is refused (it names two processes), the second has
/// no line of its own (no pid known); a clean record after them is annotated exactly.
#[test]
fn interleaved_records_of_two_real_processes() {
    require!(testkit::tool("gdb"));
    let interp = require!(testkit::python(&Want::version("3.12").shared().symbols()));
    let a = Target::spawn(&interp, "nested_eval.py", &[]);
    let b = Target::spawn(&interp, "nested_eval.py", &[]);
    let main_stack = |t: &Target| -> (u64, String) {
        let st = stacks(&gdb_to_dtrace(&gdb_all_threads(t.pid()), t.pid()));
        let main = u64::from(t.pid());
        st.into_iter()
            .find(|(tid, _)| *tid == main)
            .expect("a main thread stack")
    };
    let (ta, fa) = main_stack(&a);
    let (tb, fb) = main_stack(&b);
    assert!(
        names_eval_loop(&fa),
        "{}: gdb names no eval-loop function of a build with symbols",
        a.label()
    );
    let (pa, pb) = (a.pid(), b.pid());
    // `dtrace -q` layout: printf line, the stack's own newline, frames
    let input =
        format!("pid={pa} tid={ta}\npid={pb} tid={tb}\n\n{fa}\n{fb}\npid={pa} tid={ta}\n\n{fa}");
    let out = annotate(&[], &input);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(9), "{err}\n{text}");
    assert!(
        err.contains("1 unannotated: record names two processes or threads"),
        "{err}"
    );
    assert!(err.contains(&format!("pid {pa} and pid {pb}")), "{err}");
    assert!(err.contains("1 unannotated: no pid known"), "{err}");
    // nothing before the clean record, exactly the truth after it
    let clean = text.rfind(&format!("pid={pa} tid={ta}\n")).unwrap();
    assert!(
        !text[..clean].lines().any(|l| parse_annotation(l).is_some()),
        "{text}"
    );
    let have: Vec<Ann> = text[clean..].lines().filter_map(parse_annotation).collect();
    let truth = a.truth();
    let want: Vec<Ann> = truth
        .threads
        .iter()
        .find(|t| t.native_id == ta)
        .expect("main thread in the truth")
        .frames
        .iter()
        .map(|f| (f.filename.clone(), f.line, f.function.clone()))
        .collect();
    assert!(!want.is_empty());
    assert_eq!(have, want, "{text}");
    eprintln!(
        "ok {}: interleaved record refused, clean record annotated with {} frames",
        a.label(),
        have.len()
    );
}
