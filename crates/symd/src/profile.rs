//! A profile being recorded: identical stacks counted (folded), every sample kept per
//! thread (speedscope) and the pprof builder; written as a flame graph, speedscope, folded
//! lines or pprof. Shared by `pystackd record` and the daemon's `profile` methods.

use std::collections::HashMap;
use std::io::{self, Write};
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
    /// pprof's gzipped `profile.proto` (`go tool pprof`, continuous-profiling backends),
    /// with a `thread` label per sample.
    Pprof,
}

/// What a recording saw.
pub struct Profile {
    /// Folded stack (outermost first) → samples.
    counts: HashMap<String, u64>,
    /// Per thread: its label and its samples as frame-index paths (speedscope).
    threads: Vec<ThreadSamples>,
    thread_index: HashMap<u64, usize>,
    frames: Vec<SpeedscopeFrame>,
    frame_index: HashMap<(String, String, Option<u32>), usize>,
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

pub fn thread_label(t: &ThreadStack) -> String {
    let tid = t.os_tid.map_or_else(|| "?".to_string(), |t| t.to_string());
    match &t.name {
        Some(n) => format!("thread {} ({tid})", escape_control(n)),
        None => format!("thread {tid}"),
    }
}

impl Profile {
    pub fn new(period_ns: i64) -> Profile {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        Profile {
            counts: HashMap::new(),
            threads: Vec::new(),
            thread_index: HashMap::new(),
            frames: Vec::new(),
            frame_index: HashMap::new(),
            pprof: crate::pprof::Builder::new(period_ns, now),
        }
    }

    pub fn add(&mut self, t: &ThreadStack, per_thread: bool) {
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

    pub fn write(
        &self,
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
