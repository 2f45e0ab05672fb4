//! `--pause` must never leave a target stopped: not when the guard is dropped, and not
//! when pystackd itself dies while the target is stopped (Ctrl-C, SIGKILL).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pyframe_reader::platform;

/// Thread states of a process from /proc (R, S, t, T, ...).
fn states(pid: u32) -> Vec<char> {
    let mut v = Vec::new();
    for t in platform::threads(pid).unwrap_or_default() {
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/task/{t}/stat")) {
            if let Some(c) = s
                .rsplit_once(')')
                .and_then(|x| x.1.trim_start().chars().next())
            {
                v.push(c);
            }
        }
    }
    v
}

fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<&str> = s
        .rsplit_once(')')
        .map(|x| x.1)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn busy_child() -> std::process::Child {
    // a spinning shell loop in two threads' worth of processes is enough: what matters is
    // that a stopped process does not run
    Command::new("sh")
        .args(["-c", "while :; do :; done"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

fn runs_again(pid: u32) -> bool {
    let t0 = cpu_ticks(pid);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(50));
        if cpu_ticks(pid) > t0 && !states(pid).iter().any(|c| matches!(c, 't' | 'T')) {
            return true;
        }
    }
    false
}

/// Run as a child: stop the pid named in the environment, report, then hang until killed.
#[test]
fn stop_and_hang_helper() {
    let Ok(pid) = std::env::var("PYSTACKD_TEST_STOP_AND_HANG") else {
        return;
    };
    let pid: u32 = pid.parse().unwrap();
    let guard = platform::stop(pid).expect("stop");
    println!("STOPPED");
    std::thread::sleep(Duration::from_secs(60));
    drop(guard);
}

#[test]
fn guard_drop_resumes() {
    let mut child = busy_child();
    let pid = child.id();
    std::thread::sleep(Duration::from_millis(100));
    match platform::stop(pid) {
        Ok(guard) => {
            std::thread::sleep(Duration::from_millis(50));
            let t0 = cpu_ticks(pid);
            std::thread::sleep(Duration::from_millis(300));
            assert_eq!(cpu_ticks(pid), t0, "the target ran while stopped");
            drop(guard);
            assert!(
                runs_again(pid),
                "not resumed after the guard was dropped: {:?}",
                states(pid)
            );
        }
        // ptrace not permitted here (a container without CAP_SYS_PTRACE): a missing capability
        Err(e) => testkit::Skip::new(format!("guard_drop_resumes: cannot stop a child here: {e}"))
            .report(),
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn killed_while_stopping_resumes() {
    let mut target = busy_child();
    let pid = target.id();
    let me = std::env::current_exe().unwrap();
    let mut stopper = Command::new(me)
        .args([
            "--exact",
            "stop_and_hang_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("PYSTACKD_TEST_STOP_AND_HANG", pid.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // wait for STOPPED
    let mut out = stopper.stdout.take().unwrap();
    let mut buf = [0u8; 4096];
    let mut seen = String::new();
    let start = Instant::now();
    use std::io::Read;
    while !seen.contains("STOPPED") && start.elapsed() < Duration::from_secs(10) {
        match out.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    if !seen.contains("STOPPED") {
        testkit::Skip::new(format!(
            "killed_while_stopping_resumes: the helper could not stop the target: {seen}"
        ))
        .report();
    } else {
        let t0 = cpu_ticks(pid);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(cpu_ticks(pid), t0, "the target ran while stopped");
        stopper.kill().unwrap(); // SIGKILL: no destructor runs
        stopper.wait().unwrap();
        assert!(
            runs_again(pid),
            "left stopped after pystackd died: {:?}",
            states(pid)
        );
    }
    let _ = stopper.kill();
    let _ = stopper.wait();
    let _ = target.kill();
    let _ = target.wait();
}
