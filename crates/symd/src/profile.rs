//! A profile being recorded: identical stacks counted (folded), every sample kept per
//! thread (speedscope) and the pprof builder; written as a flame graph, speedscope, folded
//! lines or pprof. Shared by `pystackd record` and the daemon's `profile` methods.

use std::collections::HashMap;

// a profile hashes every frame of every sample: FxHash, not SipHash (no untrusted keys)
use rustc_hash::FxHashMap;
use std::io::{self, Write};
use std::sync::Arc;
use std::time::Duration;

use protocol::{escape_control, ThreadStack};
use serde::Serialize;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordFormat {
    /// An SVG flame graph (inferno).
    Flamegraph,
    /// speedscope's JSON file format (https://www.speedscope.app), one profile per thread.
    Speedscope,
    /// `frame;frame;... count` lines, outermost first (flamegraph.pl, inferno, ...).
    Folded,
    /// Every sample of every thread, one JSON object per line, in the order taken: its
    /// time, process, thread, whether it held the GIL and was idle, its frames outermost
    /// first (.jsonl).
    Raw,
    /// pprof's gzipped `profile.proto` (`go tool pprof`, continuous-profiling backends),
    /// with a `thread` label per sample.
    Pprof,
}

/// What a recording saw. A sample costs a few hash lookups and no allocation once its
/// stack has been seen: frames are interned to ids (by the address of the reader's shared
/// names first, then by content), a stack to an id, and nothing is formatted until the
/// profile is written (formatting every frame of every sample was most of `record`'s CPU).
pub struct Profile {
    period_ns: i64,
    time_nanos: i64,
    /// Whether the folded lines start with the thread (`--threads`).
    per_thread: bool,
    /// Whether they start with the process (`--subprocesses`).
    per_process: bool,
    /// Distinct frames (by content), indexed by frame id.
    frames: Vec<FrameKey>,
    by_content: FxHashMap<FrameKey, u32>,
    /// (name address, file address, line) → frame id; holds the names it keys by, so an
    /// address cannot be reused for another name while it is a key.
    by_address: FxHashMap<AddressKey, (u32, Arc<str>, Arc<str>)>,
    /// Threads by (id, name): a renamed thread is a new entry (its label changes).
    threads: Vec<ThreadSamples>,
    /// Stacks as [thread entry, frame ids outermost first], indexed by stack id, and their
    /// sample counts.
    stacks: Vec<Box<[u32]>>,
    stack_index: FxHashMap<Box<[u32]>, u32>,
    counts: Vec<u64>,
    scratch: Vec<u32>,
    /// With `--format raw`: every sample in the order taken.
    raw: Option<Vec<RawSample>>,
    /// The (thread entry, stack id) the last add counted, if it counted one.
    last: Option<(u32, u32)>,
}

/// One thread's sample as `--format raw` writes it.
struct RawSample {
    /// Since the recording started.
    at: Duration,
    thread: u32,
    stack: u32,
    holds_gil: Option<bool>,
    idle: bool,
}

/// A frame by the addresses of its name and file (the reader shares them per code object).
type AddressKey = (usize, usize, Option<u32>);

#[derive(Clone, PartialEq, Eq, Hash)]
struct FrameKey {
    name: Arc<str>,
    file: Arc<str>,
    line: Option<u32>,
}

struct ThreadSamples {
    key: u64,
    name: Option<String>,
    /// With `--subprocesses`: the process's root label (`process PID (command)`).
    process: Option<Arc<str>>,
    /// `thread NAME (TID)` alone.
    thread_label: String,
    label: String,
    /// Stack ids in the order sampled (speedscope).
    samples: Vec<u32>,
}

#[derive(Serialize)]
struct SpeedscopeFrame<'a> {
    name: &'a str,
    file: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<u32>,
}

pub fn thread_label(t: &ThreadStack) -> String {
    let tid = t.os_tid.map_or_else(|| "?".to_string(), |t| t.to_string());
    match &t.name {
        Some(n) => format!("thread {} ({tid})", escape_control(n)),
        None => format!("thread {tid}"),
    }
}

fn address(s: &Arc<str>) -> usize {
    Arc::as_ptr(s) as *const u8 as usize
}

impl Profile {
    pub fn new(period_ns: i64) -> Profile {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        Profile {
            period_ns,
            time_nanos: now,
            per_thread: false,
            per_process: false,
            frames: Vec::new(),
            by_content: FxHashMap::default(),
            by_address: FxHashMap::default(),
            threads: Vec::new(),
            stacks: Vec::new(),
            stack_index: FxHashMap::default(),
            counts: Vec::new(),
            scratch: Vec::new(),
            raw: None,
            last: None,
        }
    }

    fn frame_id(&mut self, name: &Arc<str>, file: &Arc<str>, line: Option<u32>) -> u32 {
        let akey = (address(name), address(file), line);
        if let Some(&(id, _, _)) = self.by_address.get(&akey) {
            return id;
        }
        let key = FrameKey {
            name: name.clone(),
            file: file.clone(),
            line,
        };
        let next = self.frames.len() as u32;
        let id = *self.by_content.entry(key.clone()).or_insert(next);
        if id == next {
            self.frames.push(key);
        }
        self.by_address
            .insert(akey, (id, name.clone(), file.clone()));
        id
    }

    fn thread_entry(&mut self, process: Option<&Arc<str>>, t: &ThreadStack) -> u32 {
        let key = t.os_tid.unwrap_or(t.thread_id);
        if let Some(i) = self.threads.iter().rposition(|e| {
            e.key == key
                && e.name.as_deref() == t.name.as_deref()
                && e.process.as_deref() == process.map(|p| &**p)
        }) {
            return i as u32;
        }
        let thread_label = thread_label(t);
        let label = match process {
            Some(p) => format!("{}: {thread_label}", escape_control(p)),
            None => thread_label.clone(),
        };
        self.threads.push(ThreadSamples {
            key,
            name: t.name.clone(),
            process: process.cloned(),
            thread_label,
            label,
            samples: Vec::new(),
        });
        (self.threads.len() - 1) as u32
    }

    pub fn add(&mut self, t: &ThreadStack, per_thread: bool) {
        self.add_in(None, t, per_thread)
    }

    /// [`Profile::add`] of a thread of one of several processes (`--subprocesses`): the
    /// folded lines and the flame graph get one root per process, `label`.
    pub fn add_in(&mut self, process: Option<&Arc<str>>, t: &ThreadStack, per_thread: bool) {
        if t.frames.is_empty() {
            return;
        }
        self.per_thread = per_thread;
        self.per_process |= process.is_some();
        let thread = self.thread_entry(process, t);
        let mut ids = std::mem::take(&mut self.scratch);
        ids.clear();
        ids.push(thread);
        for f in t.frames.iter().rev() {
            let name = f.qualname.as_ref().unwrap_or(&f.function);
            ids.push(self.frame_id(name, &f.filename, f.line));
        }
        let sid = match self.stack_index.get(&ids[..]) {
            Some(&sid) => sid,
            None => {
                let sid = self.stacks.len() as u32;
                let key: Box<[u32]> = ids.as_slice().into();
                self.stacks.push(key.clone());
                self.stack_index.insert(key, sid);
                self.counts.push(0);
                sid
            }
        };
        self.scratch = ids;
        self.counts[sid as usize] += 1;
        self.threads[thread as usize].samples.push(sid);
        self.last = Some((thread, sid));
    }

    /// Keep every sample with its time and state too (`--format raw`).
    pub fn keep_samples(&mut self) {
        self.raw.get_or_insert_with(Vec::new);
    }

    /// [`Profile::add_in`] of a sample taken `at` after the start, `idle` or not.
    pub fn add_sample(
        &mut self,
        process: Option<&Arc<str>>,
        t: &ThreadStack,
        per_thread: bool,
        at: Duration,
        idle: bool,
    ) {
        self.last = None;
        self.add_in(process, t, per_thread);
        if let (Some(raw), Some((thread, stack))) = (self.raw.as_mut(), self.last) {
            raw.push(RawSample {
                at,
                thread,
                stack,
                holds_gil: t.holds_gil,
                idle,
            });
        }
    }

    /// The (thread, stack) the last sample added went to, if it was counted.
    // (used by the kernel engine, Linux only)
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub fn last_added(&self) -> Option<(u32, u32)> {
        self.last
    }

    /// One more sample of a (thread, stack) seen before ([`Profile::last_added`]), taken `at`
    /// after the start: a sampler that knows two samples are the same stack skips naming
    /// its frames again.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub fn add_again(&mut self, (thread, stack): (u32, u32), at: Duration, idle: bool) {
        self.counts[stack as usize] += 1;
        self.threads[thread as usize].samples.push(stack);
        self.last = Some((thread, stack));
        if let Some(raw) = self.raw.as_mut() {
            raw.push(RawSample {
                at,
                thread,
                stack,
                holds_gil: None,
                idle,
            });
        }
    }

    /// `--format raw`: one JSON object per sample.
    fn write_raw(&self, pid: u32, out: &mut dyn Write) -> io::Result<()> {
        let frames: Vec<serde_json::Value> = self
            .frames
            .iter()
            .map(|f| serde_json::json!({"function": &*f.name, "file": &*f.file, "line": f.line}))
            .collect();
        for s in self.raw.iter().flatten() {
            let th = &self.threads[s.thread as usize];
            let pid = th
                .process
                .as_deref()
                .and_then(|p| p.strip_prefix("process "))
                .and_then(|p| p.split(' ').next())
                .and_then(|p| p.parse::<u32>().ok())
                .unwrap_or(pid);
            let stack: Vec<&serde_json::Value> = self.stacks[s.stack as usize][1..]
                .iter()
                .map(|&f| &frames[f as usize])
                .collect();
            let line = serde_json::json!({
                "time": s.at.as_secs_f64(),
                "pid": pid,
                "os_tid": (th.key <= u64::from(u32::MAX)).then_some(th.key),
                "thread": th.name,
                "holds_gil": s.holds_gil,
                "idle": s.idle,
                "frames": stack,
            });
            serde_json::to_writer(&mut *out, &line)?;
            writeln!(out)?;
        }
        Ok(())
    }

    /// A frame as the folded lines show it (`;` separates frames, a newline ends a line).
    fn folded_frame(f: &FrameKey) -> String {
        let frame = match f.line {
            Some(l) => format!("{} ({}:{l})", f.name, f.file),
            // a frame of pystackd's own (a marked root) has no file
            None if f.file.is_empty() => f.name.to_string(),
            None => format!("{} ({})", f.name, f.file),
        };
        escape_control(&frame).replace(';', ":")
    }

    fn folded_lines(&self) -> Vec<String> {
        let texts: Vec<String> = self.frames.iter().map(Self::folded_frame).collect();
        let mut merged: HashMap<String, u64> = HashMap::new();
        for (stack, &n) in self.stacks.iter().zip(&self.counts) {
            let mut line = String::new();
            let thread = &self.threads[stack[0] as usize];
            if self.per_process {
                let p = thread.process.as_deref().unwrap_or("process ?");
                line.push_str(&escape_control(p).replace(';', ":"));
            }
            if self.per_thread {
                if !line.is_empty() {
                    line.push(';');
                }
                line.push_str(&thread.thread_label.replace(';', ":"));
            }
            for &f in &stack[1..] {
                if !line.is_empty() {
                    line.push(';');
                }
                line.push_str(&texts[f as usize]);
            }
            *merged.entry(line).or_default() += n;
        }
        let mut v: Vec<String> = merged
            .into_iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        v.sort();
        v
    }

    fn pprof(&self) -> crate::pprof::Builder {
        let mut b = crate::pprof::Builder::new(self.period_ns, self.time_nanos);
        let mut frames = Vec::new();
        for (stack, &n) in self.stacks.iter().zip(&self.counts) {
            frames.clear();
            frames.extend(stack[1..].iter().rev().map(|&f| {
                let f = &self.frames[f as usize];
                (&*f.name, &*f.file, f.line)
            }));
            b.add_n(&self.threads[stack[0] as usize].label, &frames, n as i64);
        }
        b
    }

    pub fn write(
        &self,
        format: RecordFormat,
        pid: u32,
        duration: Duration,
        out: &mut dyn Write,
    ) -> io::Result<()> {
        match format {
            RecordFormat::Pprof => self.pprof().write(duration.as_nanos() as i64, out),
            RecordFormat::Raw => self.write_raw(pid, out),
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
                // labels are `function (file:line)`: a narrow box keeps the function name
                // (inferno's default cut kept the end of the path, seen in a screenshot)
                opts.text_truncate_direction = inferno::flamegraph::TextTruncateDirection::Right;
                if lines.is_empty() {
                    // inferno refuses an empty profile: say so in the picture
                    opts.title = format!("pystackd record: process {pid}: no samples");
                    return inferno::flamegraph::from_lines(&mut opts, ["(no samples) 1"], out);
                }
                inferno::flamegraph::from_lines(&mut opts, lines.iter().map(String::as_str), out)
            }
            RecordFormat::Speedscope => {
                // one profile per thread id, in the order first seen (a renamed thread keeps
                // its first label)
                let mut order: Vec<u64> = Vec::new();
                for t in &self.threads {
                    if !order.contains(&t.key) {
                        order.push(t.key);
                    }
                }
                let profiles: Vec<serde_json::Value> = order
                    .iter()
                    .map(|&key| {
                        let entries = self.threads.iter().filter(|t| t.key == key);
                        let name = &self.threads.iter().find(|t| t.key == key).unwrap().label;
                        let samples: Vec<&[u32]> = entries
                            .flat_map(|t| t.samples.iter().map(|&s| &self.stacks[s as usize][1..]))
                            .collect();
                        serde_json::json!({
                            "type": "sampled",
                            "name": name,
                            "unit": "none",
                            "startValue": 0,
                            "endValue": samples.len(),
                            "samples": samples,
                            "weights": vec![1; samples.len()],
                        })
                    })
                    .collect();
                let frames: Vec<SpeedscopeFrame> = self
                    .frames
                    .iter()
                    .map(|f| SpeedscopeFrame {
                        name: &f.name,
                        file: &f.file,
                        line: f.line,
                    })
                    .collect();
                let doc = serde_json::json!({
                    "$schema": "https://www.speedscope.app/file-format-schema.json",
                    "shared": { "frames": frames },
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
