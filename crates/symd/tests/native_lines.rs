//! `--native-lines`: the DWARF source file, line and inlined functions of native frames,
//! checked against gdb's `bt` of the same (blocked) process, which prints `at file:line`
//! for every frame and the functions inlined at each pc as frames of their own: on every
//! interpreter with debug info (shared libpython with symbols), for `stack --native` and for
//! `annotate` (live, and through the daemon after the target exited).

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::daemon::Daemon;
use testkit::tools::header_tid;
use testkit::{pystackd_bin, require, Interpreter, Target, Want};

/// One source-level frame: function, file, line.
type Src = (String, String, u32);

/// One physical frame of gdb's backtrace: its pc (`None` for a frame 0 gdb prints without
/// one), and the source frames gdb prints for it, innermost (inlined) first: `None` when
/// gdb has no line for one of them (no debug info).
#[derive(Debug, Clone)]
struct GdbFrame {
    addr: Option<u64>,
    chain: Option<Vec<Src>>,
}

/// `FUNC (args) at FILE:LINE` → (FUNC, FILE, LINE).
fn parse_src(func_and_rest: &str) -> Option<Src> {
    let func = func_and_rest.split(" (").next()?.trim().to_string();
    let (_, loc) = func_and_rest.rsplit_once(") at ")?;
    let (file, line) = loc.trim().rsplit_once(':')?;
    Some((func, file.to_string(), line.parse().ok()?))
}

/// gdb's `thread apply all bt`, per thread (in gdb's order).
fn gdb_threads(text: &str) -> Vec<(u64, Vec<GdbFrame>)> {
    let mut out: Vec<(u64, Vec<GdbFrame>)> = Vec::new();
    for line in text.lines() {
        if line.starts_with("Thread ") {
            if let Some(t) = header_tid(line) {
                out.push((t, Vec::new()));
            }
            continue;
        }
        let (Some((_, frames)), Some(g)) = (out.last_mut(), testkit::tools::gdb_frame_line(line))
        else {
            continue;
        };
        let addr = g.addr;
        let src = parse_src(g.func);
        if g.physical() {
            frames.push(GdbFrame {
                addr,
                chain: src.map(|s| vec![s]),
            });
        } else if let Some(last) = frames.last_mut() {
            // a function the frame above was inlined into: the next entry of its chain
            last.chain = match (last.chain.take(), src) {
                (Some(mut c), Some(s)) => {
                    c.push(s);
                    Some(c)
                }
                _ => None,
            };
        }
    }
    out
}

fn gdb_text(pid: u32) -> String {
    let out = Command::new("gdb")
        .args(["-batch", "-nx", "-p", &pid.to_string()])
        .args(["-ex", "thread apply all bt"])
        .stdin(Stdio::null())
        .output()
        .expect("gdb runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Our JSON `source` list as (function, file, line).
fn ours(source: &Value) -> Vec<Src> {
    source
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                s["function"].as_str().unwrap_or("??").to_string(),
                s["file"].as_str().unwrap_or("??").to_string(),
                s["line"].as_u64().unwrap_or(0) as u32,
            )
        })
        .collect()
}

#[derive(Debug, Default)]
struct Counts {
    frames_compared: usize,
    source_lines_compared: usize,
    inlined_compared: usize,
    gdb_without_lines: usize,
    /// Where DWARF has several line rows at the address (location views) and gdb printed
    /// another row than binutils' `addr2line -f -i`: these agree with binutils.
    gdb_other_row_binutils_agrees: usize,
    /// gdb's tail-call frames in annotate's input (see [`is_tail_call`]): not compared.
    gdb_tail_calls: usize,
}

/// gdb's tail-call frames: a function that ended with a jump to another has no return
/// address on the stack; gdb reconstructs the frame from DWARF call-site information with
/// its pc right after the `jmp`, and names only the innermost function there. Told by the
/// target's own code: the 5 bytes before the pc are a `jmp rel32` (0xe9), not a call.
fn is_tail_call(pid: u32, addr: u64) -> bool {
    use std::os::unix::fs::FileExt;
    let mut b = [0u8; 5];
    std::fs::File::open(format!("/proc/{pid}/mem"))
        .and_then(|m| m.read_exact_at(&mut b, addr - 5))
        .is_ok()
        && b[0] == 0xe9
}

/// binutils' `addr2line -f -i` of address `addr` of live process `pid`: the mapping's
/// file, the file offset, the PT_LOAD segment's virtual address (readelf).
fn binutils(pid: u32, addr: u64) -> Option<Vec<Src>> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let (start, off, path) = maps.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let (a, b) = f.first()?.split_once('-')?;
        let (a, b) = (
            u64::from_str_radix(a, 16).ok()?,
            u64::from_str_radix(b, 16).ok()?,
        );
        (a <= addr && addr < b && f.len() >= 6)
            .then(|| Some((a, u64::from_str_radix(f[2], 16).ok()?, f[5].to_string())))?
    })?;
    let file_off = addr - start + off;
    let re = Command::new("readelf").args(["-lW", &path]).output().ok()?;
    let vaddr = String::from_utf8_lossy(&re.stdout).lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.first() != Some(&"LOAD") {
            return None;
        }
        let h = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
        let (o, v, sz) = (h(f[1])?, h(f[2])?, h(f[4])?);
        (o <= file_off && file_off < o + sz).then_some(file_off - o + v)
    })?;
    let out = Command::new("addr2line")
        .args(["-f", "-i", "-e", &path, &format!("{vaddr:#x}")])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    Some(
        lines
            .chunks(2)
            .filter(|c| c.len() == 2)
            .map(|c| {
                let (file, line) = c[1].rsplit_once(':').unwrap_or((c[1], "0"));
                let line = line.split_whitespace().next().unwrap_or("0");
                (
                    c[0].to_string(),
                    file.to_string(),
                    line.parse().unwrap_or(0),
                )
            })
            .collect(),
    )
}

/// Our source frames against gdb's: same functions and lines, innermost first; DWARF's
/// file joined with the compilation directory ends with the name gdb prints.
fn same(
    mine: &[Src],
    gdb: &[Src],
    alt: impl FnOnce() -> Option<Vec<Src>>,
    counts: &mut Counts,
) -> Result<(), String> {
    let show = || format!("pystackd {mine:?}\ngdb      {gdb:?}");
    if mine.len() != gdb.len() {
        return Err(format!(
            "{} source frames, gdb {}\n{}",
            mine.len(),
            gdb.len(),
            show()
        ));
    }
    if mine.iter().zip(gdb).any(|(m, g)| m.0 != g.0) {
        return Err(show());
    }
    let located = |m: &Src, g: &Src| m.2 == g.2 && m.1.ends_with(g.1.trim_start_matches("./"));
    if !mine.iter().zip(gdb).all(|(m, g)| located(m, g)) {
        // gdb and binutils pick different rows where DWARF has several at one address
        let b = alt().unwrap_or_default();
        if b.as_slice() != mine {
            return Err(format!("{}\nbinutils {b:?}", show()));
        }
        counts.gdb_other_row_binutils_agrees += 1;
    }
    counts.frames_compared += 1;
    counts.source_lines_compared += mine.len();
    counts.inlined_compared += mine.len() - 1;
    Ok(())
}

/// Compare one thread's frames (address, source) with gdb's: each of ours is paired with
/// gdb's frame of the same address (the innermost with gdb's first); gdb's tail-call frames
/// (no return address on the stack) have no partner and are passed over.
fn compare_thread(
    pid: u32,
    innermost_first: bool,
    mine: &[(Option<u64>, Vec<Src>)],
    gdb: &[GdbFrame],
    counts: &mut Counts,
) -> Result<(), String> {
    let by_addr: HashMap<u64, &GdbFrame> = gdb.iter().filter_map(|g| Some((g.addr?, g))).collect();
    for (i, (addr, src)) in mine.iter().enumerate() {
        let i = i + usize::from(!innermost_first);
        let g = if i == 0 {
            gdb.first()
        } else {
            addr.and_then(|a| by_addr.get(&a).copied())
        };
        let Some(g) = g else { continue };
        if i > 0 && addr.is_some_and(|a| is_tail_call(pid, a)) {
            counts.gdb_tail_calls += 1;
            continue;
        }
        match &g.chain {
            Some(chain) => {
                // a return address's line is its call's, one byte back
                let lookup = addr.map(|a| if i == 0 { a } else { a - 1 });
                let alt = || binutils(pid, lookup?);
                same(src, chain, alt, counts).map_err(|e| format!("frame {i} {addr:#x?}: {e}"))?
            }
            None => counts.gdb_without_lines += 1,
        }
    }
    Ok(())
}

fn stack_case(interp: &Interpreter, counts: &mut Counts) -> Result<String, String> {
    let target = Target::try_spawn(interp, "nested_eval.py", &[])?;
    let pid = target.pid();
    let label = target.label().to_string();
    let out = Command::new(pystackd_bin())
        .args([
            "--no-daemon",
            "stack",
            "--native",
            "--native-lines",
            "--json",
        ])
        .arg(pid.to_string())
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(format!("{label}: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("{label}: {e}"))?;
    let gdb: HashMap<u64, Vec<GdbFrame>> = gdb_threads(&gdb_text(pid)).into_iter().collect();
    let mut c = Counts::default();
    for t in v["threads"].as_array().unwrap() {
        let tid = t["os_tid"].as_u64().unwrap();
        let g = gdb
            .get(&tid)
            .ok_or(format!("{label}: gdb has no thread {tid}"))?;
        let mine: Vec<(Option<u64>, Vec<Src>)> = t["frames"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (f["address"].as_u64(), ours(&f["source"])))
            .collect();
        compare_thread(pid, true, &mine, g, &mut c)
            .map_err(|e| format!("{label}: thread {tid}: {e}"))?;
    }
    if c.inlined_compared == 0 {
        return Err(format!("{label}: no inlined frame compared: {c:?}"));
    }
    let msg = format!("{label}: {c:?}");
    counts.frames_compared += c.frames_compared;
    counts.source_lines_compared += c.source_lines_compared;
    counts.inlined_compared += c.inlined_compared;
    counts.gdb_without_lines += c.gdb_without_lines;
    counts.gdb_other_row_binutils_agrees += c.gdb_other_row_binutils_agrees;
    counts.gdb_tail_calls += c.gdb_tail_calls;
    Ok(msg)
}

#[test]
fn stack_native_lines_agree_with_gdb() {
    require!(testkit::tool("gdb"));
    let list = require!(testkit::pythons::pythons(&Want::any().shared().symbols()));
    let mut counts = Counts::default();
    let mut failures = Vec::new();
    for interp in &list {
        match stack_case(interp, &mut counts) {
            Ok(m) => eprintln!("{m}"),
            Err(e) => failures.push(e),
        }
    }
    eprintln!("total over {} interpreters: {counts:?}", list.len());
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn text_output_lists_source_lines_under_each_frame() {
    let py = require!(testkit::python(&Want::any().shared().symbols()));
    let target = Target::spawn(&py, "nested_eval.py", &[]);
    let out = Command::new(pystackd_bin())
        .args(["--no-daemon", "stack", "--native", "--native-lines"])
        .arg(target.pid().to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    // every `[@` line sits under a frame line or another `[@` line, never under Python's
    let lines: Vec<&str> = text.lines().collect();
    let mut at = 0;
    for (i, l) in lines.iter().enumerate() {
        if l.trim_start().starts_with("[@ ") {
            at += 1;
            let above = lines[i - 1].trim_start();
            assert!(
                above.starts_with("[@ ") || above.contains('`'),
                "{above}\n{text}"
            );
            assert!(l.trim_end().ends_with(") ]"), "{l}");
        }
    }
    assert!(at > 0, "{text}");
    assert!(text.contains(", inlined) ]"), "{text}");
    // without the option: none
    let out = Command::new(pystackd_bin())
        .args(["--no-daemon", "stack", "--native"])
        .arg(target.pid().to_string())
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("[@ "));
    // and the option alone is refused as a usage error
    let out = Command::new(pystackd_bin())
        .args(["--no-daemon", "stack", "--native-lines"])
        .arg(target.pid().to_string())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

fn annotate_json(args: &[&str], input: &str) -> Output {
    let mut child = Command::new(pystackd_bin())
        .arg("annotate")
        .args(args)
        .args(["--native-lines", "--output", "json", "--format", "gdb"])
        .env("PYSTACKD_CLIENT_TIMEOUT", "10")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_string();
    let w = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let out = child.wait_with_output().unwrap();
    w.join().unwrap();
    out
}

/// annotate's JSON records (one per gdb thread, in order) against gdb's own lines: gdb's
/// frames with an address (the physical ones) carry the source frames of gdb's chain.
fn compare_annotate(
    pid: u32,
    out: &Output,
    gdb: &[(u64, Vec<GdbFrame>)],
) -> Result<Counts, String> {
    let text = String::from_utf8_lossy(&out.stdout);
    let recs: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| format!("{e}: {l}")))
        .collect::<Result<_, _>>()?;
    if recs.len() != gdb.len() {
        return Err(format!(
            "{} records, {} gdb threads: {}",
            recs.len(),
            gdb.len(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let mut c = Counts::default();
    for (r, (tid, g)) in recs.iter().zip(gdb) {
        // frames with an address only: gdb's inline-only lines and a frame 0 gdb printed
        // without its pc carry none, so annotate has nothing to look up
        let frames = r["native"].as_array().unwrap();
        let innermost_first = frames.first().is_some_and(|f| f["address"].is_u64());
        let mine: Vec<(Option<u64>, Vec<Src>)> = frames
            .iter()
            .filter(|f| f["address"].is_u64())
            .map(|f| (f["address"].as_u64(), ours(&f["source"])))
            .collect();
        compare_thread(pid, innermost_first, &mine, g, &mut c)
            .map_err(|e| format!("thread {tid}: {e}"))?;
    }
    Ok(c)
}

/// Every native frame's `source` of annotate's JSON records.
fn sources_of(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .flat_map(|r| r["native"].as_array().cloned().unwrap_or_default())
        .map(|f| f["source"].clone())
        .collect()
}

#[test]
fn annotate_native_lines_agree_with_gdb_live_and_posthumously() {
    require!(testkit::tool("gdb"));
    require!(testkit::tool("addr2line"));
    let py = require!(testkit::python(&Want::version("3.12").shared().symbols()));
    let d = Daemon::start(None);
    let mut target = Target::spawn(&py, "nested_eval.py", &[]);
    let pid = target.pid();
    let pid_s = pid.to_string();
    let r = d.connect().call("attach", json!({ "pid": pid }));
    assert!(r.get("result").is_some(), "{r}");
    let text = gdb_text(pid);
    let gdb = gdb_threads(&text);

    // live, read directly: against gdb
    let live = annotate_json(&["--no-daemon", "--pid", &pid_s], &text);
    let c = compare_annotate(pid, &live, &gdb).unwrap();
    eprintln!("live: {c:?}");
    assert!(c.inlined_compared > 0, "{c:?}");
    let live_sources = sources_of(&live);
    let total: usize = live_sources
        .iter()
        .map(|s| s.as_array().map_or(0, Vec::len))
        .sum();

    // after the target exited: the same, through the daemon's record
    target.kill();
    let t0 = Instant::now();
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(t0.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(20));
    }
    let sock = d.socket.display().to_string();
    let dead = annotate_json(&["--pid", &pid_s, "--socket", &sock], &text);
    assert_eq!(
        sources_of(&dead),
        live_sources,
        "{}",
        String::from_utf8_lossy(&dead.stderr)
    );
    // and the daemon's annotate method: one `[@` line per source frame
    let r = d.connect().call(
        "annotate",
        json!({"pid": pid, "text": text, "format": "gdb", "native_lines": true}),
    );
    let t = r["result"]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"));
    let at_lines = t
        .lines()
        .filter(|l| l.trim_start().starts_with("[@ "))
        .count();
    assert_eq!(at_lines, total, "{t}");
}
