//! The three outputs: annotated text (the input plus `[ ... ]` lines), JSON (one object per
//! stack) and folded (`frame;frame;... count`, outermost first).

use crate::detect::Format;
use protocol::{escape_control, Frame};
use serde::Serialize;
use std::io::{self, Write};

/// One native frame of a stack, with the Python frames of its eval call (innermost first).
#[derive(Debug, Clone, Serialize)]
pub struct NativeFrameRecord {
    /// The line as printed, without indentation.
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symbol: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<u64>,
    /// The tracer printed no symbol here; `module`/`symbol`/`offset` are pystackd's, from
    /// the process's mappings and debug info.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub named_by_pystackd: bool,
    /// With `named_by_pystackd`: named from the daemon's record of the mappings of the
    /// process, which had exited (posthumous symbolization).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub named_posthumously: bool,
    /// With `--native-lines`: the frame's source locations from DWARF, the functions
    /// inlined at its address first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub source: Vec<protocol::NativeSource>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub python: Vec<Frame>,
}

/// What became of one stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The Python frames at the probe's moment.
    Annotated,
    /// Read when the text arrived; the thread may have run since the probe.
    ReadLater,
    NoEvalFrames,
    AlreadyAnnotated,
    Unannotated,
}

/// One stack of the JSON output.
#[derive(Debug, Clone, Serialize)]
pub struct StackRecord {
    pub format: Format,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tid: Option<u64>,
    /// Aggregation count (1 for a plain stack).
    pub count: u64,
    /// `annotated` (the Python frames at the probe's moment), `read_later` (read when the
    /// text arrived; the thread may have run since the probe), `no_eval_frames`,
    /// `already_annotated` or `unannotated`.
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Innermost first.
    pub native: Vec<NativeFrameRecord>,
    /// Python frames captured at the probe that the native stack has no eval frames for
    /// (a `ustack` that stops early), innermost first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub python_unplaced: Vec<Frame>,
}

/// Writes one `[ file:line (func) ]` line for each frame of a group, innermost first,
/// indented two columns deeper than the frame line (`indent` is its leading whitespace);
/// `[~ file:line (func) ]` when the frames were read later than the probe fired.
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_annotations<W: Write>(
    out: &mut W,
    scratch: &mut Vec<u8>,
    indent: &[u8],
    eol: &[u8],
    group: &[Frame],
    qualname: bool,
    later: bool,
) -> io::Result<()> {
    scratch.clear();
    for f in group {
        scratch.extend_from_slice(indent);
        scratch.extend_from_slice(if later { b"  [~ " } else { b"  [ " });
        scratch.extend_from_slice(escape_control(&f.filename).as_bytes());
        scratch.push(b':');
        match f.line {
            Some(l) => {
                let _ = write!(scratch, "{l}");
            }
            None => scratch.push(b'?'),
        }
        scratch.extend_from_slice(b" (");
        let name = if qualname {
            f.qualname.as_deref().unwrap_or(&f.function)
        } else {
            &f.function
        };
        scratch.extend_from_slice(escape_control(name).as_bytes());
        scratch.extend_from_slice(b") ]");
        scratch.extend_from_slice(if eol.is_empty() { b"\n" } else { eol });
    }
    out.write_all(scratch)
}

/// A folded frame: `;` separates frames and a newline ends the line, so neither may stay.
fn clean(s: &str) -> String {
    escape_control(s).replace(';', ":")
}

/// One folded line: frames outermost first, Python frames (as `file:func:line`) right inside
/// the eval frame that runs them; `~file:func:line` when they were read later than the probe.
pub fn write_folded<W: Write>(out: &mut W, rec: &StackRecord, qualname: bool) -> io::Result<()> {
    let mark = if rec.status == Status::ReadLater {
        "~"
    } else {
        ""
    };
    let mut line = String::new();
    // unplaced Python frames at the root side, outermost first
    for f in rec.python_unplaced.iter().rev() {
        let func = if qualname {
            f.qualname.as_deref().unwrap_or(&f.function)
        } else {
            &f.function
        };
        let l = f.line.map_or_else(|| "?".to_string(), |l| l.to_string());
        if !line.is_empty() {
            line.push(';');
        }
        line.push_str(&clean(&format!("{}:{}:{}", f.filename, func, l)));
    }
    for nf in rec.native.iter().rev() {
        let name = match (&nf.module, &nf.symbol, nf.address) {
            (Some(m), Some(s), _) if rec.format == Format::Dtrace => format!("{m}`{s}"),
            (_, Some(s), _) => s.clone(),
            (_, None, Some(a)) => format!("{a:#x}"),
            _ => nf.text.clone(),
        };
        if !line.is_empty() {
            line.push(';');
        }
        line.push_str(&clean(&name));
        for f in nf.python.iter().rev() {
            let func = if qualname {
                f.qualname.as_deref().unwrap_or(&f.function)
            } else {
                &f.function
            };
            let l = f.line.map_or_else(|| "?".to_string(), |l| l.to_string());
            line.push(';');
            line.push_str(mark);
            line.push_str(&clean(&format!("{}:{}:{}", f.filename, func, l)));
        }
    }
    if line.is_empty() {
        return Ok(());
    }
    writeln!(out, "{} {}", line, rec.count)
}
