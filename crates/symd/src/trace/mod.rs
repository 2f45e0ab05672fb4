//! `pystackd trace`: run bpftrace with the probe-time capture on each probe, resolve the
//! captured frames, print native stacks with their Python frames (docs/trace.md).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use capture::frames::{find_token, Capture, Token};
use capture::{Plan, Resolved, Resolver};
use protocol::Frame;
use pyframe_reader::PythonProcess;
use serde::Serialize;

use crate::breakpoints::Breakpoints;
use crate::exit;
use crate::native::Names;

#[cfg(target_os = "linux")]
pub(crate) mod direct;

pub const HELP: &str = "\
Each probe fires in process PID; in probe context, a BPF program walks the firing thread's
Python frames and records (code object, instruction offset, identity) for each, which
pystackd resolves to file:line (function) afterwards. The Python frames are therefore those
of the moment the probe fired, also for a thread that keeps running; each code object's
identity is checked, and one freed and reused since is reported, never guessed.

Engines (--engine): `direct` (the default where it applies) loads pystackd's own BPF
programs: one read per frame, one record per firing, no bpftrace needed. It takes
  profile:hz:N    uprobe:/path/lib.so:FUNCTION[+OFFSET]    uretprobe:/path/lib.so:FUNCTION
  tracepoint:CATEGORY:NAME
`bpftrace` runs bpftrace with the capture on each probe and takes any bpftrace probe
(kprobes, usdt, wildcards, library names without a path); `auto` picks direct when it takes
every probe given, else bpftrace. Each probe gets the filter pid == PID.

Output (--output): text shows each firing's native stack (the user stack) with the Python
frames under the eval-loop frame that runs them, as DTrace's jstack() does:
      libpython3.12.so.1.0`_PyEval_EvalFrameDefault+0x1b3c
        [ /srv/app/jobs.py:42 (handle) ]
When the native stack does not show the eval frames (interpreters built without frame
pointers give short user stacks), the Python frames follow the native ones, marked
`(python frames at probe time, not placed in the native stack)`. A capture cut short by a
read that failed in probe context (a page not resident) keeps its inner frames and is marked
`capture cut short` (JSON status \"incomplete\"). --aggregate counts identical stacks; folded
prints `frame;frame;... count` lines for flame graphs; json one object per stack
(docs/trace.md).

Needs root (BPF programs) and, for tracepoints and bpftrace, tracefs: when
/sys/kernel/tracing is not mounted, trace mounts it there (or says why it cannot).

Examples:
  sudo pystackd trace --pid 4242 'uprobe:/usr/lib/x86_64-linux-gnu/libc.so.6:fsync'
  sudo pystackd trace --pid 4242 --duration 10 --aggregate profile:hz:99
  sudo pystackd trace --pid 4242 --output folded profile:hz:997 > py.folded
  pystackd trace --pid 4242 --print-program profile:hz:99     the program only (BPF listing,
                                                               or bpftrace's with --engine bpftrace)

Exit status: 0 ok, 3 no such process, 4 not a CPython process, 5 permission denied,
6 unsupported version, 7 the process exited during the trace (what was traced is printed),
12 bpftrace is not installed (--engine bpftrace), 13 the tracer or the kernel refused (not
root, no tracefs, probe not found, a probe the direct engine cannot take, program rejected:
its message is shown), 14 no firing was on a thread running Python,
15 some code objects were freed and reused before they could be resolved (those frames are
shown as such), 17 a uprobe's breakpoint was missing from the process during the trace (the
kernel took it out: that probe's later calls are not in the output; each uprobe given with a
path is checked all through the trace).";

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TraceOutput {
    /// Native stacks with Python frames in the jstack() layout.
    #[default]
    Text,
    /// One JSON object per stack.
    Json,
    /// `frame;frame;... count` lines, outermost first.
    Folded,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Engine {
    /// direct when it takes every probe given, else bpftrace
    #[default]
    Auto,
    /// pystackd's own eBPF programs (Linux)
    Direct,
    /// bpftrace runs the capture
    Bpftrace,
}

#[derive(clap::Args, Debug)]
pub struct TraceArgs {
    /// The CPython process to trace.
    #[arg(long)]
    pub pid: u32,
    /// Seconds to trace (the trace also ends when the process exits, or on Ctrl-C).
    #[arg(long, value_name = "S", default_value_t = 5.0)]
    pub duration: f64,
    /// Count identical stacks (printed least frequent first, as DTrace prints aggregations:
    /// the most frequent stack ends the output).
    #[arg(long)]
    pub aggregate: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = TraceOutput::Text)]
    pub output: TraceOutput,
    /// Print the program and exit (the BPF listing; bpftrace's program with --engine
    /// bpftrace).
    #[arg(long)]
    pub print_program: bool,
    /// Python frames to capture at most (deeper stacks are marked truncated).
    #[arg(long, default_value_t = capture::plan::DEFAULT_DEPTH, value_parser = clap::value_parser!(u32).range(1..=capture::plan::MAX_DEPTH as i64))]
    pub depth: u32,
    /// Qualified names (`Class.method`, 3.11+) instead of bare function names.
    #[arg(long)]
    pub qualname: bool,
    /// Who runs the capture: `direct` (pystackd loads its own eBPF programs: cheaper per
    /// firing; profile:hz:N, uprobe/uretprobe with a path, tracepoint), `bpftrace` (any
    /// bpftrace probe), `auto` (direct when it takes every probe given).
    #[arg(long, value_enum, default_value_t = Engine::Auto)]
    pub engine: Engine,
    /// Probes, in bpftrace's names: `profile:hz:99`, `uprobe:/path/lib.so:func`,
    /// `tracepoint:syscalls:sys_enter_write` (any bpftrace probe with --engine bpftrace).
    #[arg(required = true, value_name = "PROBE")]
    pub probes: Vec<String>,
}

/// One native frame of a `ustack(perf)` line: `ADDR SYMBOL+OFF (MODULE)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct NativeFrame {
    pub address: u64,
    pub symbol: Option<String>,
    pub offset: Option<u64>,
    pub module: Option<String>,
}

impl NativeFrame {
    fn parse(line: &str) -> Option<NativeFrame> {
        let line = line.trim();
        let (addr, rest) = line.split_once(' ').unwrap_or((line, ""));
        let address = u64::from_str_radix(addr, 16).ok()?;
        let rest = rest.trim();
        let (body, module) = match rest.rfind(" (") {
            Some(p) if rest.ends_with(')') => {
                (&rest[..p], Some(rest[p + 2..rest.len() - 1].to_string()))
            }
            _ => (rest, None),
        };
        let (symbol, offset) = match body.rsplit_once('+') {
            Some((s, o)) => (Some(s.to_string()), o.parse().ok()),
            None if body.is_empty() || body.starts_with("0x") => (None, None),
            None => (Some(body.to_string()), None),
        };
        let module = module.filter(|m| m != "[unknown]");
        Some(NativeFrame {
            address,
            symbol,
            offset,
            module,
        })
    }

    /// DTrace's form: `module`symbol+0xoff`.
    fn text(&self) -> String {
        let module = self
            .module
            .as_deref()
            .map(|m| m.rsplit('/').next().unwrap_or(m));
        match (&self.symbol, module) {
            (Some(s), Some(m)) => format!("{m}`{s}+{:#x}", self.offset.unwrap_or(0)),
            (Some(s), None) => format!("{s}+{:#x}", self.offset.unwrap_or(0)),
            (None, Some(m)) => format!("{m}`{:#x}", self.address),
            (None, None) => format!("{:#x}", self.address),
        }
    }
}

/// One Python frame of the output.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(untagged)]
pub enum PyFrame {
    Frame {
        function: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        qualname: Option<String>,
        filename: String,
        line: Option<u32>,
        #[serde(skip)]
        entry: bool,
    },
    Mismatch {
        mismatch: String,
    },
}

impl PyFrame {
    fn from_resolved(r: Resolved) -> PyFrame {
        match r {
            Resolved::Frame(f) => PyFrame::from_frame(&f),
            Resolved::Mismatch(m) => PyFrame::Mismatch {
                mismatch: m.to_string(),
            },
        }
    }
    fn from_frame(f: &Frame) -> PyFrame {
        PyFrame::Frame {
            function: f.function.to_string(),
            qualname: f.qualname.as_ref().map(|q| q.to_string()),
            filename: f.filename.to_string(),
            line: f.line,
            entry: f.entry,
        }
    }
    fn entry(&self) -> bool {
        matches!(self, PyFrame::Frame { entry: true, .. })
    }
    /// (file, function, line) of a resolved frame.
    fn parts(&self, qualname: bool) -> Option<(&str, &str, String)> {
        match self {
            PyFrame::Frame {
                function,
                qualname: q,
                filename,
                line,
                ..
            } => {
                let func = match q {
                    Some(q) if qualname => q,
                    _ => function,
                };
                let line = line.map_or_else(|| "?".into(), |l| l.to_string());
                Some((filename, func, line))
            }
            PyFrame::Mismatch { .. } => None,
        }
    }

    fn folded(&self, qualname: bool) -> String {
        match (self.parts(qualname), self) {
            (Some((file, func, line)), _) => format!("{file}:{func}:{line}"),
            _ => "[code object freed and reused]".into(),
        }
    }

    fn text(&self, qualname: bool) -> String {
        match (self.parts(qualname), self) {
            (Some((file, func, line)), _) => format!("[ {file}:{line} ({func}) ]"),
            (None, PyFrame::Mismatch { mismatch }) => format!("[ ?? {mismatch} ]"),
            (None, _) => "[ ?? ]".into(),
        }
    }
}

/// What one firing captured, resolved.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Firing {
    pub tid: u64,
    /// The bpftrace probe that fired (`uprobe:/path/lib.so:func`, `profile:hz:99`).
    pub probe: String,
    /// `ok`, `nothread` (the thread has no Python thread state), or `incomplete` (a read
    /// failed in probe context: the Python frames are the innermost ones, up to it).
    pub status: &'static str,
    /// Innermost first.
    pub native: Vec<NativeFrame>,
    /// Innermost first.
    pub python: Vec<PyFrame>,
    /// The Python stack went on past --depth.
    pub truncated: bool,
}

/// Lines of one firing, gathered until its `end` line.
#[derive(Default)]
struct Partial {
    capture: Option<Capture>,
    /// `pyframes` lines received.
    lines: u64,
}

/// A firing whose lines are all in: (tid, probe, capture, native stack so far).
pub type Done = (u64, String, Capture, Vec<NativeFrame>);

/// Reads bpftrace's output: groups lines by firing (`@pystackd TID ID ...`), resolves each
/// firing when its `end` line and native stack are complete.
pub struct OutputParser {
    partial: HashMap<(u64, u64), Partial>,
    /// The firing whose native stack lines are being read.
    in_stack: Option<Done>,
    pub malformed: u64,
    /// Firings some of whose lines bpftrace dropped (its `Lost N events`): not reported.
    pub incomplete: u64,
    /// Output records bpftrace said it lost.
    pub lost_records: u64,
}

impl Default for OutputParser {
    fn default() -> Self {
        Self::new()
    }
}

impl OutputParser {
    pub fn new() -> Self {
        OutputParser {
            partial: HashMap::new(),
            in_stack: None,
            malformed: 0,
            incomplete: 0,
            lost_records: 0,
        }
    }

    /// Feed one line; returns a finished firing (tid, capture, native stack).
    pub fn line(&mut self, line: &str) -> Option<Done> {
        if let Some(rest) = line.strip_prefix("@pystackd ") {
            // a new tagged line ends any stack being read (the blank line may be missing)
            let done = self.in_stack.take();
            let mut it = rest.splitn(3, ' ');
            let (Some(tid), Some(id), Some(body)) = (it.next(), it.next(), it.next()) else {
                self.malformed += 1;
                return done;
            };
            let (Ok(tid), Ok(id)) = (tid.parse::<u64>(), id.parse::<u64>()) else {
                self.malformed += 1;
                return done;
            };
            if let Some(n) = body.trim().strip_prefix("end") {
                let p = self.partial.remove(&(tid, id)).unwrap_or_default();
                let (n, probe) = n.trim().split_once(' ').unwrap_or((n.trim(), ""));
                let want: u64 = n.parse().unwrap_or(u64::MAX);
                // a `!nothread` firing prints one line and counts none
                let complete = match &p.capture {
                    Some(c) if c.no_thread => p.lines == 1,
                    Some(_) => p.lines == want,
                    None => false,
                };
                if complete {
                    self.in_stack = Some((
                        tid,
                        probe.to_string(),
                        p.capture.unwrap_or_default(),
                        Vec::new(),
                    ));
                } else {
                    self.incomplete += 1;
                }
                return done;
            }
            let entry = self.partial.entry((tid, id)).or_default();
            entry.lines += 1;
            match find_token(body) {
                Some(Ok(Token::Start(c))) => entry.capture = Some(c),
                Some(Ok(Token::More(c))) => match &mut entry.capture {
                    Some(have) => have.extend(c),
                    None => self.malformed += 1,
                },
                _ => self.malformed += 1,
            }
            return done;
        }
        if let Some(n) = line
            .strip_prefix("Lost ")
            .and_then(|r| r.strip_suffix(" events"))
        {
            self.lost_records += n.trim().parse::<u64>().unwrap_or(0);
            return self.in_stack.take();
        }
        if let Some((_, _, _, native)) = &mut self.in_stack {
            if line.trim().is_empty() {
                // ustack's text starts with a newline
                if native.is_empty() {
                    return None;
                }
                return self.in_stack.take();
            }
            match NativeFrame::parse(line) {
                Some(f) => native.push(f),
                None => return self.in_stack.take(),
            }
        }
        None
    }

    /// The firing whose stack was being read when the output ended.
    pub fn finish(&mut self) -> Option<Done> {
        self.in_stack.take()
    }
}

pub(crate) struct Failure {
    pub(crate) status: u8,
    pub(crate) message: String,
    pub(crate) hint: Option<String>,
}

fn fail(status: u8, message: impl Into<String>, hint: Option<&str>) -> Failure {
    Failure {
        status,
        message: message.into(),
        hint: hint.map(str::to_string),
    }
}

fn find_in_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// bpftrace needs tracefs for uprobes, tracepoints and to detach cleanly: mount it at
/// /sys/kernel/tracing when neither that nor the debugfs path is there.
fn ensure_tracefs() -> Result<(), Failure> {
    let have = |p: &str| Path::new(p).join("uprobe_events").exists();
    if have("/sys/kernel/tracing") || have("/sys/kernel/debug/tracing") {
        return Ok(());
    }
    let out = Command::new("mount")
        .args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"])
        .output();
    match out {
        Ok(o) if o.status.success() && have("/sys/kernel/tracing") => {
            eprintln!("pystackd: mounted tracefs at /sys/kernel/tracing (bpftrace needs it)");
            Ok(())
        }
        Ok(o) => Err(fail(
            exit::TRACER_REFUSED,
            format!(
                "tracefs is not mounted and mounting it at /sys/kernel/tracing failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Some("mount it yourself: mount -t tracefs nodev /sys/kernel/tracing"),
        )),
        Err(e) => Err(fail(
            exit::TRACER_REFUSED,
            format!("tracefs is not mounted and `mount` could not run: {e}"),
            Some("mount it yourself: mount -t tracefs nodev /sys/kernel/tracing"),
        )),
    }
}

/// Stops bpftrace with SIGINT (it prints its maps and exits), again if it is still there
/// after a while (a SIGINT that came while it was still attaching can go unanswered), and
/// with SIGKILL in the end: the trace never hangs on it.
fn stop_bpftrace(child_pid: i32, done: &AtomicBool) {
    for signal in [libc::SIGINT, libc::SIGINT, libc::SIGINT, libc::SIGKILL] {
        // SAFETY: a signal to our own child, not yet reaped (`done` is set after the wait)
        unsafe { libc::kill(child_pid, signal) };
        let sent = Instant::now();
        while sent.elapsed() < Duration::from_secs(3) {
            if done.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// After the probes stop: the output must be quiet this long before bpftrace is stopped
/// (whatever it still holds is lost when it is)...
const DRAIN_QUIET: Duration = Duration::from_millis(300);
/// ...but no longer than this (a consumer that cannot keep up says what it lost).
const DRAIN_MAX: Duration = Duration::from_secs(10);
/// How often each uprobe's breakpoint is looked at during a trace (one small read each).
const BREAKPOINT_LOOK: Duration = Duration::from_millis(100);

pub fn run(args: &TraceArgs) -> ExitCode {
    match trace(args) {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("pystackd: {}", f.message);
            if let Some(h) = f.hint {
                eprintln!("hint: {h}");
            }
            ExitCode::from(f.status)
        }
    }
}

/// What an engine did, for the summary and the exit status.
#[derive(Default)]
struct Ran {
    /// Firings of the target's threads the probes counted (None: not known).
    fired: Option<u64>,
    /// Firings some of whose output was dropped (bpftrace): not reported.
    incomplete: u64,
    /// Output records bpftrace lost (its ring was full): parts of firings.
    lost_records: u64,
    /// Whole firings the direct engine's ring had no room for.
    lost_firings: u64,
    malformed: u64,
    elapsed: Duration,
    exited: bool,
    breakpoints: Breakpoints,
    /// The tracer's own complaint, shown when nothing was traced.
    tracer_error: Option<String>,
    interrupted: bool,
}

/// Which engine runs the capture.
enum Chosen {
    #[cfg(target_os = "linux")]
    /// The probes, and the kernel's `thread.fsbase` offset where the plan needs it (the
    /// kernel's BTF is parsed once).
    Direct(Vec<direct::DirectProbe>, Option<u32>),
    Bpftrace,
}

fn choose(args: &TraceArgs, plan: &Plan) -> Result<Chosen, Failure> {
    #[cfg(target_os = "linux")]
    {
        let direct = direct::parse_probes(&args.probes)
            .and_then(|probes| Ok((probes, direct::fsbase_offset(plan)?)));
        match (args.engine, direct) {
            (Engine::Bpftrace, _) => Ok(Chosen::Bpftrace),
            (_, Ok((probes, fsbase))) => Ok(Chosen::Direct(probes, fsbase)),
            (Engine::Direct, Err(why)) => Err(fail(
                exit::TRACER_REFUSED,
                format!("--engine direct cannot run this trace: {why}"),
                Some("leave out --engine (auto) or use --engine bpftrace"),
            )),
            (Engine::Auto, Err(_)) => Ok(Chosen::Bpftrace),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = plan;
        match args.engine {
            Engine::Direct => Err(fail(
                exit::USAGE,
                "--engine direct loads eBPF programs: Linux only",
                None,
            )),
            _ => Ok(Chosen::Bpftrace),
        }
    }
}

fn trace(args: &TraceArgs) -> Result<u8, Failure> {
    let process = PythonProcess::attach(args.pid)
        .map_err(|e| fail(exit::for_reader_error(&e), e.to_string(), None))?;
    let plan = Plan::for_process(&process, capture::Os::Linux, args.depth)
        .map_err(|e| fail(exit::FAILURE, e.to_string(), None))?;
    let duration = Duration::from_secs_f64(args.duration.clamp(0.01, 1e7));
    let chosen = choose(args, &plan)?;
    if args.print_program {
        let program = match &chosen {
            #[cfg(target_os = "linux")]
            Chosen::Direct(probes, fsbase) => direct::listing(&plan, args.pid, probes, *fsbase),
            Chosen::Bpftrace => capture::bpftrace::render_program(
                &plan,
                args.pid,
                &args.probes,
                duration.as_nanos().min(u128::from(u64::MAX)) as u64,
            ),
        };
        // a closed pipe (`| head`) is fine
        let _ = std::io::stdout().write_all(program.as_bytes());
        return Ok(exit::OK);
    }
    let bpftrace_path = find_in_path("bpftrace");
    if matches!(chosen, Chosen::Bpftrace) && bpftrace_path.is_none() {
        return Err(fail(
            exit::TRACER_MISSING,
            "bpftrace is not installed (not found in PATH)",
            Some("install it (Debian/Ubuntu: apt-get install bpftrace), or use --print-program"),
        ));
    }
    // SAFETY: geteuid has no preconditions
    if unsafe { libc::geteuid() } != 0 {
        return Err(fail(
            exit::TRACER_REFUSED,
            "tracing needs root to load BPF programs",
            Some("run pystackd trace with sudo"),
        ));
    }
    ensure_tracefs()?;
    let mut resolver = Resolver::new(process.layout());
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut sink = Sink::new(args);
    let mut names = Names::new();
    let pid = args.pid;
    let mut finish = |(tid, probe, c, mut native): Done, read_failed: bool, _time_ns: u64| {
        // the tracer gave addresses only: named here
        for f in native.iter_mut().filter(|f| f.symbol.is_none()) {
            if let Some(n) = names.name(pid, f.address) {
                f.module = Some(n.module);
                if let Some((symbol, offset)) = n.symbol {
                    f.symbol = Some(symbol);
                    f.offset = Some(offset);
                }
            }
        }
        let python: Vec<PyFrame> = resolver
            .resolve(process.memory(), &c)
            .into_iter()
            .map(PyFrame::from_resolved)
            .collect();
        let status = if c.no_thread {
            "nothread"
        } else if read_failed {
            "incomplete"
        } else {
            "ok"
        };
        sink.add(
            &mut out,
            Firing {
                tid,
                probe,
                status,
                native,
                python,
                truncated: c.truncated,
            },
        );
    };
    let ran = match chosen {
        #[cfg(target_os = "linux")]
        Chosen::Direct(probes, fsbase) => {
            let breakpoints = Breakpoints::locate(args.pid, &args.probes);
            let loaded = direct::load(&plan, args.pid, probes, fsbase, true)?;
            let o = direct::run(loaded, args.pid, duration, breakpoints, &mut |batch| {
                for d in batch {
                    finish(d.done, d.read_failed, d.time_ns)
                }
            })?;
            Ran {
                fired: Some(o.fired.iter().sum()),
                incomplete: 0,
                lost_records: 0,
                lost_firings: o.lost.iter().sum(),
                malformed: 0,
                elapsed: o.elapsed,
                exited: o.exited,
                breakpoints: o.breakpoints,
                tracer_error: None,
                interrupted: o.interrupted,
            }
        }
        Chosen::Bpftrace => run_bpftrace(
            args,
            &plan,
            duration,
            bpftrace_path.expect("checked above"),
            &mut finish,
        )?,
    };
    if sink.total == 0 && !ran.interrupted && !ran.exited {
        if let Some(msg) = ran.tracer_error {
            return Err(fail(
                exit::TRACER_REFUSED,
                msg,
                Some("check the probe names (bpftrace -l 'uprobe:/path/lib.so:*'); --print-program shows the program"),
            ));
        }
    }
    let _ = sink.finish(&mut out);
    let _ = out.flush();
    drop(out);
    if ran.incomplete > 0 || ran.lost_records > 0 {
        eprintln!(
            "pystackd: bpftrace dropped {} output records (its reader fell behind): {} firings incomplete and left out",
            ran.lost_records, ran.incomplete
        );
    }
    if ran.lost_firings > 0 {
        eprintln!(
            "pystackd: {} firings were lost: the ring buffer was full (pystackd fell behind); \
             fewer probes or a lower rate lose fewer",
            ran.lost_firings
        );
    }
    // every firing the probes counted is either printed, incomplete, lost, or never delivered
    if let Some(fired) = ran.fired {
        let undelivered = fired.saturating_sub(sink.total + ran.incomplete + ran.lost_firings);
        if undelivered > 0 {
            eprintln!(
                "pystackd: {undelivered} of {fired} firings never reached pystackd (the tracer's output \
                 ring was full, or they were still queued when it was stopped); fewer probes or a \
                 lower rate lose fewer"
            );
        }
    }
    eprintln!(
        "pystackd: {} firings in {:.1} s; {} on threads without Python; {} with code objects freed and reused{}{}",
        sink.total,
        ran.elapsed.as_secs_f64(),
        sink.nothread,
        sink.mismatched,
        if sink.incomplete > 0 {
            format!(
                "; {} captures cut short by a failed read (their outer frames are missing, marked)",
                sink.incomplete
            )
        } else {
            String::new()
        },
        if ran.malformed > 0 {
            format!("; {} malformed lines from bpftrace", ran.malformed)
        } else {
            String::new()
        }
    );
    for line in ran.breakpoints.report() {
        eprintln!("pystackd: {line}");
    }
    if ran.exited {
        eprintln!("pystackd: process {} exited during the trace", args.pid);
        return Ok(exit::PROCESS_EXITED);
    }
    if ran.breakpoints.any_missing() {
        eprintln!(
            "pystackd: the trace is missing calls of those probes (docs/trace.md, Limits: \
             what has taken breakpoints out)"
        );
        return Ok(exit::PROBE_REMOVED);
    }
    if sink.mismatched > 0 {
        return Ok(exit::CODE_REUSED);
    }
    if sink.total > 0 && sink.nothread == sink.total {
        eprintln!(
            "pystackd: no firing was on a thread running Python code (a probe in another thread?)"
        );
        return Ok(exit::NOT_PYTHON_THREAD);
    }
    Ok(exit::OK)
}

/// Run bpftrace with the capture rendered as its program.
fn run_bpftrace(
    args: &TraceArgs,
    plan: &Plan,
    duration: Duration,
    bpftrace: PathBuf,
    finish: &mut dyn FnMut(Done, bool, u64),
) -> Result<Ran, Failure> {
    let program = capture::bpftrace::render_program(
        plan,
        args.pid,
        &args.probes,
        duration.as_nanos().min(u128::from(u64::MAX)) as u64,
    );
    let dir = std::env::temp_dir().join(format!("pystackd-trace-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let file = dir.join("trace.bt");
    std::fs::write(&file, &program).map_err(|e| {
        fail(
            exit::FAILURE,
            format!("writing {}: {e}", file.display()),
            None,
        )
    })?;
    let mut child = Command::new(&bpftrace)
        .arg(&file)
        // a larger output ring per CPU: fewer records lost when firings come fast
        .env("BPFTRACE_PERF_RB_PAGES", "1024")
        // user frames as addresses, named by pystackd: bpftrace 0.17's own naming (bcc's)
        // closes descriptors that are not its own now and then, and so detaches probes in
        // the middle of a trace (a profile probe stops firing, a uprobe's breakpoint is taken
        // out, stack ids fail with EBADF: docs/trace.md); it was also most of a trace's CPU
        .env("BPFTRACE_NO_USER_SYMBOLS", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            fail(
                exit::TRACER_REFUSED,
                format!("starting bpftrace: {e}"),
                None,
            )
        })?;
    // Ctrl-C reaches bpftrace too (same process group): it stops, and what it traced is
    // still resolved and printed here
    // SAFETY: setting a signal disposition; no handler runs
    unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    let stderr = child.stderr.take();
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut e) = stderr {
            let _ = std::io::Read::read_to_string(&mut e, &mut s);
        }
        s
    });
    // The probes stop --duration after bpftrace attached them all (its BEGIN: compiling
    // takes seconds), in the kernel; then everything they queued is read before bpftrace is
    // stopped (SIGINT: it drops what is still queued, so not before the output has been
    // quiet a while). The target exiting, or Ctrl-C, ends it early.
    let exited = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let attached = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let clock = Instant::now();
    // when the last line came, in ms on `clock`
    let last_line = Arc::new(std::sync::atomic::AtomicU64::new(0));
    // set by the reader when the trace must end now (a probe matched nothing)
    let abort = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (exited, done, attached, last_line, abort) = (
            exited.clone(),
            done.clone(),
            attached.clone(),
            last_line.clone(),
            abort.clone(),
        );
        let pid = args.pid;
        let child_pid = child.id() as i32;
        let mut breakpoints = Breakpoints::locate(pid, &args.probes);
        // its own handle: the reader's is the resolver's, on this thread's other side
        let memory = pyframe_reader::platform::open_memory(pid).ok();
        std::thread::spawn(move || {
            let mut ending: Option<Instant> = None;
            let mut next_look = Instant::now();
            while !done.load(Ordering::Relaxed) {
                if abort.load(Ordering::Relaxed) {
                    stop_bpftrace(child_pid, &done);
                    return breakpoints;
                }
                let gone = !pyframe_reader::platform::exists(pid)
                    || pyframe_reader::platform::has_exited(pid);
                let since_attach = attached.lock().ok().and_then(|a| a.map(|t| t.elapsed()));
                let over = since_attach.is_some_and(|t| t >= duration);
                if gone {
                    exited.store(true, Ordering::Relaxed);
                }
                // the breakpoints, while the probes are on (all attached: BEGIN has run)
                if let (Some(at), Some(mem), false, false) = (since_attach, &memory, over, gone) {
                    if !breakpoints.is_empty() && Instant::now() >= next_look {
                        breakpoints.check(mem, at);
                        next_look = Instant::now() + BREAKPOINT_LOOK;
                    }
                }
                if gone || over {
                    let since = *ending.get_or_insert_with(Instant::now);
                    let quiet_ms = (clock.elapsed().as_millis() as u64)
                        .saturating_sub(last_line.load(Ordering::Relaxed));
                    if quiet_ms >= DRAIN_QUIET.as_millis() as u64 || since.elapsed() >= DRAIN_MAX {
                        stop_bpftrace(child_pid, &done);
                        return breakpoints;
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            breakpoints
        })
    };
    let mut parser = OutputParser::new();
    let stdout = child.stdout.take().expect("piped");
    let mut fired: u64 = 0;
    let mut unmatched: Option<(usize, usize)> = None;
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        last_line.store(clock.elapsed().as_millis() as u64, Ordering::Relaxed);
        // `Attaching N probes...`: N counts BEGIN and END; a probe that matched nothing is
        // left out by bpftrace without an error, and the trace would wait for nothing
        if let Some(n) = line
            .strip_prefix("Attaching ")
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse::<usize>().ok())
        {
            let given = args.probes.len();
            let wildcard = args
                .probes
                .iter()
                .any(|p| p.contains('*') || p.contains('{'));
            let user = n.saturating_sub(2);
            if user == 0 || (!wildcard && user < given) {
                unmatched = Some((user, given));
                abort.store(true, Ordering::Relaxed);
            }
            continue;
        }
        if line.trim_end() == "@pystackd begin" {
            if let Ok(mut a) = attached.lock() {
                a.get_or_insert_with(Instant::now);
            }
            continue;
        }
        // printed by bpftrace when it stops: `@pystackd_fired[PROBE]: N`
        if let Some(rest) = line.strip_prefix("@pystackd_fired[") {
            if let Some(n) = rest
                .rsplit_once("]: ")
                .and_then(|(_, n)| n.trim().parse::<u64>().ok())
            {
                fired += n;
                continue;
            }
        }
        if let Some(done) = parser.line(&line) {
            finish(done, false, 0);
        }
    }
    if let Some(done) = parser.finish() {
        finish(done, false, 0);
    }
    let status = child.wait();
    done.store(true, Ordering::Relaxed);
    let breakpoints = watcher.join().unwrap_or_default();
    let stderr = err_thread.join().unwrap_or_default();
    let elapsed = attached
        .lock()
        .ok()
        .and_then(|a| a.map(|t| t.elapsed()))
        .unwrap_or_default()
        // the time the probes were on (reading what they queued took longer)
        .min(duration);
    let _ = std::fs::remove_dir_all(&dir);
    let was_interrupted = status
        .as_ref()
        .is_ok_and(|s| s.success() || std::os::unix::process::ExitStatusExt::signal(s).is_some());
    if let Some((attached, given)) = unmatched {
        return Err(fail(
            exit::TRACER_REFUSED,
            format!(
                "bpftrace attached {attached} of the {given} probes given: a probe matched nothing"
            ),
            Some("check the probe names (bpftrace -l 'uprobe:/path/lib.so:*'); --print-program shows the program"),
        ));
    }
    let msg: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.contains("RLIMIT_MEMLOCK"))
        .collect();
    Ok(Ran {
        fired: Some(fired),
        incomplete: parser.incomplete,
        lost_records: parser.lost_records,
        lost_firings: 0,
        malformed: parser.malformed,
        elapsed,
        exited: exited.load(Ordering::Relaxed),
        breakpoints,
        tracer_error: Some(format!(
            "bpftrace failed ({}):\n{}",
            status.map(|s| s.to_string()).unwrap_or_default(),
            msg.join("\n")
        )),
        interrupted: was_interrupted,
    })
}

/// Where resolved firings go: printed as they come, or counted (--aggregate, folded).
struct Sink {
    output: TraceOutput,
    aggregate: bool,
    qualname: bool,
    counts: HashMap<Firing, u64>,
    pub total: u64,
    pub nothread: u64,
    pub mismatched: u64,
    /// Captures a failed read cut short.
    pub incomplete: u64,
}

impl Sink {
    fn new(args: &TraceArgs) -> Sink {
        Sink {
            output: args.output,
            aggregate: args.aggregate || args.output == TraceOutput::Folded,
            qualname: args.qualname,
            counts: HashMap::new(),
            total: 0,
            nothread: 0,
            mismatched: 0,
            incomplete: 0,
        }
    }

    fn add(&mut self, out: &mut dyn Write, f: Firing) {
        self.total += 1;
        if f.status == "nothread" {
            self.nothread += 1;
        }
        if f.status == "incomplete" {
            self.incomplete += 1;
        }
        if f.python
            .iter()
            .any(|p| matches!(p, PyFrame::Mismatch { .. }))
        {
            self.mismatched += 1;
        }
        if self.aggregate {
            *self.counts.entry(f).or_insert(0) += 1;
        } else {
            let _ = write_firing(out, self.output, self.qualname, &f, None);
        }
    }

    fn finish(&mut self, out: &mut dyn Write) -> std::io::Result<()> {
        if !self.aggregate {
            return Ok(());
        }
        let mut v: Vec<(&Firing, u64)> = self.counts.iter().map(|(f, c)| (f, *c)).collect();
        // least frequent first, as DTrace prints aggregations: the top stack ends the output
        v.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.tid.cmp(&b.0.tid)));
        for (f, c) in v {
            write_firing(out, self.output, self.qualname, f, Some(c))?;
        }
        Ok(())
    }
}

/// The Python frames, innermost group first, split into eval calls (by `entry`).
fn groups(python: &[PyFrame]) -> Vec<&[PyFrame]> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, f) in python.iter().enumerate() {
        if f.entry() {
            out.push(&python[start..=i]);
            start = i + 1;
        }
    }
    if start < python.len() {
        out.push(&python[start..]);
    }
    out
}

/// Where the Python frames go: the native frames (indexes, innermost first) of the eval
/// calls, one per group of Python frames, when the two counts agree (frame-pointer builds);
/// `None` when they cannot be placed.
fn placement(f: &Firing) -> Option<(Vec<usize>, Vec<&[PyFrame]>)> {
    let mut evals = Vec::new();
    let syms: Vec<(usize, &[u8])> = f
        .native
        .iter()
        .enumerate()
        .map(|(i, n)| (i, n.symbol.as_deref().unwrap_or("").as_bytes()))
        .collect();
    stacktext::matching::eval_calls(syms, &mut evals);
    let groups = groups(&f.python);
    (!groups.is_empty() && evals.len() == groups.len()).then_some((evals, groups))
}

/// Folded frames, outermost first: Python frames right after the eval frame that runs them
/// (annotate's form `file:function:line`); unplaced, the Python frames come first, then the
/// native ones (the probe's C function on top of the Python path that led to it).
fn folded_parts(f: &Firing, qualname: bool) -> Vec<String> {
    let mut parts = Vec::new();
    match placement(f) {
        Some((evals, groups)) => {
            for (i, n) in f.native.iter().enumerate().rev() {
                parts.push(n.text());
                if let Some(g) = evals.iter().position(|&e| e == i) {
                    parts.extend(groups[g].iter().rev().map(|p| p.folded(qualname)));
                }
            }
        }
        None => {
            parts.extend(f.python.iter().rev().map(|p| p.folded(qualname)));
            parts.extend(f.native.iter().rev().map(NativeFrame::text));
        }
    }
    if f.status == "incomplete" {
        // the outer frames were not seen: the stack hangs under a root of its own
        parts.insert(0, "[capture cut short]".into());
    }
    parts.into_iter().map(|p| p.replace(';', ":")).collect()
}

/// The stack as text lines, innermost first: native frames with Python groups under their
/// eval frames, or after all native frames when they cannot be placed.
pub fn stack_lines(f: &Firing, qualname: bool) -> Vec<String> {
    let place = placement(f);
    let placed = place.is_some();
    let (evals, groups) = place.unwrap_or_default();
    let mut lines = Vec::new();
    let mut g = 0;
    for (i, n) in f.native.iter().enumerate() {
        lines.push(n.text());
        if placed && evals.get(g) == Some(&i) {
            for p in groups[g] {
                lines.push(format!("  {}", p.text(qualname)));
            }
            g += 1;
        }
    }
    if !placed {
        if f.status == "nothread" {
            lines.push("(no Python thread state for this thread)".into());
        } else if !f.python.is_empty() {
            lines.push("(python frames at probe time, not placed in the native stack)".into());
            for p in &f.python {
                lines.push(format!("  {}", p.text(qualname)));
            }
        }
    }
    if f.truncated {
        lines.push("  [ ... more Python frames (raise --depth) ]".into());
    }
    if f.status == "incomplete" {
        lines.push("  [ ... capture cut short: a read failed at probe time; outer Python frames not seen ]".into());
    }
    lines
}

fn write_firing(
    out: &mut dyn Write,
    output: TraceOutput,
    qualname: bool,
    f: &Firing,
    count: Option<u64>,
) -> std::io::Result<()> {
    match output {
        TraceOutput::Text => {
            match count {
                Some(_) => writeln!(out, "{}:", f.probe)?,
                None => writeln!(out, "{} tid {}:", f.probe, f.tid)?,
            }
            for l in stack_lines(f, qualname) {
                writeln!(out, "    {l}")?;
            }
            match count {
                Some(c) => writeln!(out, "    {c}\n")?,
                None => writeln!(out)?,
            }
        }
        TraceOutput::Json => {
            #[derive(Serialize)]
            struct J<'a> {
                #[serde(flatten)]
                firing: &'a Firing,
                #[serde(skip_serializing_if = "Option::is_none")]
                count: Option<u64>,
            }
            serde_json::to_writer(&mut *out, &J { firing: f, count })?;
            writeln!(out)?;
        }
        TraceOutput::Folded => {
            let parts = folded_parts(f, qualname);
            if !parts.is_empty() {
                writeln!(out, "{} {}", parts.join(";"), count.unwrap_or(1))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parser_groups_lines_by_firing() {
        let mut p = OutputParser::new();
        let lines = [
            "Attaching 2 probes...",
            "@pystackd 7 100 pyframes=10:2:5,0:0:0",
            "@pystackd 8 101 pyframes=!nothread",
            "@pystackd 7 100 pyframes+=20:4:6,...",
            "@pystackd 8 101 end 0 uprobe:/tmp/libmarker.so:marker_a",
            "",
            "\t7fa4fa4810f9 marker_a+0 (/tmp/libmarker.so)",
            "\t7ffdb130c980 0x7ffdb130c980 ([unknown])",
            "",
            "@pystackd 7 100 end 2",
            "@pystackd 9 102 pyframes+=20:4:6,...",
            "@pystackd 9 102 end 2",
            "\t7fa4fa4810f9 marker_a+0 (/tmp/libmarker.so)",
            "Lost 12 events",
        ];
        let mut done = Vec::new();
        for l in lines {
            done.extend(p.line(l));
        }
        done.extend(p.finish());
        assert_eq!(done.len(), 2);
        assert_eq!(done[0].0, 8);
        assert_eq!(done[0].1, "uprobe:/tmp/libmarker.so:marker_a");
        assert!(done[0].2.no_thread);
        assert_eq!(done[0].3.len(), 2);
        assert_eq!(done[0].3[0].symbol.as_deref(), Some("marker_a"));
        assert_eq!(done[0].3[0].text(), "libmarker.so`marker_a+0x0");
        assert_eq!(done[1].2.frames.len(), 2);
        assert!(done[1].2.truncated);
        assert_eq!(p.malformed, 1);
        assert_eq!(p.incomplete, 1);
        assert_eq!(p.lost_records, 12);
    }

    fn native(sym: &str) -> NativeFrame {
        NativeFrame {
            address: 0x1000,
            symbol: Some(sym.into()),
            offset: Some(16),
            module: Some("/lib/libpython3.12.so.1.0".into()),
        }
    }

    fn py(function: &str, entry: bool) -> PyFrame {
        PyFrame::Frame {
            function: function.into(),
            qualname: None,
            filename: "/app/x.py".into(),
            line: Some(3),
            entry,
        }
    }

    /// Python groups go under their eval frames when the counts agree, after the native
    /// frames (marked) when they do not; folded keeps eval frame before its Python frames.
    #[test]
    fn python_frames_are_placed_under_eval_frames_or_after() {
        let mut f = Firing {
            tid: 1,
            probe: "profile:hz:99".into(),
            status: "ok",
            native: vec![
                native("leaf"),
                native("_PyEval_EvalFrameDefault"),
                native("callback"),
                native("_PyEval_EvalFrameDefault"),
                native("main"),
            ],
            python: vec![py("inner", true), py("mid", false), py("outer", true)],
            truncated: false,
        };
        let lines = stack_lines(&f, false);
        assert_eq!(
            lines,
            [
                "libpython3.12.so.1.0`leaf+0x10",
                "libpython3.12.so.1.0`_PyEval_EvalFrameDefault+0x10",
                "  [ /app/x.py:3 (inner) ]",
                "libpython3.12.so.1.0`callback+0x10",
                "libpython3.12.so.1.0`_PyEval_EvalFrameDefault+0x10",
                "  [ /app/x.py:3 (mid) ]",
                "  [ /app/x.py:3 (outer) ]",
                "libpython3.12.so.1.0`main+0x10",
            ]
        );
        let folded = folded_parts(&f, false).join(";");
        assert!(folded.starts_with("libpython3.12.so.1.0`main+0x10;libpython3.12.so.1.0`_PyEval_EvalFrameDefault+0x10;/app/x.py:outer:3;/app/x.py:mid:3;"), "{folded}");
        // a short native stack: one eval frame for two groups
        f.native.drain(2..);
        let lines = stack_lines(&f, false);
        assert_eq!(
            lines[2],
            "(python frames at probe time, not placed in the native stack)"
        );
        assert_eq!(lines.len(), 6);
        assert!(folded_parts(&f, false)[0].ends_with(":outer:3"));
    }
}
