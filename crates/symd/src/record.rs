//! `pystackd record`: a sampling profiler. Reads every thread's Python stack at a fixed
//! rate, counts identical stacks, and writes a flame graph (SVG, through `inferno`), a
//! speedscope file or folded lines.
//!
//! Each sample is one read of the process. Without `--pause` the target keeps running and a
//! read it moved under is retried and, if it never holds still, dropped and counted (the
//! reader's own check, docs/consistency.md): a recorded stack is always one the program had.
//! With `--pause` every thread is stopped for each read: exact, and slower for the target.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use protocol::{escape_control, ErrorKind, ThreadStack};
use pyframe_reader::{PythonProcess, StackOptions};
use serde::Serialize;

use crate::exit;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordFormat {
    /// An SVG flame graph (inferno).
    Flamegraph,
    /// speedscope's JSON file format (https://www.speedscope.app), one profile per thread.
    Speedscope,
    /// `frame;frame;... count` lines, outermost first (flamegraph.pl, inferno, ...).
    Folded,
    /// pprof's gzipped `profile.proto` (`go tool pprof`, continuous-profiling backends),
    /// with a `thread` label per sample.
    Pprof,
}

#[derive(clap::Args, Debug)]
pub struct RecordArgs {
    /// The CPython process to sample.
    #[arg(long, value_name = "PID")]
    pub pid: u32,
    /// Where to write the profile.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Output format [default: from the file name: .svg flame graph, .json speedscope,
    /// .pprof/.pb/.gz pprof, anything else folded].
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
}

pub const RECORD_HELP: &str = "\
Samples every thread's Python stack of a running process and writes a profile:
  pystackd record --pid 4242 -o profile.svg              flame graph, 100 Hz, until Ctrl-C
  pystackd record --pid 4242 --duration 10 -o p.json     speedscope (https://www.speedscope.app)
  pystackd record --pid 4242 --rate 1000 --threads -o p.folded
  pystackd record --pid 4242 --duration 30 -o cpu.pprof; go tool pprof -top cpu.pprof

Each sample is one read of the process's memory while it runs: a read the target moved under
is retried and, if it never holds still, dropped and counted, never recorded wrong
(docs/consistency.md). --pause stops every thread for each read instead. Threads blocked in
the kernel (sleep, I/O, locks) are idle and left out unless --idle. A progress line goes to
stderr; Ctrl-C ends the recording and still writes the file, and so does the target exiting.

Exit status: 0 written, 1 could not write the output, 3 no such process, 4 not a CPython
process, 5 permission denied, 6 unsupported version, 7 the process exited before the first
sample.";

/// Set by SIGINT: end the recording, write what was seen.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// What a recording saw.
struct Profile {
    /// Folded stack (outermost first) → samples.
    counts: HashMap<String, u64>,
    /// Per thread: its label and its samples as frame-index paths (speedscope).
    threads: Vec<ThreadSamples>,
    thread_index: HashMap<u64, usize>,
    frames: Vec<SpeedscopeFrame>,
    frame_index: HashMap<(String, String, Option<u32>), usize>,
    samples: u64,
    dropped: u64,
    idle_skipped: u64,
    pprof: crate::pprof::Builder,
}

struct ThreadSamples {
    name: String,
    samples: Vec<Vec<usize>>,
}

#[derive(Serialize)]
struct SpeedscopeFrame {
    name: String,
    file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<u32>,
}

fn thread_label(t: &ThreadStack) -> String {
    let tid = t.os_tid.map_or_else(|| "?".to_string(), |t| t.to_string());
    match &t.name {
        Some(n) => format!("thread {} ({tid})", escape_control(n)),
        None => format!("thread {tid}"),
    }
}

impl Profile {
    fn new(period_ns: i64) -> Profile {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        Profile {
            counts: HashMap::new(),
            threads: Vec::new(),
            thread_index: HashMap::new(),
            frames: Vec::new(),
            frame_index: HashMap::new(),
            samples: 0,
            dropped: 0,
            idle_skipped: 0,
            pprof: crate::pprof::Builder::new(period_ns, now),
        }
    }

    fn add(&mut self, t: &ThreadStack, per_thread: bool) {
        if t.frames.is_empty() {
            return;
        }
        let innermost_first: Vec<(&str, &str, Option<u32>)> = t
            .frames
            .iter()
            .map(|f| {
                (
                    f.qualname.as_deref().unwrap_or(&f.function),
                    &*f.filename,
                    f.line,
                )
            })
            .collect();
        self.pprof.add(&thread_label(t), &innermost_first);
        let mut folded = String::new();
        if per_thread {
            folded.push_str(&thread_label(t).replace(';', ":"));
        }
        let mut path = Vec::with_capacity(t.frames.len());
        for f in t.frames.iter().rev() {
            let name = f.qualname.as_deref().unwrap_or(&f.function);
            let frame = match f.line {
                Some(l) => format!("{name} ({}:{l})", f.filename),
                None => format!("{name} ({})", f.filename),
            };
            if !folded.is_empty() {
                folded.push(';');
            }
            // `;` separates frames and a newline ends the line
            folded.push_str(&escape_control(&frame).replace(';', ":"));
            let key = (name.to_string(), f.filename.to_string(), f.line);
            let next = self.frames.len();
            let idx = *self.frame_index.entry(key).or_insert(next);
            if idx == next {
                self.frames.push(SpeedscopeFrame {
                    name: name.to_string(),
                    file: f.filename.to_string(),
                    line: f.line,
                });
            }
            path.push(idx);
        }
        *self.counts.entry(folded).or_default() += 1;
        let key = t.os_tid.unwrap_or(t.thread_id);
        let next = self.threads.len();
        let ti = *self.thread_index.entry(key).or_insert(next);
        if ti == next {
            self.threads.push(ThreadSamples {
                name: thread_label(t),
                samples: Vec::new(),
            });
        }
        self.threads[ti].samples.push(path);
    }

    fn folded_lines(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .counts
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        v.sort();
        v
    }

    fn write(
        self,
        format: RecordFormat,
        pid: u32,
        duration: Duration,
        out: &mut dyn Write,
    ) -> io::Result<()> {
        match format {
            RecordFormat::Pprof => self.pprof.write(duration.as_nanos() as i64, out),
            RecordFormat::Folded => {
                for l in self.folded_lines() {
                    writeln!(out, "{l}")?;
                }
                Ok(())
            }
            RecordFormat::Flamegraph => {
                let lines = self.folded_lines();
                let mut opts = inferno::flamegraph::Options::default();
                opts.title = format!("pystackd record: process {pid}");
                opts.count_name = "samples".into();
                if lines.is_empty() {
                    // inferno refuses an empty profile: say so in the picture
                    opts.title = format!("pystackd record: process {pid}: no samples");
                    return inferno::flamegraph::from_lines(&mut opts, ["(no samples) 1"], out);
                }
                inferno::flamegraph::from_lines(&mut opts, lines.iter().map(String::as_str), out)
            }
            RecordFormat::Speedscope => {
                let profiles: Vec<serde_json::Value> = self
                    .threads
                    .iter()
                    .map(|t| {
                        serde_json::json!({
                            "type": "sampled",
                            "name": t.name,
                            "unit": "none",
                            "startValue": 0,
                            "endValue": t.samples.len(),
                            "samples": t.samples,
                            "weights": vec![1; t.samples.len()],
                        })
                    })
                    .collect();
                let doc = serde_json::json!({
                    "$schema": "https://www.speedscope.app/file-format-schema.json",
                    "shared": { "frames": self.frames },
                    "profiles": profiles,
                    "name": format!("pystackd record: process {pid}"),
                    "activeProfileIndex": 0,
                    "exporter": format!("pystackd {}", env!("CARGO_PKG_VERSION")),
                });
                serde_json::to_writer(&mut *out, &doc)?;
                writeln!(out)
            }
        }
    }
}

fn format_of(args: &RecordArgs) -> RecordFormat {
    args.format
        .unwrap_or_else(|| match args.output.extension().and_then(|e| e.to_str()) {
            Some("svg") => RecordFormat::Flamegraph,
            Some("json") => RecordFormat::Speedscope,
            Some("pprof" | "pb" | "gz") => RecordFormat::Pprof,
            _ => RecordFormat::Folded,
        })
}

/// The output file, created before sampling starts: an unwritable path fails at once.
fn open_output(path: &Path) -> io::Result<File> {
    File::create(path)
}

pub fn run(args: &RecordArgs) -> ExitCode {
    if args.rate == 0 || args.rate > 100_000 {
        eprintln!("pystackd record: --rate must be 1 to 100000 samples per second");
        return ExitCode::from(exit::USAGE);
    }
    if args.duration.is_some_and(|d| !(d > 0.0 && d.is_finite())) {
        eprintln!("pystackd record: --duration must be a positive number of seconds");
        return ExitCode::from(exit::USAGE);
    }
    let format = format_of(args);
    let file = match open_output(&args.output) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("pystackd record: {}: {e}", args.output.display());
            return ExitCode::from(exit::FAILURE);
        }
    };
    let mut process = match PythonProcess::attach(args.pid) {
        Ok(p) => p,
        Err(e) => {
            let _ = std::fs::remove_file(&args.output);
            eprintln!("pystackd record: {e}");
            if let Some(h) = e.kind().hint() {
                eprintln!("hint: {h}");
            }
            return ExitCode::from(exit::for_reader_error(&e));
        }
    };
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
    }
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let started = Instant::now();
    let end = args.duration.map(|d| started + Duration::from_secs_f64(d));
    let progress = io::stderr().is_terminal();
    let mut last_progress = started;
    let mut profile = Profile::new(interval.as_nanos() as i64);
    let mut next = started;
    let mut ended_by = "the duration ended";
    let opts = StackOptions {
        pause: args.pause,
        tid: None,
    };
    loop {
        if STOP.load(Ordering::Relaxed) {
            ended_by = "Ctrl-C";
            break;
        }
        let now = Instant::now();
        if end.is_some_and(|e| now >= e) {
            break;
        }
        if now < next {
            std::thread::sleep(next - now);
            continue;
        }
        // a rate the machine cannot keep: sample as fast as it can, never in a burst
        next = (next + interval).max(now);
        let idle = (!args.idle).then(|| crate::platform::idle_threads(args.pid));
        match process.stack(&opts) {
            Ok(s) => {
                profile.samples += 1;
                for t in &s.threads {
                    let is_idle = match (&idle, t.os_tid) {
                        (Some(set), Some(tid)) => set.contains(&tid),
                        _ => false,
                    };
                    if is_idle {
                        profile.idle_skipped += 1;
                    } else {
                        profile.add(t, args.threads);
                    }
                }
            }
            Err(e) => match e.kind() {
                ErrorKind::Inconsistent => profile.dropped += 1,
                ErrorKind::ProcessExited | ErrorKind::NoSuchProcess => {
                    ended_by = "the process exited";
                    break;
                }
                _ => {
                    eprintln!("pystackd record: {e}");
                    ended_by = "an error";
                    break;
                }
            },
        }
        if progress && last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            let secs = started.elapsed().as_secs_f64();
            eprint!(
                "\rpystackd record: {} samples in {secs:.0} s ({:.0}/s), {} dropped as torn   ",
                profile.samples,
                profile.samples as f64 / secs,
                profile.dropped
            );
        }
    }
    // SAFETY: restoring the default disposition.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_DFL);
    }
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    if progress {
        eprintln!();
    }
    let (samples, dropped, idle_skipped) = (profile.samples, profile.dropped, profile.idle_skipped);
    let mut out = BufWriter::new(file);
    if let Err(e) = profile
        .write(format, args.pid, started.elapsed(), &mut out)
        .and_then(|_| out.flush())
    {
        eprintln!("pystackd record: writing {}: {e}", args.output.display());
        return ExitCode::from(exit::FAILURE);
    }
    eprintln!(
        "pystackd record: {} samples in {secs:.1} s ({:.0}/s of {} requested), {} dropped as \
         torn reads, {} idle thread samples left out{}; {ended_by}; wrote {}",
        samples,
        samples as f64 / secs,
        args.rate,
        dropped,
        idle_skipped,
        if args.idle { " (none: --idle)" } else { "" },
        args.output.display()
    );
    if samples == 0 && ended_by == "the process exited" {
        return ExitCode::from(ErrorKind::ProcessExited.exit_code());
    }
    ExitCode::from(exit::OK)
}
