//! The streaming state machine: lines in, each stack out as soon as it is complete.

use crate::detect::{detect_frame, Format};
use crate::keys::{int_columns, KeyColumn, KeyColumns};
use crate::lines::{find_pyframes, indent_len, is_blank, parse_count, scan_ids, split_eol, trim};
use crate::matching::{eval_calls, match_thread, Unmatched};
use crate::output::{write_annotations, write_folded, NativeFrameRecord, StackRecord, Status};
use crate::reader::LineReader;
use crate::{
    bpftrace, dtrace, gdb, perf, AnnotateError, Moment, NativeSymbol, ParsedFrame, StackSource,
    Summary,
};
use protocol::ThreadStack;
use std::io::{self, Read, Write};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OutputMode {
    /// The input with `[ file:line (func) ]` lines added.
    #[default]
    Text,
    /// One JSON object per stack and line.
    Json,
    /// `frame;frame;... count` lines.
    Folded,
}

#[derive(Clone, Debug)]
pub struct Options {
    /// The process of every stack (else taken from `pid=`/headers in the text).
    pub pid: Option<u32>,
    /// What the integer key columns printed before a stack hold (a DTrace aggregation
    /// such as `@[pid, tid, ustack()]`); `None`: they are not used.
    pub keys: Option<KeyColumns>,
    /// Force one input format instead of detecting it per stack.
    pub format: Option<Format>,
    pub output: OutputMode,
    /// Use `co_qualname` where known.
    pub qualname: bool,
    /// The tracer stopped the target for each stack: resume it after reading.
    pub stopped: bool,
    /// Caps of a pending stack; beyond them it is printed unannotated.
    pub max_stack_lines: usize,
    pub max_stack_bytes: usize,
    /// Lines longer than this pass through in pieces.
    pub max_line: usize,
    /// Add the source file, line and inlined functions (DWARF) of each native frame that
    /// has an address (`--native-lines`).
    pub native_lines: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            pid: None,
            keys: None,
            format: None,
            output: OutputMode::Text,
            qualname: false,
            stopped: false,
            max_stack_lines: 16 * 1024,
            max_stack_bytes: 8 << 20,
            max_line: 256 * 1024,
            native_lines: false,
        }
    }
}

/// Non-frame lines tolerated inside a stack (the traced program's own output) when frames
/// of the same stack follow them.
const MAX_FOREIGN: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Frame,
    Helper,
    Foreign,
}

#[derive(Clone, Copy, Debug)]
struct Line {
    start: usize,
    content_end: usize,
    end: usize,
    kind: Kind,
    frame: ParsedFrame,
    has_helper: bool,
}

/// Most distinct processes one record may name (each is resumed with `--stopped`).
const MAX_IDS: usize = 8;

/// What the lines of one record say about its process and thread. Several different
/// values are a conflict: the record is refused, never annotated with a guess.
#[derive(Clone, Debug, Default)]
struct Ids {
    /// Distinct pids in order of appearance (at most [`MAX_IDS`]).
    pids: Vec<u32>,
    tid: Option<u64>,
    conflict: Option<Unmatched>,
    /// `pyframes=` tokens (and their `pyframes+=` continuations): frames captured at the
    /// probe.
    captured: Vec<String>,
}

impl Ids {
    fn from_header(pid: Option<u32>, tid: Option<u64>) -> Self {
        let mut i = Ids::default();
        i.add(pid, tid);
        i
    }

    fn pid(&self) -> Option<u32> {
        self.pids.first().copied()
    }

    /// A `pyframes=` token; a second capture (not a `+=` continuation) is a conflict like
    /// a second pid.
    fn add_capture(&mut self, token: &[u8]) {
        let t = String::from_utf8_lossy(token).into_owned();
        if t.starts_with("pyframes=") && !self.captured.is_empty() {
            if self.conflict.is_none() {
                self.conflict = Some(Unmatched::TwoCaptures);
            }
            return;
        }
        // a bound on what one record may hold (a tracer prints a few lines per capture)
        if self.captured.len() < 64 {
            self.captured.push(t);
        }
    }

    /// Every id and capture token a line holds.
    fn add_line(&mut self, content: &[u8]) {
        let (p, t) = scan_ids(content);
        self.add(p, t);
        if let Some(tok) = find_pyframes(content) {
            self.add_capture(tok);
        }
    }

    fn add(&mut self, pid: Option<u32>, tid: Option<u64>) {
        if let Some(p) = pid {
            if !self.pids.contains(&p) {
                if let (Some(&first), None) = (self.pids.first(), &self.conflict) {
                    self.conflict = Some(Unmatched::Interleaved {
                        what: "pid",
                        first: first.into(),
                        second: p.into(),
                    });
                }
                if self.pids.len() < MAX_IDS {
                    self.pids.push(p);
                }
            }
        }
        if let Some(t) = tid {
            match self.tid {
                None => self.tid = Some(t),
                Some(first) if first != t && self.conflict.is_none() => {
                    self.conflict = Some(Unmatched::Interleaved {
                        what: "tid",
                        first,
                        second: t,
                    })
                }
                _ => {}
            }
        }
    }
}

/// After a stack (JSON/folded): waiting for its count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Post {
    None,
    AfterStack,
    Quantize(u64),
}

/// Reads all of `input`, writes to `output`; returns what happened for the caller to report.
pub fn annotate<R: Read, W: Write, S: StackSource + ?Sized>(
    input: R,
    output: W,
    source: &mut S,
    opts: &Options,
) -> Result<Summary, AnnotateError> {
    let mut reader = LineReader::new(input, opts.max_line);
    let mut a = Annotator::new(output, source, opts.clone());
    while let Some((line, complete)) = reader.next_line()? {
        a.push_line(line, complete)?;
    }
    a.finish()
}

pub struct Annotator<'s, W: Write, S: StackSource + ?Sized> {
    opts: Options,
    out: W,
    source: &'s mut S,
    in_stack: bool,
    overflow: bool,
    fmt: Format,
    indent: usize,
    map_open: bool,
    buf: Vec<u8>,
    lines: Vec<Line>,
    foreign: usize,
    /// What the lines before the pending stack said about its process.
    stack_ids: Ids,
    /// The integer key columns right before the pending stack.
    stack_keys: Vec<i64>,
    /// Since the last stack: `pid=`/`tid=` lines and headers.
    ctx: Ids,
    /// Integer key columns read since the last other line.
    ctx_keys: Vec<i64>,
    after_blank: bool,
    long_line: bool,
    post: Post,
    held: Option<StackRecord>,
    summary: Summary,
    calls: Vec<usize>,
    /// Frames of the pending stack the tracer left unnamed and the source named: (line
    /// index, symbol), in line order.
    resolved: Vec<(usize, NativeSymbol)>,
    /// With `native_lines`: the source frames of line i, innermost first.
    sources: Vec<(usize, Vec<protocol::NativeSource>)>,
    scratch: Vec<u8>,
}

impl<'s, W: Write, S: StackSource + ?Sized> Annotator<'s, W, S> {
    pub fn new(out: W, source: &'s mut S, opts: Options) -> Self {
        Annotator {
            opts,
            out,
            source,
            in_stack: false,
            overflow: false,
            fmt: Format::Dtrace,
            indent: 0,
            map_open: false,
            buf: Vec::with_capacity(16 * 1024),
            lines: Vec::with_capacity(256),
            foreign: 0,
            stack_ids: Ids::default(),
            stack_keys: Vec::new(),
            ctx: Ids::default(),
            ctx_keys: Vec::new(),
            after_blank: true,
            long_line: false,
            post: Post::None,
            held: None,
            summary: Summary::default(),
            calls: Vec::new(),
            resolved: Vec::new(),
            sources: Vec::new(),
            scratch: Vec::new(),
        }
    }

    fn text(&self) -> bool {
        self.opts.output == OutputMode::Text
    }

    fn pass(&mut self, raw: &[u8]) -> io::Result<()> {
        if self.text() {
            self.out.write_all(raw)?;
        }
        Ok(())
    }

    /// One line with its terminator; `complete` false for a piece of an overlong line.
    pub fn push_line(&mut self, raw: &[u8], complete: bool) -> Result<(), AnnotateError> {
        if self.long_line || !complete {
            while self.in_stack {
                self.end_stack(None)?;
            }
            self.post_other()?;
            self.pass(raw)?;
            self.long_line = !complete;
            self.after_blank = false;
            return Ok(());
        }
        let (content, _) = split_eol(raw);
        // Ending a stack re-reads its trailing foreign lines, which may start another one.
        while self.in_stack {
            if self.stack_line(raw, content)? {
                return Ok(());
            }
        }
        self.idle_line(raw, content)
    }

    /// Ends the input: prints what is pending; returns the summary.
    pub fn finish(mut self) -> Result<Summary, AnnotateError> {
        while self.in_stack {
            self.end_stack(None)?;
        }
        self.flush_held(None)?;
        self.out.flush()?;
        Ok(self.summary)
    }

    fn continues(&self, content: &[u8]) -> Option<ParsedFrame> {
        match self.fmt {
            Format::Dtrace | Format::Bpftrace => {
                if indent_len(content) != self.indent {
                    return None;
                }
                self.fmt
                    .parse_frame(content)
                    .or_else(|| dtrace::opaque_frame(content, self.indent))
            }
            Format::Perf | Format::Gdb => self.fmt.parse_frame(content),
        }
    }

    fn is_terminator(&self, content: &[u8]) -> bool {
        // with --keys, a line of several integers is the next entry's key, not program output
        if self.opts.keys.is_some() {
            let mut v = Vec::new();
            if int_columns(content, &mut v) && v.len() > 1 {
                return true;
            }
        }
        dtrace::is_probe_heading(content)
            || gdb::parse_thread_header(content).is_some()
            || perf::parse_header(content).is_some()
            || bpftrace::is_map_open(content)
            // A DTrace stack starts after a newline of its own, so DTrace frames right after
            // a `pid=` line continue the stack that line interrupted (another CPU's output):
            // there the line is held like program output and, if frames follow, makes the
            // record name two processes. Elsewhere such a line starts the next record.
            || (self.fmt != Format::Dtrace && scan_ids(content) != (None, None))
    }

    /// A line while a stack is pending; false if it ended the stack without consuming it.
    fn stack_line(&mut self, raw: &[u8], content: &[u8]) -> Result<bool, AnnotateError> {
        if is_blank(content) {
            self.end_stack(None)?;
            return Ok(false);
        }
        if self.foreign > 0
            && (parse_count(content).is_some() || bpftrace::map_close(content).is_some())
        {
            // A count after foreign lines: those end this stack, and may start the one the count
            // belongs to.
            self.end_stack(None)?;
            return Ok(false);
        }
        if self.map_open {
            if let Some(c) = bpftrace::map_close(content) {
                self.map_open = false;
                self.end_stack(Some(c.unwrap_or(1)))?;
                self.pass(raw)?;
                return Ok(true);
            }
        }
        if let Some(c) = parse_count(content) {
            self.end_stack(Some(c))?;
            self.pass(raw)?;
            return Ok(true);
        }
        if let Some(f) = self.continues(content) {
            self.foreign = 0;
            self.push(raw, content.len(), Kind::Frame, f)?;
            return Ok(true);
        }
        let t = trim(content);
        let last_kind = self.lines.last().map(|l| l.kind);
        if self.foreign == 0
            && t.first() == Some(&b'[')
            && t.last() == Some(&b']')
            && indent_len(content) > self.indent
            && (self.overflow || matches!(last_kind, Some(Kind::Frame | Kind::Helper)))
        {
            if let Some(l) = self.lines.iter_mut().rev().find(|l| l.kind == Kind::Frame) {
                l.has_helper = true;
            }
            self.push(raw, content.len(), Kind::Helper, ParsedFrame::default())?;
            return Ok(true);
        }
        if self.foreign < MAX_FOREIGN && !self.overflow && !self.is_terminator(content) {
            self.foreign += 1;
            self.push(raw, content.len(), Kind::Foreign, ParsedFrame::default())?;
            return Ok(true);
        }
        self.end_stack(None)?;
        Ok(false)
    }

    fn push(
        &mut self,
        raw: &[u8],
        content_len: usize,
        kind: Kind,
        frame: ParsedFrame,
    ) -> io::Result<()> {
        if self.overflow {
            return self.pass(raw);
        }
        if self.lines.len() >= self.opts.max_stack_lines
            || self.buf.len() + raw.len() > self.opts.max_stack_bytes
        {
            // Too long to hold: print what we have unannotated and pass the rest through.
            self.summary.stacks += 1;
            self.summary.too_long += 1;
            self.overflow = true;
            if self.text() {
                self.out.write_all(&self.buf)?;
                self.out.write_all(raw)?;
            }
            self.buf.clear();
            self.lines.clear();
            self.foreign = 0;
            return Ok(());
        }
        let start = self.buf.len();
        self.buf.extend_from_slice(raw);
        self.lines.push(Line {
            start,
            content_end: start + content_len,
            end: self.buf.len(),
            kind,
            frame,
            has_helper: false,
        });
        Ok(())
    }

    fn idle_line(&mut self, raw: &[u8], content: &[u8]) -> Result<(), AnnotateError> {
        if is_blank(content) {
            self.after_blank = true;
            self.ctx_keys.clear();
            if let Post::Quantize(sum) = self.post {
                self.flush_held(Some(sum))?;
            }
            return Ok(self.pass(raw)?);
        }
        let after_blank = std::mem::replace(&mut self.after_blank, false);
        // The integer keys of an aggregation entry: one line right before its stack.
        let mut cols = Vec::new();
        if int_columns(content, &mut cols) {
            self.ctx_keys = cols;
            if self.held.is_some() {
                match (self.post, parse_count(content)) {
                    (Post::AfterStack, Some(c)) => {
                        // the count of the stack before, not a key
                        self.ctx_keys.clear();
                        self.flush_held(Some(c))?;
                    }
                    (Post::Quantize(sum), _) => self.flush_held(Some(sum))?,
                    _ => self.flush_held(None)?,
                }
            }
            // the stack follows at once; DTrace's rules for a stack's first line apply
            self.after_blank = true;
            return Ok(self.pass(raw)?);
        }
        if let Some((fmt, f)) = detect_frame(content, self.opts.format, after_blank) {
            if !(fmt == Format::Perf && perf::parse_header(content).is_some()) {
                self.flush_held(None)?;
                self.in_stack = true;
                self.overflow = false;
                self.fmt = fmt;
                self.indent = f.indent;
                self.stack_ids = std::mem::take(&mut self.ctx);
                std::mem::swap(&mut self.stack_keys, &mut self.ctx_keys);
                self.ctx_keys.clear();
                self.push(raw, content.len(), Kind::Frame, f)?;
                return Ok(());
            }
        }
        self.ctx_keys.clear();
        // (a quantize row, `  0 |@@@   3  `, has the shape of a perf header without ':')
        let header = if dtrace::quantize_row_count(content).is_some() {
            None
        } else {
            gdb::parse_thread_header(content).or_else(|| perf::parse_header(content))
        };
        if let Some((p, t)) = header {
            // a tool's sample header names its own stack: what came before is another's
            self.ctx = Ids::from_header(p, t);
        } else {
            if bpftrace::is_map_open(content) {
                self.map_open = true;
            } else if bpftrace::map_close(content).is_some() {
                self.map_open = false;
            }
            // `pid=`/`tid=` lines add up: two different ones before a stack (probes on two
            // CPUs interleaved) leave it without a process
            self.ctx.add_line(content);
        }
        if self.held.is_some() {
            match self.post {
                Post::AfterStack if dtrace::is_quantize_header(content) => {
                    self.post = Post::Quantize(0)
                }
                Post::AfterStack => match parse_count(content) {
                    Some(c) => self.flush_held(Some(c))?,
                    None => self.flush_held(None)?,
                },
                Post::Quantize(sum) => match dtrace::quantize_row_count(content) {
                    Some(c) => self.post = Post::Quantize(sum.saturating_add(c)),
                    None => self.flush_held(Some(sum))?,
                },
                Post::None => {}
            }
        }
        Ok(self.pass(raw)?)
    }

    fn post_other(&mut self) -> Result<(), AnnotateError> {
        if let Post::Quantize(sum) = self.post {
            self.flush_held(Some(sum))
        } else {
            self.flush_held(None)
        }
    }

    fn flush_held(&mut self, count: Option<u64>) -> Result<(), AnnotateError> {
        self.post = Post::None;
        if let Some(mut rec) = self.held.take() {
            rec.count = count.unwrap_or(1);
            self.write_record(&rec)?;
        }
        Ok(())
    }

    fn write_record(&mut self, rec: &StackRecord) -> Result<(), AnnotateError> {
        match self.opts.output {
            OutputMode::Text => {}
            OutputMode::Json => {
                serde_json::to_writer(&mut self.out, rec)?;
                self.out.write_all(b"\n")?;
            }
            OutputMode::Folded => write_folded(&mut self.out, rec, self.opts.qualname)?,
        }
        Ok(())
    }

    /// Ends the pending stack; trailing foreign lines go out after it as ordinary lines.
    fn end_stack(&mut self, count: Option<u64>) -> Result<(), AnnotateError> {
        if !self.in_stack {
            return Ok(());
        }
        self.in_stack = false;
        let keep = self.lines.len() - self.foreign;
        let tail = if self.foreign > 0 {
            self.lines[keep].start
        } else {
            self.buf.len()
        };
        if !self.overflow {
            self.emit_stack(keep, tail, count)?;
        }
        self.overflow = false;
        let mut rest = std::mem::take(&mut self.scratch);
        rest.clear();
        rest.extend_from_slice(&self.buf[tail..]);
        self.buf.clear();
        self.lines.clear();
        self.foreign = 0;
        self.stack_ids = Ids::default();
        self.stack_keys.clear();
        // They may name the next stack's process, or even start it.
        for l in rest.split_inclusive(|&b| b == b'\n') {
            self.push_line(l, true)?;
        }
        self.scratch = rest;
        Ok(())
    }

    /// Adds what the integer key columns before the stack say (as `--keys` names them) to
    /// `ids`; the reason to refuse the stack if they do not fit. Without `--keys`, columns
    /// are only a better reason than "no pid known".
    fn key_columns(&self, ids: &mut Ids) -> Option<Unmatched> {
        if self.stack_keys.is_empty() {
            return None;
        }
        let shown = || {
            let v: Vec<String> = self.stack_keys.iter().map(i64::to_string).collect();
            v.join(" ")
        };
        let Some(KeyColumns(cols)) = &self.opts.keys else {
            return (self.opts.pid.is_none() && ids.pid().is_none() && ids.tid.is_none())
                .then(|| Unmatched::UnnamedKeys(shown()));
        };
        if cols.len() != self.stack_keys.len() {
            return Some(Unmatched::KeyColumns {
                named: cols.len(),
                found: shown(),
            });
        }
        for (c, &v) in cols.iter().zip(&self.stack_keys) {
            match c {
                KeyColumn::Pid => match u32::try_from(v) {
                    Ok(p) if p > 0 => ids.add(Some(p), None),
                    _ => {
                        return Some(Unmatched::KeyValue {
                            what: "pid",
                            value: v,
                        })
                    }
                },
                KeyColumn::Tid => match u64::try_from(v) {
                    Ok(t) if t > 0 => ids.add(None, Some(t)),
                    _ => {
                        return Some(Unmatched::KeyValue {
                            what: "tid",
                            value: v,
                        })
                    }
                },
                KeyColumn::Other => {}
            }
        }
        None
    }

    /// Where the system knows which process a thread is in (Linux), checks that the pid the
    /// keys name is a process and the tid one of its threads: swapped columns (`--keys
    /// pid,tid` for `@[tid, pid, ...]`) would otherwise read a thread as a process.
    fn check_key_owner(source: &mut S, pid: Option<u32>, tid: Option<u64>) -> Option<Unmatched> {
        let p = pid?;
        for id in [Some(u64::from(p)), tid].into_iter().flatten() {
            if let Some(owner) = source.pid_of_tid(id) {
                if owner != p {
                    return Some(Unmatched::KeyOwner { id, owner, pid: p });
                }
            }
        }
        None
    }

    /// One complete stack: find its eval calls, name its process and thread, read and match
    /// the Python stack, print.
    fn emit_stack(
        &mut self,
        keep: usize,
        tail: usize,
        count: Option<u64>,
    ) -> Result<(), AnnotateError> {
        self.summary.stacks += 1;
        let target = self.stack_target(keep);
        self.resolve_unnamed(keep, target.pid);
        self.find_eval_calls(keep);
        let threads = self.read_python(&target);
        if self.opts.stopped {
            self.resume_named(&target);
        }
        let outcome = self.match_python(&target, threads);
        if self.opts.output == OutputMode::Text {
            return Ok(self.write_text(keep, tail, &outcome)?);
        }
        let rec = self.record(keep, &target, count, &outcome);
        if count.is_some() {
            self.write_record(&rec)?;
        } else {
            self.held = Some(rec);
            self.post = Post::AfterStack;
        }
        Ok(())
    }

    /// Names the frames the tracer printed without a symbol but with an address, through
    /// the source (debug info, build-ids), into `self.resolved`. The innermost frame's
    /// address is where the thread was; every other one is a return address, looked up one
    /// byte back so that a call ending its function is not taken for the next function.
    fn resolve_unnamed(&mut self, keep: usize, pid: Option<u32>) {
        /// Lookups per stack at most (a stack of garbage addresses costs no more).
        const MAX_LOOKUPS: usize = 256;
        self.resolved.clear();
        self.sources.clear();
        let Some(pid) = pid else {
            return;
        };
        let mut first = true;
        let mut asked = 0;
        for (i, l) in self.lines[..keep].iter().enumerate() {
            if l.kind != Kind::Frame {
                continue;
            }
            let innermost = std::mem::replace(&mut first, false);
            let Some(addr) = l.frame.address else {
                // `libfoo.so+0x1a2b`: an offset into a shared object, no symbol
                let line = &self.buf[l.start..l.content_end];
                if let Some((module, off)) = module_offset(l.frame.symbol.get(line), l.frame.offset)
                {
                    if asked == MAX_LOOKUPS {
                        break;
                    }
                    asked += 1;
                    let at = if innermost {
                        off
                    } else {
                        off.saturating_sub(1)
                    };
                    if let Some(mut n) = self.source.native_in_module(pid, &module, at) {
                        if !innermost {
                            n.offset += 1;
                        }
                        self.resolved.push((i, n));
                    }
                }
                continue;
            };
            let unnamed = l.frame.symbol.is_empty();
            if !unnamed && !self.opts.native_lines {
                continue;
            }
            if asked == MAX_LOOKUPS {
                break;
            }
            asked += 1;
            let at = if innermost {
                addr
            } else {
                addr.saturating_sub(1)
            };
            if unnamed {
                if let Some(mut n) = self.source.native_symbol(pid, at) {
                    if !innermost {
                        n.offset += 1;
                    }
                    self.resolved.push((i, n));
                }
            }
            if self.opts.native_lines {
                let s = self.source.native_source(pid, at);
                if !s.is_empty() {
                    self.sources.push((i, s));
                }
            }
        }
    }

    /// The symbol of line `i`: the one pystackd found where the tracer printed none (or
    /// only `module+0xoff`), else the tracer's.
    fn symbol_of(&self, i: usize) -> &[u8] {
        if let Some((_, n)) = self.resolved.iter().find(|(j, _)| *j == i) {
            return n.symbol.as_bytes();
        }
        let l = &self.lines[i];
        l.frame.symbol.get(&self.buf[l.start..l.content_end])
    }

    /// The indices of the lines that are eval calls, into `self.calls`.
    fn find_eval_calls(&mut self, keep: usize) {
        let mut calls = std::mem::take(&mut self.calls);
        calls.clear();
        eval_calls(
            self.lines[..keep]
                .iter()
                .enumerate()
                .filter(|(_, l)| l.kind == Kind::Frame)
                .map(|(i, _)| (i, self.symbol_of(i))),
            &mut calls,
        );
        self.calls = calls;
    }

    /// Which process and thread the stack belongs to, from `--pid`, the lines before and in
    /// the record, and the key columns; a reason to refuse it when they disagree.
    fn stack_target(&mut self, keep: usize) -> Target {
        let buf = &self.buf;
        // The record's own lines may name the process (`pid=` printed inside the stack).
        let mut ids = std::mem::take(&mut self.stack_ids);
        for l in self.lines[..keep]
            .iter()
            .filter(|l| l.kind == Kind::Foreign)
        {
            ids.add_line(&buf[l.start..l.content_end]);
        }
        let mut refused = self.key_columns(&mut ids);
        let (mut pid, tid) = (self.opts.pid.or(ids.pid()), ids.tid);
        if refused.is_none() && self.opts.keys.is_some() && !self.stack_keys.is_empty() {
            refused = Self::check_key_owner(self.source, pid, tid);
        }
        if pid.is_none() {
            if let Some(t) = tid {
                pid = self.source.pid_of_tid(t);
            }
        }
        let refused = ids.conflict.take().or(refused);
        Target {
            pid,
            tid,
            named: ids.pids,
            refused,
            captured: ids.captured,
        }
    }

    /// The Python stacks of the target's process, when the stack has eval calls to annotate.
    fn read_python(&mut self, target: &Target) -> PyRead {
        // captured frames are printed even where the native stack shows no eval frame to
        // hang them on (a `ustack` that stops early): after it, marked
        if self.calls.is_empty() && target.captured.is_empty() {
            return PyRead::Skip(Status::NoEvalFrames);
        }
        if !self.calls.is_empty() {
            self.summary.with_eval_frames += 1;
        }
        if !self.calls.is_empty() && self.calls.iter().all(|&i| self.lines[i].has_helper) {
            self.summary.already_annotated += 1;
            return PyRead::Skip(Status::AlreadyAnnotated);
        }
        if let Some(r) = &target.refused {
            return PyRead::Failed(r.clone());
        }
        let Some(p) = target.pid else {
            return PyRead::Failed(Unmatched::NoPid);
        };
        if !target.captured.is_empty() {
            // the frames the probe captured, resolved: no later read of the thread
            return match self.source.captured(p, target.tid, &target.captured) {
                Ok(t) => PyRead::Captured(Box::new(t)),
                Err(e) => PyRead::Failed(Unmatched::Source(e.to_string())),
            };
        }
        match self.source.thread_stacks(p) {
            Ok(t) => PyRead::Threads(t),
            Err(e) => PyRead::Failed(Unmatched::Source(e.to_string())),
        }
    }

    /// With `--stopped`: every process the record names was stopped by its probe.
    fn resume_named(&mut self, target: &Target) {
        let named = if self.opts.pid.is_some() {
            &[][..]
        } else {
            &target.named[..]
        };
        for p in target
            .pid
            .iter()
            .chain(named.iter().filter(|&&p| Some(p) != target.pid))
        {
            if self.source.resume(*p).is_err() {
                self.summary.resume_errors += 1;
            }
        }
    }

    /// Matches the thread's eval groups to the stack's eval calls, and asks whether the read
    /// shows the probe's moment.
    fn match_python(&mut self, target: &Target, read: PyRead) -> Outcome {
        let (mut threads, captured) = match read {
            PyRead::Skip(status) => return Outcome::bare(status),
            PyRead::Threads(t) => (t, false),
            PyRead::Captured(t) => (vec![*t], true),
            PyRead::Failed(e) => return self.unannotated(e),
        };
        // a capture is the firing thread's own: nothing to pick
        let tid = if captured { None } else { target.tid };
        if captured && match_thread(&threads, tid, self.calls.len()).is_err() {
            // the native stack cannot take the groups (too few eval frames): the frames
            // are still what the probe saw, printed after the native stack
            self.summary.annotated += 1;
            if self.calls.is_empty() {
                self.summary.captured_unplaced += 1;
            }
            return Outcome {
                status: Status::Annotated,
                thread: None,
                unplaced: threads.pop(),
                reason: None,
            };
        }
        let (idx, race, os_tid) = match match_thread(&threads, tid, self.calls.len()) {
            Ok(m) => (
                threads
                    .iter()
                    .position(|t| std::ptr::eq(t, m.thread))
                    .expect("the matched thread is one of them"),
                m.race,
                m.thread.os_tid,
            ),
            Err(e) => return self.unannotated(e),
        };
        self.summary.annotated += 1;
        if race {
            self.summary.race_outermost_bare += 1;
        }
        let pid = target.pid.expect("a stack is read only with a pid");
        let status = if captured {
            // read in probe context: the probe's moment by construction
            Status::Annotated
        } else if self.source.moment(pid, os_tid.or(target.tid)) == Moment::Later {
            // never a plain line for what may have moved since the probe
            self.summary.read_later += 1;
            Status::ReadLater
        } else {
            Status::Annotated
        };
        Outcome {
            status,
            thread: Some(threads.swap_remove(idx)),
            unplaced: None,
            reason: None,
        }
    }

    fn unannotated(&mut self, e: Unmatched) -> Outcome {
        self.summary.record_unannotated(e.kind(), || e.to_string());
        Outcome {
            status: Status::Unannotated,
            thread: None,
            unplaced: None,
            reason: Some(e.to_string()),
        }
    }

    /// The stack's lines with the annotation lines under its eval frames.
    fn write_text(&mut self, keep: usize, tail: usize, outcome: &Outcome) -> io::Result<()> {
        let buf = &self.buf;
        let later = outcome.status == Status::ReadLater;
        let groups = outcome.groups();
        let mut next_call = 0;
        let mut next_named = 0;
        let mut next_source = 0;
        let mut from = 0;
        for (i, l) in self.lines[..keep].iter().enumerate() {
            let named = self.resolved.get(next_named).filter(|(j, _)| *j == i);
            let source = self.sources.get(next_source).filter(|(j, _)| *j == i);
            if let Some((_, n)) = named {
                next_named += 1;
                self.out.write_all(&buf[from..l.end])?;
                from = l.end;
                let line = &buf[l.start..l.end];
                let eol = &line[l.content_end - l.start..];
                self.out.write_all(&line[..l.frame.indent])?;
                write!(
                    self.out,
                    "  [= {}`{}+{:#x} (named by pystackd{}) ]",
                    n.module,
                    n.symbol,
                    n.offset,
                    if n.posthumous {
                        ", posthumously: the process had exited"
                    } else {
                        ""
                    }
                )?;
                self.out
                    .write_all(if eol.is_empty() { b"\n" } else { eol })?;
            }
            if let Some((_, frames)) = source {
                next_source += 1;
                if from < l.end {
                    self.out.write_all(&buf[from..l.end])?;
                    from = l.end;
                }
                let line = &buf[l.start..l.end];
                let eol = &line[l.content_end - l.start..];
                for f in frames {
                    self.out.write_all(&line[..l.frame.indent])?;
                    write!(self.out, "  {}", f.text())?;
                    self.out
                        .write_all(if eol.is_empty() { b"\n" } else { eol })?;
                }
            }
            if next_call < groups.len() && self.calls[next_call] == i {
                let group = groups[next_call];
                next_call += 1;
                if l.has_helper {
                    continue;
                }
                self.out.write_all(&buf[from..l.end])?;
                from = l.end;
                let line = &buf[l.start..l.end];
                let eol = &line[l.content_end - l.start..];
                let indent = &line[..l.frame.indent];
                write_annotations(
                    &mut self.out,
                    &mut self.scratch,
                    indent,
                    eol,
                    group,
                    self.opts.qualname,
                    later,
                )?;
            }
        }
        if let Some(t) = &outcome.unplaced {
            let last = &self.lines[..keep]
                .iter()
                .rev()
                .find(|l| l.kind == Kind::Frame)
                .copied();
            if let Some(l) = last {
                let line = &buf[l.start..l.end];
                let eol = &line[l.content_end - l.start..];
                let eol = if eol.is_empty() { &b"\n"[..] } else { eol };
                let indent = &line[..l.frame.indent];
                let end = l.end;
                self.out.write_all(&buf[from..end])?;
                from = end;
                self.out.write_all(indent)?;
                self.out
                    .write_all(b"(python frames at probe time, not placed in the native stack)")?;
                self.out.write_all(eol)?;
                write_annotations(
                    &mut self.out,
                    &mut self.scratch,
                    indent,
                    eol,
                    &t.frames,
                    self.opts.qualname,
                    false,
                )?;
            }
        }
        self.out.write_all(&buf[from..tail])
    }

    /// The stack as one JSON/folded record.
    fn record(
        &self,
        keep: usize,
        target: &Target,
        count: Option<u64>,
        outcome: &Outcome,
    ) -> StackRecord {
        let buf = &self.buf;
        let groups = outcome.groups();
        let mut native = Vec::with_capacity(keep);
        let mut next_call = 0;
        for (i, l) in self.lines[..keep].iter().enumerate() {
            if l.kind != Kind::Frame {
                continue;
            }
            let line = &buf[l.start..l.content_end];
            let s = |sp: crate::Span| {
                (!sp.is_empty()).then(|| String::from_utf8_lossy(sp.get(line)).into_owned())
            };
            let mut python = Vec::new();
            if next_call < self.calls.len() && self.calls[next_call] == i {
                if let Some(g) = groups.get(next_call) {
                    python = g.to_vec();
                }
                next_call += 1;
            }
            let named = self.resolved.iter().find(|(j, _)| *j == i).map(|(_, n)| n);
            native.push(NativeFrameRecord {
                text: String::from_utf8_lossy(&line[l.frame.indent..]).into_owned(),
                module: named
                    .map(|n| n.module.clone())
                    .or_else(|| s(l.frame.module)),
                symbol: named
                    .map(|n| n.symbol.clone())
                    .or_else(|| s(l.frame.symbol)),
                offset: named.map(|n| n.offset).or(l.frame.offset),
                address: l.frame.address,
                named_by_pystackd: named.is_some(),
                named_posthumously: named.is_some_and(|n| n.posthumous),
                source: self
                    .sources
                    .iter()
                    .find(|(j, _)| *j == i)
                    .map(|(_, s)| s.clone())
                    .unwrap_or_default(),
                python,
            });
        }
        StackRecord {
            format: self.fmt,
            pid: target.pid,
            tid: target.tid,
            count: count.unwrap_or(1),
            status: outcome.status,
            reason: outcome.reason.clone(),
            native,
            python_unplaced: outcome
                .unplaced
                .as_ref()
                .map(|t| t.frames.clone())
                .unwrap_or_default(),
        }
    }
}

/// The process and thread a stack is from, as its text names them.
struct Target {
    pid: Option<u32>,
    tid: Option<u64>,
    /// Every process the record names (each resumed with `--stopped`).
    named: Vec<u32>,
    /// Why the stack must not be matched to any process (conflicting names, bad keys).
    refused: Option<Unmatched>,
    /// `pyframes=` tokens: Python frames captured at the probe.
    captured: Vec<String>,
}

/// What reading the target's Python stacks gave.
enum PyRead {
    /// Nothing to read for this stack.
    Skip(Status),
    Threads(Vec<ThreadStack>),
    /// The firing thread's frames as the probe captured them, resolved.
    Captured(Box<ThreadStack>),
    Failed(Unmatched),
}

/// What one stack comes out as: its status, the matched thread (its eval groups go under
/// the eval calls, innermost first), and why it stayed unannotated.
struct Outcome {
    status: Status,
    thread: Option<ThreadStack>,
    /// Captured frames the native stack has no eval frames for: printed after it.
    unplaced: Option<ThreadStack>,
    reason: Option<String>,
}

impl Outcome {
    fn bare(status: Status) -> Self {
        Outcome {
            status,
            thread: None,
            unplaced: None,
            reason: None,
        }
    }

    fn groups(&self) -> Vec<&[protocol::Frame]> {
        self.thread
            .as_ref()
            .map(ThreadStack::eval_groups)
            .unwrap_or_default()
    }
}

/// A frame that names only an offset into a shared object: `libfoo.so.1+0x1a2b` (as one
/// opaque token, DTrace's layout) or the symbol `libfoo.so.1` with an offset (bpftrace's).
/// Only `.so` names: anything else may be a real symbol with an offset.
fn module_offset(symbol: &[u8], offset: Option<u64>) -> Option<(String, u64)> {
    let s = std::str::from_utf8(symbol).ok()?;
    let (name, off) = match s.rsplit_once("+0x") {
        Some((n, h)) => (n, u64::from_str_radix(h, 16).ok()?),
        None => (s, offset?),
    };
    let is_so = name.ends_with(".so") || name.contains(".so.");
    (is_so && !name.is_empty() && !name.contains(|c: char| c.is_whitespace() || c == '`'))
        .then(|| (name.to_string(), off))
}

#[cfg(test)]
mod module_offset_tests {
    use super::module_offset;

    #[test]
    fn shared_object_offsets_only() {
        let m = |s: &str, o| module_offset(s.as_bytes(), o);
        assert_eq!(
            m("libc.so.6+0x2a3b4", None),
            Some(("libc.so.6".into(), 0x2a3b4))
        );
        assert_eq!(m("libfoo.so", Some(16)), Some(("libfoo.so".into(), 16)));
        // symbols with offsets, garbage
        assert_eq!(m("_PyEval_EvalFrameDefault", Some(16)), None);
        assert_eq!(m("main+0x10", None), None);
        assert_eq!(m("libc.so.6+0xzz", None), None);
        assert_eq!(m("libc.so.6", None), None);
        assert_eq!(m("+0x10", None), None);
        assert_eq!(m("a b.so+0x1", None), None);
    }
}
