//! `pystackd stack PID`: print every thread's Python stack.

use std::io::Write;
use std::process::ExitCode;

use protocol::ProcessStack;
use pyframe_reader::{PythonProcess, StackOptions};

use crate::cli::{Global, StackArgs};
use crate::client::{self, ClientError};
use crate::exit;

pub fn run(args: &StackArgs, global: &Global) -> ExitCode {
    // The daemon when it answers (it may read what the caller may not open itself,
    // and keeps caches warm); the process directly when there is none.
    if !global.no_daemon {
        match client::stack(&global.socket, args.pid, args.tid, args.pause) {
            Ok(stack) => return print(args, &stack),
            Err(e) if e.is_not_running() => {}
            Err(e @ (ClientError::Rpc(_) | ClientError::Closed | ClientError::Timeout { .. })) => {
                eprintln!("pystackd: {e}");
                if !matches!(e, ClientError::Rpc(_)) {
                    eprintln!("hint: --no-daemon reads the process directly");
                }
                return ExitCode::from(e.exit_status());
            }
            Err(e) => eprintln!("pystackd: daemon: {e}; reading the process directly"),
        }
    }
    let result = PythonProcess::attach(args.pid).and_then(|mut p| {
        p.stack(&StackOptions {
            pause: args.pause,
            tid: args.tid,
        })
    });
    match result {
        Ok(stack) => print(args, &stack),
        Err(e) => {
            eprintln!("pystackd: {e}");
            if let Some(hint) = hint(&e) {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(exit::for_reader_error(&e))
        }
    }
}

fn print(args: &StackArgs, stack: &ProcessStack) -> ExitCode {
    // one write for the whole report, not one per line (stdout is line-buffered)
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    let r = if args.json {
        serde_json::to_writer_pretty(&mut out, stack)
            .map_err(std::io::Error::from)
            .and_then(|_| writeln!(out))
    } else {
        write_text(&mut out, stack)
    };
    let r = r.and_then(|_| out.flush());
    match r {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::from(exit::OK),
        Err(e) => {
            eprintln!("pystackd: writing output: {e}");
            ExitCode::from(exit::FAILURE)
        }
    }
}

fn hint(e: &pyframe_reader::Error) -> Option<&'static str> {
    use pyframe_reader::Error::*;
    Some(match e {
        PermissionDenied { .. } => {
            "reading another process's memory needs ptrace access: run as the process owner \
             (with kernel.yama.ptrace_scope <= 1 on Linux), or as root / with CAP_SYS_PTRACE \
             (proc_owner on illumos)"
        }
        NotPython { .. } => "pass the pid of a CPython 3.8-3.15 interpreter process",
        Inconsistent { .. } => "the target changed too fast to read; retry, or use --pause",
        NoSuchProcess { .. } => "check the pid (ps -ef | grep python)",
        _ => return None,
    })
}

/// The human-readable form: a header per thread, one line per frame, innermost first.
pub fn write_text(out: &mut impl Write, s: &ProcessStack) -> std::io::Result<()> {
    writeln!(
        out,
        "Process {}: Python {} ({})",
        s.pid, s.python_version, s.python_binary
    )?;
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
        if let Some(name) = &t.name {
            write!(out, " \"{name}\"")?;
        }
        match t.holds_gil {
            Some(true) => write!(out, " (holds the GIL)")?,
            Some(false) => {}
            None => {}
        }
        if t.frames.is_empty() {
            write!(out, " (no Python frames)")?;
        }
        if t.interpreter_id != 0 {
            write!(out, " [interpreter {}]", t.interpreter_id)?;
        }
        writeln!(out)?;
        for f in &t.frames {
            let name = f.qualname.as_deref().unwrap_or(&f.function);
            match f.line {
                Some(l) => writeln!(out, "    {name} ({}:{l})", f.filename)?,
                None => writeln!(out, "    {name} ({})", f.filename)?,
            }
        }
    }
    Ok(())
}
