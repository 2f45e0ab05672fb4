//! `pystackd stack --native` end to end, on every interpreter: a target blocked in known
//! places (nested_eval.py: C code calling back into Python several times per thread), its
//! native stacks from pystackd and from gdb's `thread apply all bt` of the same (still
//! blocked) process, compared frame by frame, and the Python frames placed under the eval
//! frames compared with the target's own ground truth.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;
use testkit::pythons::{self, Build, Launch};
use testkit::tools::{gdb_all_threads, header_tid};
use testkit::{pystackd_bin, require, Interpreter, Target};

/// One physical frame of gdb's backtrace: its pc (gdb omits it for a frame 0 at the start
/// of a line) and the name of the function the symbol table names (gdb prints the inlined
/// functions at the same pc first; the outermost of them is the real one).
#[derive(Debug, Clone)]
struct GdbFrame {
    addr: Option<u64>,
    name: Option<String>,
}

fn parse_gdb(text: &str) -> HashMap<u64, Vec<GdbFrame>> {
    let mut threads: HashMap<u64, Vec<GdbFrame>> = HashMap::new();
    let mut cur: Option<u64> = None;
    for line in text.lines() {
        if line.starts_with("Thread ") {
            cur = header_tid(line);
            if let Some(t) = cur {
                threads.insert(t, Vec::new());
            }
            continue;
        }
        let (Some(t), Some(g)) = (cur, testkit::tools::gdb_frame_line(line)) else {
            continue;
        };
        let (addr, name) = (g.addr, g.name.clone());
        let frames = threads.get_mut(&t).unwrap();
        if g.physical() {
            frames.push(GdbFrame { addr, name });
        } else if let Some(last) = frames.last_mut() {
            // inlined into the physical frame above: the outermost name is the symbol's
            last.name = name.or(last.name.take());
        }
    }
    threads
}

/// A name without what differs between gdb's DWARF name and the symbol table's alias at
/// the same address: compiler clone suffixes (`.constprop.0`, `.cold`), glibc's internal
/// prefixes (`__GI_`, leading underscores) and `_impl` implementations of versioned entries.
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

/// Debian's `-dbg` debug files of this build's version, when tests/run fetched them.
fn debug_root(interp: &Interpreter) -> Option<PathBuf> {
    if !matches!(interp.build, Build::Debian(_)) {
        return None;
    }
    let d = pythons::debug_info_root().join(format!("py{}/root/usr/lib/debug", interp.xy()));
    d.join(".build-id").is_dir().then_some(d)
}

fn stack_native(pid: u32, extra: &[&str]) -> std::process::Output {
    Command::new(pystackd_bin())
        .arg("--no-daemon")
        .args(["stack", "--native"])
        .args(extra)
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .output()
        .expect("pystackd runs")
}

#[derive(Default, Debug)]
struct Counts {
    threads: usize,
    frames: usize,
    addresses_compared: usize,
    names_agreed: usize,
    gdb_tail_calls: usize,
    named_by_pystackd_only: usize,
    named_by_neither: usize,
    python_frames: usize,
}

/// (filename, line, function) of a JSON Python frame.
fn py_frame(f: &Value) -> (String, Option<u32>, String) {
    (
        f["filename"].as_str().unwrap_or("").to_string(),
        f["line"].as_u64().map(|l| l as u32),
        f["function"].as_str().unwrap_or("").to_string(),
    )
}

fn run_case(interp: &Interpreter, counts: &mut Counts) -> Result<String, String> {
    let target = Target::try_spawn(interp, "nested_eval.py", &[])?;
    let pid = target.pid();
    let label = target.label().to_string();
    let out = stack_native(pid, &["--json"]);
    if !out.status.success() {
        return Err(format!(
            "{label}: stack --native exit {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let json: Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("{label}: bad JSON: {e}"))?;
    // the target is still blocked where it was: gdb sees the same stacks
    let gdb_text = gdb_all_threads(pid);
    let gdb = parse_gdb(&gdb_text);
    let threads = json["threads"].as_array().ok_or("no threads")?;
    let ours: BTreeSet<u64> = threads
        .iter()
        .filter_map(|t| t["os_tid"].as_u64())
        .collect();
    let theirs: BTreeSet<u64> = gdb.keys().copied().collect();
    if ours != theirs {
        return Err(format!(
            "{label}: threads differ: pystackd {ours:?}, gdb {theirs:?}\n{gdb_text}"
        ));
    }
    let gdb_unwinds = interp.build != Build::Debian(Launch::Ldso);
    let mut c = Counts {
        threads: ours.len(),
        ..Counts::default()
    };
    let mut notes = Vec::new();
    for t in threads {
        let tid = t["os_tid"].as_u64().unwrap();
        let frames = t["frames"].as_array().unwrap();
        let g = &gdb[&tid];
        c.frames += frames.len();
        let diff = || {
            let mine: Vec<String> = frames
                .iter()
                .map(|f| {
                    format!(
                        "{:#x} {}",
                        f["address"].as_u64().unwrap_or(0),
                        f["symbol"].as_str().unwrap_or("?")
                    )
                })
                .collect();
            let theirs: Vec<String> = g
                .iter()
                .map(|f| {
                    format!(
                        "{:#x} {}",
                        f.addr.unwrap_or(0),
                        f.name.as_deref().unwrap_or("?")
                    )
                })
                .collect();
            format!(
                "pystackd:\n  {}\ngdb:\n  {}",
                mine.join("\n  "),
                theirs.join("\n  ")
            )
        };
        // Pair the frames in order. gdb may show more: its tail-call frames (a function
        // that ended in a jump to another, shown from DWARF call-site information: no
        // return address of it is on the stack, so no unwinder sees it), which sit between
        // two frames both list. Through its own ld.so gdb loads no symbols of the program
        // and its unwinding ends in garbage after the first frames: compared up to there.
        let same = |f: &Value, g: &GdbFrame| g.addr.is_none() || f["address"].as_u64() == g.addr;
        let mut pairs = Vec::new();
        let mut j = 0;
        for (i, f) in frames.iter().enumerate() {
            if j < g.len() && !same(f, &g[j]) {
                // gdb-only tail-call frames before the one matching this
                let skip = (j + 1..g.len().min(j + 4)).find(|&k| same(f, &g[k]));
                match skip {
                    Some(k) if gdb_unwinds => {
                        c.gdb_tail_calls += k - j;
                        j = k;
                    }
                    _ if !gdb_unwinds => break,
                    _ => {
                        return Err(format!(
                            "{label}: thread {tid} frame {i}: address {:#x}, gdb {:#x}\n{}",
                            f["address"].as_u64().unwrap_or(0),
                            g[j].addr.unwrap_or(0),
                            diff()
                        ))
                    }
                }
            }
            if j >= g.len() {
                if gdb_unwinds {
                    return Err(format!(
                        "{label}: thread {tid}: frame {i} and on are not in gdb's\n{}",
                        diff()
                    ));
                }
                break;
            }
            pairs.push((i, f, &g[j]));
            j += 1;
        }
        if gdb_unwinds && j < g.len() {
            return Err(format!(
                "{label}: thread {tid}: gdb's frames from {j} on are missing\n{}",
                diff()
            ));
        }
        if !gdb_unwinds {
            notes.push(format!(
                "thread {tid}: {} of {} frames as gdb",
                pairs.len(),
                frames.len()
            ));
        }
        for (i, f, gf) in pairs {
            if gf.addr.is_some() {
                c.addresses_compared += 1;
            }
            match (f["symbol"].as_str(), gf.name.as_deref()) {
                (Some(s), Some(gn)) => {
                    if normalize(s) != normalize(gn) {
                        return Err(format!(
                            "{label}: thread {tid} frame {i}: {s}, gdb {gn}\n{}",
                            diff()
                        ));
                    }
                    c.names_agreed += 1;
                }
                (None, Some(gn)) => {
                    // a frame gdb names from DWARF and no symbol table covers: none expected
                    return Err(format!(
                        "{label}: thread {tid} frame {i}: unnamed, gdb {gn}\n{}",
                        diff()
                    ));
                }
                (Some(_), None) => c.named_by_pystackd_only += 1,
                (None, None) => c.named_by_neither += 1,
            }
        }
    }
    // the Python frames: under the eval frames (or, unplaced, after them) exactly the
    // target's own view of each thread
    let truth = target.truth();
    let mut unplaced = 0;
    for tt in &truth.threads {
        let t = threads
            .iter()
            .find(|t| t["os_tid"].as_u64() == Some(tt.native_id))
            .ok_or_else(|| format!("{label}: no thread {}", tt.native_id))?;
        let placed: Vec<_> = t["frames"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|f| f["python"].as_array().cloned().unwrap_or_default())
            .map(|f| py_frame(&f))
            .collect();
        let rest: Vec<_> = t["unplaced_python"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(py_frame)
            .collect();
        let want: Vec<_> = tt
            .frames
            .iter()
            .map(|f| (f.filename.clone(), f.line, f.function.clone()))
            .collect();
        let have = if placed.is_empty() && !rest.is_empty() {
            unplaced += 1;
            rest
        } else {
            if !rest.is_empty() {
                return Err(format!(
                    "{label}: thread {}: placed and unplaced frames",
                    tt.native_id
                ));
            }
            placed
        };
        if have != want {
            return Err(format!(
                "{label}: thread {} ({}): Python frames\n  want {want:?}\n  have {have:?}",
                tt.native_id, tt.name
            ));
        }
        c.python_frames += want.len();
    }
    if unplaced > 0 {
        testkit::skip_case(format!(
            "{label}: no eval-loop symbol in this build: the Python frames of {unplaced} \
             threads are printed after the native ones"
        ));
    }
    let msg = format!(
        "ok {label}: {} threads, {} frames, {} addresses as gdb's, {} names as gdb's, {} named \
         by pystackd only, {} by neither, {} gdb tail-call frames, {} Python frames{}",
        c.threads,
        c.frames,
        c.addresses_compared,
        c.names_agreed,
        c.named_by_pystackd_only,
        c.named_by_neither,
        c.gdb_tail_calls,
        c.python_frames,
        if notes.is_empty() {
            String::new()
        } else {
            format!(" ({})", notes.join("; "))
        }
    );
    counts.threads += c.threads;
    counts.frames += c.frames;
    counts.addresses_compared += c.addresses_compared;
    counts.names_agreed += c.names_agreed;
    counts.named_by_pystackd_only += c.named_by_pystackd_only;
    counts.named_by_neither += c.named_by_neither;
    counts.python_frames += c.python_frames;
    counts.gdb_tail_calls += c.gdb_tail_calls;
    Ok(msg)
}

#[test]
fn native_stacks_agree_with_gdb_on_every_interpreter() {
    require!(testkit::tool("gdb"));
    let list = require!(pythons::all());
    // the system's debug root too (glibc's local functions, as gdb names them), then the
    // Debian builds' `-dbg` files
    let roots: Vec<String> = std::iter::once(PathBuf::from("/usr/lib/debug"))
        .chain(list.iter().filter_map(debug_root))
        .map(|d| d.display().to_string())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    std::env::set_var("PYSTACKD_DEBUG_ROOT", roots.join(":"));
    let mut failures = Vec::new();
    let mut counts = Counts::default();
    let mut checked = 0;
    for interp in &list {
        match run_case(interp, &mut counts) {
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
}

#[test]
fn text_output_puts_python_frames_under_eval_frames() {
    let py = require!(testkit::python(&testkit::Want::any().shared().symbols()));
    let target = Target::spawn(&py, "nested_eval.py", &[]);
    let out = stack_native(target.pid(), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    let mut under_eval = 0;
    for (i, l) in lines.iter().enumerate() {
        if l.trim_start().starts_with("[ ") {
            // the nearest native frame above is an eval-loop frame
            let above = lines[..i]
                .iter()
                .rev()
                .find(|l| !l.trim_start().starts_with("[ "))
                .unwrap();
            assert!(
                above.contains("`_PyEval_EvalFrameDefault"),
                "{above}\n{text}"
            );
            under_eval += 1;
        }
    }
    let truth: usize = target.truth().threads.iter().map(|t| t.frames.len()).sum();
    assert_eq!(under_eval, truth, "{text}");
    for t in &target.truth().threads {
        assert!(text.contains(&format!("Thread {}", t.native_id)), "{text}");
    }
    // resumed: no thread left stopped or traced, none with a tracer
    let pid = target.pid();
    for e in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let tid = e.unwrap().file_name();
        let tid = tid.to_string_lossy();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).unwrap();
        let state = stat.rsplit_once(") ").unwrap().1.chars().next().unwrap();
        assert!(
            !matches!(state, 't' | 'T'),
            "thread {tid} left in state {state}"
        );
        let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap();
        assert!(
            status.contains("TracerPid:\t0\n"),
            "thread {tid} still traced"
        );
    }
}

#[test]
fn dead_pid_and_non_python_process() {
    // a pid that held a process which has exited: 3
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let out = stack_native(dead, &[]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // a live process that runs no Python: 4, and it keeps running
    let mut sleeper = Command::new("sleep").arg("60").spawn().unwrap();
    let out = stack_native(sleeper.id(), &[]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(sleeper.try_wait().unwrap().is_none());
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
}
