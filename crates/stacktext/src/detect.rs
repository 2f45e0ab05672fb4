//! Which tool printed a frame line: detected per stack from its first frame, or forced.

use crate::lines::indent_len;
use crate::{bpftrace, dtrace, gdb, perf, ParsedFrame};
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Dtrace,
    Bpftrace,
    Perf,
    Gdb,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Dtrace => "dtrace",
            Format::Bpftrace => "bpftrace",
            Format::Perf => "perf",
            Format::Gdb => "gdb",
        }
    }

    /// Parses a line as a frame of this format (no context).
    pub fn parse_frame(self, content: &[u8]) -> Option<ParsedFrame> {
        match self {
            Format::Dtrace => dtrace::parse_frame(content),
            Format::Bpftrace => {
                bpftrace::parse_frame(content).or_else(|| perf::parse_frame(content))
            }
            Format::Perf => perf::parse_frame(content),
            Format::Gdb => gdb::parse_frame(content),
        }
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "dtrace" => Ok(Format::Dtrace),
            "bpftrace" => Ok(Format::Bpftrace),
            "perf" => Ok(Format::Perf),
            "gdb" => Ok(Format::Gdb),
            _ => Err(format!(
                "unknown stack format {s:?} (auto, dtrace, bpftrace, perf, gdb)"
            )),
        }
    }
}

/// Whether a line starts a stack: the format and the parsed frame. `after_blank`: the
/// previous line was blank, where DTrace starts a stack (then a line at DTrace's default
/// indentation is a frame even if it has no module, e.g. a JVM helper string).
pub fn detect_frame(
    content: &[u8],
    forced: Option<Format>,
    after_blank: bool,
) -> Option<(Format, ParsedFrame)> {
    if let Some(f) = forced {
        let p = f.parse_frame(content).or_else(|| {
            if f == Format::Dtrace && after_blank {
                dtrace::opaque_frame(content, dtrace::DEFAULT_INDENT)
            } else {
                None
            }
        })?;
        return Some((f, p));
    }
    let first = *content.first()?;
    if first == b'#' {
        return gdb::parse_frame(content).map(|p| (Format::Gdb, p));
    }
    if first != b' ' && first != b'\t' {
        return None;
    }
    if content.last() == Some(&b')') || first == b'\t' {
        if let Some(p) = perf::parse_frame(content) {
            return Some((Format::Perf, p));
        }
    }
    if let Some(p) = dtrace::parse_frame(content) {
        return Some((Format::Dtrace, p));
    }
    if let Some(p) = bpftrace::parse_frame(content) {
        return Some((Format::Bpftrace, p));
    }
    if after_blank && indent_len(content) == dtrace::DEFAULT_INDENT {
        return dtrace::opaque_frame(content, dtrace::DEFAULT_INDENT).map(|p| (Format::Dtrace, p));
    }
    None
}
