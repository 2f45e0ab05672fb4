//! `pystackd stack --subprocesses` on every interpreter: a target that starts two Python
//! children with multiprocessing (each blocked in its own function) and one child that is
//! not Python. Ground truth from the target: which pid runs which function. The children
//! come with their parent's pid and their own stacks; the non-Python child is left out.

use std::collections::HashMap;
use std::process::Command;

use serde_json::Value;
use testkit::{pystackd_bin, require, Target, TempDir};

#[test]
fn python_descendants_are_shown_with_their_parent() {
    let list = require!(testkit::pythons::all());
    let tmp = TempDir::new("subprocesses");
    let mut failures = Vec::new();
    for py in &list {
        let children_file = tmp.path().join(format!("{}.json", py.label));
        let t = Target::spawn(
            py,
            "subprocess_target.py",
            &[children_file.to_str().unwrap()],
        );
        let children: HashMap<String, u32> =
            serde_json::from_str(&std::fs::read_to_string(&children_file).unwrap()).unwrap();
        let root = t.pid();
        let out = Command::new(pystackd_bin())
            .args([
                "stack",
                "--subprocesses",
                "--json",
                "--no-daemon",
                &root.to_string(),
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.code() != Some(0) {
            failures.push(format!(
                "[{}] exit {:?}: {err}",
                py.label,
                out.status.code()
            ));
            continue;
        }
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let procs = v["processes"].as_array().unwrap();
        let by_pid: HashMap<u64, &Value> = procs
            .iter()
            .map(|p| (p["pid"].as_u64().unwrap(), p))
            .collect();
        let mut problems = Vec::new();
        if procs[0]["pid"] != root || !procs[0]["parent_pid"].is_null() {
            problems.push(format!(
                "first is not the process itself: {}",
                procs[0]["pid"]
            ));
        }
        for name in ["child_one", "child_two"] {
            let pid = u64::from(children[name]);
            let Some(p) = by_pid.get(&pid) else {
                problems.push(format!("{name} ({pid}) missing"));
                continue;
            };
            if p["parent_pid"] != root {
                problems.push(format!("{name}: parent {}", p["parent_pid"]));
            }
            // its main thread: watch_parent called by child_one/child_two
            let main = p["threads"]
                .as_array()
                .unwrap()
                .iter()
                .find(|th| th["os_tid"] == pid);
            let funcs: Vec<&str> = main
                .map(|th| {
                    th["frames"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|f| f["function"].as_str().unwrap_or("?"))
                        .collect()
                })
                .unwrap_or_default();
            if funcs.get(..2) != Some(&["watch_parent", name][..]) {
                problems.push(format!("{name}: main thread {funcs:?}"));
            }
        }
        let sh = u64::from(children["not_python"]);
        if by_pid.contains_key(&sh)
            || v["unreadable"]
                .as_array()
                .unwrap()
                .iter()
                .any(|u| u["pid"] == sh)
        {
            problems.push("the non-Python child is listed".into());
        }
        eprintln!(
            "stack --subprocesses [{}]: {} processes, {} unreadable",
            py.label,
            procs.len(),
            v["unreadable"].as_array().unwrap().len()
        );
        if !problems.is_empty() {
            failures.push(format!("[{}] {}", py.label, problems.join("; ")));
        }
        // the text form names each child and its parent
        let out = Command::new(pystackd_bin())
            .args(["stack", "--subprocesses", "--no-daemon", &root.to_string()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        for name in ["child_one", "child_two"] {
            let want = format!("Subprocess {} (child of {root})", children[name]);
            if !text.contains(&want) {
                failures.push(format!("[{}] text lacks {want:?}", py.label));
            }
        }
    }
    // --tid makes no sense across processes
    let out = Command::new(pystackd_bin())
        .args(["stack", "--subprocesses", "--tid", "1", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
