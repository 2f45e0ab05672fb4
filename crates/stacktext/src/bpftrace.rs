//! bpftrace `ustack` in its default mode: `symbol+DECIMAL` lines indented 8 (printed) or
//! 4 spaces, optionally followed by ` (module)`, and map-key stacks `@name[ ... ]: N`.
//! `ustack(perf)` lines have the `perf script` shape and are parsed by [`crate::perf`].

use crate::lines::{indent_len, is_ws, parse_0x, parse_dec, split_offset, trim, trim_end};
use crate::{ParsedFrame, Span};

pub fn parse_frame(content: &[u8]) -> Option<ParsedFrame> {
    let ind = indent_len(content);
    if ind == 0 || content[0] != b' ' {
        return None;
    }
    let end = trim_end(content).len();
    if end <= ind {
        return None;
    }
    let mut body = &content[ind..end];
    let mut module = Span::default();
    if body.last() == Some(&b')') {
        let p = memchr::memmem::rfind(body, b" (")?;
        module = Span::new(ind + p + 2, ind + body.len() - 1);
        body = &body[..p];
    }
    if body.iter().any(|&b| is_ws(b)) {
        return None;
    }
    let mut f = ParsedFrame {
        indent: ind,
        module,
        ..Default::default()
    };
    if let Some(a) = parse_0x(body) {
        f.address = Some(a);
        return Some(f);
    }
    let (n, off) = split_offset(body, true);
    off?;
    f.symbol = Span::new(ind, ind + n);
    f.offset = off;
    Some(f)
}

/// The opening line of a map entry keyed by a stack (`@[`, `@prof[`, `@[comm, `).
pub fn is_map_open(content: &[u8]) -> bool {
    content.first() == Some(&b'@')
        && memchr::memchr(b'[', content).is_some()
        && memchr::memmem::find(content, b"]:").is_none()
}

/// The closing line of a map entry: `]: N` gives the value, `]` none.
pub fn map_close(content: &[u8]) -> Option<Option<u64>> {
    let t = trim(content);
    if t.first() != Some(&b']') {
        return None;
    }
    let rest = &t[1..];
    if rest.is_empty() {
        return Some(None);
    }
    let rest = rest.strip_prefix(b":")?;
    Some(parse_dec(trim(rest)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames() {
        let l = b"        _PyEval_EvalFrameDefault+10286";
        let f = parse_frame(l).unwrap();
        assert_eq!(f.symbol.get(l), b"_PyEval_EvalFrameDefault");
        assert_eq!(f.offset, Some(10286));
        let l = b"    main+12 (/usr/bin/python3)";
        let f = parse_frame(l).unwrap();
        assert_eq!(f.module.get(l), b"/usr/bin/python3");
        assert_eq!(
            parse_frame(b"        0x7fdc06e129c0").unwrap().address,
            Some(0x7fdc06e129c0)
        );
        assert!(parse_frame(b"        hello world").is_none());
        assert_eq!(map_close(b"]: 12"), Some(Some(12)));
        assert!(is_map_open(b"@prof["));
    }
}
