//! `pystackd record`: a sampling profiler. Reads every thread's Python stack at a fixed
//! rate, counts identical stacks, and writes a flame graph (SVG, through `inferno`), a
//! speedscope file or folded lines.
//!
//! The sampling itself (rate, idle threads, torn reads dropped and counted, Ctrl-C, the
//! process exiting) is `crate::sample`'s, shared with `pystackd top`.

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use protocol::ErrorKind;

use crate::client::{Client, ClientError, Global};
use crate::exit;
use crate::family::{Family, FamilyEvent};
use crate::profile::{Profile, RecordFormat};
use crate::sample::{self, End};

#[cfg(target_os = "linux")]
mod kernel;

/// How samples are taken (`--engine`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// Read the process's memory from pystackd, checked for consistency (or stopped with
    /// --pause): every thread, idle ones too.
    Read,
    /// In the kernel, at each thread's CPU-time timer, by a BPF program (Linux, root):
    /// exact, cheap, threads while they run only.
    Kernel,
}

#[derive(clap::Args, Debug)]
pub struct RecordArgs {
    /// The CPython process to sample (or start one: `-- COMMAND ARGS`).
    #[arg(
        long,
        value_name = "PID",
        required_unless_present = "command",
        conflicts_with = "command"
    )]
    pub pid: Option<u32>,
    /// Where to write the profile.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Output format [default: from the file name: .svg flame graph, .json speedscope,
    /// .pprof/.pb/.gz pprof, .jsonl raw, anything else folded].
    #[arg(long, value_enum)]
    pub format: Option<RecordFormat>,
    /// Samples per second.
    #[arg(long, value_name = "HZ", default_value_t = 100)]
    pub rate: u32,
    /// Stop after this many seconds [default: until Ctrl-C or the process exits].
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,
    /// Stop every thread for each sample (exact, slower for the target; needs ptrace rights).
    #[arg(long)]
    pub pause: bool,
    /// Keep samples of idle threads (blocked in the kernel: sleeping, waiting for I/O or a
    /// lock); by default only threads running or runnable are counted.
    #[arg(long)]
    pub idle: bool,
    /// One root per thread (`thread NAME (TID)`), so threads are told apart.
    #[arg(long)]
    pub threads: bool,
    /// Count only the thread holding the GIL at each sample: where the interpreter spends
    /// its one CPU (refused for free-threaded builds, which have no GIL).
    #[arg(long)]
    pub gil: bool,
    /// Also sample every process the target starts (and those start), one root per
    /// process (`process PID (command)`); read directly, not through the daemon.
    #[arg(long)]
    pub subprocesses: bool,
    /// Native frames too: each sample stops the process (as --pause), unwinds every thread
    /// and puts its Python frames in place of the eval-loop frames running them, like
    /// `stack --native` (through the daemon when it runs, as without it).
    #[arg(long)]
    pub native: bool,
    /// Read the process directly even when the daemon is running.
    #[arg(long)]
    pub no_daemon: bool,
    /// How samples are taken: `read` (pystackd reads the process, every thread) or
    /// `kernel` (a BPF program at each thread's CPU-time timer, threads while they run
    /// only; root, Linux).
    #[arg(long, value_enum, default_value_t = Engine::Read)]
    pub engine: Engine,
    /// --engine kernel: Python frames captured per sample at most (a deeper stack is
    /// recorded under a marked root).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=capture::plan::MAX_DEPTH as i64))]
    pub depth: u32,
    /// Start this program and sample it until it exits, after `--` (`-- python3 app.py`).
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

pub const RECORD_HELP: &str = "\
Samples every thread's Python stack of a running process and writes a profile:
  pystackd record --pid 4242 -o profile.svg              flame graph, 100 Hz, until Ctrl-C
  pystackd record --pid 4242 --duration 10 -o p.json     speedscope (https://www.speedscope.app)
  pystackd record --pid 4242 --rate 1000 --threads -o p.folded
  pystackd record --pid 4242 --duration 30 -o cpu.pprof; go tool pprof -top cpu.pprof
  pystackd record -o profile.svg -- python3 app.py --port 8080   start it, sample until it exits
  pystackd record --subprocesses -o p.svg -- ./workers.sh   a launcher and the Pythons it starts
  pystackd record --pid 4242 --gil -o gil.svg             only the thread holding the GIL
  pystackd record --pid 4242 --native -o n.svg            C frames too, Python in their place
  pystackd record --pid 4242 --duration 5 -o s.jsonl      every sample (time, thread, GIL, idle)

Each sample is one read of the process's memory while it runs: a read the target moved under
is retried and, if it never holds still, dropped and counted, never recorded wrong
(docs/consistency.md). --pause stops every thread for each read instead. Threads blocked in
the kernel (sleep, I/O, locks) are idle and left out unless --idle. A progress line goes to
stderr; Ctrl-C ends the recording and still writes the file, and so does the target exiting.

With --pid, record goes through the daemon (pystackd serve) when it runs, as stack does: an
unprivileged user records what they could read themselves (--no-daemon reads directly).
Without --duration a session there lasts until Ctrl-C, the process exiting, or the daemon's
longest session (1,000,000 samples, at most an hour). --engine kernel always samples
directly (it loads a BPF program: root).

With -- COMMAND, the program is started with pystackd's terminal, environment and working
directory, and sampled from the moment its interpreter has a thread (the process must become
CPython itself, within 5 s: a shell script that execs python works, one that runs python as a
child needs --subprocesses). Ctrl-C reaches it too. Its exit status is printed; when
--duration ends first, the file is written and pystackd waits for the program to exit.

--subprocesses looks for new children every 0.1 s (a process that lives shorter can be
missed) and follows each one that is CPython, at the same rate, until it exits; one that
runs exec is followed as its new program. Each process is its own root in the profile. The
recording ends when every process followed and the one named have exited.

--gil counts, in each sample, only the thread the read saw holding the GIL; a thread whose
GIL state changed under the read is left out and counted (never guessed).

--native stops the process for every sample (ptrace, as --pause: exact, and each sample
costs the target about a millisecond), unwinds each Python thread's native stack with its
CFI (.eh_frame/.debug_frame) and names the frames from the symbol tables; each eval-loop
frame is replaced by the Python frames it runs. Threads the interpreter does not know are
left out. Rates above a few hundred per second are not reached.

--engine kernel takes each sample in the kernel instead (Linux, root): every thread of the
target gets a timer of its CPU time, --rate per second of CPU it uses, and when it fires a
BPF program walks that thread's Python frames then and there, while the interrupt holds it
(the capture of `pystackd trace --engine direct`). Every sample is exact, costs pystackd no
system call, and tens of thousands per second are reached. It samples CPU time: a thread
blocked or waiting for a CPU or the GIL is never sampled (so --idle, --gil and --pause do not
apply, nor --native or --subprocesses yet). Stacks deeper than --depth (64) are recorded
under a marked root. docs/record.md compares the two engines.

Exit status: 0 written, 1 could not write the output or start COMMAND, 3 no such process,
4 not a CPython process (COMMAND: it is then stopped), 5 permission denied, 6 unsupported
version, 7 the process exited before the first sample.";

fn format_of(args: &RecordArgs) -> RecordFormat {
    args.format
        .unwrap_or_else(|| match args.output.extension().and_then(|e| e.to_str()) {
            Some("svg") => RecordFormat::Flamegraph,
            Some("json") => RecordFormat::Speedscope,
            Some("pprof" | "pb" | "gz") => RecordFormat::Pprof,
            Some("jsonl") => RecordFormat::Raw,
            _ => RecordFormat::Folded,
        })
}

/// The output file, created before sampling starts: an unwritable path fails at once.
fn open_output(path: &Path) -> io::Result<File> {
    File::create(path)
}

pub fn run(args: &RecordArgs, global: &Global) -> ExitCode {
    if let Err(msg) = sample::check_settings("record", args.rate, args.duration) {
        eprintln!("{msg}");
        return ExitCode::from(exit::USAGE);
    }
    if let Some(flag) = kernel_conflicts(args) {
        eprintln!(
            "pystackd record: {flag} does not apply to --engine kernel (it samples threads \
             running on a CPU, in the kernel, without stopping them; see --help)"
        );
        return ExitCode::from(exit::USAGE);
    }
    let format = format_of(args);
    let mut file = match open_output(&args.output) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("pystackd record: {}: {e}", args.output.display());
            return ExitCode::from(exit::FAILURE);
        }
    };
    // The daemon when it answers (it reads what the caller may read, root or not); the
    // process directly when there is none. A started COMMAND is the caller's own child:
    // read directly.
    // the daemon's sessions are per process, in its four formats
    let direct_only =
        args.subprocesses || format == RecordFormat::Raw || args.engine == Engine::Kernel;
    if let (Some(pid), false, false) = (args.pid, global.no_daemon, direct_only) {
        match via_daemon(args, pid, format, &global.socket, file) {
            Ok(code) => return code,
            // not running: directly, with the file opened again
            Err(f) => file = f,
        }
    }
    let mut started_child = None;
    let pid = match (args.pid, args.command.first()) {
        (Some(pid), _) => pid,
        (None, Some(_)) => match start_command(&args.command, args.subprocesses) {
            Ok(c) => {
                let pid = c.child.id();
                started_child = Some(c);
                pid
            }
            Err(code) => {
                let _ = std::fs::remove_file(&args.output);
                return ExitCode::from(code);
            }
        },
        // clap requires one of them
        (None, None) => return ExitCode::from(exit::USAGE),
    };
    if args.engine == Engine::Kernel {
        #[cfg(target_os = "linux")]
        let code = kernel::run(args, pid, format, file, started_child.is_some());
        #[cfg(not(target_os = "linux"))]
        let code = {
            drop(file);
            let _ = std::fs::remove_file(&args.output);
            eprintln!("pystackd record: --engine kernel is Linux only (eBPF); use --engine read");
            ExitCode::from(exit::USAGE)
        };
        if let Some(c) = started_child.as_mut() {
            if code != ExitCode::from(exit::OK) {
                c.stop();
            } else {
                report_child(c, pid, None);
            }
        }
        return code;
    }
    let settings = sample::Settings {
        pid,
        rate: args.rate,
        duration: args.duration.map(Duration::from_secs_f64),
        pause: args.pause,
        idle: args.idle,
        classify_idle: false,
        gil: args.gil,
        native: args.native,
    };
    let mut family = match Family::attach(settings, args.subprocesses) {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_file(&args.output);
            if let Some(c) = started_child.as_mut() {
                c.stop();
            }
            return ExitCode::from(sample::report_attach_error("record", &e));
        }
    };
    let sigint = sample::catch_sigint();
    let started = family.started();
    let progress = io::stderr().is_terminal();
    let mut last_progress = started;
    let mut profile = Profile::new(family.interval().as_nanos() as i64);
    if format == RecordFormat::Raw {
        profile.keep_samples();
    }
    let end = loop {
        match family.next_event() {
            FamilyEvent::Wait(d) => std::thread::sleep(d),
            FamilyEvent::Sample(process, s) => {
                let process = args.subprocesses.then_some(&process);
                let at = started.elapsed();
                for t in s.counted() {
                    profile.add_sample(process, t, args.threads, at, s.is_idle(t));
                }
            }
            FamilyEvent::Note(n) => {
                let clear = if progress { "\r\x1b[K" } else { "" };
                eprintln!("{clear}pystackd record: {n}");
            }
            FamilyEvent::End(end) => break end,
        }
        if progress && last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            let secs = started.elapsed().as_secs_f64();
            let c = family.counts();
            eprint!(
                "\rpystackd record: {} samples in {secs:.0} s ({:.0}/s), {} dropped as torn   ",
                c.samples,
                c.samples as f64 / secs,
                c.dropped
            );
        }
    };
    // notes of the last moments (a process that exited)
    for n in family.take_notes() {
        eprintln!("pystackd record: {n}");
    }
    drop(sigint);
    if let End::Error(e) = &end {
        eprintln!("pystackd record: {e}");
    }
    let ended_by = end.describe();
    // the started program, gone: reaped now, so its status can be told
    let child_status = started_child
        .as_mut()
        .and_then(|c| c.child.try_wait().ok().flatten());
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    if progress {
        eprintln!();
    }
    let c = family.counts();
    let (samples, dropped, idle_skipped) = (c.samples, c.dropped, c.idle_skipped);
    let mut out = BufWriter::new(file);
    if let Err(e) = profile
        .write(format, pid, started.elapsed(), &mut out)
        .and_then(|_| out.flush())
    {
        eprintln!("pystackd record: writing {}: {e}", args.output.display());
        return ExitCode::from(exit::FAILURE);
    }
    let gil = if args.gil {
        format!(
            ", {} thread samples not holding the GIL and {} whose GIL state changed under the \
             read left out (--gil)",
            c.not_gil_skipped, c.gil_unknown_skipped
        )
    } else {
        String::new()
    };
    let processes = if args.subprocesses {
        format!(" of {} processes", family.followed)
    } else {
        String::new()
    };
    eprintln!(
        "pystackd record: {} samples{processes} in {secs:.1} s ({:.0}/s of {} requested{}), {} \
         dropped as torn reads ({} read again after a torn first walk), {} idle thread \
         samples left out{}{gil}; {ended_by}; wrote {}",
        samples,
        samples as f64 / secs,
        args.rate,
        if args.subprocesses {
            " per process"
        } else {
            ""
        },
        dropped,
        c.retried,
        idle_skipped,
        if args.idle { " (none: --idle)" } else { "" },
        args.output.display()
    );
    if let Some(c) = started_child.as_mut() {
        report_child(c, pid, child_status);
    }
    if samples == 0 && matches!(end, End::Exited) {
        return ExitCode::from(ErrorKind::ProcessExited.exit_code());
    }
    ExitCode::from(exit::OK)
}

/// Waits for a started program (its `status` if already reaped) and prints how it ended.
fn report_child(c: &mut StartedCommand, pid: u32, status: Option<std::process::ExitStatus>) {
    let status = match status.or_else(|| c.child.try_wait().ok().flatten()) {
        Some(s) => Some(s),
        None => {
            eprintln!(
                "pystackd record: waiting for {} (pid {pid}) to exit",
                c.program
            );
            c.child.wait().ok()
        }
    };
    if let Some(s) = status {
        eprintln!("pystackd record: {} {}", c.program, describe_status(s));
    }
}

/// Flags `--engine kernel` does not take, named, or `None`.
fn kernel_conflicts(args: &RecordArgs) -> Option<&'static str> {
    if args.engine != Engine::Kernel {
        return None;
    }
    [
        (args.pause, "--pause"),
        (args.idle, "--idle"),
        (args.gil, "--gil"),
        (args.native, "--native"),
        (args.subprocesses, "--subprocesses"),
    ]
    .into_iter()
    .find_map(|(on, name)| on.then_some(name))
}

/// A program started by `record -- COMMAND`.
struct StartedCommand {
    child: std::process::Child,
    program: String,
}

impl StartedCommand {
    /// Stops it (SIGTERM, then SIGKILL after a second) and reaps it.
    fn stop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: signalling our own child, not yet reaped (its pid cannot be reused)
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let until = Instant::now() + Duration::from_secs(1);
        while Instant::now() < until {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How long a started program has to become a CPython process with a thread.
const COMMAND_START: Duration = Duration::from_secs(5);

/// Starts COMMAND and waits until its process is CPython with a thread state (the moment
/// sampling can begin), or fails with the exit status to return.
fn start_command(command: &[String], subprocesses: bool) -> Result<StartedCommand, u8> {
    let program = command[0].clone();
    let child = match std::process::Command::new(&program)
        .args(&command[1..])
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pystackd record: cannot start {program}: {e}");
            return Err(exit::FAILURE);
        }
    };
    let mut started = StartedCommand { child, program };
    if subprocesses {
        // the command need not be CPython itself: its children are followed
        return Ok(started);
    }
    let pid = started.child.id();
    let deadline = Instant::now() + COMMAND_START;
    let mut last_error = None;
    loop {
        if let Ok(Some(status)) = started.child.try_wait() {
            eprintln!(
                "pystackd record: {} {} before its interpreter could be sampled",
                started.program,
                describe_status(status)
            );
            return Err(ErrorKind::ProcessExited.exit_code());
        }
        // a shell script that execs python, or an interpreter still starting: try again
        match pyframe_reader::PythonProcess::attach(pid) {
            Ok(mut p) => match p.stack_without_states(&pyframe_reader::StackOptions::default()) {
                Ok(s) if !s.threads.is_empty() => return Ok(started),
                Ok(_) => {}
                Err(e) => last_error = Some(e),
            },
            Err(e) => last_error = Some(e),
        }
        if Instant::now() >= deadline {
            let why =
                last_error.map_or_else(|| "it has no Python thread".to_string(), |e| e.to_string());
            eprintln!(
                "pystackd record: {} (pid {pid}) is not a CPython process {} s after it started \
                 ({why}); stopping it. record follows the process it starts, not its children.",
                started.program,
                COMMAND_START.as_secs()
            );
            started.stop();
            return Err(ErrorKind::NotPython.exit_code());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn describe_status(s: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => format!("ended ({s})"),
    }
}

/// How often a recording through the daemon asks how it is going.
const DAEMON_POLL: Duration = Duration::from_millis(250);

/// `record --pid` through the daemon's `profile` methods. Gives the file back when no
/// daemon runs (the caller then reads the process directly).
fn via_daemon(
    args: &RecordArgs,
    pid: u32,
    format: RecordFormat,
    socket: &Path,
    file: File,
) -> Result<ExitCode, File> {
    use protocol::rpc::{
        methods, ProfileFormat, ProfileParams, ProfileResult, ProfileResultParams, ProfileStarted,
        ProfileState,
    };
    let fail = |e: &ClientError, output: &Path| {
        let _ = std::fs::remove_file(output);
        eprintln!("pystackd record: {e}");
        if let Some(h) = e.hint() {
            eprintln!("hint: {h}");
        }
        ExitCode::from(e.exit_status())
    };
    let mut client = match Client::connect(socket) {
        Ok(c) => c,
        Err(e) if e.is_not_running() => return Err(file),
        Err(e) => return Ok(fail(&e, &args.output)),
    };
    // a session is bounded: "until Ctrl-C" is the longest one the daemon allows
    let longest = (1_000_000.0 / f64::from(args.rate.max(1))).min(3600.0);
    let duration = args.duration.unwrap_or(longest);
    let started: ProfileStarted = match client.call(
        methods::PROFILE,
        Some(ProfileParams {
            pid,
            rate: args.rate,
            duration,
            idle: args.idle,
            pause: args.pause,
            threads: args.threads,
            gil: args.gil,
            native: args.native,
        }),
    ) {
        Ok(s) => s,
        Err(e) => return Ok(fail(&e, &args.output)),
    };
    if args.duration.is_none() {
        eprintln!(
            "pystackd record: through the daemon: until Ctrl-C, the process exiting, or {duration:.0} s (its longest session at {} Hz)",
            args.rate
        );
    }
    let wire_format = match format {
        RecordFormat::Folded => ProfileFormat::Folded,
        RecordFormat::Speedscope => ProfileFormat::Speedscope,
        RecordFormat::Flamegraph => ProfileFormat::Flamegraph,
        RecordFormat::Pprof => ProfileFormat::Pprof,
        // read directly (`direct_only`): not a format of the daemon's
        RecordFormat::Raw => return Err(file),
    };
    let ask = ProfileResultParams {
        session: started.session,
        format: wire_format,
    };
    let sigint = sample::catch_sigint();
    let progress = io::stderr().is_terminal();
    let result: ProfileResult = loop {
        std::thread::sleep(DAEMON_POLL);
        let method = if sample::interrupted() {
            methods::PROFILE_STOP
        } else {
            methods::PROFILE_RESULT
        };
        let r: ProfileResult = match client.call(method, Some(ask.clone())) {
            Ok(r) => r,
            Err(e) => return Ok(fail(&e, &args.output)),
        };
        if r.state != ProfileState::Running {
            break r;
        }
        if progress {
            eprint!(
                "\rpystackd record: {} samples in {:.0} s ({:.0}/s), {} dropped as torn   ",
                r.samples, r.elapsed, r.rate_achieved, r.dropped
            );
        }
    };
    drop(sigint);
    if progress {
        eprintln!();
    }
    let bytes = match (wire_format, result.data.as_deref()) {
        (ProfileFormat::Pprof, Some(d)) => {
            use base64::Engine;
            match base64::engine::general_purpose::STANDARD.decode(d) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("pystackd record: the daemon's pprof data: {e}");
                    return Ok(ExitCode::from(exit::DAEMON));
                }
            }
        }
        (_, Some(d)) => d.as_bytes().to_vec(),
        (_, None) => Vec::new(),
    };
    let mut out = BufWriter::new(file);
    if let Err(e) = out.write_all(&bytes).and_then(|_| out.flush()) {
        eprintln!("pystackd record: writing {}: {e}", args.output.display());
        return Ok(ExitCode::from(exit::FAILURE));
    }
    if let Some(e) = &result.error {
        eprintln!("pystackd record: {e}");
    }
    let ended_by = match result.state {
        ProfileState::Done => "the duration ended",
        ProfileState::Stopped => "interrupted",
        ProfileState::Exited => "the process exited",
        ProfileState::Failed => "a read failed",
        ProfileState::Running => "still running",
    };
    eprintln!(
        "pystackd record: {} samples in {:.1} s ({:.0}/s of {} requested), {} dropped as torn \
         reads, {} idle thread samples left out{}{}; {ended_by}; through the daemon; wrote {}",
        result.samples,
        result.elapsed,
        result.rate_achieved,
        args.rate,
        result.dropped,
        result.idle_skipped,
        if args.idle { " (none: --idle)" } else { "" },
        if args.gil {
            format!(
                ", {} thread samples not holding the GIL (or not known to) left out",
                result.gil_skipped
            )
        } else {
            String::new()
        },
        args.output.display()
    );
    if result.samples == 0 && result.state == ProfileState::Exited {
        return Ok(ExitCode::from(ErrorKind::ProcessExited.exit_code()));
    }
    Ok(ExitCode::from(exit::OK))
}
