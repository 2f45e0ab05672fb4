//! `perf script` callchains (`comm pid/tid time: event:` header, `\t<hex> symbol+0xoff (dso)`
//! frames, blank line between samples); bpftrace `ustack(perf)` frames have the same shape
//! with decimal offsets.

use crate::lines::{indent_len, parse_0x, parse_dec, parse_hex, tokens, trim_end};
use crate::{ParsedFrame, Span};

pub fn parse_frame(content: &[u8]) -> Option<ParsedFrame> {
    let ind = indent_len(content);
    if ind == 0 {
        return None;
    }
    let end = trim_end(content).len();
    let body = &content[ind..end];
    let sp = memchr::memchr(b' ', body)?;
    let address = parse_hex(&body[..sp])?;
    if body.last() != Some(&b')') {
        return None;
    }
    let paren = memchr::memmem::rfind(body, b" (")?;
    if paren < sp {
        return None;
    }
    let sym_start = ind + sp + 1;
    let sym = &body[sp + 1..paren];
    let mut f = ParsedFrame {
        indent: ind,
        module: Span::new(ind + paren + 2, end - 1),
        address: Some(address),
        ..Default::default()
    };
    if sym == b"[unknown]" || parse_0x(sym).is_some() {
        return Some(f);
    }
    let (n, off) = crate::lines::split_offset(sym, true);
    f.symbol = Span::new(sym_start, sym_start + n);
    f.offset = off;
    Some(f)
}

/// A sample header: `comm [pid/]tid [cpu] time: period event:`; gives (pid, tid).
pub fn parse_header(content: &[u8]) -> Option<(Option<u32>, Option<u64>)> {
    if content.is_empty() || indent_len(content) != 0 || memchr::memchr(b':', content).is_none() {
        return None;
    }
    let mut ids = None;
    for (i, t) in tokens(content).enumerate() {
        if ids.is_none() {
            if i == 0 {
                continue;
            }
            if let Some(s) = memchr::memchr(b'/', t) {
                if let (Some(p), Some(tid)) = (parse_dec(&t[..s]), parse_dec(&t[s + 1..])) {
                    ids = Some((u32::try_from(p).ok(), Some(tid)));
                }
            } else if let Some(tid) = parse_dec(t) {
                ids = Some((None, Some(tid)));
            }
        } else if t.last() == Some(&b':') {
            return ids;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames() {
        let l = b"\t7fdc070fd39e _PyEval_EvalFrameDefault+10286 (/opt/lib/libpython3.11.so.1.0)";
        let f = parse_frame(l).unwrap();
        assert_eq!(f.symbol.get(l), b"_PyEval_EvalFrameDefault");
        assert_eq!(f.offset, Some(10286));
        assert_eq!(f.module.get(l), b"/opt/lib/libpython3.11.so.1.0");
        let l = b"\t    55d0c0ffee11 foo(int, char)+0x1c (/usr/bin/x)";
        let f = parse_frame(l).unwrap();
        assert_eq!(f.symbol.get(l), b"foo(int, char)");
        assert_eq!(f.offset, Some(0x1c));
        let l = b"\t7fdc06e129c0 0x7fdc06e129c0 ([unknown])";
        assert!(parse_frame(l).unwrap().symbol.is_empty());
    }

    #[test]
    fn headers() {
        assert_eq!(
            parse_header(b"python3.11 7548/7555 [001] 12345.678901:     250000 cpu-clock:pppH: "),
            Some((Some(7548), Some(7555)))
        );
        assert_eq!(
            parse_header(b"python3  4321 [001] 1234.56:  1 cycles:"),
            Some((None, Some(4321)))
        );
        assert_eq!(parse_header(b"PID:     2877"), None);
    }
}
