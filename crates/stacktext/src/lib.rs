//! Streaming parser and annotator of native stack text (DTrace `ustack()`/`jstack()`,
//! bpftrace `ustack`, `perf script` callchains, gdb `bt`): the engine of `pystackd annotate`.
//!
//! Native stacks are read line by line from any `Read`; every stack that contains frames of
//! CPython's eval loop is matched against the Python stacks a [`StackSource`] reports for the
//! process, and `[ file:line (function) ]` lines are added under the eval frames. Everything
//! else passes through byte for byte.

mod annotate;
pub mod bpftrace;
pub mod detect;
pub mod dtrace;
pub mod gdb;
pub mod keys;
mod lines;
pub mod matching;
pub mod output;
pub mod perf;
mod reader;
mod source;
mod summary;

pub use annotate::{annotate, Annotator, Options, OutputMode};
pub use detect::Format;
pub use keys::{KeyColumn, KeyColumns};
pub use output::{NativeFrameRecord, StackRecord, Status};
pub use source::{Moment, NativeSymbol, SourceError, StackSource};
pub use summary::Summary;

/// Byte range inside one line (start inclusive, end exclusive); empty when absent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Self {
        Span { start, end }
    }
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }
    pub fn get<'a>(&self, line: &'a [u8]) -> &'a [u8] {
        line.get(self.start..self.end).unwrap_or(&[])
    }
}

/// The parts of one native frame line, as spans of that line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParsedFrame {
    /// Where the frame's text starts (after the indentation).
    pub indent: usize,
    pub module: Span,
    /// Function name, empty for unresolved frames. For lines a format does not know
    /// (e.g. JVM helper strings in a `jstack()`), the whole text.
    pub symbol: Span,
    pub offset: Option<u64>,
    pub address: Option<u64>,
}

/// Errors of [`annotate`]: only I/O on the input or output; bad input never fails.
#[derive(Debug, thiserror::Error)]
pub enum AnnotateError {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("JSON output error: {0}")]
    Json(#[from] serde_json::Error),
}
