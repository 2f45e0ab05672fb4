//! Posthumous symbolization: a target attached through a real daemon, its stacks taken by
//! gdb (`thread apply all bt`) and rewritten to bare addresses (what DTrace prints for a
//! process that exited before its stacks were printed), the target killed, then
//! `pystackd annotate` through the daemon must name every frame gdb named, as gdb named it,
//! from the daemon's record of the dead process's mappings; and only for clients that were
//! allowed to read the process while it ran, and only until the record expires.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::daemon::Daemon;
use testkit::pythons::{self, Build, Launch};
use testkit::tools::header_tid;
use testkit::{pystackd_bin, require, Interpreter, RunAs, Target, TestUser, Want};

/// One physical frame of gdb's backtrace: its pc and the function the symbol table names
/// there (gdb prints the functions inlined at the same pc first; the outermost of them is
/// the real one), `None` for `??`.
#[derive(Debug, Clone)]
struct GdbFrame {
    addr: u64,
    name: Option<String>,
}

/// gdb's view of every thread: `thread apply all bt`, and each thread's pc (gdb omits the
/// address of a frame 0 that sits at the start of a line).
fn gdb_threads(pid: u32) -> Vec<(u64, Vec<GdbFrame>)> {
    let out = Command::new("gdb")
        .args(["-batch", "-nx", "-p", &pid.to_string()])
        .args(["-ex", "thread apply all bt"])
        .args(["-ex", "thread apply all p/x $pc"])
        .stdin(Stdio::null())
        .output()
        .expect("gdb runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut order: Vec<u64> = Vec::new();
    // per thread: (pc if printed, name) of each frame line
    type Lines = Vec<(Option<u64>, Option<String>)>;
    let mut frames: HashMap<u64, Lines> = HashMap::new();
    let mut pcs: HashMap<u64, u64> = HashMap::new();
    let mut cur = None;
    for line in text.lines() {
        if line.starts_with("Thread ") {
            cur = header_tid(line);
            if let Some(t) = cur {
                if !order.contains(&t) {
                    order.push(t);
                }
            }
            continue;
        }
        let Some(t) = cur else { continue };
        if let Some(v) = line.strip_prefix('$') {
            if let Some((_, hex)) = v.split_once("= 0x") {
                if let Ok(pc) = u64::from_str_radix(hex.trim(), 16) {
                    pcs.insert(t, pc);
                }
            }
            continue;
        }
        let Some(g) = testkit::tools::gdb_frame_line(line) else {
            continue;
        };
        let (addr, name) = (g.addr, g.name.clone());
        let f = frames.entry(t).or_default();
        if g.physical() {
            f.push((addr, name));
        } else if let Some(last) = f.last_mut() {
            // inlined into the physical frame above: the outermost name is the symbol's
            last.1 = name.or(last.1.take());
        }
    }
    order
        .into_iter()
        .filter_map(|t| {
            let f = frames.remove(&t)?;
            let pc = pcs.get(&t).copied();
            let f = f
                .into_iter()
                .enumerate()
                .filter_map(|(i, (a, name))| {
                    let addr = a.or(if i == 0 { pc } else { None })?;
                    Some(GdbFrame { addr, name })
                })
                .collect();
            Some((t, f))
        })
        .collect()
}

/// Drops gdb's tail-call frames: a function that ended with a jump to another has no
/// return address on the stack (gdb reconstructs the frame from DWARF call-site
/// information, its pc right after the `jmp`), so no tracer prints it. Told by the target's
/// own code: the 5 bytes before the pc are a `jmp rel32` (0xe9), not a call. Returns how
/// many were dropped.
fn drop_tail_calls(pid: u32, threads: &mut [(u64, Vec<GdbFrame>)]) -> usize {
    use std::os::unix::fs::FileExt;
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).expect("target memory");
    let mut dropped = 0;
    for (_, frames) in threads.iter_mut() {
        let before = frames.len();
        let mut first = true;
        frames.retain(|f| {
            let innermost = std::mem::replace(&mut first, false);
            let mut b = [0u8; 5];
            innermost || mem.read_exact_at(&mut b, f.addr - 5).is_err() || b[0] != 0xe9
        });
        dropped += before - frames.len();
    }
    dropped
}

/// gdb's stacks as DTrace prints them for a process it can no longer read: a `tid=N`
/// line, then one bare `0xADDR` per frame.
fn bare_addresses(threads: &[(u64, Vec<GdbFrame>)]) -> String {
    let mut s = String::new();
    for (tid, frames) in threads {
        s.push_str(&format!("tid={tid}\n\n"));
        for f in frames {
            s.push_str(&format!("              0x{:x}\n", f.addr));
        }
        s.push('\n');
    }
    s
}

/// The same stacks with each frame in a shared object as DTrace prints an offset into it,
/// `libc.so.6+0x2a3b4` (the file offset, from the target's own mappings), the others as
/// bare addresses.
fn module_offsets(pid: u32, threads: &[(u64, Vec<GdbFrame>)]) -> String {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let regions: Vec<(u64, u64, u64, String)> = maps
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (a, b) = f.first()?.split_once('-')?;
            Some((
                u64::from_str_radix(a, 16).ok()?,
                u64::from_str_radix(b, 16).ok()?,
                u64::from_str_radix(f.get(2)?, 16).ok()?,
                f.get(5)?.rsplit('/').next()?.to_string(),
            ))
        })
        .collect();
    let mut s = String::new();
    for (tid, frames) in threads {
        s.push_str(&format!("tid={tid}\n\n"));
        for f in frames {
            let r = regions
                .iter()
                .find(|(a, b, _, n)| *a <= f.addr && f.addr < *b && n.contains(".so"));
            match r {
                Some((a, _, off, name)) => {
                    s.push_str(&format!("              {name}+{:#x}\n", f.addr - a + off))
                }
                None => s.push_str(&format!("              0x{:x}\n", f.addr)),
            }
        }
        s.push('\n');
    }
    s
}

/// A name without what differs between gdb's DWARF name and the symbol table's alias at
/// the same address (as in stack_native.rs): clone suffixes (`.cold`, `.constprop.0`),
/// glibc's internal prefixes, `_impl` implementations of versioned entries.
fn normalize(name: &str) -> String {
    let base = name.split('.').next().unwrap_or(name);
    let base = base.split('@').next().unwrap_or(base);
    let mut s = base.trim_start_matches('_');
    if let Some(r) = s.strip_prefix("GI_") {
        s = r.trim_start_matches('_');
    }
    if let Some(r) = s.strip_prefix("libc_") {
        s = r;
    }
    s.strip_suffix("_impl").unwrap_or(s).to_string()
}

const POSTHUMOUS: &str = " (named by pystackd, posthumously: the process had exited) ]";

/// Per frame line: its address when the line gives one, and the name pystackd gave it.
type Named = Vec<(Option<u64>, Option<String>)>;

/// Per frame line of annotate's text output (`0xADDR` or `libfoo.so+0xoff`), the symbol
/// pystackd named it by (`[= module`symbol+0xoff (named by pystackd...) ]` after it); the
/// names must end with `marker` (`POSTHUMOUS`, or the live one).
fn named_frames_marked(text: &str, marker: &str) -> Result<Named, String> {
    let mut v: Named = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if let Some(hex) = t.strip_prefix("0x") {
            let a = u64::from_str_radix(hex, 16).map_err(|e| format!("{t}: {e}"))?;
            v.push((Some(a), None));
        } else if t.contains(".so") && t.contains("+0x") && !t.starts_with('[') {
            // `libfoo.so+0xoff`: an offset into a shared object
            v.push((None, None));
        } else if let Some(named) = t.strip_prefix("[= ") {
            let Some(body) = named.strip_suffix(marker.trim_start()) else {
                return Err(format!("a name not marked {marker:?}: {t}"));
            };
            let sym = body
                .split_once('`')
                .map(|(_, s)| s.rsplit_once("+0x").map_or(s, |(s, _)| s))
                .ok_or_else(|| format!("no symbol in {t}"))?;
            let last = v.last_mut().ok_or("a name before any frame")?;
            if last.1.is_some() {
                return Err(format!("two names for one frame: {t}"));
            }
            last.1 = Some(sym.trim_end().to_string());
        }
    }
    Ok(v)
}

#[derive(Debug, Default)]
struct Counts {
    frames: usize,
    names_agreed: usize,
    named_by_pystackd_only: usize,
    named_by_neither: usize,
    gdb_tail_calls: usize,
    /// Frames given again as `libfoo.so+0xoff` (and named the same).
    module_offsets: usize,
}

/// Every frame gdb named, named the same from the record; `Err` with the first mismatch.
fn compare(gdb: &[(u64, Vec<GdbFrame>)], text: &str, counts: &mut Counts) -> Result<(), String> {
    compare_marked(gdb, text, POSTHUMOUS, counts)
}

fn compare_marked(
    gdb: &[(u64, Vec<GdbFrame>)],
    text: &str,
    marker: &str,
    counts: &mut Counts,
) -> Result<(), String> {
    let ours = named_frames_marked(text, marker)?;
    let theirs: Vec<&GdbFrame> = gdb.iter().flat_map(|(_, f)| f).collect();
    if ours.len() != theirs.len() {
        return Err(format!(
            "{} frames in the output, {} in gdb's\n{text}",
            ours.len(),
            theirs.len()
        ));
    }
    for ((a, mine), g) in ours.iter().zip(&theirs) {
        assert!(a.is_none_or(|a| a == g.addr), "frames out of order\n{text}");
        let a = g.addr;
        counts.frames += 1;
        match (mine, &g.name) {
            (Some(m), Some(gn)) if normalize(m) == normalize(gn) => counts.names_agreed += 1,
            (Some(m), Some(gn)) => return Err(format!("{a:#x}: named {m}, gdb {gn}\n{text}")),
            (None, Some(gn)) => return Err(format!("{a:#x}: unnamed, gdb {gn}\n{text}")),
            (Some(_), None) => counts.named_by_pystackd_only += 1,
            (None, None) => counts.named_by_neither += 1,
        }
    }
    Ok(())
}

/// `pystackd annotate ARGS` through daemon `d`, `input` on stdin, run as `user` (or the
/// test's own user).
fn annotate_via(d: &Daemon, user: Option<&RunAs>, args: &[&str], input: &str) -> Output {
    let mut cmd = match user {
        Some(u) => u.command(pystackd_bin()),
        None => Command::new(pystackd_bin()),
    };
    cmd.arg("annotate")
        .args(args)
        .arg("--socket")
        .arg(&d.socket)
        .env("PYSTACKD_CLIENT_TIMEOUT", "10");
    testkit::tools::output_with_input(cmd, input)
}

/// annotate's output: with names, the stacks have eval frames but stay unannotated (no
/// Python stacks of a dead process: exit status 9); without, no eval frame is named
/// (status 0).
fn text_of(out: &Output) -> String {
    assert!(
        matches!(out.status.code(), Some(0 | 9)),
        "annotate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Kill the target and wait until its pid names no process.
fn kill_and_reap(target: &mut Target) {
    let pid = target.pid();
    target.kill();
    let t0 = Instant::now();
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(t0.elapsed() < Duration::from_secs(10), "{pid} did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Debian's `-dbg` debug files of this build's version, when tests/run fetched them.
fn debug_root(interp: &Interpreter) -> Option<PathBuf> {
    if !matches!(interp.build, Build::Debian(_)) {
        return None;
    }
    let d = pythons::debug_info_root().join(format!("py{}/root/usr/lib/debug", interp.xy()));
    d.join(".build-id").is_dir().then_some(d)
}

/// The daemon (started after this) looks in the system's debug root, then in the Debian
/// builds' `-dbg` files.
fn set_debug_roots(list: &[Interpreter]) {
    let roots: Vec<String> = std::iter::once(PathBuf::from("/usr/lib/debug"))
        .chain(list.iter().filter_map(debug_root))
        .map(|d| d.display().to_string())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    std::env::set_var("PYSTACKD_DEBUG_ROOT", roots.join(":"));
}

fn run_case(d: &Daemon, interp: &Interpreter, counts: &mut Counts) -> Result<String, String> {
    let mut target = Target::try_spawn(interp, "nested_eval.py", &[])?;
    let pid = target.pid();
    let label = target.label().to_string();
    let r = d.connect().call("attach", json!({ "pid": pid }));
    if r.get("error").is_some() {
        return Err(format!("{label}: attach: {r}"));
    }
    let mut gdb = gdb_threads(pid);
    if gdb.is_empty() {
        return Err(format!("{label}: no stacks from gdb"));
    }
    counts.gdb_tail_calls += drop_tail_calls(pid, &mut gdb);
    let input = bare_addresses(&gdb);
    let offsets = module_offsets(pid, &gdb);
    kill_and_reap(&mut target);
    let pid_s = pid.to_string();
    // the CLI (its own reads fail: the process is gone; the daemon's record names)
    let out = annotate_via(d, None, &["--pid", &pid_s, "--format", "dtrace"], &input);
    let text = text_of(&out);
    let mut c = Counts::default();
    compare(&gdb, &text, &mut c).map_err(|e| format!("{label}: CLI: {e}"))?;
    // `libfoo.so+0xoff` frames, the same names
    let out = annotate_via(d, None, &["--pid", &pid_s, "--format", "dtrace"], &offsets);
    compare(&gdb, &text_of(&out), &mut Counts::default())
        .map_err(|e| format!("{label}: module offsets: {e}"))?;
    let r = d.connect().call(
        "annotate",
        json!({"text": offsets, "pid": pid, "format": "dtrace"}),
    );
    let method_text = r["result"]["text"]
        .as_str()
        .ok_or_else(|| format!("{label}: annotate method: {r}"))?;
    compare(&gdb, method_text, &mut Counts::default())
        .map_err(|e| format!("{label}: annotate method, module offsets: {e}"))?;
    // the daemon's own `annotate` method gives the same names
    let r = d.connect().call(
        "annotate",
        json!({"text": input, "pid": pid, "format": "dtrace"}),
    );
    let method_text = r["result"]["text"]
        .as_str()
        .ok_or_else(|| format!("{label}: annotate method: {r}"))?;
    compare(&gdb, method_text, &mut Counts::default())
        .map_err(|e| format!("{label}: annotate method: {e}"))?;
    // JSON: the same frames, marked
    let out = annotate_via(
        d,
        None,
        &["--pid", &pid_s, "--format", "dtrace", "--output", "json"],
        &input,
    );
    let json_text = text_of(&out);
    let mut marked = 0;
    for l in json_text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(l).map_err(|e| format!("{label}: {e}: {l}"))?;
        for f in v["native"].as_array().into_iter().flatten() {
            let named = f["named_by_pystackd"] == true;
            if named != (f["named_posthumously"] == true) {
                return Err(format!("{label}: JSON marks differ: {f}"));
            }
            marked += usize::from(named);
        }
    }
    let named = c.names_agreed + c.named_by_pystackd_only;
    if marked != named {
        return Err(format!(
            "{label}: {marked} frames marked in JSON, {named} named in text"
        ));
    }
    c.module_offsets = offsets
        .lines()
        .filter(|l| l.contains(".so") && l.contains("+0x"))
        .count();
    let msg = format!("{label}: {c:?}");
    counts.module_offsets += c.module_offsets;
    counts.frames += c.frames;
    counts.names_agreed += c.names_agreed;
    counts.named_by_pystackd_only += c.named_by_pystackd_only;
    counts.named_by_neither += c.named_by_neither;
    Ok(msg)
}

#[test]
fn exited_process_is_named_as_gdb_named_it_on_every_interpreter() {
    require!(testkit::tool("gdb"));
    let list = require!(pythons::all());
    set_debug_roots(&list);
    let d = Daemon::start(None);
    let mut failures = Vec::new();
    let mut counts = Counts::default();
    let mut checked = 0;
    for interp in &list {
        if interp.build == Build::Debian(Launch::Ldso) {
            // gdb loads no symbols of a program started through its ld.so, and its
            // unwinding ends in garbage: no names to compare with
            testkit::skip_case(format!("{}: gdb cannot unwind it", interp.label));
            continue;
        }
        match run_case(&d, interp, &mut counts) {
            Ok(msg) => {
                checked += 1;
                eprintln!("{msg}");
            }
            Err(e) => failures.push(e),
        }
    }
    eprintln!("total over {checked} interpreters: {counts:?}");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(checked > 0);
    assert!(counts.names_agreed > 0);
}

/// Named frames (`[= ` lines) of annotate's text.
fn count_named(text: &str) -> usize {
    text.lines()
        .filter(|l| l.trim_start().starts_with("[= "))
        .count()
}

#[test]
fn only_clients_allowed_while_it_ran_use_the_record() {
    require!(testkit::tool("gdb"));
    let owner = require!(TestUser::create());
    let other = require!(TestUser::create());
    let py = require!(testkit::python(&Want::any().usable_by_others()));
    let mut target = Target::spawn_as(&owner.run_as(), &py, "nested_eval.py", &[]);
    let pid = target.pid();
    let pid_s = pid.to_string();
    let d = Daemon::start(None);
    // the owner's client attaches: allowed, so recorded as allowed
    let out = owner
        .run_as()
        .command(pystackd_bin())
        .args(["attach", &pid_s, "--socket"])
        .arg(&d.socket)
        .env("PYSTACKD_CLIENT_TIMEOUT", "10")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // the other user is refused while it runs (the kernel's rule)
    let out = other
        .run_as()
        .command(pystackd_bin())
        .args(["stack", &pid_s, "--socket"])
        .arg(&d.socket)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    let mut gdb = gdb_threads(pid);
    drop_tail_calls(pid, &mut gdb);
    let input = bare_addresses(&gdb);
    kill_and_reap(&mut target);
    let args = ["--pid", pid_s.as_str(), "--format", "dtrace"];

    // the owner: every frame, as gdb named it
    let text = text_of(&annotate_via(&d, Some(&owner.run_as()), &args, &input));
    let mut c = Counts::default();
    compare(&gdb, &text, &mut c).unwrap();
    assert!(c.names_agreed > 0, "{c:?}");
    eprintln!("owner: {c:?}");

    // the other user: nothing, by the CLI, the annotate method or symbolize
    let text = text_of(&annotate_via(&d, Some(&other.run_as()), &args, &input));
    assert_eq!(count_named(&text), 0, "{text}");
    let addrs: Vec<u64> = gdb.iter().flat_map(|(_, f)| f).map(|f| f.addr).collect();
    let mut conn = other.run_as().command("/usr/bin/python3");
    // a raw JSON-RPC request as the other user (its connection's credentials are its own)
    let script = format!(
        "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.connect({:?})\n\
         s.sendall(sys.stdin.buffer.read())\nf=s.makefile('rb')\n\
         print(f.readline().decode(),end='')\nprint(f.readline().decode(),end='')\n",
        d.socket.display().to_string()
    );
    let reqs = format!(
        "{}\n{}\n",
        json!({"jsonrpc":"2.0","id":1,"method":"symbolize","params":{"pid":pid,"addresses":addrs}}),
        json!({"jsonrpc":"2.0","id":2,"method":"annotate","params":{"pid":pid,"text":input,"format":"dtrace"}})
    );
    let mut child = conn
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(reqs.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let replies: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(replies.len(), 2, "{out:?}");
    // the same answer as for a pid that never existed: nothing said about the record
    assert_eq!(replies[0]["error"]["code"], -32001, "{}", replies[0]);
    let t = replies[1]["result"]["text"].as_str().unwrap();
    assert_eq!(count_named(t), 0, "{t}");

    // root (privileged) may
    let text = text_of(&annotate_via(&d, None, &args, &input));
    compare(&gdb, &text, &mut Counts::default()).unwrap();
}

#[test]
fn record_is_not_used_after_it_expires() {
    require!(testkit::tool("gdb"));
    let py = require!(testkit::python(&Want::any().shared().symbols()));
    let d = Daemon::start(Some("posthumous_secs = 2\nsweep_interval_secs = 1\n"));
    let mut target = Target::spawn(&py, "nested_eval.py", &[]);
    let pid = target.pid();
    let r = d.connect().call("attach", json!({ "pid": pid }));
    assert!(r.get("result").is_some(), "{r}");
    let mut gdb = gdb_threads(pid);
    drop_tail_calls(pid, &mut gdb);
    let input = bare_addresses(&gdb);
    kill_and_reap(&mut target);
    let pid_s = pid.to_string();
    let args = ["--pid", pid_s.as_str(), "--format", "dtrace"];
    // within the time: named
    let text = text_of(&annotate_via(&d, None, &args, &input));
    let mut c = Counts::default();
    compare(&gdb, &text, &mut c).unwrap();
    assert!(c.names_agreed > 0, "{c:?}");
    // past it (and past a sweep): nothing
    std::thread::sleep(Duration::from_secs(4));
    let text = text_of(&annotate_via(&d, None, &args, &input));
    assert_eq!(count_named(&text), 0, "{text}");
    let r = d.connect().call(
        "symbolize",
        json!({"pid": pid, "addresses": [gdb[0].1[0].addr]}),
    );
    assert_eq!(r["error"]["code"], -32001, "{r}");
}

#[test]
fn killed_but_not_reaped_process_is_named_from_the_record() {
    require!(testkit::tool("gdb"));
    let py = require!(testkit::python(&Want::any().shared().symbols()));
    let d = Daemon::start(None);
    // our own child, so that it stays a zombie until this test reaps it
    let mut child = Command::new(&py.command)
        .args([
            "-c",
            "import time\ndef leaf():\n    time.sleep(1000)\nleaf()\n",
        ])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    // attached once the interpreter is up
    let t0 = Instant::now();
    loop {
        let r = d.connect().call("attach", json!({ "pid": pid }));
        if r.get("result").is_some() {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{r}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // in time.sleep by now, or soon: the gdb stack must hold it
    let mut gdb = Vec::new();
    while t0.elapsed() < Duration::from_secs(10) {
        gdb = gdb_threads(pid);
        if format!("{gdb:?}").contains("sleep") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    drop_tail_calls(pid, &mut gdb);
    let input = bare_addresses(&gdb);
    // SAFETY: kill(2) of our own child
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    let t0 = Instant::now();
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        if stat.rsplit_once(") ").unwrap().1.starts_with('Z') {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{stat}");
        std::thread::sleep(Duration::from_millis(10));
    }
    let pid_s = pid.to_string();
    let text = text_of(&annotate_via(
        &d,
        None,
        &["--pid", &pid_s, "--format", "dtrace"],
        &input,
    ));
    let mut c = Counts::default();
    compare(&gdb, &text, &mut c).unwrap();
    assert!(c.names_agreed > 0, "{c:?}");
    eprintln!("zombie: {c:?}");
    child.wait().unwrap();
}

#[test]
fn module_offsets_of_a_live_process_are_named_too() {
    require!(testkit::tool("gdb"));
    let py = require!(testkit::python(&Want::any().shared().symbols()));
    let target = Target::spawn(&py, "nested_eval.py", &[]);
    let pid = target.pid();
    let mut gdb = gdb_threads(pid);
    drop_tail_calls(pid, &mut gdb);
    let offsets = module_offsets(pid, &gdb);
    let out =
        testkit::tools::annotate(&["--pid", &pid.to_string(), "--format", "dtrace"], &offsets);
    let text = String::from_utf8_lossy(&out.stdout);
    let mut c = Counts::default();
    compare_marked(&gdb, &text, " (named by pystackd) ]", &mut c).unwrap();
    assert!(c.names_agreed > 0, "{c:?}");
    // the eval frames, named from `libpython...so+0x...`, got their Python frames
    assert!(text.contains("[~ ") || text.contains("[ "), "{text}");
    eprintln!("live: {c:?}");
}
