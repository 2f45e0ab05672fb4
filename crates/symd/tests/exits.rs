//! A process that exits while it is read is reported as exited: never as "not Python",
//! "permission denied" or an inconsistent read. Ground truth: the targets end themselves
//! (`os._exit`) or are zombies by construction.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pyframe_reader::{Error, PythonProcess, StackOptions};
use testkit::{pystackd_bin, require, Interpreter};

/// Threads that start and end all the time, then `os._exit` after `ms` milliseconds.
const SHORT_LIVED: &str = r#"
import os, sys, threading, time
ms = int(sys.argv[1])
def spin(n):
    x = 0
    for i in range(n):
        x += i * i
def churn():
    while True:
        t = threading.Thread(target=spin, args=(2000,))
        t.start()
        t.join()
for _ in range(3):
    threading.Thread(target=churn, daemon=True).start()
print("READY", flush=True)
end = time.monotonic() + ms / 1000
while time.monotonic() < end:
    spin(500)
os._exit(0)
"#;

fn pick(list: &[Interpreter]) -> Vec<Interpreter> {
    // one of each minor version is enough here (the classification is the reader's, not the layout's)
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for i in list {
        if !seen.contains(&i.version) {
            seen.push(i.version);
            out.push(i.clone());
        }
    }
    out
}

#[test]
fn reads_of_exiting_processes_say_exited() {
    let list = pick(&require!(testkit::pythons::all()));
    let mut failures = Vec::new();
    let mut outcomes = std::collections::BTreeMap::<String, u32>::new();
    for interp in &list {
        for round in 0..6u64 {
            let pause = round % 2 == 1;
            // the target's parent is a shell that then becomes `sleep` and never reaps it:
            // once it exits it stays a zombie, as under a busy or careless parent
            let mut child = Command::new("sh")
                .args([
                    "-c",
                    "\"$0\" -c \"$1\" \"$2\" & echo $!; exec sleep 30",
                    &interp.command.to_string_lossy(),
                    SHORT_LIVED,
                    &(150 + 40 * round).to_string(),
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("start target");
            let mut out = BufReader::new(child.stdout.take().unwrap());
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            let pid: u32 = line.trim().parse().expect("the target's pid");
            line.clear();
            out.read_line(&mut line).unwrap();
            assert_eq!(
                line.trim(),
                "READY",
                "[{}] target did not start",
                interp.label
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut p = match PythonProcess::attach(pid) {
                Ok(p) => p,
                Err(e) => {
                    failures.push(format!("[{}] attach of a live target: {e}", interp.label));
                    let _ = child.kill();
                    let _ = child.wait();
                    continue;
                }
            };
            let opts = StackOptions {
                pause,
                tid: None,
                locals: false,
                skip_tids: Vec::new(),
            };
            // read until the target has exited and been seen to
            let last = loop {
                match p.stack(&opts) {
                    Ok(_) if Instant::now() < deadline => continue,
                    Ok(_) => break "still running after 10 s".to_string(),
                    Err(Error::ProcessExited { .. }) => break "exited".into(),
                    Err(e) => break format!("{e:?}"),
                }
            };
            // the zombie (its parent never reaps it): attach again
            let zombie = match PythonProcess::attach(pid) {
                Err(Error::ProcessExited { .. }) => "exited".to_string(),
                Err(e) => format!("{e:?}"),
                Ok(_) => "attached".into(),
            };
            // and the CLI, as a user would run it on the zombie
            let out = Command::new(pystackd_bin())
                .args(["stack", "--no-daemon", &pid.to_string()])
                .output()
                .unwrap();
            let _ = child.kill();
            let _ = child.wait();
            let cli = out.status.code();
            let stderr = String::from_utf8_lossy(&out.stderr);
            for (what, got) in [
                ("read while exiting", &last),
                ("attach of the zombie", &zombie),
            ] {
                *outcomes.entry(format!("{what}: {got}")).or_default() += 1;
                if got != "exited" {
                    failures.push(format!("[{}] {what} (pause={pause}): {got}", interp.label));
                }
            }
            if cli != Some(7) || !stderr.contains("exited") {
                failures.push(format!(
                    "[{}] pystackd stack on a zombie: exit {cli:?}, {stderr}",
                    interp.label
                ));
            }
        }
    }
    eprintln!("exits: {outcomes:?}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
