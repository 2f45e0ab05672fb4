//! Containers and thread ids (issue 16 parts 1 and 4): a target in its own PID and mount
//! namespace (`unshare -fp --mount-proc`) read from the host, with each thread's
//! namespace tid and innermost function as the target prints them and its host tid from
//! the host's /proc; and every thread's OS tid on every version, through thread churn and
//! subinterpreters.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::daemon::Daemon;
use testkit::{pystackd_bin, pythons, require, Interpreter, TempDir, Want};

/// Three threads, each printing `T <its native id> <its innermost function>`, then READY.
const NS_TARGET: &str = r#"import threading, time, os
ev = threading.Event()
def say(what):
    # one write(2) per line: threads' lines must not interleave
    os.write(1, ("T %d %s\n" % (threading.get_native_id(), what)).encode())
def leaf_one():
    say("leaf_one"); ev.wait()
def leaf_two():
    say("leaf_two"); ev.wait()
for f in (leaf_one, leaf_two):
    threading.Thread(target=f).start()
time.sleep(0.3)
def main_leaf():
    say("main_leaf")
    os.write(1, b"READY\n")
    ev.wait()
main_leaf()
"#;

struct InNamespace {
    unshare: Child,
    /// The interpreter's pid on the host.
    pid: u32,
    /// Namespace tid → innermost function, as the target printed them.
    truth: HashMap<u64, String>,
}

impl Drop for InNamespace {
    fn drop(&mut self) {
        // pid 1 of a namespace ignores signals it has no handler for: SIGKILL
        let _ = Command::new("kill")
            .args(["-9", &self.pid.to_string()])
            .status();
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}

fn start_in_namespace(py: &Interpreter, dir: &TempDir) -> Result<InNamespace, String> {
    let script = dir.path().join("ns_target.py");
    std::fs::write(&script, NS_TARGET).unwrap();
    let mut unshare = Command::new("unshare")
        .args(["-fp", "--mount-proc"])
        .arg(&py.command)
        .arg(&script)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("unshare: {e}"))?;
    let mut truth = HashMap::new();
    let mut lines = BufReader::new(unshare.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line == "READY" {
            break;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if let ["T", tid, func] = f.as_slice() {
            if let Ok(tid) = tid.parse() {
                truth.insert(tid, func.to_string());
            }
        }
    }
    // unshare -f forks: the interpreter is its child
    let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", unshare.id()))
        .unwrap_or_default();
    let pid: u32 = children
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| "unshare started no child".to_string())?;
    let t = InNamespace {
        unshare,
        pid,
        truth,
    };
    if t.truth.len() != 3 {
        return Err(format!("{}: target printed {:?}", py.label, t.truth));
    }
    // every thread printed before it blocks: wait until all sit in a futex wait (202)
    let deadline = Instant::now() + Duration::from_secs(10);
    while host_to_ns(pid).keys().any(|t| {
        std::fs::read_to_string(format!("/proc/{pid}/task/{t}/syscall"))
            .map_or(true, |s| s.split_whitespace().next() != Some("202"))
    }) {
        if Instant::now() > deadline {
            return Err(format!("{}: threads never blocked", py.label));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(t)
}

/// Host tid → namespace tid, from the host's /proc (`NSpid:`: host first, innermost last).
fn host_to_ns(pid: u32) -> HashMap<u64, u64> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|e| {
            let host: u64 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let status = std::fs::read_to_string(format!("/proc/{pid}/task/{host}/status")).ok()?;
            let ns = status
                .lines()
                .find_map(|l| l.strip_prefix("NSpid:"))?
                .split_whitespace()
                .last()?
                .parse()
                .ok()?;
            Some((host, ns))
        })
        .collect()
}

fn pystackd(args: &[&str]) -> Output {
    Command::new(pystackd_bin()).args(args).output().unwrap()
}

fn namespace_ok() -> Result<(), String> {
    testkit::root("to create PID namespaces").map_err(|s| s.0)?;
    testkit::tool("unshare").map_err(|s| s.0)?;
    Ok(())
}

/// Checks a `ProcessStack` of the namespaced target against its truth: every thread once,
/// host tid in `os_tid`, namespace tid in `ns_tid`, the OS name, the innermost function.
fn check_stack(label: &str, t: &InNamespace, v: &Value, only: Option<u64>) {
    let map = host_to_ns(t.pid);
    let ns_inode = std::fs::metadata(format!("/proc/{}/ns/pid", t.pid))
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .unwrap();
    assert_eq!(v["pid_ns"], json!(ns_inode), "{label}: {v}");
    assert_eq!(v["ns_pid"], json!(1), "{label}");
    let threads = v["threads"].as_array().unwrap();
    let want = if only.is_some() { 1 } else { 3 };
    assert_eq!(threads.len(), want, "{label}: {v}");
    for th in threads {
        let host = th["os_tid"]
            .as_u64()
            .unwrap_or_else(|| panic!("{label}: {th}"));
        let ns = map[&host];
        assert_eq!(th["ns_tid"], json!(ns), "{label}: host {host}");
        if let Some(o) = only {
            assert_eq!(ns, o, "{label}: --tid picked another thread");
        }
        assert!(th["name"].is_string(), "{label}: no name: {th}");
        // innermost frame of the script (below it: threading's Event.wait)
        let own = th["frames"].as_array().unwrap().iter().find(|f| {
            f["filename"]
                .as_str()
                .is_some_and(|n| n.ends_with("ns_target.py"))
        });
        assert_eq!(
            own.and_then(|f| f["function"].as_str()),
            Some(t.truth[&ns].as_str()),
            "{label}: thread {host} [{ns}]: {th}"
        );
    }
}

#[test]
fn namespaced_target_read_from_host() {
    require!(namespace_ok());
    let pys = require!(pythons::distinct_builds());
    for py in pys {
        let dir = TempDir::new("ns");
        let t = match start_in_namespace(&py, &dir) {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        };
        let pid = t.pid.to_string();
        let out = pystackd(&["stack", "--no-daemon", "--json", &pid]);
        assert!(out.status.success(), "{}: {out:?}", py.label);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        check_stack(&py.label, &t, &v, None);
        // text: the namespace line and both tids per thread
        let out = pystackd(&["stack", "--no-daemon", &pid]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("In a container: pid namespace"), "{text}");
        for (host, ns) in host_to_ns(t.pid) {
            assert!(
                text.contains(&format!("Thread {host} [{ns}]")),
                "{}: {text}",
                py.label
            );
        }
        // --tid by host tid and by namespace tid: that one thread
        for (host, ns) in host_to_ns(t.pid) {
            for tid in [host, ns] {
                let out = pystackd(&[
                    "stack",
                    "--no-daemon",
                    "--json",
                    "--tid",
                    &tid.to_string(),
                    &pid,
                ]);
                assert!(out.status.success(), "{} --tid {tid}: {out:?}", py.label);
                let v: Value = serde_json::from_slice(&out.stdout).unwrap();
                check_stack(&format!("{} --tid {tid}", py.label), &t, &v, Some(ns));
            }
        }
        // a tid of no thread: an error with its own status, never an empty stack
        let out = pystackd(&["stack", "--no-daemon", "--tid", "4000000", &pid]);
        assert_eq!(out.status.code(), Some(16), "{}: {out:?}", py.label);
        assert!(out.stdout.is_empty());
        eprintln!("{}: namespaced target read ok", py.label);
    }
}

#[test]
fn namespaced_target_gdb_annotate_and_daemon() {
    require!(namespace_ok());
    require!(testkit::tool("gdb"));
    let py = require!(testkit::python(&Want::any().symbols()));
    let dir = TempDir::new("nsgdb");
    let t = start_in_namespace(&py, &dir).unwrap_or_else(|e| panic!("{e}"));
    let pid = t.pid.to_string();
    let gdb = Command::new("gdb")
        .args(["-p", &pid, "-batch", "-ex", "thread apply all bt"])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&gdb.stdout).to_string();
    assert_eq!(text.matches("(LWP ").count(), 3, "{text}");
    let mut annotate = Command::new(pystackd_bin())
        .args(["annotate", "--no-daemon", "--pid", &pid])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        annotate
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let out = annotate.wait_with_output().unwrap();
    let annotated = String::from_utf8_lossy(&out.stdout);
    // every thread annotated, read after gdb let go: 11
    assert_eq!(
        out.status.code(),
        Some(11),
        "{}\n{}",
        annotated,
        String::from_utf8_lossy(&out.stderr)
    );
    // each thread's innermost function under that thread's own header (host LWP)
    let map = host_to_ns(t.pid);
    for (host, ns) in &map {
        let header = format!("(LWP {host})");
        let at = annotated
            .find(&header)
            .unwrap_or_else(|| panic!("{annotated}"));
        let section = &annotated[at..];
        let section = &section[..section[1..]
            .find("\nThread ")
            .map_or(section.len(), |e| e + 1)];
        assert!(
            section.contains(&format!("({})", t.truth[ns])),
            "{}: LWP {host} [{ns}]: {section}",
            py.label
        );
    }
    // the same stack text with the namespace's tids (a tool run inside the container)
    let mut inside = text.clone();
    for (host, ns) in &map {
        inside = inside.replace(&format!("(LWP {host})"), &format!("(LWP {ns})"));
    }
    let out = Command::new(pystackd_bin())
        .args(["annotate", "--no-daemon", "--pid", &pid])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(inside.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(11),
        "namespace tids: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // the daemon on the host answers with both ids, and takes either for `tid`
    let d = Daemon::start(None);
    let mut c = d.connect();
    let v = c.ok("stack", json!({ "pid": t.pid }));
    check_stack("daemon", &t, &v, None);
    for (host, ns) in &map {
        for tid in [*host, *ns] {
            let v = c.ok("stack", json!({ "pid": t.pid, "tid": tid }));
            check_stack(&format!("daemon tid {tid}"), &t, &v, Some(*ns));
        }
    }
    let code = c.err_code("stack", json!({ "pid": t.pid, "tid": 4_000_000 }));
    assert_eq!(code, protocol_no_such_thread());
}

fn protocol_no_such_thread() -> i64 {
    -32009
}

/// Threads started and ended all the time, and a subinterpreter (created by the main
/// thread; `_xxsubinterpreters` up to 3.12, `_interpreters` from 3.13) run by a thread of
/// its own. Every thread writes `ROLE TID` (its kernel
/// tid, `threading.get_native_id()`) to the log file named by argv[1] as its first act.
const CHURN_TARGET: &str = r#"import threading, time, sys, os
log = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
def say(role):
    # one write(2) per line: lines of threads never interleave
    os.write(log, ("%s %d\n" % (role, threading.get_native_id())).encode())
say("main")
try:
    import _xxsubinterpreters as subi  # 3.8-3.12
    run_sub = subi.run_string
except ImportError:
    try:
        import _interpreters as subi  # 3.13+
        run_sub = subi.exec
    except ImportError:
        subi = None
if subi is not None:
    sid = subi.create()
    run_sub(sid, "x = 1")
def short():
    say("short")
    time.sleep(0.0005)
def churn():
    say("churn")
    while True:
        ts = [threading.Thread(target=short) for _ in range(4)]
        for t in ts: t.start()
        for t in ts: t.join()
def sub_loop():
    say("sub")
    # a thread that keeps running code in the subinterpreter
    while True:
        run_sub(sid, "import time\ndef in_sub():\n    time.sleep(0.01)\nin_sub()")
for _ in range(2):
    threading.Thread(target=churn, daemon=True).start()
if subi is not None:
    threading.Thread(target=sub_loop, daemon=True).start()
print("READY", flush=True)
time.sleep(600)
"#;

/// The `ROLE TID` lines of the churn target's log from byte `from` on.
fn churn_log(path: &std::path::Path, from: usize) -> Vec<(String, u64)> {
    let text = std::fs::read_to_string(path).unwrap();
    text[from.min(text.len())..]
        .lines()
        .filter_map(|l| {
            let (role, tid) = l.split_once(' ')?;
            Some((role.to_string(), tid.parse().ok()?))
        })
        .collect()
}

fn tasks(pid: u32) -> std::collections::HashSet<u64> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Issue 16: 100 reads of the churn target on every interpreter; every thread has its OS
/// tid (no `null`), and it is a real one: a thread of the target when the read began, or
/// one the target logged as started after that; a thread of the main interpreter running
/// `churn`, `sub_loop`, `short` or the main `<module>` has the tid the target logged for
/// that role. Thread states no OS thread runs (a thread not started yet, or ended during
/// the read) are left out and counted in `warnings`.
///
/// The subinterpreter's code (`in_sub`) runs on the `sub` thread. From 3.13 its thread
/// state carries that thread's tid, and must. Up to 3.12 CPython lends it the
/// interpreter's thread state made by the main thread, which keeps the main thread's ids:
/// it must then come with the `sub` thread's tid (3.10-3.12, found from where its eval
/// loop sits on that thread's C stack) or without one, saying why (`os_tid_unknown`),
/// never as the main thread's.
#[test]
fn every_thread_has_its_os_tid_through_churn() {
    let pys = require!(pythons::distinct_builds());
    for py in pys {
        let dir = TempDir::new("churn");
        let script = dir.path().join("churn.py");
        let log = dir.path().join("tids.log");
        std::fs::write(&script, CHURN_TARGET).unwrap();
        let mut child = Command::new(&py.command)
            .arg(&script)
            .arg(&log)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert_eq!(first.trim(), "READY", "{}", py.label);
        let pid = child.id();
        let pid_s = pid.to_string();
        let (mut ok, mut threads, mut nulls, mut left_out) = (0, 0, Vec::new(), 0);
        let mut unreal = Vec::new();
        let mut checked_roles = 0;
        let (mut lent, mut sub_checked, mut lent_running) = (0, 0, 0);
        for _ in 0..100 {
            let log_from = std::fs::metadata(&log).unwrap().len() as usize;
            let before = tasks(pid);
            let out = pystackd(&["stack", "--no-daemon", "--json", &pid_s]);
            if out.status.code() == Some(8) {
                continue; // no consistent read of a churning target: not a tid question
            }
            assert!(out.status.success(), "{}: {out:?}", py.label);
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            ok += 1;
            left_out += v["warnings"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|w| w.as_str().is_some_and(|w| w.contains("left out")))
                .count();
            // A thread caught before its first line (in `threading`'s bootstrap, or waiting
            // for the GIL to write it) logs its tid later: the log is read again until it
            // says, for 3 s at most.
            let (mut since, mut all_roles) = (churn_log(&log, log_from), churn_log(&log, 0));
            let mut logged = |role: Option<&str>, tid: u64| {
                let deadline = Instant::now() + Duration::from_secs(3);
                loop {
                    let found = match role {
                        None => since.iter().any(|(_, t)| *t == tid),
                        Some(r) => all_roles.iter().any(|(rr, t)| rr == r && *t == tid),
                    };
                    if found || Instant::now() > deadline {
                        return found;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                    since = churn_log(&log, log_from);
                    all_roles = churn_log(&log, 0);
                }
            };
            for th in v["threads"].as_array().unwrap() {
                threads += 1;
                let funcs: Vec<&str> = th["frames"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|f| f["function"].as_str())
                    .collect();
                let Some(tid) = th["os_tid"].as_u64() else {
                    if th["interpreter_id"] != 0 && th["os_tid_unknown"].is_string() {
                        assert!(
                            py.version <= (3, 12),
                            "{}: a subinterpreter's thread without its OS tid: {th}",
                            py.label
                        );
                        lent += 1;
                        lent_running += usize::from(!funcs.is_empty());
                    } else {
                        nulls.push(th.clone());
                    }
                    continue;
                };
                if !before.contains(&tid) && !logged(None, tid) {
                    unreal.push(th.clone());
                }
                if th["interpreter_id"] != 0 {
                    if funcs.contains(&"in_sub") {
                        sub_checked += 1;
                        if !logged(Some("sub"), tid) {
                            // every thread of this read and every role the target logged,
                            // to tell which thread the tid belongs to
                            let all: Vec<String> = v["threads"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .map(|t| {
                                    format!(
                                        "interp {} tid {} thread_id {} {:?}",
                                        t["interpreter_id"],
                                        t["os_tid"],
                                        t["thread_id"],
                                        t["frames"]
                                            .as_array()
                                            .unwrap()
                                            .iter()
                                            .filter_map(|f| f["function"].as_str())
                                            .collect::<Vec<_>>()
                                    )
                                })
                                .collect();
                            panic!(
                                "{}: the subinterpreter's code, which only the `sub` thread runs, reported as tid {tid}: {th}\nthe read: {all:#?}\nwarnings: {}\nlogged: {:?}",
                                py.label,
                                v["warnings"],
                                churn_log(&log, 0)
                                    .into_iter()
                                    .filter(|(r, _)| r != "short")
                                    .collect::<Vec<_>>()
                            );
                        }
                    }
                    continue;
                }
                let role = match funcs.as_slice() {
                    [.., "<module>"] => "main",
                    f if f.contains(&"short") => "short",
                    f if f.contains(&"sub_loop") => "sub",
                    f if f.contains(&"churn") => "churn",
                    _ => continue,
                };
                checked_roles += 1;
                assert!(
                    logged(Some(role), tid),
                    "{}: a thread running {funcs:?} reported as tid {tid}, which the target never logged as its `{role}` thread: {th}",
                    py.label
                );
            }
        }
        // stopped (--pause), the thread running a lent state always shows (3.10-3.12)
        let mut paused_sub = 0;
        if (3, 10) <= py.version && py.version <= (3, 12) {
            let sub_tid = churn_log(&log, 0)
                .into_iter()
                .find(|(r, _)| r == "sub")
                .map(|(_, t)| t)
                .unwrap();
            for _ in 0..10 {
                let out = pystackd(&["stack", "--pause", "--no-daemon", "--json", &pid_s]);
                assert!(out.status.success(), "{}: {out:?}", py.label);
                let v: Value = serde_json::from_slice(&out.stdout).unwrap();
                for th in v["threads"].as_array().unwrap() {
                    let running_sub = th["frames"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|f| f["function"] == "in_sub");
                    if th["interpreter_id"] != 0 && running_sub {
                        assert_eq!(
                            th["os_tid"].as_u64(),
                            Some(sub_tid),
                            "{}: stopped, the lent state's thread must show: {th}",
                            py.label
                        );
                        paused_sub += 1;
                    }
                }
            }
            assert!(
                paused_sub > 0,
                "{}: 10 paused reads never saw in_sub",
                py.label
            );
        }
        let _ = child.kill();
        let _ = child.wait();
        eprintln!(
            "{}: {paused_sub} paused reads placed the lent state; {ok} reads, {threads} threads ({checked_roles} checked against their role's tid, {sub_checked} running the subinterpreter against the `sub` thread's), {} without an OS tid, {lent} lent subinterpreter states without one (said why; {lent_running} of them running Python), {} with a tid the target did not have, {left_out} reads leaving out thread states no OS thread runs",
            py.label,
            nulls.len(),
            unreal.len()
        );
        // the subinterpreter was seen: lent without a tid (3.8/3.9), or on the `sub`
        // thread (3.13+ its own state; 3.10-3.12 the lent state placed by where its eval
        // loop is on that thread's C stack, which shows while it sleeps: most reads)
        if py.version <= (3, 9) {
            assert!(
                lent > 0,
                "{}: the lent subinterpreter state was never seen",
                py.label
            );
        } else {
            assert!(
                sub_checked > 0,
                "{}: the subinterpreter was never seen running",
                py.label
            );
        }
        // (what is checked is each read's tids; how many reads hold still depends on how
        // fast the churn runs: 55-100 of 100 measured per build, fewer on a quiet machine)
        assert!(ok >= 30, "{}: only {ok} of 100 reads succeeded", py.label);
        assert!(
            nulls.is_empty(),
            "{}: {} of {threads} threads without an OS tid: {:?}",
            py.label,
            nulls.len(),
            &nulls[..nulls.len().min(3)]
        );
        assert!(
            unreal.is_empty(),
            "{}: {} of {threads} threads with a tid no thread of the target had: {:?}",
            py.label,
            unreal.len(),
            &unreal[..unreal.len().min(3)]
        );
    }
}

/// Issue 16 part 4: a client in a PID namespace of its own asks the host's daemon. Its
/// pids name other processes there (its pid 1 is the host's init), so the daemon refuses
/// with a clear error (exit 10) instead of reading whatever process has that number here;
/// the same daemon still answers a client on the host.
#[test]
fn daemon_refuses_a_client_in_another_pid_namespace() {
    require!(namespace_ok());
    let py = require!(testkit::python(&Want::any()));
    let mut target = Command::new(&py.command)
        .args([
            "-c",
            "import time; print('READY', flush=True); time.sleep(60)",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(target.stdout.as_mut().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(first.trim(), "READY");
    let d = Daemon::start(None);
    let sock = d.socket.to_str().unwrap().to_string();
    let bin = pystackd_bin();
    let host_pid = target.id().to_string();
    // the client asks for pid 1 (its own namespace's first process), then for the host pid
    // of the target
    let script = format!(
        "{bin} stack --socket {sock} 1; echo \"rc=$?\"; {bin} stack --socket {sock} {host_pid}; echo \"rc=$?\";"
    );
    let out = Command::new("unshare")
        .args(["-fp", "--mount-proc", "sh", "-c", &script])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        text.matches("rc=10").count(),
        2,
        "stdout: {text}\nstderr: {err}"
    );
    assert_eq!(
        err.matches("the client is in another PID namespace than the daemon")
            .count(),
        2,
        "{err}"
    );
    assert!(
        !text.contains("Thread "),
        "a namespaced client got a stack: {text}"
    );
    let out = d.cli(&["stack", &host_pid]);
    assert!(out.status.success(), "host client: {out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("<module>"),
        "{out:?}"
    );
    let _ = target.kill();
    let _ = target.wait();
}
