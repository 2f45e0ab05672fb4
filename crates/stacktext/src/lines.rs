//! Small byte-level helpers shared by the format parsers.

/// Splits a raw line into its content and its terminator (`\n`, `\r\n` or nothing).
pub(crate) fn split_eol(raw: &[u8]) -> (&[u8], &[u8]) {
    let n = raw.len();
    if n >= 2 && raw[n - 2] == b'\r' && raw[n - 1] == b'\n' {
        (&raw[..n - 2], &raw[n - 2..])
    } else if n >= 1 && raw[n - 1] == b'\n' {
        (&raw[..n - 1], &raw[n - 1..])
    } else {
        (raw, &[])
    }
}

pub(crate) fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Length of the leading spaces and tabs.
pub(crate) fn indent_len(s: &[u8]) -> usize {
    s.iter().take_while(|&&b| is_ws(b)).count()
}

pub(crate) fn trim_end(s: &[u8]) -> &[u8] {
    let mut n = s.len();
    while n > 0 && (is_ws(s[n - 1]) || s[n - 1] == b'\r') {
        n -= 1;
    }
    &s[..n]
}

pub(crate) fn trim(s: &[u8]) -> &[u8] {
    trim_end(&s[indent_len(s)..])
}

pub(crate) fn is_blank(s: &[u8]) -> bool {
    s.iter().all(|&b| is_ws(b) || b == b'\r')
}

pub(crate) fn parse_dec(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u64::from(b - b'0');
    }
    Some(v)
}

pub(crate) fn parse_hex(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return None,
        };
        v = (v << 4) | u64::from(d);
    }
    Some(v)
}

/// `0x` followed by hex digits.
pub(crate) fn parse_0x(s: &[u8]) -> Option<u64> {
    if s.len() > 2 && s[0] == b'0' && (s[1] == b'x' || s[1] == b'X') {
        parse_hex(&s[2..])
    } else {
        None
    }
}

/// A line holding only an integer (an aggregation's value, or an integer key).
pub(crate) fn parse_count(s: &[u8]) -> Option<u64> {
    parse_dec(trim(s))
}

/// `pid=N` and `tid=N` tokens anywhere in a line (the `printf("pid=%d tid=%d\n")` convention).
pub(crate) fn scan_ids(s: &[u8]) -> (Option<u32>, Option<u64>) {
    let (mut pid, mut tid) = (None, None);
    for i in memchr::memmem::find_iter(s, b"id=") {
        if i == 0 {
            continue;
        }
        let which = s[i - 1];
        if which != b'p' && which != b't' {
            continue;
        }
        if i >= 2 && s[i - 2].is_ascii_alphanumeric() {
            continue;
        }
        let digits = &s[i + 3..];
        let n = digits.iter().take_while(|b| b.is_ascii_digit()).count();
        let Some(v) = parse_dec(&digits[..n]) else {
            continue;
        };
        if which == b'p' {
            pid = pid.or(u32::try_from(v).ok());
        } else {
            tid = tid.or(Some(v));
        }
    }
    (pid, tid)
}

/// A `pyframes=...` or `pyframes+=...` token (Python frames captured at the probe, see
/// `pystackd probe`), up to the next whitespace.
pub(crate) fn find_pyframes(s: &[u8]) -> Option<&[u8]> {
    for i in memchr::memmem::find_iter(s, b"pyframes") {
        if i > 0 && (s[i - 1].is_ascii_alphanumeric() || s[i - 1] == b'_') {
            continue;
        }
        let rest = &s[i + 8..];
        if rest.starts_with(b"=") || rest.starts_with(b"+=") {
            let n = s[i..].iter().take_while(|&&b| !is_ws(b)).count();
            return Some(&s[i..i + n]);
        }
    }
    None
}

/// The whitespace-separated tokens of a line.
pub(crate) fn tokens(s: &[u8]) -> impl Iterator<Item = &[u8]> {
    s.split(|&b| is_ws(b)).filter(|t| !t.is_empty())
}

/// Splits `symbol+off` at the last `+` when what follows is an offset (hex with `0x`, or
/// decimal when `decimal`); returns the symbol's length and the offset.
pub(crate) fn split_offset(s: &[u8], decimal: bool) -> (usize, Option<u64>) {
    if let Some(p) = memchr::memrchr(b'+', s) {
        let off = &s[p + 1..];
        let v = parse_0x(off).or_else(|| if decimal { parse_dec(off) } else { None });
        if v.is_some() && p > 0 {
            return (p, v);
        }
    }
    (s.len(), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert_eq!(scan_ids(b"pid=12 tid=13"), (Some(12), Some(13)));
        assert_eq!(scan_ids(b"ppid=12 xtid=4"), (None, None));
        assert_eq!(scan_ids(b"  1  246  rmdir:entry pid=7"), (Some(7), None));
    }

    #[test]
    fn eol() {
        assert_eq!(split_eol(b"ab\r\n"), (&b"ab"[..], &b"\r\n"[..]));
        assert_eq!(split_eol(b"ab\n"), (&b"ab"[..], &b"\n"[..]));
        assert_eq!(split_eol(b"ab"), (&b"ab"[..], &b""[..]));
    }
}
