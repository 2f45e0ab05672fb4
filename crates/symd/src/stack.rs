//! `pystackd stack PID`: print every thread's Python stack.

use std::io::Write;
use std::process::ExitCode;

use protocol::{escape_control, ProcessStack};
use pyframe_reader::{PythonProcess, StackOptions};

use crate::client::{self, ClientError, Global};
use crate::exit;

pub fn run(args: &StackArgs, global: &Global) -> ExitCode {
    if args.native {
        return crate::stack_native::run(args, global);
    }
    if args.subprocesses {
        return run_tree(args, global);
    }
    match read_one(args, global, args.pid, args.tid) {
        Ok(stack) => match args.tid.and_then(|t| missing_thread(&stack, t)) {
            Some(why) => {
                eprintln!("pystackd: {why}");
                let kind = protocol::ErrorKind::NoSuchThread;
                if let Some(hint) = kind.hint() {
                    eprintln!("hint: {hint}");
                }
                ExitCode::from(kind.exit_code())
            }
            None => print(args, &stack),
        },
        Err(e) => {
            eprintln!("pystackd: {}", e.message);
            if let Some(hint) = &e.hint {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(e.status)
        }
    }
}

/// Why one process could not be read: its exit status, message, hint and kind.
struct ReadError {
    status: u8,
    message: String,
    hint: Option<String>,
    kind: Option<protocol::ErrorKind>,
}

/// One process's stacks: through the daemon when it answers (it may read what the caller
/// may not open itself, and keeps caches warm), directly when there is none.
fn read_one(
    args: &StackArgs,
    global: &Global,
    pid: u32,
    tid: Option<u64>,
) -> Result<ProcessStack, ReadError> {
    if !global.no_daemon {
        match client::stack(&global.socket, pid, tid, args.pause, args.locals) {
            Ok(stack) => return Ok(stack),
            Err(e) if e.is_not_running() => {}
            Err(e @ (ClientError::Rpc(_) | ClientError::Closed | ClientError::Timeout { .. })) => {
                let hint = match e.hint() {
                    Some(h) => Some(h.to_string()),
                    None if !matches!(e, ClientError::Rpc(_)) => {
                        Some("--no-daemon reads the process directly".into())
                    }
                    None => None,
                };
                return Err(ReadError {
                    status: e.exit_status(),
                    message: e.to_string(),
                    hint,
                    kind: e.kind(),
                });
            }
            Err(e) => eprintln!("pystackd: daemon: {e}; reading the process directly"),
        }
    }
    PythonProcess::attach(pid)
        .and_then(|mut p| {
            p.stack(&StackOptions {
                pause: args.pause,
                tid,
                locals: args.locals,
                skip_tids: Vec::new(),
            })
        })
        .map_err(|e| ReadError {
            status: exit::for_reader_error(&e),
            message: e.to_string(),
            hint: e.kind().hint().map(str::to_string),
            kind: Some(e.kind()),
        })
}

/// `--subprocesses`: the process, then each of its descendants that runs Python (parents
/// before children). Descendants that are not Python, or ended meanwhile, are left out
/// quietly; one that cannot be read for another reason is named with it (exit 9).
fn run_tree(args: &StackArgs, global: &Global) -> ExitCode {
    use protocol::ErrorKind;
    let root = match read_one(args, global, args.pid, None) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pystackd: {}", e.message);
            if let Some(hint) = &e.hint {
                eprintln!("hint: {hint}");
            }
            return ExitCode::from(e.status);
        }
    };
    let mut read = vec![(None, root)];
    let mut unreadable: Vec<(u32, u32, String)> = Vec::new();
    for (pid, ppid) in crate::platform::descendants(args.pid) {
        match read_one(args, global, pid, None) {
            Ok(s) => read.push((Some(ppid), s)),
            Err(e) => match e.kind {
                Some(
                    ErrorKind::NotPython | ErrorKind::NoSuchProcess | ErrorKind::ProcessExited,
                ) => {}
                _ => unreadable.push((pid, ppid, e.message)),
            },
        }
    }
    let processes: Vec<serde_json::Value> = read
        .iter()
        .map(|(ppid, s)| {
            let mut v = serde_json::to_value(s).unwrap_or_default();
            v["parent_pid"] = serde_json::json!(ppid);
            v
        })
        .collect();
    let unread: Vec<serde_json::Value> = unreadable
        .iter()
        .map(|(pid, ppid, why)| serde_json::json!({"pid": pid, "parent_pid": ppid, "error": why}))
        .collect();
    let doc = serde_json::json!({"processes": processes, "unreadable": unread});
    let text = |mut out: &mut dyn Write| -> std::io::Result<()> {
        for (i, (ppid, s)) in read.iter().enumerate() {
            if i > 0 {
                writeln!(out)?;
            }
            if let Some(pp) = ppid {
                writeln!(out, "Subprocess {} (child of {pp})", s.pid)?;
            }
            write_text(&mut out, s)?;
        }
        for (pid, ppid, why) in &unreadable {
            writeln!(out, "\nSubprocess {pid} (child of {ppid}): not read: {why}")?;
        }
        Ok(())
    };
    let ok = if unreadable.is_empty() {
        exit::OK
    } else {
        exit::PARTIAL
    };
    report(args.json, &doc, text, ok)
}

fn print(args: &StackArgs, stack: &ProcessStack) -> ExitCode {
    report(
        args.json,
        stack,
        |mut out| write_text(&mut out, stack),
        exit::OK,
    )
}

/// Writes a report to stdout, JSON or text, as one buffered write (stdout is
/// line-buffered); `ok` is the exit status when it was written. A reader that closed the
/// pipe (`| head`) is not a failure.
pub fn report<T: serde::Serialize + ?Sized>(
    json: bool,
    value: &T,
    text: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    ok: u8,
) -> ExitCode {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    let r = if json {
        serde_json::to_writer_pretty(&mut out, value)
            .map_err(std::io::Error::from)
            .and_then(|_| writeln!(out))
    } else {
        text(&mut out)
    };
    match r.and_then(|_| out.flush()) {
        Ok(()) => ExitCode::from(ok),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::from(exit::OK),
        Err(e) => {
            eprintln!("pystackd: writing output: {e}");
            ExitCode::from(exit::FAILURE)
        }
    }
}

/// Why a read for one thread (`--tid`) came back without it: the process has no such
/// thread, or that thread runs no Python; naming the threads it has. `None` when it is there.
pub fn missing_thread(stack: &ProcessStack, tid: u64) -> Option<String> {
    if stack
        .threads
        .iter()
        .any(|t| t.os_tid == Some(tid) || t.ns_tid == Some(tid))
    {
        return None;
    }
    let pairs = pyframe_reader::platform::thread_ns_tids(stack.pid).unwrap_or_default();
    let os: Vec<u64> = pairs.iter().map(|p| p.0).collect();
    let list = |ids: &[u64]| {
        let mut v: Vec<String> = ids.iter().take(16).map(u64::to_string).collect();
        if ids.len() > 16 {
            v.push(format!("... ({} in all)", ids.len()));
        }
        v.join(", ")
    };
    Some(if pairs.iter().any(|p| p.0 == tid || p.1 == tid) {
        format!(
            "thread {tid} of process {} runs no Python code (it is not a thread of the \
             interpreter)",
            stack.pid
        )
    } else {
        format!(
            "process {} has no thread {tid} (its threads: {})",
            stack.pid,
            list(&os)
        )
    })
}

/// The human-readable form: a header per thread, one line per frame, innermost first.
pub fn write_text(out: &mut impl Write, s: &ProcessStack) -> std::io::Result<()> {
    writeln!(
        out,
        "Process {}: Python {} ({})",
        s.pid, s.python_version, s.python_binary
    )?;
    if let Some(ns) = s.pid_ns {
        write!(out, "In a container: pid namespace {ns}")?;
        if let Some(p) = s.ns_pid {
            write!(out, ", pid {p} there")?;
        }
        writeln!(out, " (thread ids: here, then [in the namespace])")?;
    }
    for w in &s.warnings {
        writeln!(out, "warning: {w}")?;
    }
    for t in &s.threads {
        writeln!(out)?;
        let tid = t
            .os_tid
            .map(|t| t.to_string())
            .unwrap_or_else(|| "?".into());
        write!(out, "Thread {tid}")?;
        if let Some(ns) = t.ns_tid {
            write!(out, " [{ns}]")?;
        }
        if let Some(name) = &t.name {
            write!(out, " \"{}\"", escape_control(name))?;
        }
        if let Some(state) = state_text(t) {
            write!(out, " ({state})")?;
        }
        if t.frames.is_empty() {
            write!(out, " (no Python frames)")?;
        }
        if t.interpreter_id != 0 {
            write!(out, " [interpreter {}]", t.interpreter_id)?;
        }
        writeln!(out)?;
        for f in &t.frames {
            let name = escape_control(f.qualname.as_deref().unwrap_or(&f.function));
            let file = escape_control(&f.filename);
            match f.line {
                Some(l) => writeln!(out, "    {name} ({file}:{l})")?,
                None => writeln!(out, "    {name} ({file})")?,
            }
            for l in f.locals.iter().flatten() {
                let mark = match l.kind {
                    protocol::LocalKind::Arg => " (arg)",
                    protocol::LocalKind::Local => "",
                    protocol::LocalKind::Cell => " (cell)",
                    protocol::LocalKind::Free => " (free)",
                };
                write!(
                    out,
                    "        {} = {}{mark}",
                    escape_control(&l.name),
                    escape_control(&l.repr)
                )?;
                match &l.mid_update {
                    Some(m) => writeln!(out, "  [{}: may be mid-update]", m.reason)?,
                    None => writeln!(out)?,
                }
            }
        }
    }
    Ok(())
}

/// The short state after a thread's header (docs/json.md "Thread state"): what it is doing
/// (`running`, `runnable`, `blocked: futex`, `waiting for the GIL`, `stopped`, `state
/// unknown: why`), then whether it holds the GIL; `None` when nothing of it was read.
pub fn state_text(t: &protocol::ThreadStack) -> Option<String> {
    let st = &t.state;
    let mut parts = Vec::new();
    match st.state {
        Some(protocol::RunState::Unknown) => parts.push(format!(
            "state unknown: {}",
            st.state_unknown.as_deref().unwrap_or("not read")
        )),
        Some(s @ (protocol::RunState::Blocked | protocol::RunState::Stopped)) => {
            parts.push(match &st.syscall {
                Some(c) => format!("{}: {c}", s.as_str()),
                None => s.as_str().to_string(),
            })
        }
        Some(s) => parts.push(s.as_str().to_string()),
        None => {}
    }
    match (t.holds_gil, &st.gil_unknown) {
        (Some(true), _) => parts.push("holds the GIL".into()),
        (Some(false), _) => parts.push("holds no GIL".into()),
        // a free-threaded build's threads: a fact, not a failed read
        (None, Some(why)) if why == pyframe_reader::threadstate::NO_GIL => parts.push(why.clone()),
        (None, Some(why)) => parts.push(format!("GIL unknown: {why}")),
        (None, None) => {}
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

#[derive(clap::Args, Debug)]
pub struct StackArgs {
    /// Process id of the CPython process.
    pub pid: u32,
    /// Print JSON (the `protocol` crate's ProcessStack; see docs/json.md).
    #[arg(long)]
    pub json: bool,
    /// Stop the target while reading, for a consistent snapshot (needs ptrace rights).
    #[arg(long)]
    pub pause: bool,
    /// Only the thread with this OS thread id (LWP): as the host numbers it, or as the
    /// target's PID namespace does (a container's own tid).
    #[arg(long)]
    pub tid: Option<u64>,
    /// Also show each frame's arguments and local variables, as Python's repr() shows
    /// them within limits (docs/json.md "Locals"); --pause makes them one moment's values.
    #[arg(long)]
    pub locals: bool,
    /// Read the process directly even when the daemon is running.
    #[arg(long)]
    pub no_daemon: bool,
    /// Also every descendant process that runs Python (multiprocessing, gunicorn or celery
    /// workers, subprocesses), each with its pid and parent; descendants that are not Python
    /// are left out, ones that cannot be read are named with the reason (exit 9).
    #[arg(long, conflicts_with_all = ["tid", "native"])]
    pub subprocesses: bool,
    /// Every thread's native stack with the Python frames under the eval-loop frames that
    /// run them (DTrace jstack() layout). Implies stopping the process (ptrace, every thread,
    /// resumed afterwards, as --pause), through the daemon when one runs (docs/native.md).
    #[arg(long)]
    pub native: bool,
    /// With --native: each native frame's source file and line, and the functions inlined
    /// there, from DWARF (docs/native.md).
    #[arg(long, requires = "native")]
    pub native_lines: bool,
}
