//! illumos/Solaris DTrace `ustack()` / `jstack()` text: frames indented (14 spaces by
//! default), `module`symbol+0xoff`, `module`symbol`, `module`0xaddr`, bare `0xaddr`.

use crate::lines::{
    indent_len, is_ws, parse_0x, parse_count, parse_hex, split_offset, tokens, trim_end,
};
use crate::{ParsedFrame, Span};

/// DTrace's default `ustack()` indentation.
pub const DEFAULT_INDENT: usize = 14;

/// Parses a frame line; `None` if the line is not one.
pub fn parse_frame(content: &[u8]) -> Option<ParsedFrame> {
    let ind = indent_len(content);
    if ind == 0 {
        return None;
    }
    let body_end = trim_end(content).len();
    if body_end <= ind {
        return None;
    }
    let body = &content[ind..body_end];
    if let Some(bt) = memchr::memchr(b'`', body) {
        let module = &body[..bt];
        if module.is_empty() || module.iter().any(|&b| is_ws(b)) {
            return None;
        }
        let rest = &body[bt + 1..];
        let rs = ind + bt + 1;
        let mut f = ParsedFrame {
            indent: ind,
            module: Span::new(ind, ind + bt),
            ..Default::default()
        };
        if let Some(a) = parse_0x(rest) {
            f.address = Some(a);
        } else {
            let (n, off) = split_offset(rest, false);
            f.symbol = Span::new(rs, rs + n);
            f.offset = off;
        }
        return Some(f);
    }
    // Unresolved frames: `0xaddr`, or old-style bare hex without the prefix.
    let addr = parse_0x(body).or_else(|| {
        if body.len() >= 8 && body.iter().any(|b| b.is_ascii_alphabetic()) {
            parse_hex(body)
        } else {
            None
        }
    })?;
    Some(ParsedFrame {
        indent: ind,
        address: Some(addr),
        ..Default::default()
    })
}

/// A line DTrace prints for frames it knows no symbol syntax for (JVM/helper strings):
/// accepted only inside a stack, at the stack's indentation.
pub fn opaque_frame(content: &[u8], indent: usize) -> Option<ParsedFrame> {
    if indent_len(content) != indent || parse_count(content).is_some() {
        return None;
    }
    let end = trim_end(content).len();
    if end <= indent || content[indent] == b'[' {
        return None;
    }
    Some(ParsedFrame {
        indent,
        symbol: Span::new(indent, end),
        ..Default::default()
    })
}

/// The probe heading of a non-quiet record (`%3d %6d %32s `: CPU, probe id,
/// FUNCTION:NAME, possibly followed by trace()/printf() output), or the column header.
pub fn is_probe_heading(content: &[u8]) -> bool {
    let mut t = tokens(content);
    let (Some(a), Some(b), Some(c)) = (t.next(), t.next(), t.next()) else {
        return false;
    };
    if a == b"CPU" && b == b"ID" {
        return true;
    }
    a.iter().all(u8::is_ascii_digit)
        && b.iter().all(u8::is_ascii_digit)
        && memchr::memchr(b':', c).is_some()
}

/// The header of a `quantize()`/`lquantize()` table.
pub fn is_quantize_header(content: &[u8]) -> bool {
    memchr::memmem::find(content, b"Distribution").is_some()
        && memchr::memmem::find(content, b"value").is_some()
        && memchr::memmem::find(content, b"count").is_some()
}

/// The count of one row of a quantize table (`value |@@@@ count`).
pub fn quantize_row_count(content: &[u8]) -> Option<u64> {
    memchr::memchr(b'|', content)?;
    tokens(content).last().and_then(crate::lines::parse_dec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(l: &[u8]) -> (&[u8], &[u8], Option<u64>, Option<u64>) {
        let f = parse_frame(l).unwrap();
        (f.module.get(l), f.symbol.get(l), f.offset, f.address)
    }

    #[test]
    fn frames() {
        assert_eq!(
            sym(b"              libc.so.1`malloc+0x1f"),
            (&b"libc.so.1"[..], &b"malloc"[..], Some(0x1f), None)
        );
        assert_eq!(
            sym(b"   python3.10`_start"),
            (&b"python3.10"[..], &b"_start"[..], None, None)
        );
        assert_eq!(
            sym(b"  procmail`0x805a2b0"),
            (&b"procmail"[..], &b""[..], None, Some(0x805a2b0))
        );
        assert_eq!(
            sym(b"              0xffffffff"),
            (&b""[..], &b""[..], None, Some(0xffffffff))
        );
        assert_eq!(
            sym(b"\tfeedface01"),
            (&b""[..], &b""[..], None, Some(0xfeedface01))
        );
        assert!(parse_frame(b"libc.so.1`malloc").is_none());
        assert!(parse_frame(b"               30").is_none());
        assert!(parse_frame(b"  some `quoted` text").is_none());
    }

    #[test]
    fn headings() {
        assert!(is_probe_heading(b"  1  246  rmdir:entry   /tmp/x"));
        assert!(is_probe_heading(
            b"CPU     ID                    FUNCTION:NAME"
        ));
        assert!(!is_probe_heading(b"               30"));
        assert_eq!(
            quantize_row_count(b"               1 |@@@@@@@@@@@@@@ 1        "),
            Some(1)
        );
    }
}
