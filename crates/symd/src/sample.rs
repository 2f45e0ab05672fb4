//! The sampling loop shared by `pystackd record` and `pystackd top`: one read of every
//! thread's Python stack at a fixed rate, idle threads told apart, torn reads dropped and
//! counted, the end of the run (duration, Ctrl-C, the process exiting, an error) reported.
//!
//! Each sample is one read of the process. Without `--pause` the target keeps running and a
//! read it moved under is retried at once and, if it never holds still, dropped and counted
//! (the reader's own check, docs/consistency.md): a sample is always a stack the program had.
//! Retried at once, a torn read is taken at the first moment after its scheduled one when
//! the thread held still for one read: across a change from one function to another that
//! moves a sample to the other side as often in one direction as in the other, so shares
//! stay unbiased while a read is shorter than what it samples. Dropping torn reads instead
//! would not: it removes the moments next to a change, which a function called briefly
//! between others has more of (measured, issue 13: a 3.14 target spending 75.4 % of its
//! time in the longer of two functions came out 79.5 % with 77 of 600 reads dropped; with
//! retries, 72-79 % over many runs). Both are counted and said: `dropped`, `retried`.
//!
//! The interval between reads is drawn evenly between half and one and a half of the
//! period: a fixed period can lock onto a target whose loop repeats at a near multiple of
//! it and sample one phase of that loop only.
//! With `--pause` every thread is stopped for each read: exact, and slower for the target.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::{ErrorKind, ProcessStack, RunState, ThreadStack};
use pyframe_reader::{PythonProcess, StackOptions};

/// Set by SIGINT: end the run.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// While alive, SIGINT (Ctrl-C) ends the sampling instead of the program; dropping it
/// restores the default disposition.
/// Whether Ctrl-C was pressed since [`catch_sigint`].
pub fn interrupted() -> bool {
    STOP.load(Ordering::Relaxed)
}

pub struct SigintGuard(());

pub fn catch_sigint() -> SigintGuard {
    STOP.store(false, Ordering::Relaxed);
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
    }
    SigintGuard(())
}

impl Drop for SigintGuard {
    fn drop(&mut self) {
        // SAFETY: restoring the default disposition.
        unsafe {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
        }
    }
}

/// How to sample.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub pid: u32,
    /// Samples per second.
    pub rate: u32,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Stop every thread for each read (implied by `native`).
    pub pause: bool,
    /// Keep idle threads' stacks.
    pub idle: bool,
    /// Tell idle threads apart even with `idle` (costs a look at every thread's state per
    /// sample; `top` shows the counts).
    pub classify_idle: bool,
    /// Count only the thread holding the GIL (`--gil`): where the interpreter itself spends
    /// its time, as one CPU would see it.
    pub gil: bool,
    /// Native frames too (`--native`): every sample stops the process (as `pause`), unwinds
    /// each thread and puts its Python frames in place of the eval-loop frames that run them.
    pub native: bool,
}

/// Checks `--rate` and `--duration`; the message names the subcommand.
pub fn check_settings(cmd: &str, rate: u32, duration: Option<f64>) -> Result<(), String> {
    if rate == 0 || rate > 100_000 {
        return Err(format!(
            "pystackd {cmd}: --rate must be 1 to 100000 samples per second"
        ));
    }
    if duration.is_some_and(|d| !(d > 0.0 && d.is_finite())) {
        return Err(format!(
            "pystackd {cmd}: --duration must be a positive number of seconds"
        ));
    }
    Ok(())
}

/// Says why attaching failed (and what to do, where there is a hint) on stderr; returns the
/// exit status.
pub fn report_attach_error(cmd: &str, e: &pyframe_reader::Error) -> u8 {
    eprintln!("pystackd {cmd}: {e}");
    if let Some(h) = e.kind().hint() {
        eprintln!("hint: {h}");
    }
    crate::exit::for_reader_error(e)
}

/// Why sampling ended.
#[derive(Debug)]
pub enum End {
    Duration,
    Interrupted,
    Exited,
    Error(pyframe_reader::Error),
}

impl End {
    /// As record's and top's summaries say it.
    pub fn describe(&self) -> &'static str {
        match self {
            End::Duration => "the duration ended",
            End::Interrupted => "Ctrl-C",
            End::Exited => "the process exited",
            End::Error(_) => "an error",
        }
    }
}

/// One read of the process.
pub struct Sample {
    pub stack: ProcessStack,
    /// Kernel thread ids of the threads idle at the read (when told apart).
    idle: Option<HashSet<u64>>,
    keep_idle: bool,
    gil_only: bool,
    /// Idle threads whose frames were not read at all (dropped anyway).
    unread_idle: usize,
}

impl Sample {
    pub fn is_idle(&self, t: &ThreadStack) -> bool {
        match (&self.idle, t.os_tid) {
            (Some(set), Some(tid)) => set.contains(&tid),
            _ => false,
        }
    }

    /// The threads this sample counts: all of them with `--idle`, else those not idle;
    /// with `--gil` only the one the read saw holding the GIL (a thread whose GIL state
    /// could not be read consistently is not counted: it is not known to hold it).
    pub fn counted(&self) -> impl Iterator<Item = &ThreadStack> {
        self.stack.threads.iter().filter(move |t| {
            (self.keep_idle || !self.is_idle(t)) && (!self.gil_only || t.holds_gil == Some(true))
        })
    }

    /// With `--gil`: threads left out because they did not hold the GIL, and those whose
    /// GIL state was unknown.
    fn gil_left_out(&self) -> (u64, u64) {
        if !self.gil_only {
            return (0, 0);
        }
        let (mut not, mut unknown) = (0, 0);
        // those left out as idle are counted there, not twice
        for t in self
            .stack
            .threads
            .iter()
            .filter(|t| self.keep_idle || !self.is_idle(t))
        {
            match t.holds_gil {
                Some(true) => {}
                Some(false) => not += 1,
                None => unknown += 1,
            }
        }
        (not, unknown)
    }

    /// How many Python threads the read saw (those whose frames were not read as idle
    /// included).
    pub fn threads(&self) -> usize {
        self.stack.threads.len() + self.unread_idle
    }

    /// How many threads were idle (0 when not told apart).
    pub fn idle_threads(&self) -> usize {
        self.unread_idle
            + self
                .stack
                .threads
                .iter()
                .filter(|t| self.is_idle(t))
                .count()
    }
}

/// What the sampler has to say next.
pub enum Event {
    /// Not yet time for the next read: wait at most this long (or do something else).
    Wait(Duration),
    Sample(Sample),
    /// Sampling is over; every later call says so again.
    End(End),
}

/// The sampling loop's state: the attached process, the clock and the counters.
pub struct Sampler {
    process: PythonProcess,
    /// With `native`: the symbolizer (its caches last the recording) and each native
    /// address's frame name and module, shared between samples so that a profile interns
    /// them by address.
    native: Option<(symbolize::Symbolizer, NativeNames)>,
    states: crate::platform::ThreadStates,
    settings: Settings,
    interval: Duration,
    started: Instant,
    end: Option<Instant>,
    next: Instant,
    ended: bool,
    interrupted: bool,
    /// Reads that gave a stack.
    pub samples: u64,
    /// Reads the target moved under, dropped as torn.
    pub dropped: u64,
    /// Reads that gave a stack only after a first walk the target moved under.
    pub retried: u64,
    /// Thread stacks left out as idle.
    pub idle_skipped: u64,
    /// With `--gil`: thread stacks left out as not holding the GIL, and as holding it or
    /// not unknown (its state torn under the read).
    pub not_gil_skipped: u64,
    pub gil_unknown_skipped: u64,
}

impl Sampler {
    /// Attaches the process; the clock starts now.
    pub fn attach(settings: Settings) -> Result<Sampler, pyframe_reader::Error> {
        // a native read stops the process: it is a paused read
        let settings = Settings {
            pause: settings.pause || settings.native,
            ..settings
        };
        let process = PythonProcess::attach(settings.pid)?;
        if settings.gil && process.layout().free_threaded {
            return Err(pyframe_reader::Error::UnsupportedFeature {
                what: "--gil",
                version: format!("{} (free-threaded)", process.version()),
                why: "a free-threaded build has no GIL: every thread runs Python at once \
                      (leave out --gil; --idle off already counts only running threads)",
            });
        }
        let started = Instant::now();
        let native = settings.native.then(|| {
            (
                symbolize::Symbolizer::new(symbolize::Config::from_env()),
                NativeNames::default(),
            )
        });
        Ok(Sampler {
            native,
            process,
            states: crate::platform::ThreadStates::new(settings.pid),
            settings,
            interval: Duration::from_secs_f64(1.0 / f64::from(settings.rate.max(1))),
            started,
            end: settings.duration.map(|d| started + d),
            next: started,
            ended: false,
            interrupted: false,
            samples: 0,
            dropped: 0,
            retried: 0,
            idle_skipped: 0,
            not_gil_skipped: 0,
            gil_unknown_skipped: 0,
        })
    }

    /// The interpreter's version, e.g. `3.12.3`.
    pub fn version(&self) -> &str {
        self.process.version()
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    /// Whether idle threads are counted (`--idle`).
    pub fn counts_idle(&self) -> bool {
        self.settings.idle
    }

    /// Reads per second achieved so far.
    pub fn rate_achieved(&self) -> f64 {
        self.samples as f64 / self.started.elapsed().as_secs_f64().max(1e-9)
    }

    /// Ends the run from outside (a key press in `top`): the next event is the end, as by
    /// Ctrl-C.
    pub fn stop(&mut self) {
        self.ended = true;
        self.interrupted = true;
    }

    /// The next read if it is time for one, else how long to wait, or the end.
    pub fn next_event(&mut self) -> Event {
        if self.interrupted || STOP.load(Ordering::Relaxed) {
            self.ended = true;
            self.interrupted = true;
            return Event::End(End::Interrupted);
        }
        if self.ended {
            return Event::End(End::Duration);
        }
        let now = Instant::now();
        if self.end.is_some_and(|e| now >= e) {
            self.ended = true;
            return Event::End(End::Duration);
        }
        if now < self.next {
            let wait = self.next - now;
            return Event::Wait(match self.end {
                Some(e) => wait.min(e - now),
                None => wait,
            });
        }
        // a rate the machine cannot keep: sample as fast as it can, never in a burst
        self.next = (self.next + self.interval.mul_f64(0.5 + fastrand::f64())).max(now);
        let want_idle = !self.settings.idle || self.settings.classify_idle;
        // Stopped for the read (--pause, --native), a thread is idle or not by what it was
        // doing when stopped (the reader's thread states, read under the stop): a look
        // before the stop may come just after the last one ended, while every thread
        // restarts the system call the stop broke off and shows as running
        let stopped = self.settings.pause;
        let idle = (want_idle && !stopped).then(|| self.states.idle());
        // idle threads' frames would be dropped: not read at all (the check that a read
        // is one moment covers the threads read; an idle thread left out is not shown)
        let skip_tids = match &idle {
            Some(set) if !self.settings.idle => set.iter().copied().collect(),
            _ => Vec::new(),
        };
        let opts = StackOptions {
            pause: self.settings.pause,
            tid: None,
            locals: false,
            skip_tids,
        };
        let read = match &mut self.native {
            Some((symbolizer, names)) => {
                let pid = self.settings.pid;
                crate::stack_native::read_process(&mut self.process, symbolizer, pid, None, false)
                    .map(|n| names.merge(n))
            }
            None if stopped => self.process.stack(&opts),
            None => self.process.stack_without_states(&opts),
        };
        match read {
            Ok(stack) => {
                let idle = match idle {
                    Some(set) => Some(set),
                    None if want_idle => Some(
                        stack
                            .threads
                            .iter()
                            .filter(|t| {
                                matches!(
                                    t.state.state,
                                    Some(RunState::Blocked | RunState::WaitingForGil)
                                )
                            })
                            .filter_map(|t| t.os_tid)
                            .collect(),
                    ),
                    None => None,
                };
                self.samples += 1;
                if self.process.last_attempts() > 1 {
                    self.retried += 1;
                }
                let unread_idle = if self.native.is_some() {
                    0
                } else {
                    self.process.last_skipped()
                };
                let sample = Sample {
                    stack,
                    idle,
                    keep_idle: self.settings.idle,
                    gil_only: self.settings.gil,
                    unread_idle,
                };
                if !self.settings.idle {
                    self.idle_skipped += sample.idle_threads() as u64;
                }
                let (not, unknown) = sample.gil_left_out();
                self.not_gil_skipped += not;
                self.gil_unknown_skipped += unknown;
                Event::Sample(sample)
            }
            Err(e) => match e.kind() {
                ErrorKind::Inconsistent => {
                    self.dropped += 1;
                    Event::Wait(Duration::ZERO)
                }
                ErrorKind::ProcessExited | ErrorKind::NoSuchProcess => {
                    self.ended = true;
                    Event::End(End::Exited)
                }
                _ => {
                    self.ended = true;
                    Event::End(End::Error(e))
                }
            },
        }
    }
}

/// Frame names of native addresses, kept for a recording (bounded: cleared when full).
#[derive(Default)]
pub struct NativeNames {
    by_address: std::collections::HashMap<u64, (Arc<str>, Arc<str>)>,
}

impl NativeNames {
    const MAX: usize = 200_000;

    fn frame(&mut self, f: &crate::stack_native::NativeFrame) -> protocol::Frame {
        if self.by_address.len() >= Self::MAX {
            self.by_address.clear();
        }
        let (function, filename) = self
            .by_address
            .entry(f.address)
            .or_insert_with(|| {
                // no symbol: `[unknown]` in its module (perf's convention), so that its
                // time adds up per module instead of splitting over every address
                let name: Arc<str> = match &f.symbol {
                    Some(s) => s.as_str().into(),
                    None => "[unknown]".into(),
                };
                let module: Arc<str> = f.module.as_deref().unwrap_or("?").into();
                (name, module)
            })
            .clone();
        protocol::Frame {
            function,
            qualname: None,
            filename,
            line: None,
            first_line: 0,
            entry: false,
            locals: None,
        }
    }

    /// A native read as Python-shaped thread stacks: each thread's native frames, innermost
    /// first, with the Python frames in place of the eval-loop frame that runs them. Python
    /// frames no eval frame was found for (a build whose eval loop has no symbol) go on top
    /// of the native ones under a frame that says so, never placed where they were not seen.
    /// Threads the interpreter does not know are left out, as without `--native`.
    fn merge(&mut self, n: crate::stack_native::NativeStack) -> ProcessStack {
        let threads = n
            .threads
            .into_iter()
            .filter(|t| t.python_thread)
            .map(|t| {
                let mut frames = Vec::with_capacity(t.frames.len() * 2);
                if !t.unplaced_python.is_empty() {
                    frames.extend(t.unplaced_python.iter().cloned());
                    frames.push(protocol::Frame {
                        function: "(Python frames not placed in the native stack)".into(),
                        qualname: None,
                        filename: "pystackd".into(),
                        line: None,
                        first_line: 0,
                        entry: false,
                        locals: None,
                    });
                }
                for f in &t.frames {
                    if f.python.is_empty() {
                        frames.push(self.frame(f));
                    } else {
                        frames.extend(f.python.iter().cloned());
                    }
                }
                ThreadStack {
                    interpreter_id: 0,
                    thread_id: t.os_tid,
                    os_tid: Some(t.os_tid),
                    os_tid_unknown: None,
                    ns_tid: None,
                    name: t.name,
                    os_name: None,
                    holds_gil: t.holds_gil,
                    state: t.state,
                    frames,
                }
            })
            .collect();
        ProcessStack {
            pid: n.pid,
            python_version: n.python_version,
            python_binary: n.python_binary,
            pid_ns: None,
            ns_pid: None,
            threads,
            warnings: n.warnings,
        }
    }
}
