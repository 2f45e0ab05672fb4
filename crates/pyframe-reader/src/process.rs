//! A Python process attached for reading: where its interpreter is, which layout it
//! uses, and the per-process caches. This is the reader's public entry point.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use protocol::{ProcessStack, ThreadStack};

use crate::binary::{find_python, PythonBinary};
use crate::code::CodeCache;
use crate::error::{Error, MemoryError, Result};
use crate::layout::{self, debug_offsets, Layout};
use crate::memory::{Block, BlockCache, Memory, MemoryExt};
use crate::names::ThreadNames;
use crate::objects::Types;
use crate::platform::{self, ProcessMemory};
use crate::threadstate;
use crate::values::{TypeCache, ValueReader};
use crate::version::{self, Version, DEBUG_COOKIE};
use crate::walker::{RawThread, Walker};
use crate::witness;

/// Attempts at a consistent read of a running target: at least `MIN_ATTEMPTS`, then more
/// while `RETRY_BUDGET` lasts, never more than `MAX_ATTEMPTS`. A thread whose stack
/// changes faster than a walk takes (deep recursion on 3.8-3.10, where every frame is on
/// its own page) is caught still in one attempt of several; a bounded budget keeps the
/// answer prompt when it never is.
pub const MIN_ATTEMPTS: u32 = 8;
pub const MAX_ATTEMPTS: u32 = 64;
pub const RETRY_BUDGET: Duration = Duration::from_millis(20);

/// Options for one stack read.
#[derive(Debug, Clone, Default)]
pub struct StackOptions {
    /// Stop the target for the read (consistent snapshot), resuming it afterwards.
    pub pause: bool,
    /// Only this OS thread id (LWP); `None` for all threads.
    pub tid: Option<u64>,
    /// Also read every frame's arguments and local variables (`Frame::locals`).
    pub locals: bool,
    /// Leave out these OS thread ids (ours): their frames are not read (a sampler that
    /// drops idle threads need not read them). How many were: [`PythonProcess::last_skipped`].
    pub skip_tids: Vec<u64>,
}

/// Sizes of the per-process caches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub code_objects: usize,
    pub bytes: usize,
}

/// An attached CPython process.
pub struct PythonProcess {
    pid: u32,
    start_time: u64,
    mem: ProcessMemory,
    binary: PythonBinary,
    runtime: u64,
    layout: Layout,
    version: Version,
    types: Types,
    codes: CodeCache,
    pthread_tid_offset: Option<u64>,
    /// Whether a walk was made to find `pthread_tid_offset` before the first read.
    calibration_tried: bool,
    /// 4 KiB blocks the last walk read, fetched in one batch at the start of the next.
    hot_blocks: Vec<u64>,
    /// The blocks holding each thread's innermost-frame pointer in the last walk: the
    /// batch fetches them first, so that every frame a walk reads is at least as new as
    /// the pointer it started from (see `read_consistent`).
    entry_blocks: Vec<u64>,
    /// The GILs (`last_holder`, `switch_number` addresses) the last walk's threads ran
    /// under: read before the next walk (see `verify_quiet`).
    gils: Vec<(u64, u64)>,
    /// Those GILs' counts and holders as the last successful re-read ended with them: read
    /// after everything that read saw, so valid as the "before" of the next walk (saving a
    /// read of its own).
    clocks: Vec<Clock>,
    /// The last walk's block buffers, filled again by the next (no allocation per read).
    spare_blocks: Vec<Block>,
    /// The blocks the last `--locals` read touched, fetched in one batch by the next, and
    /// that read's buffers.
    locals_blocks: Vec<u64>,
    locals_spare: Vec<Block>,
    /// Benchmarks only: skip the unpaused re-read, to measure what it costs.
    unchecked: bool,
    /// OS thread names by tid, with when they were read (names change rarely; reading
    /// /proc for each thread of each stack would dominate a warm read).
    names: HashMap<u64, (Instant, Option<String>)>,
    /// The target's PID namespace and its pid there, when not ours: its memory then holds
    /// thread ids as that namespace numbers them.
    pid_ns: Option<(u64, u64)>,
    warnings: Vec<String>,
    /// Built-in type objects seen by `--locals` reads.
    value_types: TypeCache,
    /// The `threading` module's thread names, re-read when a thread appears or after
    /// [`crate::names::NAMES_TTL`].
    thread_names: ThreadNames,
    /// Attempts the last read made (1 when its first walk held still).
    last_attempts: u32,
    /// Threads the last read left out as `StackOptions::skip_tids` asked.
    last_skipped: usize,
}

const NAME_TTL: Duration = Duration::from_secs(1);

/// Why a subinterpreter's thread state is shown without an OS thread (`os_tid_unknown`).
pub const LENT: &str =
    "CPython up to 3.12 runs a subinterpreter (`_xxsubinterpreters.run_string`) \
    in a thread state that keeps its creator's thread id on whichever thread runs it. \
    3.10-3.12: the thread is found where the state's eval loop sits on its C stack, \
    which shows while that thread sleeps or is stopped (not this time: it was running, \
    or the state ran no Python; --pause stops it); 3.8/3.9 record nothing that tells";

fn map_mem_err(pid: u32, e: MemoryError) -> Error {
    match e {
        MemoryError::Gone => Error::ProcessExited { pid },
        MemoryError::PermissionDenied => Error::PermissionDenied {
            pid,
            detail: "reading its memory was refused".into(),
        },
        other => Error::Memory(other),
    }
}

impl PythonProcess {
    /// Find the interpreter in process `pid` and pick its layout.
    pub fn attach(pid: u32) -> Result<PythonProcess> {
        // (no separate look for the process: reading its start time says it is not there)
        if pid == 0 {
            return Err(Error::NoSuchProcess { pid });
        }
        let start_time = platform::start_time(pid)?;
        if platform::has_exited(pid) {
            return Err(Error::ProcessExited { pid });
        }
        let maps = platform::mappings(pid)?;
        let mem = platform::open_memory(pid)?;
        // fail early and clearly when memory is not readable at all
        if let Some(m) = maps.iter().find(|m| m.read) {
            if let Err(e) = mem.read_u8(m.start) {
                return Err(match e {
                    MemoryError::Gone => Error::ProcessExited { pid },
                    MemoryError::PermissionDenied => Error::PermissionDenied {
                        pid,
                        detail: "reading its memory was refused".into(),
                    },
                    _ => Error::Memory(e),
                });
            }
        }
        // a zombie maps nothing: that is an exit, not a process without Python
        let binary = find_python(pid, &maps).map_err(|e| {
            // a live user process always maps something: nothing mapped is an exit
            if (maps.is_empty() && !platform::is_kernel_thread(pid))
                || platform::has_exited(pid)
                || platform::start_time(pid).ok() != Some(start_time)
            {
                Error::ProcessExited { pid }
            } else {
                e
            }
        })?;
        let runtime = find_runtime(&mem, &binary).ok_or_else(|| Error::NotPython {
            pid,
            reason: format!(
                "{} has no _PyRuntime symbol, .PyRuntime section or debug cookie",
                binary.path
            ),
        })?;
        let mut version =
            version::detect(&mem, &binary, runtime).ok_or_else(|| Error::NotPython {
                pid,
                reason: format!("cannot tell the Python version of {}", binary.path),
            })?;
        // `Py_Version` does not say; the file (name, biased reference counting) does
        version.free_threaded |= binary.free_threaded;
        let mut layout = *layout::for_build(version.major, version.minor, version.free_threaded)
            .ok_or_else(|| Error::UnsupportedVersion {
                version: if version.free_threaded {
                    format!(
                        "{}.{}t (a free-threaded build)",
                        version.major, version.minor
                    )
                } else {
                    version.text.clone()
                },
            })?;
        let mut warnings = Vec::new();
        // 3.13+: the target describes its own layout; prefer it, and say where the
        // built-in table disagrees (a distro patch or a version we have not seen)
        if debug_offsets::format_for(version.major, version.minor).is_some() {
            let mut buf = vec![0u8; debug_offsets::MAX_SIZE];
            match mem
                .read(runtime, &mut buf)
                .map_err(|e| e.to_string())
                .and_then(|_| {
                    debug_offsets::parse(
                        &buf,
                        (version.major, version.minor),
                        version.free_threaded,
                    )
                    .map_err(|e| e.to_string())
                }) {
                Ok(parsed) => {
                    let (merged, diffs) = debug_offsets::apply(&layout, &parsed);
                    let cross = debug_offsets::cross_check(&layout, &parsed);
                    // a table never run (3.14t): refused where the target says otherwise
                    let wrong = debug_offsets::unconfirmed(&layout, &parsed);
                    if layout::headers_only(&layout) && !wrong.is_empty() {
                        return Err(Error::UnsupportedVersion {
                            version: format!("{}.{}t (a free-threaded build whose _Py_DebugOffsets disagrees with pystackd's table, derived from the {}.{} headers: {})", version.major, version.minor, version.major, version.minor, wrong.join("; ")),
                        });
                    }
                    warnings.extend(cross.iter().map(|d| {
                        format!("_Py_DebugOffsets of the target differs from the built-in {}.{} table: {d} (the table's is used)", version.major, version.minor)
                    }));
                    layout = merged;
                    warnings.extend(diffs.into_iter().map(|d| {
                        format!("_Py_DebugOffsets of the target differs from the built-in {}.{} table: {d} (using the target's)", version.major, version.minor)
                    }));
                }
                // a table never run (3.14t) is used only as the target confirms it
                Err(e) if layout::headers_only(&layout) => {
                    return Err(Error::UnsupportedVersion {
                        version: format!("{}.{}t (a free-threaded build whose _Py_DebugOffsets could not be read to check pystackd's table against: {e})", version.major, version.minor),
                    })
                }
                Err(e) => warnings.push(format!("ignoring the target's _Py_DebugOffsets: {e}")),
            }
        }
        let s = &binary.symbols;
        let types = Types::new(s.code_type, s.frame_type, s.unicode_type, s.bytes_type);
        let value_types =
            TypeCache::with_builtins(&s.builtin_types).with_hash_secret(s.hash_secret);
        Ok(PythonProcess {
            pid,
            start_time,
            mem,
            binary,
            runtime,
            layout,
            version,
            types,
            codes: CodeCache::default(),
            pthread_tid_offset: None,
            calibration_tried: false,
            hot_blocks: Vec::new(),
            entry_blocks: Vec::new(),
            gils: Vec::new(),
            clocks: Vec::new(),
            spare_blocks: Vec::new(),
            locals_blocks: Vec::new(),
            locals_spare: Vec::new(),
            unchecked: false,
            names: HashMap::new(),
            pid_ns: platform::pid_namespace(pid),
            value_types,
            thread_names: ThreadNames::default(),
            last_attempts: 0,
            last_skipped: 0,
            warnings,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }
    /// Start time of the process (opaque; with the pid it identifies the process).
    pub fn start_time(&self) -> u64 {
        self.start_time
    }
    /// Full version, e.g. "3.10.13".
    pub fn version(&self) -> &str {
        &self.version.text
    }
    /// Path of the object holding the interpreter.
    pub fn binary_path(&self) -> &str {
        &self.binary.path
    }
    pub fn layout(&self) -> &Layout {
        &self.layout
    }
    /// An error naming `what` when the target is a free-threaded build, which the
    /// probe-time capture (crates/capture) cannot read: it knows the GIL builds' object
    /// header only.
    pub fn refuse_free_threaded(&self, what: &'static str) -> Result<()> {
        if !self.layout.free_threaded {
            return Ok(());
        }
        Err(Error::UnsupportedFeature {
            what,
            version: format!("{} (free-threaded)", self.version.text),
            why: "the probe-time capture reads GIL builds only (`pystackd stack`, `record` and `top` read it)",
        })
    }
    /// Address of `_PyRuntime` in the target.
    pub fn runtime_address(&self) -> u64 {
        self.runtime
    }

    /// Benchmarks only: read without the unpaused consistency re-read (docs/consistency.md),
    /// so that its cost can be measured against the same build. Never for real reads: an
    /// unchecked read can return a stack that never existed.
    #[doc(hidden)]
    pub fn skip_consistency_check_for_benchmarks(&mut self, skip: bool) {
        self.unchecked = skip;
    }

    /// The target's PID namespace (inode) and its pid there, when it is not ours.
    pub fn pid_namespace(&self) -> Option<(u64, u64)> {
        self.pid_ns
    }

    /// Each thread's (our tid, the target's namespace tid); identity outside a namespace.
    fn ns_tids(&self) -> Vec<(u64, u64)> {
        match self.pid_ns {
            Some(_) => platform::thread_ns_tids(self.pid).unwrap_or_default(),
            None => Vec::new(),
        }
    }

    /// Read every thread's stack (or one thread's, see [`StackOptions::tid`], our tid or
    /// the target's namespace tid; ours wins where a number is both).
    pub fn stack(&mut self, opts: &StackOptions) -> Result<ProcessStack> {
        let mut stack = self.stack_inner(opts, false, true)?;
        // 3.10-3.12: the thread running a lent subinterpreter state shows only while it
        // sleeps (`lent_runners`); caught running, two more whole reads may catch it asleep
        // (a one-shot read, not a sample: no moment is preferred over another)
        let unplaced = |s: &ProcessStack| {
            s.threads
                .iter()
                .any(|t| t.os_tid_unknown.is_some() && !t.frames.is_empty())
        };
        if self.layout.tstate.cframe.is_some() && !opts.pause {
            for _ in 0..2 {
                if !unplaced(&stack) {
                    break;
                }
                std::thread::yield_now();
                // a retry that fails (torn, or the process gone) leaves the first read,
                // which was true at its moment
                match self.stack_inner(opts, false, true) {
                    Ok(s) => stack = s,
                    Err(_) => break,
                }
            }
        }
        Ok(stack)
    }

    /// [`PythonProcess::stack`] without each thread's state (`ThreadStack::state`, and
    /// `holds_gil` as the walk saw it): for samplers, to which a few `/proc` reads per
    /// thread per sample matter. With `locals` the states are read all the same (a value
    /// read while a thread held the GIL is marked from them).
    pub fn stack_without_states(&mut self, opts: &StackOptions) -> Result<ProcessStack> {
        self.stack_inner(opts, false, opts.locals)
    }

    /// Read every thread's stack (as [`PythonProcess::stack`]) while the caller holds the
    /// process stopped with `_held` (`stack --native` reads registers under the same stop):
    /// read as a paused read, without stopping it again.
    pub fn stack_held(
        &mut self,
        _held: &platform::StopGuard,
        opts: &StackOptions,
    ) -> Result<ProcessStack> {
        self.stack_inner(
            &StackOptions {
                pause: true,
                ..opts.clone()
            },
            true,
            true,
        )
    }

    fn stack_inner(
        &mut self,
        opts: &StackOptions,
        held: bool,
        states: bool,
    ) -> Result<ProcessStack> {
        let _stopped = if opts.pause && !held {
            // attached before: a process that is gone now has exited
            Some(platform::stop(self.pid).map_err(|e| match e {
                Error::NoSuchProcess { pid } => Error::ProcessExited { pid },
                _ if platform::has_exited(self.pid) => Error::ProcessExited { pid: self.pid },
                e => e,
            })?)
        } else {
            None
        };
        let want = opts.tid.map(|tid| {
            let pairs = self.ns_tids();
            pairs
                .iter()
                .find(|p| p.0 == tid)
                .or_else(|| pairs.iter().find(|p| p.1 == tid))
                .copied()
                .unwrap_or((tid, tid))
        });
        // the target's memory numbers threads as its own namespace does
        let skip: HashSet<u64> = if opts.skip_tids.is_empty() {
            HashSet::new()
        } else if self.pid_ns.is_some() {
            let pairs: HashMap<u64, u64> = self.ns_tids().into_iter().collect();
            opts.skip_tids
                .iter()
                .filter_map(|t| pairs.get(t).copied())
                .collect()
        } else {
            opts.skip_tids.iter().copied().collect()
        };
        let mut raw = self.read_consistent(want, &skip, opts.pause)?;
        let mut warnings = self.warnings.clone();
        // the GILs, read before the values, and again around the OS states after them
        let mut bases: Vec<u64> = raw.iter().filter_map(|t| t.gil).collect();
        bases.sort_unstable();
        bases.dedup();
        let gil_before = if states {
            threadstate::read_gils(&self.mem, &self.layout, &bases)
        } else {
            HashMap::new()
        };
        // each thread's context switches before the values (did a thread run meanwhile?)
        let switches_before = if opts.locals {
            platform::context_switches(self.pid)
        } else {
            HashMap::new()
        };
        let extra: HashMap<(u64, u64), threadstate::ThreadGil> = raw
            .iter()
            .map(|t| {
                let x = threadstate::ThreadGil {
                    tstate: t.tstate,
                    gil: t.gil,
                    own: t.own_holds_gil,
                };
                ((t.interp, t.thread_id), x)
            })
            .collect();
        let interp_of: HashMap<i64, u64> =
            raw.iter().map(|t| (t.interpreter_id, t.interp)).collect();
        if opts.locals {
            // read after the walk (while still stopped with --pause): each frame's values
            // are checked against a re-read of its slots (values.rs), not against the walk
            // Values are read first from one batched copy of the blocks the last --locals
            // read touched (a value's words seldom move), each frame's slots and each
            // container then checked against the process itself (values.rs). Stopped,
            // nothing can change: the checks read the copy too.
            let cached = BlockCache::with_spare(&self.mem, std::mem::take(&mut self.locals_spare));
            cached.prefetch(&self.locals_blocks);
            let live: &dyn Memory = if opts.pause { &cached } else { &self.mem };
            let mut reader =
                ValueReader::with_live(&cached, live, &self.layout, &mut self.value_types);
            // every frame's values first, then all their slots checked in one read; a
            // frame whose slots changed is read again on its own, from the process
            let mut unchecked = Vec::new();
            for (ti, t) in raw.iter_mut().enumerate() {
                for (fi, (f, &(frame, code))) in t.frames.iter_mut().zip(&t.frame_addrs).enumerate()
                {
                    match reader.frame_locals_unchecked(frame, code) {
                        Ok(u) => unchecked.push((ti, fi, u)),
                        Err(MemoryError::Gone) => {
                            return Err(Error::ProcessExited { pid: self.pid })
                        }
                        Err(e) => {
                            f.locals = Some(Vec::new());
                            warnings.push(format!(
                                "locals of {} (thread {:#x}) not read: {e}",
                                f.function, t.thread_id
                            ));
                        }
                    }
                }
            }
            let good = if opts.pause {
                vec![true; unchecked.len()]
            } else {
                let refs: Vec<&crate::values::Unchecked> = unchecked.iter().map(|u| &u.2).collect();
                match reader.check(&refs) {
                    Ok(g) => g,
                    Err(MemoryError::Gone) => return Err(Error::ProcessExited { pid: self.pid }),
                    // some frame's memory went away: each checked on its own below
                    Err(_) => vec![false; unchecked.len()],
                }
            };
            for ((ti, fi, u), good) in unchecked.into_iter().zip(good) {
                let t = &mut raw[ti];
                let f = &mut t.frames[fi];
                if good {
                    f.locals = Some(u.locals);
                    continue;
                }
                let (frame, code) = t.frame_addrs[fi];
                match reader.frame_locals(frame, code) {
                    Ok(l) => f.locals = Some(l),
                    Err(MemoryError::Gone) => return Err(Error::ProcessExited { pid: self.pid }),
                    Err(e) => {
                        f.locals = Some(Vec::new());
                        warnings.push(format!(
                            "locals of {} (thread {:#x}) not read: {e}",
                            f.function, t.thread_id
                        ));
                    }
                }
            }
            drop(reader);
            self.locals_blocks = cached.touched();
            self.locals_spare = cached.into_spare();
        }
        // with the thread states, each OS name comes from the same `stat` read
        let mut threads = self.finish_threads(raw, &mut warnings, !states);
        let extra: Vec<threadstate::ThreadGil> = threads
            .iter()
            .map(|t| {
                let key = (
                    interp_of.get(&t.interpreter_id).copied().unwrap_or(0),
                    t.thread_id,
                );
                extra.get(&key).copied().unwrap_or(threadstate::ThreadGil {
                    tstate: 0,
                    gil: None,
                    own: None,
                })
            })
            .collect();
        if states {
            let first = threadstate::read_gils(&self.mem, &self.layout, &bases);
            let named = threadstate::os_states(self.pid, &threads, opts.pause);
            let mut os = Vec::with_capacity(named.len());
            for (t, (state, comm)) in threads.iter_mut().zip(named) {
                // the OS name left for this read (finish_threads): from the same `stat`
                if t.os_name.is_none() {
                    if let (Some(tid), Some(c)) = (t.os_tid, &comm) {
                        self.names.insert(tid, (Instant::now(), Some(c.clone())));
                    }
                    if t.name.is_none() {
                        t.name = comm.clone();
                    }
                    t.os_name = comm;
                }
                os.push(state);
            }
            let gils = threadstate::GilReads {
                before: gil_before,
                first,
                last: threadstate::read_gils(&self.mem, &self.layout, &bases),
            };
            threadstate::classify(&self.layout, &mut threads, &extra, os, &gils);
            // (free-threaded builds: values.rs marked each value from its containers' own
            // locks, which every update holds, with the GIL on or off)
            if opts.locals && !self.layout.free_threaded {
                // a value showing a mutable container's items is marked, or its mark cleared
                let switches_after = platform::context_switches(self.pid);
                let mark = threadstate::mid_update(
                    &threads,
                    &extra,
                    &gils,
                    (&switches_before, &switches_after),
                );
                for l in threads
                    .iter_mut()
                    .flat_map(|t| t.frames.iter_mut())
                    .flat_map(|f| f.locals.iter_mut().flatten())
                {
                    if l.mid_update.is_some() {
                        l.mid_update = mark.clone();
                    }
                }
            }
        }
        if let Some((host, _)) = want {
            threads.retain(|t| t.os_tid == Some(host));
        }
        Ok(ProcessStack {
            pid: self.pid,
            python_version: self.version.text.clone(),
            python_binary: self.binary.path.clone(),
            pid_ns: self.pid_ns.map(|p| p.0),
            ns_pid: self.pid_ns.map(|p| p.1),
            threads,
            warnings,
        })
    }

    /// `tid`: only this thread, as (our tid, its namespace tid).
    /// `skip`: threads (the target's namespace tids) whose frames are not read.
    fn read_consistent(
        &mut self,
        tid: Option<(u64, u64)>,
        skip: &HashSet<u64>,
        paused: bool,
    ) -> Result<Vec<RawThread>> {
        let mut last = String::new();
        // one thread wanted: recognise it before reading its frames. Without
        // `native_thread_id` the pthread → LWP offset tells (found once per process).
        // Every read wants it before its walk (the walk reads each thread's tid, see
        // `Walker::pthread_tid_offset`): one extra walk, once per process.
        if self.layout.tstate.native_thread_id.is_none()
            && self.pthread_tid_offset.is_none()
            && !self.calibration_tried
        {
            self.calibration_tried = true;
            let all = self.read_consistent(None, &HashSet::new(), paused)?;
            let ids: Vec<u64> = all.iter().map(|t| t.thread_id).collect();
            platform::os_thread_ids(self.pid, &self.mem, &ids, &mut self.pthread_tid_offset);
        }
        let pid = self.pid;
        let offset = self.pthread_tid_offset;
        let skipped = std::cell::Cell::new(0usize);
        let filter = |mem: &dyn Memory, thread_id: u64, native: Option<u64>| -> bool {
            if native.is_some_and(|n| skip.contains(&n)) {
                skipped.set(skipped.get() + 1);
                return false;
            }
            let Some((host, ns)) = tid else { return true };
            match native {
                // the target's memory numbers threads as its own namespace does
                Some(n) if n != 0 => n == ns,
                _ => platform::os_thread_ids(pid, mem, &[thread_id], &mut offset.clone())
                    .get(&thread_id)
                    .is_none_or(|&t| t == host),
            }
        };
        let started = Instant::now();
        let mut attempts = 0;
        while attempts < MAX_ATTEMPTS
            && (attempts < MIN_ATTEMPTS || started.elapsed() < RETRY_BUDGET)
        {
            let attempt = attempts;
            attempts += 1;
            skipped.set(0);
            self.codes.begin_walk();
            let cached = BlockCache::with_spare(&self.mem, std::mem::take(&mut self.spare_blocks));
            // One batch, copied in the order given: each thread's innermost-frame pointer
            // first, then everything else. A batch is not one moment: were the pointer
            // copied after the frames (on 3.11/3.12 it lives on the thread's C stack,
            // mapped above its data stack), a thread that had just called would be walked
            // from its new frame through frames as they were before the call.
            // each GIL's switch count, then its last holder, before any frame is read
            let clocks = if paused {
                Vec::new()
            } else if !self.clocks.is_empty() {
                std::mem::take(&mut self.clocks)
            } else {
                read_clocks(&self.mem, &self.gils)
            };
            let order = prefetch_order(&self.hot_blocks, &self.entry_blocks);
            cached.prefetch(&order);
            let prefetched = cached.touched();
            let mut w = Walker::new(&cached, &self.layout, &mut self.types, &mut self.codes);
            // nothing fetched in advance (a first read): each level of the threads' ways to
            // their frames in one batch
            w.cold = prefetched.is_empty().then_some(&cached);
            w.want = Some(&filter);
            w.stopped = paused;
            w.pthread_tid_offset = offset;
            w.require_tid = attempt + 2 < MIN_ATTEMPTS;
            let walked = w.walk(self.runtime);
            let witnesses = std::mem::take(&mut w.witnesses);
            let bounds = std::mem::take(&mut w.bounds);
            let entries = std::mem::take(&mut w.entries);
            let spans = std::mem::take(&mut w.spans);
            // a pointer read on demand after the batch is newer than frames taken from it
            let walked = walked.and_then(|t| match late_entry(&entries, &prefetched) {
                Some(e) => Err(MemoryError::Invalid(format!(
                    "innermost-frame pointer at {e:#x} was read after the frames"
                ))),
                None => Ok(t),
            });
            self.entry_blocks = entries.iter().map(|&e| e & !(BLOCK - 1)).collect();
            self.entry_blocks.sort_unstable();
            self.entry_blocks.dedup();
            let walked =
                walked.and_then(|t| self.codes.verify_deferred(&cached, &self.layout).map(|_| t));
            // unpaused: everything the walk followed must read back the same now, from the
            // process itself (not the walk's block cache); stopped, nothing can move
            self.gils = spans.iter().filter_map(|s| s.gil).collect();
            self.gils.sort_unstable();
            self.gils.dedup();
            let walked = match walked {
                Ok(t) if !paused && !self.unchecked => verify_quiet(
                    &self.mem, &witnesses, &bounds, &spans, &clocks, &self.gils,
                )
                .map(|next| {
                    self.clocks = next;
                    t
                }),
                other => other,
            };
            self.hot_blocks = cached.touched();
            self.spare_blocks = cached.into_spare();
            self.last_attempts = attempts;
            self.last_skipped = skipped.get();
            match walked {
                Ok(t) => return Ok(t),
                Err(MemoryError::Gone) => return Err(Error::ProcessExited { pid: self.pid }),
                Err(MemoryError::PermissionDenied) => {
                    return Err(map_mem_err(self.pid, MemoryError::PermissionDenied))
                }
                Err(e) => {
                    if !platform::exists(self.pid)
                        || platform::has_exited(self.pid)
                        || platform::start_time(self.pid).ok() != Some(self.start_time)
                    {
                        return Err(Error::ProcessExited { pid: self.pid });
                    }
                    last = e.to_string();
                    if attempt > 2 {
                        std::thread::yield_now();
                    }
                }
            }
        }
        Err(Error::Inconsistent {
            pid: self.pid,
            attempts,
            last,
        })
    }

    /// `read_names`: read each OS name not cached (else the caller fills them in).
    fn finish_threads(
        &mut self,
        mut raw: Vec<RawThread>,
        warnings: &mut Vec<String>,
        read_names: bool,
    ) -> Vec<ThreadStack> {
        let tid_in_block =
            self.layout.tstate.native_thread_id.is_none() && self.pthread_tid_offset.is_some();
        let (mut starting, mut ended) = left_out(&mut raw, tid_in_block);
        // 3.11+: a new thread stores `thread_id`, then `native_thread_id`, when it binds
        // its state: between the two it has no tid to show yet
        let binding: std::collections::HashSet<(i64, u64)> = raw
            .iter()
            .filter(|t| t.frames.is_empty() && t.thread_id != 0 && t.native_thread_id == Some(0))
            .map(|t| (t.interpreter_id, t.thread_id))
            .collect();
        let need_map: Vec<u64> = raw
            .iter()
            .filter(|t| t.native_thread_id.unwrap_or(0) == 0)
            .map(|t| t.thread_id)
            .collect();
        let mapped = if need_map.is_empty() {
            Default::default()
        } else {
            platform::os_thread_ids(self.pid, &self.mem, &need_map, &mut self.pthread_tid_offset)
        };
        // native_thread_id is the target's namespace tid; ours is what tools here use
        let pairs = if raw.iter().any(|t| t.native_thread_id.unwrap_or(0) != 0) {
            self.ns_tids()
        } else {
            Vec::new()
        };
        let host_of = |ns: u64| {
            if self.pid_ns.is_none() {
                return Some(ns);
            }
            pairs.iter().find(|p| p.1 == ns).map(|p| p.0)
        };
        let ns_of: HashMap<u64, u64> = if self.pid_ns.is_some() && pairs.is_empty() {
            self.ns_tids().into_iter().collect()
        } else {
            pairs.iter().copied().collect()
        };
        let now = Instant::now();
        let live: std::collections::HashSet<u64> = raw
            .iter()
            .filter_map(|t| t.native_thread_id)
            .filter_map(host_of)
            .collect();
        self.names
            .retain(|tid, (at, _)| now.duration_since(*at) < NAME_TTL * 30 || live.contains(tid));
        // `threading`'s names, per interpreter (read after the walk; with --pause while
        // still stopped)
        let mut py_names: HashMap<(u64, u64), String> = HashMap::new();
        let mut interps: Vec<u64> = raw.iter().map(|t| t.interp).collect();
        interps.sort_unstable();
        interps.dedup();
        for interp in interps {
            let ids: Vec<(u64, u64)> = raw
                .iter()
                .filter(|t| t.interp == interp)
                .map(|t| (t.thread_id, t.native_thread_id.unwrap_or(t.tstate)))
                .collect();
            let map = self.thread_names.names(
                &self.mem,
                &self.layout,
                &mut self.value_types,
                interp,
                &ids,
                &mut self.spare_blocks,
            );
            for (id, _) in ids {
                if let Some(n) = map.get(&id) {
                    py_names.insert((interp, id), n.clone());
                }
            }
        }
        let tid_of = |t: &RawThread| match t.native_thread_id {
            Some(n) if n != 0 => host_of(n),
            _ => mapped.get(&t.thread_id).copied(),
        };
        let lent = self.lent_states(&raw, tid_of);
        let runners = self.lent_runners(&raw, &lent, tid_of);
        if lent.len() > runners.len() {
            warnings.push(format!(
                "{} thread state(s) of subinterpreters shown without an OS thread: {LENT}",
                lent.len() - runners.len()
            ));
        }
        let mut threads: Vec<ThreadStack> = raw
            .into_iter()
            .map(|t| {
                let runner = runners.get(&t.tstate).copied();
                let lent = lent.contains(&t.tstate);
                let os_tid = match t.native_thread_id {
                    _ if lent => runner,
                    Some(n) if n != 0 => host_of(n),
                    _ => mapped.get(&t.thread_id).copied(),
                };
                let ns_tid = os_tid
                    .and_then(|h| ns_of.get(&h).copied())
                    .filter(|&n| Some(n) != os_tid);
                let os_name = os_tid.and_then(|tid| {
                    let pid = self.pid;
                    if !read_names {
                        // a fresh cached name, else the caller's `stat` read gives it
                        return self
                            .names
                            .get(&tid)
                            .filter(|e| now.duration_since(e.0) <= NAME_TTL)
                            .and_then(|e| e.1.clone());
                    }
                    let e = self
                        .names
                        .entry(tid)
                        .or_insert_with(|| (now, platform::thread_name(pid, tid)));
                    if now.duration_since(e.0) > NAME_TTL {
                        *e = (now, platform::thread_name(pid, tid));
                    }
                    e.1.clone()
                });
                // (a lent state's `threading` entry is keyed by its creator's id, not by
                // the thread that runs it)
                let name = py_names
                    .remove(&(t.interp, t.thread_id))
                    .filter(|_| !lent)
                    .or_else(|| os_name.clone());
                ThreadStack {
                    interpreter_id: t.interpreter_id,
                    thread_id: t.thread_id,
                    os_tid,
                    os_tid_unknown: (lent && runner.is_none()).then(|| LENT.to_string()),
                    ns_tid,
                    name,
                    os_name,
                    holds_gil: t.holds_gil,
                    state: Default::default(),
                    frames: t.frames,
                }
            })
            .collect();
        // A frameless thread state is not re-read after the walk (nothing of it is
        // witnessed): one read from a list that changed meanwhile may be a state freed with
        // its thread. Its tid must still be one of the target's threads (3.14: 1 read of
        // ~1,300 of a churning target showed a tid no thread had during the read).
        if !binding.is_empty() {
            let n = threads.len();
            threads.retain(|t| {
                !t.frames.is_empty()
                    || t.os_tid.is_some()
                    || !binding.contains(&(t.interpreter_id, t.thread_id))
            });
            starting += n - threads.len();
        }
        if threads
            .iter()
            .any(|t| t.frames.is_empty() && t.os_tid.is_some())
        {
            if let Ok(live) = platform::threads(self.pid) {
                let n = threads.len();
                threads.retain(|t| {
                    !t.frames.is_empty() || t.os_tid.is_none_or(|tid| live.contains(&tid))
                });
                ended += n - threads.len();
            }
        }
        if starting + ended > 0 {
            warnings.push(format!(
                "{} thread state(s) left out, no OS thread runs them: {starting} of threads not started yet, {ended} of threads that ended during the read",
                starting + ended
            ));
        }
        threads
    }

    /// The thread states (by address) of subinterpreters whose ids do not say which OS
    /// thread runs them: on builds that lend a subinterpreter's thread state to whichever
    /// thread runs it (`ThreadStateLayout::lent_states`), one whose thread id (`tid_of`) a
    /// state of another interpreter also claims. Its creator's id names a thread that runs
    /// the main interpreter's state (or another one's), and the thread running it may be
    /// any other: shown with `os_tid` null and [`LENT`] rather than under a thread that
    /// may not run it. (Nested on the thread it names, it is dropped to null too: nothing
    /// in memory tells the two cases apart.)
    fn lent_states(
        &self,
        raw: &[RawThread],
        tid_of: impl Fn(&RawThread) -> Option<u64>,
    ) -> HashSet<u64> {
        let mut lent = HashSet::new();
        if !self.layout.tstate.lent_states || raw.iter().all(|t| t.interpreter_id == 0) {
            return lent;
        }
        let tids: Vec<Option<u64>> = raw.iter().map(&tid_of).collect();
        for (i, t) in raw.iter().enumerate() {
            let Some(tid) = tids[i] else { continue };
            let shared = raw
                .iter()
                .zip(&tids)
                .any(|(o, &ot)| ot == Some(tid) && o.interpreter_id != t.interpreter_id);
            // the main interpreter's states are made by `threading` on their own threads
            if shared && t.interpreter_id != 0 {
                lent.insert(t.tstate);
            }
        }
        lent
    }

    /// 3.10-3.12: the OS thread running each lent state (by address) that runs Python,
    /// where that shows. Its `cframe` (witnessed by the walk) points at its eval loop's
    /// `_PyCFrame` local, so into the live part of the running thread's C stack: between
    /// that thread's stack pointer and its stack top (`platform::stack_top`, from its
    /// `thread_id`, which is `pthread_self()`). Thread stacks are disjoint, so at most
    /// one thread's live stack holds it; the other states' threads are the candidates.
    /// A thread's stack pointer shows only while it sleeps or is stopped: a runner caught
    /// running stays unknown. Not used for states whose thread ids are their own.
    fn lent_runners(
        &self,
        raw: &[RawThread],
        lent: &HashSet<u64>,
        tid_of: impl Fn(&RawThread) -> Option<u64>,
    ) -> HashMap<u64, u64> {
        let mut runners = HashMap::new();
        let wanted: Vec<(u64, u64)> = raw
            .iter()
            .filter(|t| lent.contains(&t.tstate))
            .filter_map(|t| Some((t.tstate, t.running_cframe?)))
            .collect();
        if wanted.is_empty() {
            return runners;
        }
        // (tid, stack top) of every thread that runs a state of its own
        let mut owners: Vec<(u64, u64)> = Vec::new();
        for t in raw.iter().filter(|t| !lent.contains(&t.tstate)) {
            let Some(tid) = tid_of(t) else { continue };
            if owners.iter().any(|&(o, _)| o == tid) {
                continue;
            }
            if let Some(top) = platform::stack_top(self.pid, tid, t.thread_id) {
                owners.push((tid, top));
            }
        }
        let mut sp: HashMap<u64, Option<u64>> = HashMap::new();
        let main = u64::from(self.pid);
        for (tstate, cf) in wanted {
            // of the other threads only the one whose stack top is the nearest above can
            // hold it (any other's top would lie inside that one's stack); and the main
            // thread, whose stack is not one the thread library gave it
            let nearest = owners
                .iter()
                .filter(|&&(tid, top)| tid != main && cf < top)
                .min_by_key(|&&(_, top)| top);
            let main_owner = owners.iter().find(|&&(tid, top)| tid == main && cf < top);
            let holders: Vec<u64> = nearest
                .into_iter()
                .chain(main_owner)
                .filter(|&&(tid, top)| {
                    // a thread caught running may be asleep a moment later: any moment
                    // after the walk tells, as the frame was still there at its end
                    let sp = *sp.entry(tid).or_insert_with(|| {
                        (0..3).find_map(|i| {
                            if i > 0 {
                                std::thread::yield_now();
                            }
                            platform::stack_pointer(self.pid, tid)
                        })
                    });
                    sp.is_some_and(|sp| sp <= cf && top - sp < 1 << 32)
                })
                .map(|&(tid, _)| tid)
                .collect();
            if let [tid] = holders[..] {
                runners.insert(tstate, tid);
            }
        }
        runners
    }

    /// Benchmarks only: read the `threading` names as `mode` says instead of through
    /// their cache, to measure what they cost.
    #[doc(hidden)]
    pub fn thread_names_mode_for_benchmarks(&mut self, mode: crate::names::BenchMode) {
        self.thread_names.bench = mode;
    }

    /// Tests only: the hash of the `str` `name` as pystackd computes the target's (from its
    /// `_Py_HashSecret`), to compare with the target's own `hash(name)`; `None` without
    /// the secret's symbol.
    #[doc(hidden)]
    pub fn str_hash_for_tests(&mut self, name: &str) -> Option<i64> {
        ValueReader::new(&self.mem, &self.layout, &mut self.value_types).str_hash(name)
    }

    /// How many times the `threading` names were read rather than taken from the cache.
    pub fn thread_name_reads(&self) -> u64 {
        self.thread_names.reads()
    }

    pub fn cache_stats(&self) -> CacheStats {
        CacheStats {
            code_objects: self.codes.len(),
            bytes: self.codes.bytes(),
        }
    }

    /// How many walks the last read made (1: its first walk held still, or it was paused).
    pub fn last_attempts(&self) -> u32 {
        self.last_attempts
    }

    /// Threads the last read left out as [`StackOptions::skip_tids`] asked.
    pub fn last_skipped(&self) -> usize {
        self.last_skipped
    }

    /// The memory of the target (for tools and tests).
    pub fn memory(&self) -> &dyn Memory {
        &self.mem
    }
}

const BLOCK: u64 = 4096;

/// A GIL's (`last_holder`, `switch_number`) field addresses and the values read.
struct Clock {
    fields: (u64, u64),
    holder: u64,
    switches: u64,
}

/// Each GIL's `switch_number`, then its `last_holder`, in that order (separate copies in
/// one batch). A GIL that cannot be read is left out (its threads are then re-read).
fn read_clocks(mem: &dyn Memory, gils: &[(u64, u64)]) -> Vec<Clock> {
    if gils.is_empty() {
        return Vec::new();
    }
    let mut vals = vec![[0u8; 8]; gils.len() * 2];
    let ok = {
        let mut reqs: Vec<(u64, &mut [u8])> = Vec::with_capacity(vals.len());
        let mut it = vals.iter_mut();
        for &(holder, switch) in gils {
            reqs.push((switch, &mut it.next().unwrap()[..]));
            reqs.push((holder, &mut it.next().unwrap()[..]));
        }
        mem.read_many(&mut reqs).is_ok()
    };
    if !ok {
        return Vec::new();
    }
    gils.iter()
        .zip(vals.chunks(2))
        .map(|(&fields, v)| Clock {
            fields,
            switches: u64::from_le_bytes(v[0]),
            holder: u64::from_le_bytes(v[1]),
        })
        .collect()
}

/// [`witness::verify`], skipping the threads shown not to have run since before the walk.
///
/// A thread runs Python code (and so pushes, pops or moves a frame) only while it holds
/// its GIL. Taking the GIL sets `last_holder` to the taker and, when that changes it,
/// increments `switch_number`, before the taker runs any Python code. So if a GIL's
/// `switch_number` and then `last_holder`, read before the walk (`clocks`: at the end of
/// the previous re-read, or on their own), read the same at the end of this re-read
/// (`last_holder`, then `switch_number`), no thread other than
/// that holder took this GIL in between: every other thread under it had the same frames
/// all along, and what the walk read of them is one moment's stack without reading it
/// again. The holder, and threads under a GIL not read before the walk, are re-read as
/// usual; if a clock moved, everything is.
fn verify_quiet(
    mem: &dyn Memory,
    witnesses: &[witness::Witness],
    bounds: &[witness::StackBound],
    spans: &[crate::walker::ThreadSpan],
    clocks: &[Clock],
    gils: &[(u64, u64)],
) -> std::result::Result<Vec<Clock>, MemoryError> {
    let quiet = |s: &crate::walker::ThreadSpan| {
        s.gil
            .is_some_and(|g| clocks.iter().any(|c| c.fields == g && c.holder != s.tstate))
    };
    // last in the batch, for each GIL: `last_holder`, `switch_number` (this walk's
    // "after"), `last_holder` again (with that count, the next walk's "before")
    let tail: Vec<u64> = gils.iter().flat_map(|&(h, s)| [h, s, h]).collect();
    let next = |now: &[u64]| -> Vec<Clock> {
        gils.iter()
            .zip(now.chunks(3))
            .map(|(&fields, v)| Clock {
                fields,
                switches: v[1],
                holder: v[2],
            })
            .collect()
    };
    if !spans.iter().any(quiet) {
        let now = witness::verify_then(mem, witnesses, bounds, &tail)?;
        return Ok(next(&now));
    }
    let mut ws = Vec::with_capacity(witnesses.len());
    let mut bs = Vec::with_capacity(bounds.len());
    let mut covered = 0;
    for s in spans {
        // anything recorded between threads (none today) stays
        ws.extend_from_slice(&witnesses[covered.min(s.witnesses.start)..s.witnesses.start]);
        covered = s.witnesses.end;
        if !quiet(s) {
            ws.extend_from_slice(&witnesses[s.witnesses.clone()]);
            bs.extend_from_slice(&bounds[s.bounds.clone()]);
        }
    }
    ws.extend_from_slice(&witnesses[covered.min(witnesses.len())..]);
    let now = witness::verify_then(mem, &ws, &bs, &tail)?;
    // every clock a skipped thread relied on must read the same after
    let still = clocks
        .iter()
        .all(|c| match gils.iter().position(|&g| g == c.fields) {
            Some(i) => now[3 * i] == c.holder && now[3 * i + 1] == c.switches,
            None => !spans.iter().any(|s| s.gil == Some(c.fields)),
        });
    if still {
        Ok(next(&now))
    } else {
        let now = witness::verify_then(mem, witnesses, bounds, &tail)?;
        Ok(next(&now))
    }
}

/// The blocks to fetch at the start of a walk, in copy order: those of `entries` first.
fn prefetch_order(hot: &[u64], entries: &[u64]) -> Vec<u64> {
    let first = || {
        hot.iter()
            .copied()
            .filter(|b| entries.binary_search(b).is_ok())
    };
    let rest = || {
        hot.iter()
            .copied()
            .filter(|b| entries.binary_search(b).is_err())
    };
    first().chain(rest()).collect()
}

/// An entry pointer (`entries`) whose block the batch (`prefetched`, sorted; empty when
/// there was none or it failed, and every block was then read in walk order) did not hold:
/// it was read on demand, after frames the batch held.
/// Leaves out the thread states no OS thread runs (issue 16), and counts them as (not
/// started yet, ended):
/// - `_thread.start_new_thread` links the new thread's state before the thread exists.
///   From 3.12 its `thread_id` is 0 until the thread binds it; up to 3.11 it holds its
///   creator's `pthread_self()` (3.11 also its `native_thread_id`), so it reads as a
///   frameless twin of the creator, which has frames (it is in `Thread.start()`).
/// - Before 3.11 (`tid_in_block`: the tid comes from glibc's `struct pthread`), a
///   frameless state whose block held no tid: its thread exited (the kernel clears it).
fn left_out(raw: &mut Vec<RawThread>, tid_in_block: bool) -> (usize, usize) {
    let running: std::collections::HashSet<(u64, u64)> = raw
        .iter()
        .filter(|t| !t.frames.is_empty())
        .map(|t| (t.interp, t.thread_id))
        .collect();
    let (mut starting, mut ended) = (0, 0);
    raw.retain(|t| {
        if !t.frames.is_empty() {
            return true;
        }
        if t.thread_id == 0 || running.contains(&(t.interp, t.thread_id)) {
            starting += 1;
            false
        } else if tid_in_block && t.native_thread_id.is_none() {
            ended += 1;
            false
        } else {
            true
        }
    });
    (starting, ended)
}

fn late_entry(entries: &[u64], prefetched: &[u64]) -> Option<u64> {
    if prefetched.is_empty() {
        return None;
    }
    entries
        .iter()
        .copied()
        .find(|&e| prefetched.binary_search(&(e & !(BLOCK - 1))).is_err())
}

/// `_PyRuntime`: the symbol, else the `.PyRuntime` section, else (3.13+) the debug
/// cookie in the module's writable mappings.
fn find_runtime(mem: &dyn Memory, bin: &PythonBinary) -> Option<u64> {
    if let Some(a) = bin.symbols.py_runtime {
        return Some(a);
    }
    if let Some((a, _)) = bin.pyruntime_section {
        return Some(a);
    }
    const CHUNK: usize = 1 << 16;
    const MAX_SCAN: u64 = 64 << 20;
    let mut buf = vec![0u8; CHUNK];
    for &(start, end) in &bin.writable {
        let end = end.min(start + MAX_SCAN);
        let mut a = start;
        while a < end {
            let n = ((end - a) as usize).min(CHUNK);
            if mem.read(a, &mut buf[..n]).is_ok() {
                for off in (0..n.saturating_sub(7)).step_by(8) {
                    if &buf[off..off + 8] == DEBUG_COOKIE {
                        return Some(a + off as u64);
                    }
                }
            }
            a += n as u64;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binary::Symbols;
    use crate::memory::Snapshot;

    fn binary(
        symbols: Symbols,
        section: Option<(u64, u64)>,
        writable: Vec<(u64, u64)>,
    ) -> PythonBinary {
        PythonBinary {
            path: "/usr/bin/python3.14".into(),
            load_bias: 0,
            symbols,
            pyruntime_section: section,
            name_version: Some((3, 14)),
            version_strings: Vec::new(),
            writable,
            free_threaded: false,
        }
    }

    /// Symbol first, then the `.PyRuntime` section, then the 3.13+ cookie scan.
    #[test]
    fn runtime_is_found_in_order() {
        let mut mem = Snapshot::new();
        let mut data = vec![0u8; 0x30000];
        // the cookie 8-aligned somewhere past the first 64 KiB chunk
        data[0x1_2340..0x1_2348].copy_from_slice(DEBUG_COOKIE);
        mem.insert(0x70_0000, data);
        let scan = binary(Symbols::default(), None, vec![(0x70_0000, 0x73_0000)]);
        assert_eq!(find_runtime(&mem, &scan), Some(0x71_2340));
        let section = binary(
            Symbols::default(),
            Some((0x55_0000, 0x1000)),
            vec![(0x70_0000, 0x73_0000)],
        );
        assert_eq!(find_runtime(&mem, &section), Some(0x55_0000));
        let sym = Symbols {
            py_runtime: Some(0x44_0000),
            ..Symbols::default()
        };
        assert_eq!(
            find_runtime(&mem, &binary(sym, Some((0x55_0000, 0x1000)), vec![])),
            Some(0x44_0000)
        );
        // nothing anywhere, unreadable ranges included
        let none = binary(Symbols::default(), None, vec![(0x10_0000, 0x20_0000)]);
        assert_eq!(find_runtime(&mem, &none), None);
    }
}
