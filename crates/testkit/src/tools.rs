//! Native-stack tools the tests drive: gdb captures, gdb's text rewritten into DTrace's
//! `ustack()` layout (no DTrace on Linux: the same stacks in the other tool's layout, for the
//! tests and the annotate benchmark), and `pystackd --no-daemon annotate`.

use std::process::{Command, Stdio};

/// `gdb -batch -p PID -ex 'thread apply all bt'`, as a user would run it.
pub fn gdb_all_threads(pid: u32) -> String {
    gdb(pid, "thread apply all bt")
}

/// `gdb -batch -p PID -ex bt`: the stack of the thread gdb stops first (the main thread).
pub fn gdb_bt(pid: u32) -> String {
    gdb(pid, "bt")
}

fn gdb(pid: u32, command: &str) -> String {
    let out = Command::new("gdb")
        .args(["-batch", "-nx", "-p", &pid.to_string()])
        .args(["-ex", command])
        .stdin(Stdio::null())
        .output()
        .expect("gdb runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether gdb named the eval loop at all (a binary without symbols shows `??`).
pub fn names_eval_loop(gdb: &str) -> bool {
    gdb.contains("_PyEval_EvalFrame") || gdb.contains("_TAIL_CALL_")
}

/// `pystackd --no-daemon annotate ARGS` with `input` on its standard input.
pub fn annotate(args: &[&str], input: &str) -> std::process::Output {
    let mut cmd = Command::new(crate::pystackd_bin());
    cmd.arg("--no-daemon").arg("annotate").args(args);
    output_with_input(cmd, input)
}

/// Run `cmd` with `input` on its standard input (written from another thread, so a
/// command that prints before it has read everything cannot block the test), its output
/// captured.
pub fn output_with_input(mut cmd: Command, input: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the command runs");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_string();
    let w = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let out = child.wait_with_output().unwrap();
    w.join().unwrap();
    out
}

/// One frame line of gdb's `bt`: `#N  0xADDR in FUNC (ARGS) at FILE:LINE` (an outer frame),
/// `#0  FUNC (...)` (the innermost, no address), or `#N  FUNC (...)` without an address (a
/// function the frame above was inlined into).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GdbFrameLine<'a> {
    /// The frame number, as gdb prints it.
    pub num: &'a str,
    pub addr: Option<u64>,
    /// Everything after the address's ` in ` (or the whole rest without an address).
    pub func: &'a str,
    /// The function's name (`None` for gdb's `??`).
    pub name: Option<String>,
}

impl GdbFrameLine<'_> {
    /// A physical frame (not one the frame above was inlined into).
    pub fn physical(&self) -> bool {
        self.addr.is_some() || self.num == "0"
    }
}

/// `line` as a gdb `bt` frame line, if it is one.
pub fn gdb_frame_line(line: &str) -> Option<GdbFrameLine<'_>> {
    let rest = line.strip_prefix('#')?;
    let digits = rest.chars().take_while(char::is_ascii_digit).count();
    let num = &rest[..digits];
    let rest = rest[digits..].trim();
    let (addr, func) = match rest.strip_prefix("0x") {
        Some(a) => {
            let hex = a.chars().take_while(char::is_ascii_hexdigit).count();
            let func = a[hex..].strip_prefix(" in ").unwrap_or("??");
            (u64::from_str_radix(&a[..hex], 16).ok(), func)
        }
        None => (None, rest),
    };
    let name = func
        .split(" (")
        .next()
        .map(str::trim)
        .filter(|s| *s != "??" && !s.is_empty())
        .map(str::to_string);
    Some(GdbFrameLine {
        num,
        addr,
        func,
        name,
    })
}

/// The tid a stack header names: gdb's `(LWP N)`, or a `tid=N` line.
pub fn header_tid(line: &str) -> Option<u64> {
    let rest = if let Some(p) = line.find("(LWP ") {
        &line[p + 5..]
    } else {
        line.strip_prefix("tid=")
            .or_else(|| line.split_whitespace().find_map(|w| w.strip_prefix("tid=")))?
    };
    let n: String = rest.chars().take_while(char::is_ascii_digit).collect();
    n.parse().ok()
}

/// The mappings of `pid` as (start, end, basename), to name the module of an address the
/// way DTrace does.
fn modules(pid: u32) -> Vec<(u64, u64, String)> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    maps.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (a, b) = f.next()?.split_once('-')?;
            let path = f.nth(4)?;
            let name = path.rsplit('/').next()?.to_string();
            Some((
                u64::from_str_radix(a, 16).ok()?,
                u64::from_str_radix(b, 16).ok()?,
                name,
            ))
        })
        .collect()
}

/// Rewrites gdb's `thread apply all bt` into DTrace's `ustack()` layout: per thread a
/// `tid=N` line (the probe's printf), a blank line, then `module`symbol+0xoff` frames
/// indented 14 spaces. DTrace sees physical frames only: gdb's inlined frames (no address)
/// belong to the frame above them, whose symbol is the outermost function of that chain
/// (the one the symbol table names for the address). Offsets are not known from gdb's text
/// and take no part in matching: 0x0.
pub fn gdb_to_dtrace(gdb: &str, pid: u32) -> String {
    let mods = modules(pid);
    let mut out = String::new();
    // the pending physical frame: (address, outermost symbol so far)
    let mut pending: Option<(Option<u64>, Option<String>)> = None;
    let flush = |out: &mut String, p: &mut Option<(Option<u64>, Option<String>)>| {
        if let Some((addr, sym)) = p.take() {
            let module = addr
                .and_then(|a| mods.iter().find(|(s, e, _)| *s <= a && a < *e))
                .map(|m| m.2.as_str())
                .unwrap_or("unknown");
            match (sym, addr) {
                (Some(s), _) => out.push_str(&format!("              {module}`{s}+0x0\n")),
                (None, Some(a)) => out.push_str(&format!("              {module}`0x{a:x}\n")),
                (None, None) => out.push_str("              0x0\n"),
            }
        }
    };
    for line in gdb.lines() {
        if let Some(tid) = line
            .starts_with("Thread ")
            .then(|| header_tid(line))
            .flatten()
        {
            flush(&mut out, &mut pending);
            out.push_str(&format!("tid={tid}\n\n"));
            continue;
        }
        let Some(g) = gdb_frame_line(line) else {
            continue;
        };
        let (addr, sym) = (g.addr, g.name.clone());
        if g.physical() {
            flush(&mut out, &mut pending);
            pending = Some((addr, sym));
        } else if let Some(p) = pending.as_mut() {
            // inlined into the physical frame: the outermost name wins
            p.1 = sym.or(p.1.take());
        }
    }
    flush(&mut out, &mut pending);
    out
}

#[cfg(test)]
mod gdb_tests {
    use super::*;

    #[test]
    fn gdb_frame_lines() {
        let g = gdb_frame_line("#3  0x00007f1c2a4b5c6d in _PyEval_EvalFrameDefault (tstate=0x1) at Python/ceval.c:4000").unwrap();
        assert_eq!((g.num, g.addr), ("3", Some(0x7f1c2a4b5c6d)));
        assert_eq!(g.name.as_deref(), Some("_PyEval_EvalFrameDefault"));
        assert!(g.physical());
        let g =
            gdb_frame_line("#0  __futex_abstimed_wait_common (cancel=true) at futex.c:57").unwrap();
        assert_eq!(
            (g.addr, g.name.as_deref(), g.physical()),
            (None, Some("__futex_abstimed_wait_common"), true)
        );
        let g = gdb_frame_line("#4  inlined_fn (x=1) at a.c:3").unwrap();
        assert!(!g.physical());
        let g = gdb_frame_line("#5  0x0000000000401000 in ?? ()").unwrap();
        assert_eq!((g.addr, g.name), (Some(0x401000), None));
        assert!(gdb_frame_line("Thread 2 (LWP 7)").is_none());
    }
}
