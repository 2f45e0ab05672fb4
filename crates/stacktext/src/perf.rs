//! `perf script` callchains (`comm pid/tid time: event:` header, `\t<hex> symbol+0xoff (dso)`
//! frames, blank line between samples); bpftrace `ustack(perf)` frames have the same shape
//! with decimal offsets. `-F` can drop any field: a frame may be `\t<hex>` alone, lack the
//! offset or the `(dso)`, and carry `(inlined)` where the dso would be; a header may lack the
//! time and event, and is right-aligned with spaces when it starts with the pid/tid column or
//! when `comm` is padded.

use crate::lines::{indent_len, parse_0x, parse_dec, parse_hex, tokens, trim_end};
use crate::{ParsedFrame, Span};

/// What perf prints in place of the dso for a frame inlined into the next one.
const INLINED: &[u8] = b"inlined";

pub fn parse_frame(content: &[u8]) -> Option<ParsedFrame> {
    let ind = indent_len(content);
    if ind == 0 {
        return None;
    }
    let end = trim_end(content).len();
    let body = content.get(ind..end)?;
    let sp = memchr::memchr(b' ', body).unwrap_or(body.len());
    let address = parse_hex(&body[..sp])?;
    let mut f = ParsedFrame {
        indent: ind,
        address: Some(address),
        ..Default::default()
    };
    // `sym (dso)`, ` (inlined)` with no symbol (`-F ip`), or `sym` alone (`-F ip,sym`)
    let mut sym_end = body.len();
    if body.last() == Some(&b')') {
        if let Some(paren) = memchr::memmem::rfind(body, b" (").filter(|&p| p >= sp) {
            let module = &body[paren + 2..body.len() - 1];
            if module != INLINED {
                f.module = Span::new(ind + paren + 2, end - 1);
            }
            sym_end = paren;
        }
    }
    let sym_start = (sp + 1).min(sym_end);
    let sym = &body[sym_start..sym_end];
    if sym.is_empty() || sym == b"[unknown]" || parse_0x(sym).is_some() {
        return Some(f);
    }
    let (n, off) = crate::lines::split_offset(sym, true);
    f.symbol = Span::new(ind + sym_start, ind + sym_start + n);
    f.offset = off;
    Some(f)
}

/// `pid/tid` (pid known) or a bare tid.
fn parse_ids(t: &[u8]) -> Option<(Option<u32>, Option<u64>)> {
    if let Some(s) = memchr::memchr(b'/', t) {
        let (p, tid) = (parse_dec(&t[..s])?, parse_dec(&t[s + 1..])?);
        Some((u32::try_from(p).ok(), Some(tid)))
    } else {
        parse_dec(t).map(|tid| (None, Some(tid)))
    }
}

/// `[NNN]`, the cpu column.
fn is_cpu(t: &[u8]) -> bool {
    t.len() > 2 && t[0] == b'[' && t[t.len() - 1] == b']' && parse_dec(&t[1..t.len() - 1]).is_some()
}

/// A sample header: `[comm] [pid/]tid [cpu] [time:] [period] [event:] ...`; gives (pid, tid).
/// With a time or event field, the ids are the first ids token after the first token (the
/// comm, which may hold spaces). Without one (`-F comm,pid,tid`), the line must be exactly
/// `[comm] ids [cpu]` with perf's trailing separator space, and a bare tid needs a comm
/// before it: an indented number alone is an aggregation's count, not a header.
pub fn parse_header(content: &[u8]) -> Option<(Option<u32>, Option<u64>)> {
    // perf's callchain lines are tab-indented; its headers at most space-padded
    if content.is_empty()
        || content.iter().take_while(|&&b| b == b' ').count() != indent_len(content)
    {
        return None;
    }
    let toks: Vec<&[u8]> = tokens(content).take(64).collect();
    if memchr::memchr(b':', content).is_some() {
        let mut ids = None;
        for (i, t) in toks.iter().enumerate() {
            if ids.is_none() {
                if i > 0 {
                    ids = parse_ids(t);
                }
            } else if t.last() == Some(&b':') {
                return ids;
            }
        }
        return None;
    }
    if !matches!(content.last(), Some(b' ' | b'\t')) {
        return None;
    }
    let mut toks = &toks[..];
    if let Some((last, rest)) = toks.split_last() {
        if is_cpu(last) {
            toks = rest;
        }
    }
    let (last, before) = toks.split_last()?;
    let ids = parse_ids(last)?;
    if before.is_empty() && ids.0.is_none() {
        return None;
    }
    Some(ids)
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
        // right-aligned comm (`-F +addr`)
        assert_eq!(
            parse_header(
                b"      python3.11  6742 [000]  3601.317370: raw_syscalls:sys_enter: NR 202"
            ),
            Some((None, Some(6742)))
        );
        // comm holding spaces
        assert_eq!(
            parse_header(b"Web Content 12/13 [000] 1.5: cycles:"),
            Some((Some(12), Some(13)))
        );
        // no time or event: `-F pid,tid,...`, `-F comm,pid,tid,...`, `-F comm,tid,...`
        assert_eq!(
            parse_header(b" 6735/6742  "),
            Some((Some(6735), Some(6742)))
        );
        assert_eq!(
            parse_header(b"python3.11  6735/6742  "),
            Some((Some(6735), Some(6742)))
        );
        assert_eq!(parse_header(b"python3.11  6742 "), Some((None, Some(6742))));
        assert_eq!(
            parse_header(b"spin-0  6742 [001] "),
            Some((None, Some(6742)))
        );
        // not headers: a count, a tid alone, a printf line, a frame
        assert_eq!(parse_header(b"              5"), None);
        assert_eq!(parse_header(b" 6742 "), None);
        assert_eq!(parse_header(b"python3.11 5"), None);
        assert_eq!(parse_header(b"\t 7f0000 foo (/x)"), None);
        assert_eq!(parse_header(b"\t 6735/6742 "), None);
    }

    #[test]
    fn fields_left_out() {
        // `-F tid,ip`: address alone, or with the inlined marker; never a panic
        for l in [
            &b"\t           8dcad (inlined)"[..],
            b"\t           8dcad",
            b"\t8dcad ",
        ] {
            let f = parse_frame(l).unwrap();
            assert_eq!(f.address, Some(0x8dcad));
            assert!(f.symbol.is_empty() && f.module.is_empty());
        }
        // `-F ip,sym`: no offset, no dso
        let l = b"\t           fcddc _PyEval_EvalFrameDefault";
        let f = parse_frame(l).unwrap();
        assert_eq!(f.symbol.get(l), b"_PyEval_EvalFrameDefault");
        assert!(f.module.is_empty() && f.offset.is_none());
        let l = b"\t           fcddc eval_frame_handle_pending (inlined)";
        let f = parse_frame(l).unwrap();
        assert_eq!(f.symbol.get(l), b"eval_frame_handle_pending");
        assert!(f.module.is_empty());
        let l = b"\t          8369a [unknown]";
        assert!(parse_frame(l).unwrap().symbol.is_empty());
        // default fields: inlined frames have a symbol and an offset, no dso
        let l = b"\t          250a3f _PyEval_EvalFrame+0xcf (inlined)";
        let f = parse_frame(l).unwrap();
        assert_eq!(f.symbol.get(l), b"_PyEval_EvalFrame");
        assert_eq!(f.offset, Some(0xcf));
        assert!(f.module.is_empty());
        // versioned and clone symbols keep their name
        let l = b"\t 88720 pthread_cond_timedwait@@GLIBC_2.3.2+0x80 (/lib/libc.so.6)";
        assert_eq!(
            parse_frame(l).unwrap().symbol.get(l),
            b"pthread_cond_timedwait@@GLIBC_2.3.2"
        );
        let l = b"\t 1234 _PyEval_EvalFrameDefault.cold+0x10 (/usr/bin/python3.11)";
        assert_eq!(
            parse_frame(l).unwrap().symbol.get(l),
            b"_PyEval_EvalFrameDefault.cold"
        );
        // text that is no frame
        assert!(parse_frame(b"\tnot hex here").is_none());
        assert!(parse_frame(b"\t").is_none());
        assert!(parse_frame(b"\t (x)").is_none());
    }
}
