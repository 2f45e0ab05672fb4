//! gdb `bt` / `thread apply all bt`: `#N  0x... in func (args) at file:line`, inlined frames
//! without an address, `from /lib/...`; `Thread N (Thread 0x.. (LWP tid) "name"):` headers.

use crate::lines::{parse_0x, parse_dec, trim_end};
use crate::{ParsedFrame, Span};

pub fn parse_frame(content: &[u8]) -> Option<ParsedFrame> {
    if content.first() != Some(&b'#') {
        return None;
    }
    let nd = content[1..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    if nd == 0 {
        return None;
    }
    let mut i = 1 + nd;
    let sp = content[i..].iter().take_while(|&&b| b == b' ').count();
    if sp == 0 {
        return None;
    }
    i += sp;
    let mut f = ParsedFrame::default();
    if content[i..].starts_with(b"0x") {
        let e = memchr::memchr(b' ', &content[i..]).map_or(content.len(), |p| i + p);
        f.address = parse_0x(&content[i..e]);
        if !content[e..].starts_with(b" in ") {
            return Some(f);
        }
        i = e + 4;
    }
    let end = trim_end(content).len();
    if i >= end {
        // `#0 ` or `#1  0x.. in ` with nothing after: a frame without a name
        return Some(f);
    }
    let name_end = memchr::memmem::find(&content[i..end], b" (").map_or(end, |p| i + p);
    if &content[i..name_end] != b"??" {
        f.symbol = Span::new(i, name_end);
    }
    if let Some(p) = memchr::memmem::rfind(&content[name_end..end], b" from ") {
        f.module = Span::new(name_end + p + 6, end);
    }
    Some(f)
}

/// `Thread N (Thread 0x.. (LWP tid) "name"):` or `Thread N (process pid):`; gives (pid, tid).
pub fn parse_thread_header(content: &[u8]) -> Option<(Option<u32>, Option<u64>)> {
    if !content.starts_with(b"Thread ") || !trim_end(content).ends_with(b":") {
        return None;
    }
    let num = |key: &[u8]| {
        memchr::memmem::find(content, key).and_then(|p| {
            let s = &content[p + key.len()..];
            let n = s.iter().take_while(|b| b.is_ascii_digit()).count();
            parse_dec(&s[..n])
        })
    };
    let tid = num(b"(LWP ");
    let pid = num(b"(process ").and_then(|p| u32::try_from(p).ok());
    Some((pid, tid.or(pid.map(u64::from))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames() {
        let l = b"#3  0x00007fdc07101c9c in _PyEval_EvalFrameDefault (tstate=<optimized out>) at Python/ceval.c:5020";
        let f = parse_frame(l).unwrap();
        assert_eq!(f.symbol.get(l), b"_PyEval_EvalFrameDefault");
        assert_eq!(f.address, Some(0x7fdc07101c9c));
        let l = b"#7  _PyEval_EvalFrameDefault (tstate=<optimized out>) at Python/ceval.c:5376";
        assert_eq!(
            parse_frame(l).unwrap().symbol.get(l),
            b"_PyEval_EvalFrameDefault"
        );
        let l = b"#1  0x00000000005d64b4 in ?? ()";
        assert!(parse_frame(l).unwrap().symbol.is_empty());
        let l = b"#4  0x00007f in clone () from /lib/x86_64-linux-gnu/libc.so.6";
        assert_eq!(
            parse_frame(l).unwrap().module.get(l),
            b"/lib/x86_64-linux-gnu/libc.so.6"
        );
        assert_eq!(
            parse_thread_header(b"Thread 3 (Thread 0x7ff7effff6c0 (LWP 7552) \"python3.11\"):"),
            Some((None, Some(7552)))
        );
    }
}
