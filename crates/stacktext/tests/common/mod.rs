#![allow(dead_code)]
//! A fake `StackSource` whose Python stacks a test builds to fit its fixture.

use protocol::{Frame, ThreadStack};
use stacktext::{annotate, Moment, Options, SourceError, StackSource, Summary};
use std::collections::{HashMap, VecDeque};

pub fn fixture(name: &str) -> Vec<u8> {
    let p = format!("{}/tests/fixtures/{}", env!("CARGO_MANIFEST_DIR"), name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

pub fn frame(filename: &str, function: &str, line: u32, entry: bool) -> Frame {
    Frame {
        locals: None,
        function: function.into(),
        qualname: None,
        filename: filename.into(),
        line: Some(line),
        first_line: 1,
        entry,
    }
}

pub fn thread(os_tid: Option<u64>, frames: Vec<Frame>) -> ThreadStack {
    ThreadStack {
        interpreter_id: 0,
        thread_id: os_tid.unwrap_or(1),
        os_tid,
        os_tid_unknown: None,
        ns_tid: None,
        name: None,
        os_name: None,
        holds_gil: None,
        state: Default::default(),
        frames,
    }
}

/// Answers per pid; a queue per pid (one answer per stack, the last one repeats).
#[derive(Default)]
pub struct FakeSource {
    pub answers: HashMap<u32, VecDeque<Vec<ThreadStack>>>,
    pub asked: Vec<u32>,
    pub resumed: Vec<u32>,
    pub tids: HashMap<u64, u32>,
    /// Every read is later than the probe (the default fakes a target held at the probe).
    pub later: bool,
    /// What `captured` answers (`None`: it cannot resolve), and the tokens it was given.
    pub capture: Option<ThreadStack>,
    pub tokens: Vec<Vec<String>>,
}

impl FakeSource {
    pub fn with(pid: u32, threads: Vec<ThreadStack>) -> Self {
        let mut s = FakeSource::default();
        s.push(pid, threads);
        s
    }
    pub fn push(&mut self, pid: u32, threads: Vec<ThreadStack>) {
        self.answers.entry(pid).or_default().push_back(threads);
    }
}

impl StackSource for FakeSource {
    fn thread_stacks(&mut self, pid: u32) -> Result<Vec<ThreadStack>, SourceError> {
        self.asked.push(pid);
        let q = self
            .answers
            .get_mut(&pid)
            .ok_or(SourceError::no_such_process(pid))?;
        if q.len() > 1 {
            Ok(q.pop_front().unwrap())
        } else {
            q.front().cloned().ok_or(SourceError::no_such_process(pid))
        }
    }
    fn resume(&mut self, pid: u32) -> Result<(), SourceError> {
        self.resumed.push(pid);
        Ok(())
    }
    fn pid_of_tid(&mut self, tid: u64) -> Option<u32> {
        self.tids.get(&tid).copied()
    }
    fn captured(
        &mut self,
        pid: u32,
        _tid: Option<u64>,
        tokens: &[String],
    ) -> Result<ThreadStack, SourceError> {
        self.tokens.push(tokens.to_vec());
        self.capture
            .clone()
            .ok_or_else(|| SourceError::no_such_process(pid))
    }
    fn moment(&mut self, _pid: u32, _tid: Option<u64>) -> Moment {
        if self.later {
            Moment::Later
        } else {
            Moment::Probe
        }
    }
}

pub fn run(input: &[u8], source: &mut FakeSource, opts: &Options) -> (Vec<u8>, Summary) {
    let mut out = Vec::new();
    let s = annotate(input, &mut out, source, opts).expect("annotate");
    (out, s)
}

pub fn lines(b: &[u8]) -> Vec<&[u8]> {
    b.split_inclusive(|&c| c == b'\n').collect()
}

pub fn is_annotation(l: &[u8]) -> bool {
    let t = String::from_utf8_lossy(l);
    let t = t.trim();
    t.starts_with("[ ") && t.ends_with(" ]")
}

/// `[ file:line (func) ]` → (file, line, func).
pub fn parse_annotation(l: &[u8]) -> (String, u32, String) {
    let t = String::from_utf8_lossy(l).trim().to_string();
    let inner = &t[2..t.len() - 2];
    let (loc, func) = inner.split_once(" (").unwrap();
    let func = func.trim_end_matches(')');
    let (file, line) = loc.rsplit_once(':').unwrap();
    (file.to_string(), line.parse().unwrap(), func.to_string())
}

/// Output lines minus the added annotation lines.
pub fn without_added(out: &[u8], input: &[u8]) -> Vec<u8> {
    let mut r = Vec::new();
    let inl = lines(input);
    let mut i = 0;
    for l in lines(out) {
        if i < inl.len() && inl[i] == l {
            r.extend_from_slice(l);
            i += 1;
        } else {
            assert!(
                is_annotation(l),
                "unexpected output line {:?}",
                String::from_utf8_lossy(l)
            );
        }
    }
    r
}
