//! `pystackd record --engine kernel`: samples taken in the kernel. Each thread of the
//! target gets a timer of its CPU time (a `task-clock` perf event, inherited by the threads
//! it starts) that fires at the rate asked for; the BPF program attached to it (the capture
//! of `pystackd trace --engine direct`, `capture::ebpf`) walks the interrupted thread's
//! Python frames right there, while the interrupt holds the thread, and queues (code object,
//! instruction, identity) per frame in a ring buffer. Each sample is therefore exact (the
//! frames of one moment, nothing read while the thread ran) and costs pystackd no system
//! call: it reads the ring every 20 ms and names the code objects of each batch at once (a
//! code object freed and reused since is dropped and counted, never guessed).
//!
//! What it samples differs from the default engine: CPU time. A thread is sampled only
//! while it runs, at the rate per second of CPU it uses; a thread blocked, or waiting for a
//! CPU or the GIL, is never sampled (so `--idle` and `--gil` mean nothing here).

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use capture::{Plan, Resolved, Resolver};
use protocol::{Frame, ThreadStack};
use pyframe_reader::code::CodeInfo;
use pyframe_reader::PythonProcess;

use super::RecordArgs;
use crate::breakpoints::Breakpoints;
use crate::exit;
use crate::profile::{Profile, RecordFormat};
use crate::trace::direct::{self, DirectProbe, Kind};

/// What became of the firings.
#[derive(Debug, Default)]
struct Counts {
    samples: u64,
    /// A read failed in the probe: the outer frames are missing.
    cut_short: u64,
    /// A code object was freed (and maybe reused) before it was named.
    reused: u64,
    /// On a thread of the process that has no Python thread state.
    no_thread: u64,
    /// Deeper than the capture's depth: recorded under a marked root.
    truncated: u64,
}

/// Record `pid` in the kernel into `file` (already created), as `format`; `starting`: the
/// process was just started by `record -- COMMAND` (its interpreter may not be up yet).
pub fn run(
    args: &RecordArgs,
    pid: u32,
    format: RecordFormat,
    file: File,
    starting: bool,
) -> ExitCode {
    match record(args, pid, format, file, starting) {
        Ok(code) => code,
        Err(f) => {
            let _ = std::fs::remove_file(&args.output);
            eprintln!("pystackd record: {}", f.message);
            if let Some(h) = f.hint {
                eprintln!("hint: {h}");
            }
            ExitCode::from(f.status)
        }
    }
}

fn failure(status: u8, message: String, hint: Option<&str>) -> crate::trace::Failure {
    crate::trace::Failure {
        status,
        message,
        hint: hint.map(str::to_string),
    }
}

fn record(
    args: &RecordArgs,
    pid: u32,
    format: RecordFormat,
    file: File,
    starting: bool,
) -> Result<ExitCode, crate::trace::Failure> {
    let process = attach(pid, starting)?;
    if let Err(e) = process.refuse_free_threaded("record --engine kernel") {
        return Err(failure(exit::for_reader_error(&e), e.to_string(), None));
    }
    let plan = Plan::for_process(&process, capture::Os::Linux, args.depth)
        .map_err(|e| failure(exit::FAILURE, e.to_string(), None))?;
    // SAFETY: geteuid has no preconditions
    if unsafe { libc::geteuid() } != 0 {
        return Err(failure(
            protocol::ErrorKind::PermissionDenied.exit_code(),
            "--engine kernel loads a BPF program: it needs root (CAP_BPF and CAP_PERFMON)".into(),
            Some("run it with sudo, or use the default engine (--engine read)"),
        ));
    }
    let fsbase = direct::fsbase_offset(&plan).map_err(|e| failure(exit::FAILURE, e, None))?;
    let probe = DirectProbe {
        name: format!("profile:hz:{}", args.rate),
        kind: Kind::ThreadClock {
            hz: u64::from(args.rate),
        },
    };
    let loaded = direct::load(&plan, pid, vec![probe], fsbase, false)?;
    let duration = args
        .duration
        .map_or(Duration::from_secs(10_000_000), Duration::from_secs_f64);
    let mut resolver = Resolver::new(process.layout());
    let mut profile = Profile::new(1_000_000_000 / i64::from(args.rate.max(1)));
    if format == RecordFormat::Raw {
        profile.keep_samples();
    }
    let mut counts = Counts::default();
    let mut names = ThreadNames::new(pid);
    let mut memo = Memo::default();
    let marker = truncation_marker(args.depth);
    let progress = io::stderr().is_terminal();
    let started = Instant::now();
    let start_ns = monotonic_ns();
    let mut last_progress = started;
    let mut on_batch = |batch: Vec<direct::Delivered>| {
        // firings without a Python stack to show are counted, not resolved
        let kept: Vec<&direct::Delivered> = batch
            .iter()
            .filter(|d| {
                let c = &d.done.2;
                if c.no_thread || c.frames.is_empty() {
                    counts.no_thread += 1;
                    false
                } else if d.read_failed {
                    counts.cut_short += 1;
                    false
                } else {
                    true
                }
            })
            .collect();
        let captures: Vec<&capture::Capture> = kept.iter().map(|d| &d.done.2).collect();
        let verified = resolver.verify_batch(process.memory(), &captures);
        for d in kept {
            let (tid, c) = (d.done.0, &d.done.2);
            let at = Duration::from_nanos(d.time_ns.saturating_sub(start_ns));
            // the same stack as before, of code objects decoded to the same thing: counted
            // again without naming its frames again
            memo.key(tid, c);
            if let Some(hit) = memo.get(c, &verified) {
                counts.truncated += u64::from(c.truncated);
                profile.add_again(hit, at, false);
                counts.samples += 1;
                continue;
            }
            let mut out = Vec::with_capacity(c.frames.len() + 1);
            for r in resolver.resolve_with(&verified, c) {
                match r {
                    Resolved::Frame(f) => out.push(f),
                    Resolved::Mismatch(_) => break,
                }
            }
            if out.len() < c.frames.len() {
                counts.reused += 1;
                continue;
            }
            if c.truncated {
                counts.truncated += 1;
                out.push(marker.clone());
            }
            let t = ThreadStack {
                interpreter_id: 0,
                thread_id: 0,
                os_tid: Some(tid),
                os_tid_unknown: None,
                ns_tid: None,
                name: names.name(tid),
                os_name: None,
                holds_gil: None,
                state: Default::default(),
                frames: out,
            };
            profile.add_sample(None, &t, args.threads, at, false);
            if let Some(added) = profile.last_added() {
                memo.insert(c, &verified, added);
            }
            counts.samples += 1;
        }
        if progress && last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            let secs = started.elapsed().as_secs_f64();
            eprint!(
                "\rpystackd record: {} samples in {secs:.0} s ({:.0}/s), in the kernel   ",
                counts.samples,
                counts.samples as f64 / secs
            );
        }
    };
    let outcome = direct::run(loaded, pid, duration, Breakpoints::default(), &mut on_batch)?;
    if progress {
        eprintln!();
    }
    let secs = outcome.elapsed.as_secs_f64().max(1e-9);
    let mut out = BufWriter::new(file);
    if let Err(e) = profile
        .write(format, pid, outcome.elapsed, &mut out)
        .and_then(|_| out.flush())
    {
        return Err(failure(
            exit::FAILURE,
            format!("writing {}: {e}", args.output.display()),
            None,
        ));
    }
    let fired: u64 = outcome.fired.iter().sum();
    let lost: u64 = outcome.lost.iter().sum();
    let handled = counts.samples + counts.cut_short + counts.reused + counts.no_thread;
    let undelivered = fired.saturating_sub(handled + lost);
    let ended_by = if outcome.exited {
        "the process exited"
    } else if outcome.interrupted {
        "interrupted"
    } else {
        "the duration ended"
    };
    let in_kernel = match outcome.in_kernel {
        Some((ns, runs)) if runs > 0 => format!(
            " ({:.1} µs each in the kernel, {runs} runs on any thread)",
            ns as f64 / 1e3 / runs as f64
        ),
        _ => String::new(),
    };
    eprintln!(
        "pystackd record: {} samples in {secs:.1} s ({:.0}/s; {} per second of CPU time of \
         each thread requested), taken in the kernel: {fired} firings on the target's threads{in_kernel}, {} \
         cut short by a failed read and {} with a code object freed and reused left out, {} on \
         threads without Python, {} deeper than --depth {} (under a marked root), {} lost (the \
         ring was full), {} not delivered; {ended_by}; wrote {}",
        counts.samples,
        counts.samples as f64 / secs,
        args.rate,
        counts.cut_short,
        counts.reused,
        counts.no_thread,
        counts.truncated,
        args.depth,
        lost,
        undelivered,
        args.output.display()
    );
    if counts.samples == 0 && outcome.exited {
        return Ok(ExitCode::from(exit::PROCESS_EXITED));
    }
    Ok(ExitCode::from(exit::OK))
}

/// Attaches to `pid`; a program just started (`starting`) is waited for up to 5 s, until
/// it has become CPython with an interpreter running.
fn attach(pid: u32, starting: bool) -> Result<PythonProcess, crate::trace::Failure> {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        match PythonProcess::attach(pid) {
            Ok(p) => return Ok(p),
            Err(pyframe_reader::Error::ProcessExited { .. })
            | Err(pyframe_reader::Error::NoSuchProcess { .. })
                if starting =>
            {
                return Err(failure(
                    exit::PROCESS_EXITED,
                    format!("process {pid} exited before it could be sampled"),
                    None,
                ));
            }
            Err(_) if starting && Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                return Err(failure(exit::for_reader_error(&e), e.to_string(), None));
            }
        }
    }
}

/// The root put above a stack deeper than the capture took.
fn truncation_marker(depth: u32) -> Frame {
    let text: Arc<str> = format!("[outer frames not captured: deeper than --depth {depth}]").into();
    Frame {
        function: text.clone(),
        qualname: None,
        filename: "".into(),
        line: None,
        first_line: 0,
        entry: true,
        locals: None,
    }
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill; CLOCK_MONOTONIC is bpf_ktime_get_ns's clock
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Each thread's OS name (`comm`), read once.
struct ThreadNames {
    pid: u32,
    names: std::collections::HashMap<u64, Option<String>>,
}

impl ThreadNames {
    fn new(pid: u32) -> Self {
        ThreadNames {
            pid,
            names: Default::default(),
        }
    }

    fn name(&mut self, tid: u64) -> Option<String> {
        let pid = self.pid;
        self.names
            .entry(tid)
            .or_insert_with(|| pyframe_reader::platform::thread_name(pid, tid))
            .clone()
    }
}

/// Stacks already named: (thread id, truncated, each frame's code object, position and
/// entry mark) -> where the profile counts it, with the decoded code objects it was named
/// from. A hit counts only if every code object still decodes to the same one (the
/// resolver's cache hands out a new decoding for an object that changed).
#[derive(Default)]
struct Memo {
    key: Vec<u64>,
    // the decodings are held (not only their addresses), so none can be freed and another
    // take its address while the entry lives
    map: rustc_hash::FxHashMap<Box<[u64]>, Named>,
}

/// Where the profile counts a stack, and the decodings its frames were named from.
type Named = ((u32, u32), Box<[Arc<CodeInfo>]>);

/// Entries kept at most (a program with more distinct stacks than this starts over).
const MEMO_MAX: usize = 100_000;

impl Memo {
    /// Prepare the key of `c` on thread `tid` for [`Memo::get`] and [`Memo::insert`].
    fn key(&mut self, tid: u64, c: &capture::Capture) {
        self.key.clear();
        self.key.push(tid);
        self.key.push(u64::from(c.truncated));
        for f in &c.frames {
            self.key.push(f.code);
            self.key.push(f.offset as u64);
            self.key.push(u64::from(f.entry));
        }
    }

    fn decoded(
        c: &capture::Capture,
        verified: &capture::resolve::Verified,
    ) -> Option<Vec<Arc<CodeInfo>>> {
        c.frames
            .iter()
            .map(|f| verified.code(f).ok().cloned())
            .collect()
    }

    fn get(
        &self,
        c: &capture::Capture,
        verified: &capture::resolve::Verified,
    ) -> Option<(u32, u32)> {
        let (at, decoded) = self.map.get(&self.key[..])?;
        let same = c
            .frames
            .iter()
            .zip(decoded.iter())
            .all(|(f, d)| verified.code(f).is_ok_and(|i| Arc::ptr_eq(i, d)));
        same.then_some(*at)
    }

    fn insert(
        &mut self,
        c: &capture::Capture,
        verified: &capture::resolve::Verified,
        at: (u32, u32),
    ) {
        let Some(decoded) = Self::decoded(c, verified) else {
            return;
        };
        if self.map.len() >= MEMO_MAX {
            self.map.clear();
        }
        self.map
            .insert(self.key.as_slice().into(), (at, decoded.into()));
    }
}
