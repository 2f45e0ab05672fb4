//! Captured frames and their one-line text form, the contract between a tracer's output
//! and the resolver.
//!
//! A capture prints, for one probe firing, a line holding the token
//!
//! ```text
//! pyframes=<code>:<offset>:<ident>,<code>:<offset>:<ident>,...
//! ```
//!
//! innermost frame first: `<code>` is the code object's address (hex, `0x` optional),
//! `<offset>` the instruction's byte offset into its bytecode (signed decimal: a frame that
//! has not started yet has a negative one) and `<ident>` the code object's identity read in
//! the same probe (hex, see [`ident_of`]). Rules a parser follows (and a hand-written script
//! may rely on):
//! - an entry with code `0` is an empty slot (a frame the capture skipped, or a step past the
//!   end of the chain) and is dropped: tracers print fixed-width groups; except `0:1:0`, an
//!   eval-call boundary (3.12+: the C-stack shim frame a C call of the eval loop starts
//!   with): the frame before it was the first its eval call ran ([`CapturedFrame::entry`]);
//! - a line holding `pyframes+=...` continues the frames of the `pyframes=` line before it
//!   (tracers limit the arguments of one `printf`);
//! - an odd offset marks a frame that is the first its eval call ran (3.11 captures, whose
//!   `is_entry` flag tracers add to the offset: real offsets are even); the offset is the
//!   even number below it;
//! - an element `...` means the chain went on past the capture's depth;
//! - `pyframes=!nothread` means the firing thread has no Python thread state (a thread the
//!   interpreter does not know, or one not found within the plan's thread limit).

use std::fmt::Write as _;

/// One frame as captured in probe context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CapturedFrame {
    /// Address of the code object.
    pub code: u64,
    /// Byte offset of the current instruction in the code's bytecode (as the walker
    /// computes it: `f_lasti` × its unit before 3.11, the instruction pointer's distance
    /// from the first code unit after).
    pub offset: i64,
    /// [`ident_of`] the code object, read in the same probe.
    pub ident: u64,
    /// The outermost frame of its eval call (a `0:1:0` boundary followed it). Only 3.12+
    /// captures carry boundaries; the resolver knows every frame is one before 3.11.
    pub entry: bool,
}

/// The identity of a code object: its `co_name` pointer with `co_firstlineno` in the top 16
/// bits. User-space pointers fit in 47 bits, so the two never overlap; a code object freed
/// and its address reused by another function almost surely differs in one of them (two
/// functions of one name start on different lines).
pub fn ident_of(name_ptr: u64, firstlineno: i32) -> u64 {
    name_ptr ^ ((firstlineno as u32 as u64) << 48)
}

/// What one probe firing captured.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Capture {
    /// Innermost first.
    pub frames: Vec<CapturedFrame>,
    /// The chain went on past the capture's depth.
    pub truncated: bool,
    /// The firing thread has no Python thread state (`frames` is then empty).
    pub no_thread: bool,
    /// Parsing only: a boundary came before any frame of this token (it marks the last
    /// frame of the line it continues).
    pub leading_boundary: bool,
}

/// A `pyframes=` token that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad pyframes token element {element:?}: {reason}")]
pub struct ParseError {
    pub element: String,
    pub reason: &'static str,
}

/// A token found in a line: a new capture, or more frames of the previous one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    Start(Capture),
    More(Capture),
}

impl Capture {
    /// Append the frames of a `pyframes+=` continuation.
    pub fn extend(&mut self, more: Capture) {
        // a boundary at the very start of a continuation belongs to the frame before it
        if more.leading_boundary {
            if let Some(last) = self.frames.last_mut() {
                last.entry = true;
            }
        }
        self.frames.extend(more.frames);
        self.truncated |= more.truncated;
        self.no_thread |= more.no_thread;
    }
}

/// The `pyframes=` token of a capture (one line, no newline).
pub fn format(c: &Capture) -> String {
    let mut s = String::from("pyframes=");
    if c.no_thread {
        s.push_str("!nothread");
        return s;
    }
    for (i, f) in c.frames.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{:x}:{}:{:x}", f.code, f.offset, f.ident);
        if f.entry && i + 1 < c.frames.len() {
            s.push_str(",0:1:0");
        }
    }
    if c.truncated {
        if !c.frames.is_empty() {
            s.push(',');
        }
        s.push_str("...");
    }
    s
}

fn hex(s: &str, element: &str) -> Result<u64, ParseError> {
    let digits = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    u64::from_str_radix(digits, 16).map_err(|_| ParseError {
        element: element.to_string(),
        reason: "not a hexadecimal number",
    })
}

/// Parse the value of a `pyframes=` / `pyframes+=` token (the part after `=`).
pub fn parse_value(value: &str) -> Result<Capture, ParseError> {
    let mut c = Capture::default();
    let value = value.trim();
    if value == "!nothread" {
        c.no_thread = true;
        return Ok(c);
    }
    for el in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        if el == "..." {
            c.truncated = true;
            continue;
        }
        let mut parts = el.split(':');
        let (Some(code), Some(off), Some(ident), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(ParseError {
                element: el.to_string(),
                reason: "expected code:offset:ident",
            });
        };
        let code = hex(code, el)?;
        let offset: i64 = off.parse().map_err(|_| ParseError {
            element: el.to_string(),
            reason: "offset is not a signed decimal number",
        })?;
        let ident = hex(ident, el)?;
        if code != 0 {
            c.frames.push(CapturedFrame {
                code,
                offset: offset & !1,
                ident,
                entry: offset & 1 != 0,
            });
        } else if offset == 1 && ident == 0 {
            match c.frames.last_mut() {
                Some(last) => last.entry = true,
                None => c.leading_boundary = true,
            }
        }
    }
    Ok(c)
}

/// The `pyframes=` or `pyframes+=` token of a line, if it has one (whitespace-separated,
/// anywhere in the line: DTrace and bpftrace indent or prefix their output).
pub fn find_token(line: &str) -> Option<Result<Token, ParseError>> {
    for word in line.split_whitespace() {
        if let Some(v) = word.strip_prefix("pyframes+=") {
            return Some(parse_value(v).map(Token::More));
        }
        if let Some(v) = word.strip_prefix("pyframes=") {
            return Some(parse_value(v).map(Token::Start));
        }
    }
    None
}

/// Every capture in a text, continuation lines merged into the capture before them. Lines
/// without a token are ignored; a continuation with no capture before it is an error.
pub fn parse_all(text: &str) -> Result<Vec<Capture>, ParseError> {
    let mut out: Vec<Capture> = Vec::new();
    for line in text.lines() {
        match find_token(line) {
            None => {}
            Some(Err(e)) => return Err(e),
            Some(Ok(Token::Start(c))) => out.push(c),
            Some(Ok(Token::More(c))) => match out.last_mut() {
                Some(last) => last.extend(c),
                None => {
                    return Err(ParseError {
                        element: line.trim().to_string(),
                        reason: "pyframes+= without a pyframes= line before it",
                    })
                }
            },
        }
    }
    Ok(out)
}

/// A capture from the integer key columns of a DTrace aggregation keyed by the capture's
/// slots, `@[jstack(), this->py_c0, this->py_o0, this->py_i0, this->py_c1, ...]`: DTrace
/// prints them in decimal (addresses and identities as signed 64-bit values) before the
/// stack. `columns` are those triples in order; the same slot rules as the text form apply
/// (code 0: empty slot; code 0 with offset 1: an eval-call boundary). `None` when the count
/// is not a multiple of 3.
pub fn from_columns(columns: &[i64]) -> Option<Capture> {
    let triples = columns.chunks_exact(3);
    if !triples.remainder().is_empty() {
        return None;
    }
    let mut c = Capture::default();
    for t in triples {
        let (code, offset, ident) = (t[0] as u64, t[1], t[2] as u64);
        if code != 0 {
            c.frames.push(CapturedFrame {
                code,
                offset: offset & !1,
                ident,
                entry: offset & 1 != 0,
            });
        } else if offset == 1 && ident == 0 {
            if let Some(last) = c.frames.last_mut() {
                last.entry = true;
            }
        }
    }
    Some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rules() {
        let c = Capture {
            frames: vec![
                CapturedFrame {
                    code: 0x7f00_1234,
                    offset: 34,
                    ident: ident_of(0x7f00_5678, 12),
                    entry: true,
                },
                CapturedFrame {
                    code: 0x7f00_2000,
                    offset: -2,
                    ident: 1,
                    entry: false,
                },
            ],
            truncated: true,
            no_thread: false,
            leading_boundary: false,
        };
        let s = format(&c);
        assert_eq!(
            parse_value(s.strip_prefix("pyframes=").unwrap()).unwrap(),
            c
        );
        let text = "x\n  pyframes=7f001234:34:c00007f005678,0:0:0\n\
                    pyframes+=0:1:0,0x7f002000:-2:1 tid=3\npyframes+=0:0:0,...\n";
        let all = parse_all(text).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0], c);
        assert!(parse_all("pyframes+=1:2:3").is_err());
        assert!(parse_all("pyframes=zz:1:2").is_err());
        assert!(parse_all("pyframes=1:1").is_err());
        assert!(parse_all("pyframes=!nothread").unwrap()[0].no_thread);
        // 3.11 entry frames: odd offsets (and a -1 of a 3.9 frame not started is -2)
        let c = &parse_all("pyframes=10:35:1,20:-1:2").unwrap()[0];
        assert_eq!((c.frames[0].offset, c.frames[0].entry), (34, true));
        assert_eq!((c.frames[1].offset, c.frames[1].entry), (-2, true));
        assert_eq!(format(&parse_all("pyframes=").unwrap()[0]), "pyframes=");
    }

    #[test]
    fn aggregation_columns() {
        let c =
            from_columns(&[0x7f00_1234, 34, 77, 0, 1, 0, 0x7f00_2000, -2, -5, 0, 0, 0]).unwrap();
        assert_eq!(c.frames.len(), 2);
        assert!(c.frames[0].entry);
        assert_eq!(c.frames[1].ident, (-5i64) as u64);
        assert!(from_columns(&[1, 2]).is_none());
    }
}
