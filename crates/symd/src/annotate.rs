//! `pystackd annotate`: native stack text in, the same text with Python frames out.
//!
//! The engine is the `stacktext` crate; this module plugs in where the Python stacks come
//! from (the daemon's `stack` method when it runs, else the process read directly, one
//! attached reader per pid for the whole run so its caches stay warm), and does the I/O:
//! streaming, flushing whenever input is awaited, quiet exit on a closed pipe.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use protocol::rpc::{methods, StackParams, SymbolizeParams, SymbolizeResult};
use protocol::{ErrorKind, ProcessStack, ThreadStack};
use pyframe_reader::{platform, PythonProcess, StackOptions};
use stacktext::{AnnotateError, Format, Options, OutputMode, SourceError, StackSource, Summary};

use crate::client::{Client, ClientError, Global};
use crate::exit;
use crate::held::{Proof, Witnessed};

/// Processes kept attached at once; beyond it the oldest is dropped (a trace naming
/// thousands of short-lived processes must not grow without bound).
const MAX_PROCESSES: usize = 64;
/// Pids whose failure is remembered at once.
const MAX_FAILED: usize = 4096;
/// Detailed reasons kept when the summaries of several files are added up.
const MAX_DETAILS: usize = 20;

/// The error a reader failure becomes for the engine.
fn source_error(e: &pyframe_reader::Error) -> SourceError {
    SourceError::new(e.kind(), e.to_string())
}

/// Failures per pid, bounded.
#[derive(Default)]
struct Failed(HashMap<u32, SourceError>);

impl Failed {
    fn get(&self, pid: u32) -> Option<SourceError> {
        self.0.get(&pid).cloned()
    }
    fn insert(&mut self, pid: u32, e: SourceError) {
        if self.0.len() >= MAX_FAILED {
            self.0.clear();
        }
        self.0.insert(pid, e);
    }
}

/// Python stacks read directly from the processes' memory.
#[derive(Default)]
pub struct LiveSource {
    processes: HashMap<u32, PythonProcess>,
    /// Attach order, for eviction.
    order: Vec<u32>,
    failed: Failed,
}

impl LiveSource {
    pub fn new() -> Self {
        Self::default()
    }

    fn process(&mut self, pid: u32) -> Result<&mut PythonProcess, SourceError> {
        if let Some(e) = self.failed.get(pid) {
            return Err(e);
        }
        if !self.processes.contains_key(&pid) {
            let p = PythonProcess::attach(pid).map_err(|e| {
                let se = source_error(&e);
                if se.kind.lasts() {
                    self.failed.insert(pid, se.clone());
                }
                se
            })?;
            if self.processes.len() >= MAX_PROCESSES {
                let old = self.order.remove(0);
                self.processes.remove(&old);
            }
            self.order.push(pid);
            self.processes.insert(pid, p);
        }
        Ok(self.processes.get_mut(&pid).expect("inserted above"))
    }
}

/// The frames a probe captured (`pyframes=` tokens), resolved against the live process's
/// code objects: one thread's stack, or why not (never a partial or guessed one).
fn resolve_capture(
    process: &PythonProcess,
    tid: Option<u64>,
    tokens: &[String],
) -> Result<ThreadStack, SourceError> {
    let bad = |m: String| SourceError::new(ErrorKind::InvalidParams, m);
    let caps = capture::frames::parse_all(&tokens.join("\n")).map_err(|e| bad(e.to_string()))?;
    let [cap] = caps.as_slice() else {
        return Err(bad(format!("{} captures in one record", caps.len())));
    };
    if cap.no_thread {
        return Err(SourceError::new(
            ErrorKind::NoSuchThread,
            "the probe fired on a thread with no Python thread state",
        ));
    }
    if cap.truncated {
        return Err(bad(format!(
            "the capture stopped at its depth ({} frames): raise the probe's depth \
             (pystackd probe --depth)",
            cap.frames.len()
        )));
    }
    let mut frames = Vec::with_capacity(cap.frames.len());
    for r in capture::resolve::resolve(process, cap) {
        match r {
            capture::resolve::Resolved::Frame(f) => frames.push(f),
            capture::resolve::Resolved::Mismatch(m) => {
                return Err(SourceError::new(ErrorKind::Inconsistent, m.to_string()))
            }
        }
    }
    Ok(ThreadStack {
        interpreter_id: 0,
        thread_id: 0,
        os_tid: tid,
        os_tid_unknown: None,
        ns_tid: None,
        name: None,
        os_name: None,
        holds_gil: None,
        state: Default::default(),
        frames,
    })
}

impl StackSource for LiveSource {
    fn captured(
        &mut self,
        pid: u32,
        tid: Option<u64>,
        tokens: &[String],
    ) -> Result<ThreadStack, SourceError> {
        let p = self.process(pid)?;
        resolve_capture(p, tid, tokens)
    }

    fn thread_stacks(&mut self, pid: u32) -> Result<Vec<ThreadStack>, SourceError> {
        let p = self.process(pid)?;
        match p.stack_without_states(&StackOptions {
            pause: false,
            tid: None,
            locals: false,
            skip_tids: Vec::new(),
        }) {
            Ok(s) => Ok(s.threads),
            Err(e) => {
                let se = source_error(&e);
                if se.kind.lasts() {
                    self.processes.remove(&pid);
                    self.order.retain(|&p| p != pid);
                    self.failed.insert(pid, se.clone());
                }
                Err(se)
            }
        }
    }

    fn resume(&mut self, pid: u32) -> Result<(), SourceError> {
        platform::resume(pid).map_err(|e| source_error(&e))
    }

    fn pid_of_tid(&mut self, tid: u64) -> Option<u32> {
        crate::platform::pid_of_tid(tid)
    }
}

/// Python stacks from the daemon's `stack` method, over one connection for the run.
pub struct DaemonSource {
    socket: PathBuf,
    client: Option<Client>,
    failed: Failed,
    /// Captured frames are resolved here, from the process's code objects: the daemon has
    /// no method for it.
    local: LiveSource,
    /// The daemon's answers for native addresses (`None`: no name), and the pids it
    /// gives none for.
    symbols: HashMap<(u32, u64), Option<stacktext::NativeSymbol>>,
    no_symbols: HashSet<u32>,
}

impl DaemonSource {
    /// Connects; `Err` when no daemon answers there.
    pub fn connect(socket: &Path) -> Result<Self, ClientError> {
        let client = Client::connect(socket)?;
        Ok(DaemonSource {
            socket: socket.to_path_buf(),
            client: Some(client),
            failed: Failed::default(),
            local: LiveSource::new(),
            symbols: HashMap::new(),
            no_symbols: HashSet::new(),
        })
    }

    fn call(&mut self, pid: u32) -> Result<ProcessStack, ClientError> {
        let params = StackParams {
            pid,
            ..StackParams::default()
        };
        self.request(methods::STACK, &params)
    }

    fn request<P: serde::Serialize, R: serde::de::DeserializeOwned>(
        &mut self,
        method: &str,
        params: &P,
    ) -> Result<R, ClientError> {
        if self.client.is_none() {
            self.client = Some(Client::connect(&self.socket)?);
        }
        let c = self.client.as_mut().expect("connected above");
        let r = c.call(method, Some(params));
        if let Err(ClientError::Closed | ClientError::Io(_) | ClientError::Protocol(_)) = &r {
            // a restarted daemon: one new connection, then give up on this request
            self.client = None;
            let mut c = Client::connect(&self.socket)?;
            let r = c.call(method, Some(params));
            self.client = Some(c);
            return r;
        }
        r
    }
}

impl StackSource for DaemonSource {
    /// Asked only for processes this client cannot read itself: the daemon names their
    /// addresses from their mappings, or from its record of them after they exited.
    fn native_symbol(&mut self, pid: u32, addr: u64) -> Option<stacktext::NativeSymbol> {
        if self.no_symbols.contains(&pid) {
            return None;
        }
        if let Some(n) = self.symbols.get(&(pid, addr)) {
            return n.clone();
        }
        let params = SymbolizeParams {
            pid,
            addresses: vec![addr],
            lines: false,
            module: None,
        };
        let r: SymbolizeResult = match self.request(methods::SYMBOLIZE, &params) {
            Ok(r) => r,
            Err(_) => {
                // refused, unknown, or an older daemon: not asked again this run
                if self.no_symbols.len() < 4096 {
                    self.no_symbols.insert(pid);
                }
                return None;
            }
        };
        let n = r
            .symbols
            .into_iter()
            .next()
            .flatten()
            .map(|n| stacktext::NativeSymbol {
                module: n.module.rsplit('/').next().unwrap_or(&n.module).to_string(),
                symbol: n.symbol,
                offset: n.offset,
                posthumous: r.posthumous,
            });
        if self.symbols.len() >= 1 << 16 {
            self.symbols.clear();
        }
        self.symbols.insert((pid, addr), n.clone());
        n
    }

    fn native_in_module(
        &mut self,
        pid: u32,
        module: &str,
        offset: u64,
    ) -> Option<stacktext::NativeSymbol> {
        if self.no_symbols.contains(&pid) {
            return None;
        }
        let params = SymbolizeParams {
            pid,
            addresses: vec![offset],
            lines: false,
            module: Some(module.to_string()),
        };
        match self.request::<_, SymbolizeResult>(methods::SYMBOLIZE, &params) {
            Ok(r) => r
                .symbols
                .into_iter()
                .next()
                .flatten()
                .map(|n| stacktext::NativeSymbol {
                    module: n.module.rsplit('/').next().unwrap_or(&n.module).to_string(),
                    symbol: n.symbol,
                    offset: n.offset,
                    posthumous: r.posthumous,
                }),
            Err(_) => {
                if self.no_symbols.len() < 4096 {
                    self.no_symbols.insert(pid);
                }
                None
            }
        }
    }

    fn native_source(&mut self, pid: u32, addr: u64) -> Vec<protocol::NativeSource> {
        if self.no_symbols.contains(&pid) {
            return Vec::new();
        }
        let params = SymbolizeParams {
            pid,
            addresses: vec![addr],
            lines: true,
            module: None,
        };
        match self.request::<_, SymbolizeResult>(methods::SYMBOLIZE, &params) {
            Ok(r) => r
                .sources
                .and_then(|s| s.into_iter().next())
                .unwrap_or_default(),
            Err(_) => {
                if self.no_symbols.len() < 4096 {
                    self.no_symbols.insert(pid);
                }
                Vec::new()
            }
        }
    }

    fn captured(
        &mut self,
        pid: u32,
        tid: Option<u64>,
        tokens: &[String],
    ) -> Result<ThreadStack, SourceError> {
        self.local.captured(pid, tid, tokens)
    }

    fn thread_stacks(&mut self, pid: u32) -> Result<Vec<ThreadStack>, SourceError> {
        if let Some(e) = self.failed.get(pid) {
            return Err(e);
        }
        match self.call(pid) {
            Ok(s) => Ok(s.threads),
            Err(ClientError::Rpc(e)) => {
                let kind = ErrorKind::from_rpc_code(e.code);
                let se = SourceError::new(kind, format!("daemon: {}", e.message));
                if kind.lasts() {
                    self.failed.insert(pid, se.clone());
                }
                Err(se)
            }
            Err(e) => Err(SourceError::new(
                ErrorKind::Internal,
                format!("daemon: {e}"),
            )),
        }
    }

    fn resume(&mut self, pid: u32) -> Result<(), SourceError> {
        // The caller stopped the target, so the caller may continue it.
        platform::resume(pid).map_err(|e| source_error(&e))
    }

    fn pid_of_tid(&mut self, tid: u64) -> Option<u32> {
        crate::platform::pid_of_tid(tid)
    }
}

/// The output, shared with the input side so it is flushed before every wait for input:
/// a stack reaches a pipe's reader as soon as it is complete, yet a file is written in
/// big chunks.
#[derive(Clone)]
struct SharedOut(Rc<RefCell<BufWriter<File>>>);

impl Write for SharedOut {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.borrow_mut().write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.borrow_mut().flush()
    }
}

struct FlushingReader<R> {
    inner: R,
    out: SharedOut,
}

impl<R: Read> Read for FlushingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.out.flush()?;
        self.inner.read(buf)
    }
}

fn options(args: &AnnotateArgs) -> Options {
    Options {
        pid: args.pid,
        keys: args.keys.clone(),
        format: match args.format {
            FormatArg::Auto => None,
            FormatArg::Dtrace => Some(Format::Dtrace),
            FormatArg::Bpftrace => Some(Format::Bpftrace),
            FormatArg::Perf => Some(Format::Perf),
            FormatArg::Gdb => Some(Format::Gdb),
        },
        output: match args.output {
            OutputArg::Text => OutputMode::Text,
            OutputArg::Json => OutputMode::Json,
            OutputArg::Folded => OutputMode::Folded,
        },
        qualname: args.qualname,
        stopped: args.stopped,
        native_lines: args.native_lines,
        ..Options::default()
    }
}

/// Adds the counts of `b` to `a` (several input files, one report).
fn merge(a: &mut Summary, b: Summary, file: &str) {
    a.stacks += b.stacks;
    a.with_eval_frames += b.with_eval_frames;
    a.annotated += b.annotated;
    a.read_later += b.read_later;
    a.captured_unplaced += b.captured_unplaced;
    a.race_outermost_bare += b.race_outermost_bare;
    a.already_annotated += b.already_annotated;
    a.too_long += b.too_long;
    a.resume_errors += b.resume_errors;
    for (k, n) in b.unannotated {
        *a.unannotated.entry(k).or_default() += n;
    }
    for d in b.details {
        if a.details.len() < MAX_DETAILS {
            a.details.push(format!("{file}: {d}"));
        }
    }
}

/// Hands out a process's last read again while it is younger than `max_age`
/// (`--max-age`): a burst of records costs one read of the target, not one each.
pub struct Reuse<S> {
    inner: S,
    max_age: Duration,
    last: HashMap<u32, (Instant, Vec<ThreadStack>)>,
}

impl<S: StackSource> Reuse<S> {
    pub fn new(inner: S, max_age: Duration) -> Self {
        Reuse {
            inner,
            max_age,
            last: HashMap::new(),
        }
    }
}

impl<S: StackSource> StackSource for Reuse<S> {
    fn thread_stacks(&mut self, pid: u32) -> Result<Vec<ThreadStack>, SourceError> {
        if self.max_age.is_zero() {
            return self.inner.thread_stacks(pid);
        }
        let now = Instant::now();
        if let Some((at, threads)) = self.last.get(&pid) {
            if now.duration_since(*at) < self.max_age {
                return Ok(threads.clone());
            }
        }
        let threads = self.inner.thread_stacks(pid)?;
        if self.last.len() >= MAX_PROCESSES {
            self.last.clear();
        }
        self.last.insert(pid, (now, threads.clone()));
        Ok(threads)
    }

    fn resume(&mut self, pid: u32) -> Result<(), SourceError> {
        // a resumed target moves on: never reuse a read across a resume
        self.last.remove(&pid);
        self.inner.resume(pid)
    }

    fn pid_of_tid(&mut self, tid: u64) -> Option<u32> {
        self.inner.pid_of_tid(tid)
    }

    fn captured(
        &mut self,
        pid: u32,
        tid: Option<u64>,
        tokens: &[String],
    ) -> Result<ThreadStack, SourceError> {
        self.inner.captured(pid, tid, tokens)
    }

    fn native_symbol(&mut self, pid: u32, addr: u64) -> Option<stacktext::NativeSymbol> {
        self.inner.native_symbol(pid, addr)
    }

    fn native_source(&mut self, pid: u32, addr: u64) -> Vec<protocol::NativeSource> {
        self.inner.native_source(pid, addr)
    }

    fn native_in_module(
        &mut self,
        pid: u32,
        module: &str,
        offset: u64,
    ) -> Option<stacktext::NativeSymbol> {
        self.inner.native_in_module(pid, module, offset)
    }

    fn moment(&mut self, pid: u32, tid: Option<u64>) -> stacktext::Moment {
        // a reused read is the inner source's last one for `pid`, and so is its proof
        self.inner.moment(pid, tid)
    }
}

pub fn run(args: &AnnotateArgs, global: &Global) -> ExitCode {
    let max_age = if args.stopped {
        Duration::ZERO
    } else {
        Duration::from_millis(args.max_age)
    };
    let source: Box<dyn StackSource> = if global.no_daemon {
        Box::new(LiveSource::new())
    } else {
        match DaemonSource::connect(&global.socket) {
            Ok(d) => Box::new(d),
            Err(e) if e.is_not_running() => Box::new(LiveSource::new()),
            Err(e) => {
                eprintln!("pystackd: daemon: {e}; reading the processes directly");
                Box::new(LiveSource::new())
            }
        }
    };
    let proof = Proof::for_run(args.stopped, args.files.is_empty());
    let mut source = Reuse::new(
        crate::native::Naming::new(Witnessed::new(source, proof)),
        max_age,
    );
    let stdout = match io::stdout().as_fd().try_clone_to_owned() {
        Ok(fd) => File::from(fd),
        Err(e) => {
            eprintln!("pystackd: standard output: {e}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    let out = SharedOut(Rc::new(RefCell::new(BufWriter::with_capacity(
        64 * 1024,
        stdout,
    ))));
    let opts = options(args);
    let mut total = Summary::default();
    let result = if args.files.is_empty() {
        run_one(io::stdin().lock(), &out, &mut source, &opts).map(|s| total = s)
    } else {
        let mut r = Ok(());
        for path in &args.files {
            let f = match File::open(path) {
                Ok(f) => f,
                Err(e) => {
                    let _ = out.clone().flush();
                    eprintln!("pystackd: {}: {e}", path.display());
                    return ExitCode::from(exit::FAILURE);
                }
            };
            match run_one(f, &out, &mut source, &opts) {
                Ok(s) => merge(&mut total, s, &path.display().to_string()),
                Err(e) => {
                    r = Err(e);
                    break;
                }
            }
        }
        r
    };
    match result.and_then(|_| out.clone().flush().map_err(AnnotateError::Io)) {
        Ok(()) => {}
        Err(AnnotateError::Io(e)) if e.kind() == io::ErrorKind::BrokenPipe => {
            // the reader went away (`| head`): nothing more to say
            return ExitCode::from(exit::OK);
        }
        Err(e) => {
            eprintln!("pystackd: {e}");
            return ExitCode::from(exit::FAILURE);
        }
    }
    if total.has_problems() {
        eprint!("pystackd annotate: {total}");
        return ExitCode::from(exit::PARTIAL);
    }
    if total.read_later > 0 {
        eprint!("pystackd annotate: {total}");
        return ExitCode::from(exit::NOT_EXACT);
    }
    if total.without_eval_frames() > 0 {
        // nothing wrong, but say what was left alone
        eprint!("pystackd annotate: {total}");
    }
    ExitCode::from(exit::OK)
}

fn run_one<R: Read>(
    input: R,
    out: &SharedOut,
    source: &mut dyn StackSource,
    opts: &Options,
) -> Result<Summary, AnnotateError> {
    let input = FlushingReader {
        inner: input,
        out: out.clone(),
    };
    stacktext::annotate(input, out.clone(), source, opts)
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FormatArg {
    /// Detect per stack.
    #[default]
    Auto,
    Dtrace,
    Bpftrace,
    Perf,
    Gdb,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OutputArg {
    /// The input with `[ file:line (function) ]` lines added.
    #[default]
    Text,
    /// One JSON object per stack and line.
    Json,
    /// `frame;frame;... count` lines, outermost first.
    Folded,
}

#[derive(clap::Args, Debug)]
pub struct AnnotateArgs {
    /// Files to read, in order [default: standard input].
    pub files: Vec<PathBuf>,
    /// Input format.
    #[arg(long, value_enum, default_value_t = FormatArg::Auto)]
    pub format: FormatArg,
    /// The process every stack comes from (else named by the text: pid=/tid=, headers).
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,
    /// Names the integer key columns DTrace prints before each stack of an aggregation,
    /// in the script's order: `pid`, `tid`, or `_` for another integer
    /// (`--keys pid,tid` for `@[pid, tid, ustack()]`).
    #[arg(long, value_name = "COLUMNS")]
    pub keys: Option<stacktext::KeyColumns>,
    /// The probe stopped the target for each stack: read it (lines are exact where the
    /// thread is seen stopped before and after the read), then resume it.
    #[arg(long)]
    pub stopped: bool,
    /// Qualified names (`Class.method`, 3.11+) instead of bare function names.
    #[arg(long)]
    pub qualname: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputArg::Text)]
    pub output: OutputArg,
    /// Reuse a process's Python stacks for stacks arriving within this many
    /// milliseconds of the read (0: read the process again for every stack). The probe
    /// fired before the record reached annotate anyway (DTrace prints its buffers
    /// about once a second), so 1 ms costs no accuracy and lets a fast stream run at
    /// parser speed. Ignored with --stopped: each stopped target is read afresh.
    #[arg(long, value_name = "MS", default_value_t = 1)]
    pub max_age: u64,
    /// Read the processes directly even when the daemon is running.
    #[arg(long)]
    pub no_daemon: bool,
    /// Add each native frame's source file and line, and the functions inlined there, from
    /// DWARF, for frames the tracer printed with an address (docs/native.md).
    #[arg(long)]
    pub native_lines: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_summaries_add_up() {
        let mut a = Summary {
            stacks: 2,
            annotated: 1,
            ..Summary::default()
        };
        a.unannotated.insert("no pid known".into(), 1);
        let mut b = Summary {
            stacks: 3,
            resume_errors: 1,
            ..Summary::default()
        };
        b.unannotated.insert("no pid known".into(), 2);
        b.details.push("stack 1: x".into());
        merge(&mut a, b, "f");
        assert_eq!(a.stacks, 5);
        assert_eq!(a.unannotated["no pid known"], 3);
        assert_eq!(a.details, vec!["f: stack 1: x".to_string()]);
        assert_eq!(a.resume_errors, 1);
    }

    #[test]
    fn a_pid_that_is_no_python_is_tried_once() {
        // our own process: alive, readable, and not a CPython interpreter
        let pid = std::process::id();
        let mut s = LiveSource::new();
        let e = s.thread_stacks(pid).unwrap_err();
        assert!(s.failed.get(pid).is_some(), "{e}");
        assert_eq!(s.thread_stacks(pid).unwrap_err(), e);
        assert_eq!(s.pid_of_tid(u64::from(pid)), Some(pid));
    }
}
