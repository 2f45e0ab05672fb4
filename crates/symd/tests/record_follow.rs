//! `pystackd record --subprocesses` and `--gil` (issue 13), against real programs whose
//! ground truth comes from themselves: which process ran which role (each worker logs its
//! own pid), and which thread can hold the GIL (one hashes in C with the GIL released, a
//! path only that thread takes).

use std::collections::HashMap;
use std::process::Command;

use testkit::{pystackd_bin, require, Interpreter, TempDir};

/// `name (file:line)` → name.
fn frame_name(f: &str) -> Option<&str> {
    Some(f.rsplit_once(" (")?.0)
}

/// The worker functions each role may be in, innermost last (`<module>` > spin > leaf).
fn leaf_of(role: &str) -> &'static str {
    match role {
        "a" => "work_a",
        "pre" => "before_exec",
        _ => "work_b",
    }
}

fn follow_case(py: &Interpreter, tmp: &TempDir) -> Result<String, String> {
    let log = tmp.path().join(format!("{}.log", py.label));
    let out = tmp.path().join(format!("{}.folded", py.label));
    let worker = testkit::targets_dir().join("family_worker.py");
    // a launcher that is not Python: two workers, one of which execs itself
    let script = format!(
        "{py} {w} a 1.5 {log} & {py} {w} exec 1.5 {log} & wait",
        py = py.command.display(),
        w = worker.display(),
        log = log.display()
    );
    let o = Command::new(pystackd_bin())
        .args(["record", "--subprocesses", "--rate", "200", "-o"])
        .arg(&out)
        .args(["--", "/bin/sh", "-c", &script])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    if o.status.code() != Some(0) {
        return Err(format!("exit {:?}: {err}", o.status.code()));
    }
    // the ground truth: role → pid, from the workers themselves
    let roles: HashMap<String, u32> = std::fs::read_to_string(&log)
        .map_err(|e| format!("{}: {e}", log.display()))?
        .lines()
        .filter_map(|l| {
            let (r, p) = l.split_once(' ')?;
            Some((r.to_string(), p.parse().ok()?))
        })
        .collect();
    for r in ["a", "pre", "b"] {
        if !roles.contains_key(r) {
            return Err(format!("the {r} worker never logged: {roles:?}; {err}"));
        }
    }
    if roles["pre"] != roles["b"] {
        return Err(format!("the exec changed the pid? {roles:?}"));
    }
    if !err.contains("ran another program (exec)") {
        return Err(format!("the exec was not told: {err}"));
    }
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let mut busy: HashMap<&str, u64> = HashMap::new();
    let mut root_role: HashMap<String, &str> = HashMap::new();
    for line in text.lines() {
        let (stack, n) = line.rsplit_once(' ').ok_or(format!("bad line {line:?}"))?;
        let n: u64 = n.parse().map_err(|_| format!("bad count {line:?}"))?;
        let (root, rest) = stack.split_once(';').ok_or(format!("no root: {line:?}"))?;
        // `process PID (command)`: the pid and the role its command line names
        let pid: u32 = root
            .strip_prefix("process ")
            .and_then(|r| r.split_once(' '))
            .and_then(|(p, _)| p.parse().ok())
            .ok_or(format!("root {root:?} is not a process"))?;
        // the role by the pid the workers logged; the exec'd one keeps its pid: by its
        // leaf function (a line above the leaves fits either), and one root must never
        // hold both
        let role = if pid == roles["a"] {
            "a"
        } else if pid == roles["pre"] {
            if rest.contains("before_exec (") {
                "pre"
            } else if rest.contains("work_b (") {
                "b"
            } else {
                continue;
            }
        } else {
            return Err(format!("{root:?}: no worker had pid {pid} ({roles:?})"));
        };
        if let Some(other) = root_role.insert(root.to_string(), role) {
            if other != role {
                return Err(format!(
                    "{root:?} holds both the {other} and the {role} program"
                ));
            }
        }
        let own: Vec<&str> = rest
            .split(';')
            .filter(|f| f.contains("family_worker.py:"))
            .filter_map(frame_name)
            .collect();
        let path = ["<module>", "spin", leaf_of(role)];
        if !path.starts_with(&own) || (own.is_empty() && rest.contains("family_worker.py")) {
            return Err(format!("not a path of the {role} worker: {line}"));
        }
        if own.len() == 3 {
            *busy.entry(role).or_default() += n;
        }
    }
    for r in ["a", "pre", "b"] {
        if busy.get(r).copied().unwrap_or(0) < 5 {
            return Err(format!(
                "{} samples of the {r} worker in {}: {busy:?}; {err}",
                busy.get(r).copied().unwrap_or(0),
                leaf_of(r)
            ));
        }
    }
    Ok(format!("{busy:?}"))
}

/// A launcher shell (not CPython) starts two workers on every interpreter; one execs the
/// same interpreter again. Every sample sits under the root of the process that ran it
/// (by the pids the workers logged), every stack is a path of that worker's role, the
/// exec is said and the program after it followed as a new root.
#[test]
fn subprocesses_are_followed_each_under_its_own_root() {
    let list = require!(testkit::pythons::distinct_builds());
    let tmp = TempDir::new("record-follow");
    let mut failures = Vec::new();
    for py in &list {
        // a loaded machine can starve one worker of samples: one more try
        let r = follow_case(py, &tmp).or_else(|e| {
            eprintln!("[{}] first try: {e}", py.label);
            follow_case(py, &tmp)
        });
        match r {
            Ok(s) => eprintln!("record --subprocesses [{}]: busy samples {s}", py.label),
            Err(e) => failures.push(format!("[{}] {e}", py.label)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Samples per thread function in folded lines.
fn count(text: &str, func: &str) -> u64 {
    text.lines()
        .filter(|l| l.contains(&format!(";{func} (")) || l.starts_with(&format!("{func} (")))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum()
}

/// `--gil` keeps only the thread holding the GIL: the hashing thread, on the CPU as much
/// as the Python one but in C with the GIL released, nearly vanishes; without `--gil` it
/// is there. A free-threaded build refuses `--gil` (exit 6, said).
#[test]
fn gil_counts_only_the_thread_holding_it() {
    let list = require!(testkit::pythons::all_with_free_threaded());
    let tmp = TempDir::new("record-gil");
    let mut failures = Vec::new();
    for py in &list {
        let mut child = testkit::spawn_ready(py, "gil_target.py", &[]);
        let pid = child.id().to_string();
        let run = |gil: bool| {
            let out = tmp.path().join(format!("{}-{gil}.folded", py.label));
            let mut args = vec!["record", "--no-daemon", "--pid", &pid, "--rate", "200"];
            args.extend(["--duration", "1.5"]);
            if gil {
                args.push("--gil");
            }
            let o = Command::new(pystackd_bin())
                .args(&args)
                .arg("-o")
                .arg(&out)
                .output()
                .unwrap();
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            (o, text)
        };
        let (o, with) = run(true);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        if py.free_threaded() {
            if o.status.code() != Some(6) || !err.contains("no GIL") {
                failures.push(format!(
                    "[{}] --gil on a free-threaded build: exit {:?}: {err}",
                    py.label,
                    o.status.code()
                ));
            }
        } else {
            let (o2, without) = run(false);
            let err2 = String::from_utf8_lossy(&o2.stderr);
            let (h, p) = (count(&with, "hash_loop"), count(&with, "py_loop"));
            let (h2, p2) = (count(&without, "hash_loop"), count(&without, "py_loop"));
            eprintln!(
                "record --gil [{}]: with --gil hash_loop {h}, py_loop {p}; without: {h2}, {p2}",
                py.label
            );
            if o.status.code() != Some(0) || o2.status.code() != Some(0) {
                failures.push(format!("[{}] exit: {err} / {err2}", py.label));
            } else if !err.contains("not holding the GIL") {
                failures.push(format!("[{}] --gil summary says nothing: {err}", py.label));
            } else if p < 20 || h2 < 20 || h * 4 > p || h * 4 > h2 {
                // the hasher holds the GIL only between two hashes (a few Python lines)
                failures.push(format!(
                    "[{}] with --gil hash_loop {h}, py_loop {p}; without: {h2}, {p2}",
                    py.label
                ));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `--native` on every interpreter: every sample's root is native (the program's or a
/// thread's start), the hashing thread's samples show the C hashing code above its Python
/// frame `hash_loop` (the only Python path that calls hashlib), and the Python thread's
/// `py_loop` never has hashing code above it.
#[test]
fn native_frames_sit_where_python_calls_them() {
    let list = require!(testkit::pythons::distinct_builds());
    let tmp = TempDir::new("record-native");
    let mut failures = Vec::new();
    let hashing = |f: &str| {
        let l = f.to_ascii_lowercase();
        ["sha", "evp", "digest", "hacl"]
            .iter()
            .any(|k| l.contains(k))
    };
    for py in &list {
        let mut child = testkit::spawn_ready(py, "gil_target.py", &[]);
        let out = tmp.path().join(format!("{}.folded", py.label));
        let o = Command::new(pystackd_bin())
            .args(["record", "--native", "--pid", &child.id().to_string()])
            .args(["--rate", "100", "--duration", "1.5", "-o"])
            .arg(&out)
            .output()
            .unwrap();
        let _ = child.kill();
        let _ = child.wait();
        let err = String::from_utf8_lossy(&o.stderr);
        if o.status.code() != Some(0) {
            failures.push(format!("[{}] exit {:?}: {err}", py.label, o.status.code()));
            continue;
        }
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        let (mut hashed, mut hash_samples, mut py_samples) = (0u64, 0u64, 0u64);
        for line in text.lines() {
            let Some((stack, n)) = line.rsplit_once(' ') else {
                failures.push(format!("[{}] bad line {line:?}", py.label));
                continue;
            };
            let n: u64 = n.parse().unwrap_or(0);
            let frames: Vec<&str> = stack.split(';').collect();
            if frames[0].contains(".py:") || frames[0].contains("<frozen") {
                failures.push(format!("[{}] a Python frame at the root: {line}", py.label));
            }
            // the C code a Python frame called: the frames above it, or, where the eval
            // loop could not be named (a stripped build without its debug file), every
            // native frame of a sample that says its Python frames are not placed
            let unplaced = stack.contains("(Python frames not placed in the native stack)");
            let called = |name: &str| -> Option<Vec<&str>> {
                let i = frames
                    .iter()
                    .position(|f| f.starts_with(&format!("{name} (")))?;
                Some(if unplaced {
                    frames
                        .iter()
                        .copied()
                        .filter(|f| !f.contains(".py:"))
                        .collect()
                } else {
                    frames[i + 1..].to_vec()
                })
            };
            if let Some(c) = called("hash_loop") {
                hash_samples += n;
                if c.iter().any(|f| hashing(f)) {
                    hashed += n;
                }
            }
            if let Some(c) = called("py_loop") {
                py_samples += n;
                if let Some(f) = c.iter().find(|f| hashing(f)) {
                    failures.push(format!(
                        "[{}] hashing code {f:?} above py_loop, which never hashes: {line}",
                        py.label
                    ));
                }
            }
        }
        eprintln!(
            "record --native [{}]: hash_loop {hash_samples} samples ({hashed} in hashing code), py_loop {py_samples}",
            py.label
        );
        if hashed < 10 || py_samples < 10 {
            failures.push(format!(
                "[{}] hash_loop {hash_samples} ({hashed} hashing), py_loop {py_samples}: {err}",
                py.label
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `--format raw` (`.jsonl`): every sample of every thread on its own line, in the order
/// taken, with its time, thread, GIL and idle state and frames; what the target states
/// about itself holds in each: the thread named `hasher` runs `hash_loop`, the main thread
/// `py_loop`, and only one thread holds the GIL at a time.
#[test]
fn raw_samples_carry_time_thread_gil_and_idle_state() {
    let py = require!(testkit::python(&testkit::Want::at_least("3.12")));
    let tmp = TempDir::new("record-raw");
    let mut child = testkit::spawn_ready(&py, "gil_target.py", &[]);
    let out = tmp.path().join("s.jsonl");
    let o = Command::new(pystackd_bin())
        .args([
            "record",
            "--no-daemon",
            "--idle",
            "--pid",
            &child.id().to_string(),
        ])
        .args(["--rate", "200", "--duration", "1", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let text = std::fs::read_to_string(&out).unwrap();
    let (mut last, mut n, mut hasher, mut main) = (0.0f64, 0, 0, 0);
    let mut holders: HashMap<String, u32> = HashMap::new();
    for line in text.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let t = v["time"].as_f64().unwrap();
        assert!(t >= last && t < 30.0, "time {t} after {last}: {line}");
        last = t;
        n += 1;
        assert!(v["idle"].is_boolean() && v["os_tid"].is_u64(), "{line}");
        assert_eq!(v["pid"].as_u64(), Some(u64::from(child.id())), "{line}");
        let funcs: Vec<&str> = v["frames"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|f| f["function"].as_str())
            .collect();
        match v["thread"].as_str() {
            Some("hasher") => {
                assert!(
                    funcs.contains(&"hash_loop") && !funcs.contains(&"py_loop"),
                    "{line}"
                );
                hasher += 1;
            }
            Some("MainThread") => {
                assert!(
                    funcs.contains(&"py_loop") && !funcs.contains(&"hash_loop"),
                    "{line}"
                );
                main += 1;
            }
            other => panic!("thread {other:?}: {line}"),
        }
        if v["holds_gil"] == true {
            *holders.entry(format!("{t}")).or_default() += 1;
        }
    }
    eprintln!(
        "raw [{}]: {n} lines, hasher {hasher}, main {main}",
        py.label
    );
    assert!(
        hasher >= 20 && main >= 20,
        "{n} lines: hasher {hasher}, main {main}"
    );
    // the threads of one read share its time: two GIL holders in one read would be wrong
    assert!(holders.values().all(|&c| c == 1), "{holders:?}");
}
