//! `pystackd top`: a live view of where a running Python process spends its time, by
//! function, like `py-spy top`. Sampling is `crate::sample`'s (the same as `pystackd record`:
//! torn unpaused reads dropped and counted, idle threads left out unless `--idle`).
//!
//! On a terminal it is a full-screen view (ratatui over crossterm), redrawn every
//! `--interval`; otherwise it prints a plain table every `--interval` to stdout and a last one
//! for the whole run when it ends.

use std::collections::{HashMap, HashSet};
use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use protocol::{escape_control, ThreadStack};
use ratatui::crossterm::event::{self, Event as TermEvent, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Cell, Paragraph, Row, Table};

use crate::exit;
use crate::sample::{self, End, Event, Sampler};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortBy {
    /// Own %: time spent in the function's own code.
    Own,
    /// Total %: time spent in the function or anything it called.
    Total,
}

#[derive(clap::Args, Debug)]
pub struct TopArgs {
    /// The CPython process to watch.
    #[arg(long, value_name = "PID")]
    pub pid: u32,
    /// Samples per second.
    #[arg(long, value_name = "HZ", default_value_t = 100)]
    pub rate: u32,
    /// Stop after this many seconds [default: until q/Ctrl-C or the process exits].
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,
    /// Seconds between refreshes of the view (plain output: between tables); the
    /// percentages are over this window.
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0)]
    pub interval: f64,
    /// Stop every thread for each sample (exact, slower for the target; needs ptrace rights).
    #[arg(long)]
    pub pause: bool,
    /// Count idle threads too (blocked in the kernel: sleeping, waiting for I/O or a lock);
    /// by default only threads running or runnable are counted.
    #[arg(long)]
    pub idle: bool,
    /// The column to sort by (on the terminal: the o and t keys).
    #[arg(long, value_enum, default_value_t = SortBy::Own)]
    pub sort: SortBy,
    /// Count only the thread holding the GIL at each sample (refused for free-threaded
    /// builds, which have no GIL).
    #[arg(long)]
    pub gil: bool,
    /// Native (C) functions too, with the Python frames in place of the eval-loop frames
    /// that run them, as `record --native`: each sample stops the process (as --pause) and
    /// unwinds every thread; a C function's row is `name (module)`.
    #[arg(long)]
    pub native: bool,
}

pub const TOP_HELP: &str = "\
Columns, per Python function (its name, and file:line of its `def`):
  OWN %    share of the samples in which the function itself was running: the innermost
           frame of a thread. Own percentages add up to 100 over the counted threads.
  TOTAL %  share of the samples in which the function was anywhere on a thread's stack:
           itself or anything it called (a recursive function counts once per sample).
  OWN, TOTAL   the same as sample counts since the start.
Percentages are over the last --interval (what the program does now; the plain output's
last table is over the whole run); the counts are over the whole run. Each thread's stack in
a sample counts once; idle threads (blocked in the kernel: sleep, I/O, locks, waiting for
the GIL) are left out unless --idle.

Each sample is one read of the process's memory while it runs, as in pystackd record: a read
the target moved under is retried and, if it never holds still, dropped and counted in the
header (\"torn reads dropped\"), never shown wrong (docs/consistency.md). --pause stops every
thread for each read instead: exact, and slower for the target.
--native stops the process for every sample as --pause does, unwinds each thread's native
stack and shows C functions as `name (module)`, with the Python frames in place of the
eval-loop frames that run them (about a millisecond of the target's time per sample).

On a terminal: a full-screen view refreshed every --interval. Keys: o sort by own %, t sort
by total %, q, Esc or Ctrl-C quit (the terminal is restored, also on errors). When stdout is
not a terminal: a plain table every --interval, each after a header line with the time (UTC),
and one for the whole run at the end.

Examples:
  pystackd top --pid 4242
  pystackd top --pid 4242 --rate 1000 --sort total
  pystackd top --pid 4242 --duration 10 --interval 2 > top.txt

The run ends with q/Ctrl-C, after --duration, or when the process exits (said on stderr,
with the samples taken, the rate achieved and the torn reads dropped).
Exit status: 0 ok (also when the process exits after the first sample), 3 no such process,
4 not a CPython process, 5 permission denied, 6 unsupported version, 7 the process exited
before the first sample, 1 the terminal failed.";

/// A Python function: name (qualified on 3.11+), file, first line.
#[derive(Clone, PartialEq, Eq, Hash)]
struct FnKey {
    name: Arc<str>,
    file: Arc<str>,
    first_line: u32,
}

impl FnKey {
    fn of(f: &protocol::Frame) -> FnKey {
        FnKey {
            name: f.qualname.clone().unwrap_or_else(|| f.function.clone()),
            file: f.filename.clone(),
            first_line: f.first_line,
        }
    }

    fn label(&self) -> String {
        // a native frame (--native) has a module, no first line
        let text = if self.first_line == 0 {
            format!("{} ({})", self.name, self.file)
        } else {
            format!("{} ({}:{})", self.name, self.file, self.first_line)
        };
        escape_control(&text).into_owned()
    }
}

#[derive(Default, Clone, Copy)]
struct Counts {
    own: u64,
    total: u64,
}

/// Function counts over some thread samples.
#[derive(Default)]
struct Tally {
    by_fn: HashMap<FnKey, Counts>,
    /// Thread stacks counted (non-empty, not idle unless --idle).
    stacks: u64,
}

impl Tally {
    fn add(&mut self, t: &ThreadStack, seen: &mut HashSet<FnKey>) {
        let Some(inner) = t.frames.first() else {
            return;
        };
        self.stacks += 1;
        self.by_fn.entry(FnKey::of(inner)).or_default().own += 1;
        seen.clear();
        for f in &t.frames {
            let k = FnKey::of(f);
            if !seen.contains(&k) {
                self.by_fn.entry(k.clone()).or_default().total += 1;
                seen.insert(k);
            }
        }
    }
}

/// One line of the view.
struct TopRow {
    label: String,
    own_pct: f64,
    total_pct: f64,
    own: u64,
    total: u64,
}

/// Everything the view shows.
struct Stats {
    run: Tally,
    window: Tally,
    window_started: Instant,
    /// The last finished window, as shown.
    shown: Vec<TopRow>,
    shown_secs: f64,
    /// Reads per second over the last finished window.
    rate_shown: Option<f64>,
    reads_at_roll: u64,
    threads: usize,
    idle_threads: usize,
    seen: HashSet<FnKey>,
}

impl Stats {
    fn new() -> Stats {
        Stats {
            run: Tally::default(),
            window: Tally::default(),
            window_started: Instant::now(),
            shown: Vec::new(),
            shown_secs: 0.0,
            rate_shown: None,
            reads_at_roll: 0,
            threads: 0,
            idle_threads: 0,
            seen: HashSet::new(),
        }
    }

    fn add(&mut self, s: &sample::Sample) {
        self.threads = s.threads();
        self.idle_threads = s.idle_threads();
        for t in s.counted() {
            self.run.add(t, &mut self.seen);
            self.window.add(t, &mut self.seen);
        }
    }

    /// Rows of `pct` (percentages) with counts since the start, sorted.
    fn rows(&self, pct: &Tally, sort: SortBy) -> Vec<TopRow> {
        let n = pct.stacks.max(1) as f64;
        let mut rows: Vec<(TopRow, &FnKey)> = pct
            .by_fn
            .iter()
            .map(|(k, c)| {
                let all = self.run.by_fn.get(k).copied().unwrap_or(*c);
                (
                    TopRow {
                        label: k.label(),
                        own_pct: 100.0 * c.own as f64 / n,
                        total_pct: 100.0 * c.total as f64 / n,
                        own: all.own,
                        total: all.total,
                    },
                    k,
                )
            })
            .collect();
        let key = |r: &TopRow| match sort {
            SortBy::Own => (r.own_pct, r.total_pct),
            SortBy::Total => (r.total_pct, r.own_pct),
        };
        rows.sort_by(|(a, ka), (b, kb)| {
            key(b)
                .partial_cmp(&key(a))
                .unwrap_or(std::cmp::Ordering::Equal)
                .then_with(|| ka.name.cmp(&kb.name))
                .then_with(|| ka.file.cmp(&kb.file))
                .then_with(|| ka.first_line.cmp(&kb.first_line))
        });
        rows.into_iter().map(|(r, _)| r).collect()
    }

    /// Ends the current window: its rows become the shown ones.
    fn roll(&mut self, sort: SortBy, reads: u64) {
        self.shown = self.rows(&self.window, sort);
        self.shown_secs = self.window_started.elapsed().as_secs_f64();
        self.rate_shown = Some((reads - self.reads_at_roll) as f64 / self.shown_secs.max(1e-9));
        self.reads_at_roll = reads;
        self.window = Tally::default();
        self.window_started = Instant::now();
    }
}

/// The header's facts: the reads (rate over the last window, or over `whole` seconds),
/// then the threads.
fn header(pid: u32, sampler: &Sampler, rate: u32, stats: &Stats, whole: bool) -> (String, String) {
    let achieved = if whole {
        Some(sampler.rate_achieved())
    } else {
        stats.rate_shown
    };
    let achieved = achieved.map_or_else(|| "-".to_string(), |r| format!("{r:.0}"));
    (
        format!(
            "process {pid} (Python {}): {achieved} samples/s of {rate} requested, {} samples, \
             {} torn reads dropped ({} read again after a torn first walk)",
            sampler.version(),
            sampler.samples,
            sampler.dropped,
            sampler.retried,
        ),
        format!(
            "{} threads ({} idle, {})",
            stats.threads,
            stats.idle_threads,
            if sampler.counts_idle() {
                "counted: --idle"
            } else {
                "left out"
            },
        ),
    )
}

/// `2026-12-05 12:34:56 UTC`.
fn utc_now() -> String {
    utc(SystemTime::now())
}

/// A time as `YYYY-MM-DD HH:MM:SS UTC` (humantime's RFC 3339, spelled for people).
fn utc(t: SystemTime) -> String {
    let rfc = humantime::format_rfc3339_seconds(t).to_string();
    format!("{} UTC", rfc.trim_end_matches('Z').replacen('T', " ", 1))
}

fn print_table(out: &mut dyn Write, title: &str, rows: &[TopRow]) -> io::Result<()> {
    writeln!(out, "{title}")?;
    writeln!(
        out,
        "  OWN %  TOTAL %       OWN     TOTAL  FUNCTION (FILE:LINE)"
    )?;
    if rows.is_empty() {
        writeln!(out, "  (no samples of running threads)")?;
    }
    for r in rows {
        writeln!(
            out,
            "{:>7.1}  {:>7.1}  {:>8}  {:>8}  {}",
            r.own_pct, r.total_pct, r.own, r.total, r.label
        )?;
    }
    writeln!(out)?;
    out.flush()
}

pub fn run(args: &TopArgs) -> ExitCode {
    if let Err(msg) = sample::check_settings("top", args.rate, args.duration) {
        eprintln!("{msg}");
        return ExitCode::from(exit::USAGE);
    }
    if !(args.interval > 0.0 && args.interval.is_finite()) {
        eprintln!("pystackd top: --interval must be a positive number of seconds");
        return ExitCode::from(exit::USAGE);
    }
    let mut sampler = match Sampler::attach(sample::Settings {
        pid: args.pid,
        rate: args.rate,
        duration: args.duration.map(Duration::from_secs_f64),
        pause: args.pause,
        idle: args.idle,
        classify_idle: true,
        gil: args.gil,
        native: args.native,
    }) {
        Ok(s) => s,
        Err(e) => return ExitCode::from(sample::report_attach_error("top", &e)),
    };
    let sigint = sample::catch_sigint();
    let interval = Duration::from_secs_f64(args.interval);
    let result = if io::stdout().is_terminal() {
        run_tui(args, &mut sampler, interval)
    } else {
        run_plain(args, &mut sampler, interval)
    };
    drop(sigint);
    let end = match result {
        Ok(end) => end,
        Err(e) => {
            eprintln!("pystackd top: terminal: {e}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    let secs = sampler.started().elapsed().as_secs_f64().max(1e-9);
    let end = match end {
        Ended::Quit => {
            eprintln!(
                "pystackd top: {} samples in {secs:.1} s ({:.0}/s of {} requested), {} dropped \
                 as torn reads; quit",
                sampler.samples,
                sampler.samples as f64 / secs,
                args.rate,
                sampler.dropped,
            );
            return ExitCode::from(exit::OK);
        }
        Ended::Sampler(end) => end,
    };
    if let End::Error(e) = &end {
        eprintln!("pystackd top: {e}");
    }
    eprintln!(
        "pystackd top: {} samples in {secs:.1} s ({:.0}/s of {} requested), {} dropped as torn \
         reads, {} idle thread samples left out{}; {}",
        sampler.samples,
        sampler.samples as f64 / secs,
        args.rate,
        sampler.dropped,
        sampler.idle_skipped,
        if args.idle { " (none: --idle)" } else { "" },
        end.describe(),
    );
    match end {
        End::Exited if sampler.samples == 0 => ExitCode::from(exit::PROCESS_EXITED),
        End::Error(e) => ExitCode::from(exit::for_reader_error(&e)),
        _ => ExitCode::from(exit::OK),
    }
}

/// How the view ended.
enum Ended {
    /// q, Esc or Ctrl-C on the terminal, or stdout closed.
    Quit,
    Sampler(End),
}

/// Plain tables on stdout, one per interval and one for the whole run.
fn run_plain(args: &TopArgs, sampler: &mut Sampler, interval: Duration) -> io::Result<Ended> {
    let mut stats = Stats::new();
    let mut next_table = Instant::now() + interval;
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let end = loop {
        match sampler.next_event() {
            Event::Wait(d) => {
                std::thread::sleep(d.min(next_table.saturating_duration_since(Instant::now())))
            }
            Event::Sample(s) => stats.add(&s),
            Event::End(end) => break end,
        }
        if Instant::now() >= next_table {
            next_table += interval;
            stats.roll(args.sort, sampler.samples);
            let (reads, threads) = header(args.pid, sampler, args.rate, &stats, false);
            let title = format!(
                "== {}: {reads}, {threads}; last {:.1} s",
                utc_now(),
                stats.shown_secs
            );
            if let Err(e) = print_table(&mut out, &title, &stats.shown) {
                // a closed pipe (| head): stop quietly
                if e.kind() == io::ErrorKind::BrokenPipe {
                    return Ok(Ended::Quit);
                }
                return Err(e);
            }
        }
    };
    let rows = stats.rows(&stats.run, args.sort);
    let (reads, threads) = header(args.pid, sampler, args.rate, &stats, true);
    let title = format!(
        "== {}: {reads}, {threads}; whole run, {:.1} s ({})",
        utc_now(),
        sampler.started().elapsed().as_secs_f64(),
        end.describe()
    );
    match print_table(&mut out, &title, &rows) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e),
        _ => Ok(Ended::Sampler(end)),
    }
}

/// Leaves raw mode and the alternate screen and shows the cursor when dropped: on every way
/// out of the view (ratatui's panic hook does the same on a panic).
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
        let _ = ratatui::crossterm::execute!(io::stdout(), ratatui::crossterm::cursor::Show);
    }
}

/// The full-screen view.
fn run_tui(args: &TopArgs, sampler: &mut Sampler, interval: Duration) -> io::Result<Ended> {
    let _restore = Restore;
    let mut terminal = ratatui::try_init()?;
    let mut stats = Stats::new();
    let mut sort = args.sort;
    let mut next_redraw = Instant::now() + interval;
    let mut last_poll = Instant::now();
    let mut dirty = true;
    let mut quit = false;
    let poll_every = Duration::from_millis(30);
    let end = loop {
        let wait = match sampler.next_event() {
            Event::Wait(d) => Some(d),
            Event::Sample(s) => {
                stats.add(&s);
                None
            }
            Event::End(End::Interrupted) if quit => break Ended::Quit,
            Event::End(end) => break Ended::Sampler(end),
        };
        let now = Instant::now();
        let timeout = match wait {
            Some(d) => Some(
                d.min(next_redraw.saturating_duration_since(now))
                    .min(poll_every),
            ),
            // reading as fast as it can: still look at the keyboard now and then
            None if now.duration_since(last_poll) >= poll_every => Some(Duration::ZERO),
            None => None,
        };
        if let Some(timeout) = timeout {
            last_poll = now;
            if event::poll(timeout)? {
                match event::read()? {
                    TermEvent::Key(k) if k.kind == KeyEventKind::Press => match k.code {
                        KeyCode::Char('q') | KeyCode::Esc => {
                            quit = true;
                            sampler.stop()
                        }
                        KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => {
                            quit = true;
                            sampler.stop()
                        }
                        KeyCode::Char('o') => {
                            sort = SortBy::Own;
                            stats.shown = stats.rows_of_shown(sort);
                            dirty = true;
                        }
                        KeyCode::Char('t') => {
                            sort = SortBy::Total;
                            stats.shown = stats.rows_of_shown(sort);
                            dirty = true;
                        }
                        _ => {}
                    },
                    TermEvent::Resize(..) => dirty = true,
                    _ => {}
                }
            }
        }
        if Instant::now() >= next_redraw {
            next_redraw += interval;
            stats.roll(sort, sampler.samples);
            dirty = true;
        }
        if dirty {
            dirty = false;
            let head = header(args.pid, sampler, args.rate, &stats, false);
            terminal.draw(|f| draw(f, &head, &stats, sort, interval))?;
        }
    };
    Ok(end)
}

impl Stats {
    /// The shown rows sorted again (a key press between refreshes).
    fn rows_of_shown(&mut self, sort: SortBy) -> Vec<TopRow> {
        let mut rows = std::mem::take(&mut self.shown);
        let key = |r: &TopRow| match sort {
            SortBy::Own => (r.own_pct, r.total_pct),
            SortBy::Total => (r.total_pct, r.own_pct),
        };
        rows.sort_by(|a, b| {
            key(b)
                .partial_cmp(&key(a))
                .unwrap_or(std::cmp::Ordering::Equal)
                .then_with(|| a.label.cmp(&b.label))
        });
        rows
    }
}

fn draw(
    f: &mut ratatui::Frame,
    (reads, threads): &(String, String),
    stats: &Stats,
    sort: SortBy,
    interval: Duration,
) {
    let [top, body, foot] = Layout::vertical([
        Constraint::Length(3),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(f.area());
    let bold = Style::default().add_modifier(Modifier::BOLD);
    f.render_widget(
        Paragraph::new(vec![
            Line::styled(format!("pystackd top: {reads}"), bold),
            Line::raw(threads.clone()),
            Line::raw(format!(
                "percentages over the last {:.1} s, sorted by {}; counts since the start",
                if stats.shown_secs > 0.0 {
                    stats.shown_secs
                } else {
                    interval.as_secs_f64()
                },
                match sort {
                    SortBy::Own => "own %",
                    SortBy::Total => "total %",
                }
            )),
        ]),
        top,
    );
    let marked = |s: &'static str, on: bool| {
        if on {
            Cell::from(format!("{s}*")).style(bold)
        } else {
            Cell::from(s)
        }
    };
    let head_row = Row::new(vec![
        marked("OWN %", sort == SortBy::Own),
        marked("TOTAL %", sort == SortBy::Total),
        Cell::from("OWN"),
        Cell::from("TOTAL"),
        Cell::from("FUNCTION (FILE:LINE)"),
    ])
    .style(Style::default().add_modifier(Modifier::REVERSED));
    let rows: Vec<Row> = if stats.shown.is_empty() {
        vec![Row::new(vec![
            Cell::from(""),
            Cell::from(""),
            Cell::from(""),
            Cell::from(""),
            Cell::from(if stats.shown_secs > 0.0 {
                "(no samples of running threads)"
            } else {
                "(sampling...)"
            }),
        ])]
    } else {
        stats
            .shown
            .iter()
            .map(|r| {
                Row::new(vec![
                    Cell::from(format!("{:>6.1}", r.own_pct)),
                    Cell::from(format!("{:>7.1}", r.total_pct)),
                    Cell::from(format!("{:>8}", r.own)),
                    Cell::from(format!("{:>8}", r.total)),
                    Cell::from(r.label.clone()),
                ])
            })
            .collect()
    };
    let table = Table::new(
        rows,
        [
            Constraint::Length(7),
            Constraint::Length(8),
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Min(10),
        ],
    )
    .header(head_row);
    f.render_widget(table, body);
    f.render_widget(
        Paragraph::new("o: sort by own %   t: sort by total %   q: quit"),
        foot,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread(innermost_first: &[&str]) -> ThreadStack {
        ThreadStack {
            interpreter_id: 0,
            thread_id: 1,
            os_tid: Some(1),
            os_tid_unknown: None,
            ns_tid: None,
            name: None,
            os_name: None,
            holds_gil: None,
            state: Default::default(),
            frames: innermost_first
                .iter()
                .map(|n| protocol::Frame {
                    locals: None,
                    function: Arc::from(*n),
                    qualname: None,
                    filename: Arc::from("/p.py"),
                    line: Some(7),
                    first_line: n.len() as u32,
                    entry: true,
                })
                .collect(),
        }
    }

    #[test]
    fn own_is_the_innermost_frame_and_total_counts_a_function_once_per_stack() {
        let mut stats = Stats::new();
        let mut seen = HashSet::new();
        for t in [
            thread(&["leaf", "rec", "rec", "rec", "main"]),
            thread(&["rec", "rec", "main"]),
            thread(&["leaf", "main"]),
            thread(&[]),
        ] {
            stats.run.add(&t, &mut seen);
        }
        assert_eq!(stats.run.stacks, 3, "an empty stack is not a sample");
        let rows = stats.rows(&stats.run, SortBy::Own);
        let got: Vec<(&str, f64, f64, u64, u64)> = rows
            .iter()
            .map(|r| {
                (
                    r.label.split(' ').next().unwrap(),
                    (r.own_pct * 10.0).round() / 10.0,
                    (r.total_pct * 10.0).round() / 10.0,
                    r.own,
                    r.total,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("leaf", 66.7, 66.7, 2, 2),
                ("rec", 33.3, 66.7, 1, 2),
                ("main", 0.0, 100.0, 0, 3),
            ]
        );
        let by_total = stats.rows(&stats.run, SortBy::Total);
        assert!(by_total[0].label.starts_with("main ("));
        assert_eq!(rows[0].label, "leaf (/p.py:4)");
    }

    #[test]
    fn utc_dates() {
        let at = |secs| std::time::UNIX_EPOCH + Duration::from_secs(secs);
        assert_eq!(utc(at(0)), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(at(951_825_600)), "2000-02-29 12:00:00 UTC");
        assert_eq!(utc(at(1_796_386_330)), "2026-12-04 12:12:10 UTC");
    }
}
