//! The `str` hash pystackd computes for a target (to probe its dicts as CPython does:
//! `sys.modules["threading"]`, `_active`, a `Thread`'s `_name`) must be the target's own:
//! every interpreter of tests/pythons/list prints `hash(...)` of the keys looked up, under
//! a random and under fixed `PYTHONHASHSEED`s, and pystackd's value must equal it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use pyframe_reader::PythonProcess;
use testkit::require;

const KEYS: [&str; 4] = ["threading", "_active", "_name", "x"];

const SCRIPT: &str = r#"
import sys, time
print(" ".join(str(hash(k)) for k in sys.argv[1:]), flush=True)
time.sleep(60)
"#;

#[test]
fn str_hash_is_the_targets_own() {
    let pythons = require!(testkit::pythons::all_with_free_threaded());
    let mut failures = Vec::new();
    let mut compared = 0;
    // (all_with_free_threaded lists only supported versions and free-threaded builds)
    for py in pythons.iter().filter(|p| !p.is_twin()) {
        for seed in [None, Some("0"), Some("4242")] {
            let mut cmd = Command::new(&py.command);
            cmd.arg("-c").arg(SCRIPT).args(KEYS).stdout(Stdio::piped());
            match seed {
                Some(s) => cmd.env("PYTHONHASHSEED", s),
                None => cmd.env_remove("PYTHONHASHSEED"),
            };
            let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{}: {e}", py.label));
            let mut line = String::new();
            BufReader::new(child.stdout.as_mut().unwrap())
                .read_line(&mut line)
                .unwrap();
            let theirs: Vec<i64> = line
                .split_whitespace()
                .map(|v| v.parse().unwrap())
                .collect();
            let ours: Result<Vec<Option<i64>>, String> = PythonProcess::attach(child.id())
                .map(|mut p| KEYS.iter().map(|k| p.str_hash_for_tests(k)).collect())
                .map_err(|e| e.to_string());
            let _ = child.kill();
            let _ = child.wait();
            let label = format!("{} (PYTHONHASHSEED={})", py.label, seed.unwrap_or("random"));
            match ours {
                Ok(ours) => {
                    eprintln!("{label}: target {theirs:?}, pystackd {ours:?}");
                    let ours: Vec<i64> = ours.into_iter().map(|h| h.unwrap_or(0)).collect();
                    if ours != theirs {
                        failures.push(format!("{label}: target {theirs:?}, pystackd {ours:?}"));
                    }
                    compared += 1;
                }
                Err(e) => failures.push(format!("{label}: attach: {e}")),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(compared > 0, "no interpreter compared");
}
