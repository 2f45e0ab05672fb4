//! `pystackd stack --native PID`: every thread's native stack with its Python frames under
//! the eval-loop frames that run them, like `py-spy dump --native`.
//!
//! The process is stopped (ptrace, every thread; resumed on every path by the
//! `StopGuard`), each thread's registers are read and its stack unwound with CFI
//! (`symbolize::unwind`), the Python stacks are read under the same stop, and each
//! thread's Python frame groups (one per C eval call, delimited by `Frame::entry`) are put
//! under the eval frames annotate would put them under (`stacktext::matching::place_groups`).
//! Through the daemon when one runs (its `stack` method with `"native": true`), else
//! directly.

use std::io::Write;
use std::process::ExitCode;

use protocol::{escape_control, Frame as PyFrame, NativeSource};
use pyframe_reader::{platform, PythonProcess, StackOptions};
use serde::{Deserialize, Serialize};
use symbolize::unwind::{self, Method, ProcessCfi, Stop};
use symbolize::{Config, ProcessMaps, Symbolizer};

use crate::client::{Client, ClientError, Global};
use crate::exit;
use crate::stack::StackArgs;
use protocol::rpc::{methods, StackParams};

/// One native frame.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NativeFrame {
    /// The pc (innermost frame) or return address.
    pub address: u64,
    /// The mapped file's path, as the target sees it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symbol: Option<String>,
    /// Offset of `address` into `symbol`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// How this frame was found: `registers` (innermost), `cfi`, `frame_pointer`.
    pub unwound_by: String,
    /// With `--native-lines`: the source location from DWARF, the functions inlined at
    /// the address first, the one holding the code last (innermost first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source: Vec<NativeSource>,
    /// The Python frames this eval-loop frame runs, innermost first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub python: Vec<PyFrame>,
}

/// One thread.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NativeThread {
    pub os_tid: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Whether the interpreter knows this thread (it has a Python thread state).
    pub python_thread: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holds_gil: Option<bool>,
    /// Native frames, innermost first, with the Python frames under their eval frames.
    pub frames: Vec<NativeFrame>,
    /// The Python frames no eval frame could be found for (a build whose eval loop has no
    /// symbol), innermost first: printed after the native frames.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unplaced_python: Vec<PyFrame>,
    /// Why the unwind stopped: `end` (the outermost frame), `limit`, `unmapped`,
    /// `sp_not_increasing`, `read_failed`, `unsupported`, `registers` (unreadable).
    pub stop: String,
    /// What the thread was doing when stopped (the reader's classification), for the
    /// samplers' idle test; not in the JSON.
    #[serde(skip)]
    pub state: protocol::ThreadState,
}

/// The whole process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NativeStack {
    pub pid: u32,
    pub python_version: String,
    pub python_binary: String,
    pub threads: Vec<NativeThread>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

fn stop_name(s: Stop) -> String {
    match s {
        Stop::End => "end".into(),
        Stop::Limit => "limit".into(),
        Stop::Unmapped(a) => format!("unmapped {a:#x}"),
        Stop::SpNotIncreasing => "sp_not_increasing".into(),
        Stop::ReadFailed(a) => format!("read_failed {a:#x}"),
        Stop::Unsupported => "unsupported".into(),
    }
}

pub fn run(args: &StackArgs, global: &Global) -> ExitCode {
    if args.locals {
        eprintln!("pystackd: --locals is not supported with --native yet");
        return ExitCode::from(exit::USAGE);
    }
    if !global.no_daemon {
        match through_daemon(args, global) {
            Ok(stack) => return print(args, &stack),
            Err(e) if e.is_not_running() => {}
            Err(e @ (ClientError::Rpc(_) | ClientError::Closed | ClientError::Timeout { .. })) => {
                eprintln!("pystackd: {e}");
                match e.hint() {
                    Some(h) => eprintln!("hint: {h}"),
                    None if !matches!(e, ClientError::Rpc(_)) => {
                        eprintln!("hint: --no-daemon reads the process directly")
                    }
                    None => {}
                }
                return ExitCode::from(e.exit_status());
            }
            Err(e) => eprintln!("pystackd: daemon: {e}; reading the process directly"),
        }
    }
    match read(args.pid, args.tid, args.native_lines) {
        Ok(stack) => {
            if let Some(tid) = args.tid {
                if !stack.threads.iter().any(|t| t.os_tid == tid) {
                    eprintln!("pystackd: process {} has no thread {tid}", args.pid);
                    return ExitCode::from(protocol::ErrorKind::NoSuchThread.exit_code());
                }
            }
            print(args, &stack)
        }
        Err(e) => {
            eprintln!("pystackd: {e}");
            if let Some(hint) = e.kind().hint() {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(exit::for_reader_error(&e))
        }
    }
}

/// The daemon's `stack` with `native`: it stops and unwinds the process (its access check
/// is the one a direct read needs: ptrace rights on the target).
fn through_daemon(args: &StackArgs, global: &Global) -> Result<NativeStack, ClientError> {
    Client::connect(&global.socket)?.call(
        methods::STACK,
        Some(StackParams {
            pid: args.pid,
            tid: args.tid,
            native: true,
            native_lines: args.native_lines,
            ..StackParams::default()
        }),
    )
}

/// Stop `pid`, unwind every thread (or only `tid`), read the Python stacks, resume; with
/// `lines`, each frame's source lines and inlined functions from DWARF.
pub fn read(pid: u32, tid: Option<u64>, lines: bool) -> pyframe_reader::Result<NativeStack> {
    let mut process = PythonProcess::attach(pid)?;
    let symbolizer = Symbolizer::new(Config::from_env());
    read_process(&mut process, &symbolizer, pid, tid, lines)
}

/// [`read`] of an attached process with a given symbolizer (the daemon's: its caches).
pub fn read_process(
    process: &mut PythonProcess,
    symbolizer: &Symbolizer,
    pid: u32,
    tid: Option<u64>,
    lines: bool,
) -> pyframe_reader::Result<NativeStack> {
    let held = platform::stop(pid).map_err(|e| match e {
        pyframe_reader::Error::NoSuchProcess { pid } => {
            pyframe_reader::Error::ProcessExited { pid }
        }
        e => e,
    })?;
    // mappings and memory after the stop: nothing is loaded or unmapped meanwhile
    let maps = ProcessMaps::for_pid(pid).map_err(|e| {
        pyframe_reader::Error::io(
            format!("reading the mappings of process {pid}"),
            std::io::Error::other(e.to_string()),
        )
    })?;
    let mem = platform::open_memory(pid)?;
    let py = process.stack_held(
        &held,
        &StackOptions {
            pause: true,
            tid: None,
            locals: false,
            skip_tids: Vec::new(),
        },
    )?;
    let cfi = ProcessCfi {
        symbolizer,
        maps: &maps,
    };
    let mut warnings = py.warnings.clone();
    let mut threads = Vec::new();
    for t in held.tids() {
        if tid.is_some_and(|w| w != t) {
            continue;
        }
        let pyt = py.threads.iter().find(|p| p.os_tid == Some(t));
        let (frames, stop) = match held.registers(t) {
            Ok(regs) => {
                let u = unwind::unwind(regs.pc, &regs.gpr, &mem, &cfi, unwind::MAX_FRAMES);
                let frames = u
                    .frames
                    .iter()
                    .map(|f| name_frame(symbolizer, &maps, f, lines))
                    .collect();
                (frames, stop_name(u.stop))
            }
            Err(e) => {
                warnings.push(format!("thread {t}: {e}"));
                (Vec::new(), "registers".to_string())
            }
        };
        let mut thread = NativeThread {
            os_tid: t,
            name: platform::thread_name(pid, t),
            python_thread: pyt.is_some(),
            holds_gil: pyt.and_then(|p| p.holds_gil),
            frames,
            unplaced_python: Vec::new(),
            stop,
            state: pyt.map(|p| p.state.clone()).unwrap_or_default(),
        };
        if let Some(pyt) = pyt {
            place(&mut thread, pyt);
        }
        threads.push(thread);
    }
    drop(held);
    Ok(NativeStack {
        pid,
        python_version: py.python_version,
        python_binary: py.python_binary,
        threads,
        warnings,
    })
}

/// Puts the thread's Python frame groups under their eval frames, or, when no placement
/// fits, after the native frames.
fn place(thread: &mut NativeThread, py: &protocol::ThreadStack) {
    let groups = py.eval_groups();
    let placed = stacktext::matching::place_groups(
        thread
            .frames
            .iter()
            .enumerate()
            .map(|(i, f)| (i, f.symbol.as_deref().unwrap_or("").as_bytes())),
        groups.len(),
    );
    match placed {
        Some(evals) => {
            for (g, i) in groups.into_iter().zip(evals) {
                thread.frames[i].python = g.to_vec();
            }
        }
        None => thread.unplaced_python = py.frames.clone(),
    }
}

fn name_frame(sym: &Symbolizer, maps: &ProcessMaps, f: &unwind::Frame, lines: bool) -> NativeFrame {
    let lookup = f.lookup_address();
    let module = maps.region(lookup).and_then(|(_, r)| r.path.clone());
    let (symbol, offset, source) = match sym.symbolize(maps, lookup, lines) {
        Ok(s) => {
            // a return address's line is the call's (`lookup` is one byte back), as gdb's
            let source = s.frames.into_iter().map(native_source).collect();
            match s.symbol {
                Some(h) => (
                    Some(h.name.to_string()),
                    Some(h.offset + (f.pc - lookup)),
                    source,
                ),
                None => (None, None, source),
            }
        }
        Err(_) => (None, None, Vec::new()),
    };
    NativeFrame {
        address: f.pc,
        module,
        symbol,
        offset,
        unwound_by: match f.method {
            Method::Registers => "registers",
            Method::Cfi => "cfi",
            Method::FramePointer => "frame_pointer",
        }
        .to_string(),
        source,
        python: Vec::new(),
    }
}

/// The protocol's form of a DWARF source frame.
pub fn native_source(f: symbolize::SourceFrame) -> NativeSource {
    NativeSource {
        function: f.function,
        file: f.file,
        line: f.line,
        column: f.column,
        inlined: f.inlined,
    }
}

fn print(args: &StackArgs, stack: &NativeStack) -> ExitCode {
    crate::stack::report(
        args.json,
        stack,
        |mut out| write_text(&mut out, stack),
        exit::OK,
    )
}

/// A native frame in DTrace's `ustack()` form: `module`symbol+0xoff`, `module`0xaddr`
/// without a symbol, `0xaddr` outside any file.
pub fn frame_text(f: &NativeFrame) -> String {
    let module = f
        .module
        .as_deref()
        .map(|m| m.rsplit('/').next().unwrap_or(m));
    match (&f.symbol, module) {
        (Some(s), Some(m)) => format!("{m}`{s}+{:#x}", f.offset.unwrap_or(0)),
        (Some(s), None) => format!("{s}+{:#x}", f.offset.unwrap_or(0)),
        (None, Some(m)) => format!("{m}`{:#x}", f.address),
        (None, None) => format!("{:#x}", f.address),
    }
}

fn python_text(p: &PyFrame) -> String {
    let func = escape_control(p.qualname.as_deref().unwrap_or(&p.function));
    let file = escape_control(&p.filename);
    match p.line {
        Some(l) => format!("[ {file}:{l} ({func}) ]"),
        None => format!("[ {file} ({func}) ]"),
    }
}

/// The text form: a header per thread, then its frames in DTrace's `jstack()` layout.
pub fn write_text(out: &mut impl Write, s: &NativeStack) -> std::io::Result<()> {
    writeln!(
        out,
        "Process {}: Python {} ({}), stopped while read",
        s.pid, s.python_version, s.python_binary
    )?;
    for w in &s.warnings {
        writeln!(out, "warning: {w}")?;
    }
    for t in &s.threads {
        writeln!(out)?;
        write!(out, "Thread {}", t.os_tid)?;
        if let Some(n) = &t.name {
            write!(out, " \"{}\"", escape_control(n))?;
        }
        if t.holds_gil == Some(true) {
            write!(out, " (holds the GIL)")?;
        }
        if !t.python_thread {
            write!(out, " (no Python thread state)")?;
        }
        writeln!(out)?;
        for f in &t.frames {
            writeln!(out, "              {}", frame_text(f))?;
            for s in &f.source {
                writeln!(out, "                {}", s.text())?;
            }
            for p in &f.python {
                writeln!(out, "                {}", python_text(p))?;
            }
        }
        if !t.unplaced_python.is_empty() {
            writeln!(
                out,
                "              (Python frames, not placed: no eval-loop frame is named in this \
                 native stack)"
            )?;
            for p in &t.unplaced_python {
                writeln!(out, "                {}", python_text(p))?;
            }
        }
        if t.stop != "end" {
            writeln!(out, "              (unwinding stopped: {})", t.stop)?;
        }
    }
    Ok(())
}
