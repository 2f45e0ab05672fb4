//! Integer key columns of a DTrace aggregation keyed by integers and a stack, such as
//! `@[pid, tid, ustack()] = count()`, and the `--keys` list that names them.
//!
//! libdtrace's `dt_print_aggs` prints every key record of an entry with `dt_print_datum`,
//! with no newline in between: an integer key of 4 bytes as `" %8d"` (`pid`, `tid` on
//! illumos), of 8 bytes as `" %16lld"`, 2 bytes `" %5d"`, 1 byte `" %3d"`. A stack key
//! (`dt_print_ustack`) starts with a newline, then its frames; the value follows
//! (`" %16lld"` for `count()`, or a `quantize()` table), then a newline. So such an entry is
//!
//! ```text
//!      4242     4250
//!               libc.so.1`__pollsys+0xa
//!               ...
//!                 17
//! ```
//!
//! one line of integers directly before the first frame, with no blank line between
//! entries. Which integer is the pid is the script's choice (`@[tid, pid, ...]` prints the
//! same shape), so the columns are used only when the user names them (`--keys pid,tid`).

use crate::lines::{is_ws, parse_dec};

/// Most integer key columns accepted before a stack.
pub const MAX_KEY_COLUMNS: usize = 16;

/// What one integer key column holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyColumn {
    Pid,
    Tid,
    /// Any other integer (`cpu`, `uid`, ...), ignored: `_` in `--keys`.
    Other,
}

/// The integer key columns of the aggregation, in the order the D script lists them
/// (`--keys pid,tid` for `@[pid, tid, ustack()]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyColumns(pub Vec<KeyColumn>);

impl std::str::FromStr for KeyColumns {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut cols = Vec::new();
        for name in s.split(',') {
            let c = match name.trim() {
                "pid" => KeyColumn::Pid,
                "tid" => KeyColumn::Tid,
                "_" => KeyColumn::Other,
                other => {
                    return Err(format!(
                        "unknown key column {other:?}: name each integer key column before the \
                         stack pid, tid or _ (anything else), e.g. pid,tid"
                    ))
                }
            };
            if c != KeyColumn::Other && cols.contains(&c) {
                return Err(format!("{} named twice", name.trim()));
            }
            cols.push(c);
        }
        if cols.len() > MAX_KEY_COLUMNS {
            return Err(format!("more than {MAX_KEY_COLUMNS} key columns"));
        }
        if !cols.iter().any(|c| *c != KeyColumn::Other) {
            return Err("the key columns name neither pid nor tid".into());
        }
        Ok(KeyColumns(cols))
    }
}

/// A line holding only integers (1 to [`MAX_KEY_COLUMNS`], optionally negative): the integer
/// keys of an aggregation entry, when a stack follows. Appends them to `out`; false (and
/// `out` unchanged) for any other line.
pub(crate) fn int_columns(content: &[u8], out: &mut Vec<i64>) -> bool {
    let start = out.len();
    for tok in content
        .split(|&b| is_ws(b) || b == b'\r')
        .filter(|t| !t.is_empty())
    {
        let (neg, digits) = match tok.strip_prefix(b"-") {
            Some(d) => (true, d),
            None => (false, tok),
        };
        let v = parse_dec(digits).and_then(|v| i64::try_from(v).ok());
        match v {
            Some(v) if out.len() - start < MAX_KEY_COLUMNS => out.push(if neg { -v } else { v }),
            _ => {
                out.truncate(start);
                return false;
            }
        }
    }
    out.len() > start
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_keys() {
        let k: KeyColumns = "pid,tid".parse().unwrap();
        assert_eq!(k.0, vec![KeyColumn::Pid, KeyColumn::Tid]);
        let k: KeyColumns = "_, tid ,pid".parse().unwrap();
        assert_eq!(k.0, vec![KeyColumn::Other, KeyColumn::Tid, KeyColumn::Pid]);
        assert!("pid,pid".parse::<KeyColumns>().is_err());
        assert!("_,_".parse::<KeyColumns>().is_err());
        assert!("pid,cpu".parse::<KeyColumns>().is_err());
        assert!("".parse::<KeyColumns>().is_err());
    }

    #[test]
    fn columns() {
        let mut v = Vec::new();
        // `" %8d %8d"`: pid and tid as libdtrace prints 4-byte keys
        assert!(int_columns(b"     4242     4250", &mut v));
        assert_eq!(v, vec![4242, 4250]);
        v.clear();
        assert!(int_columns(b"               -3\r", &mut v));
        assert_eq!(v, vec![-3]);
        v.clear();
        for l in [
            &b""[..],
            b"   ",
            b"  1 2 x",
            b"              libc.so.1`malloc+0x1f",
            b"  0  70000  :profile-97",
            b" 99999999999999999999",
            b" -",
        ] {
            assert!(!int_columns(l, &mut v), "{l:?}");
            assert!(v.is_empty());
        }
        let many = " 1".repeat(MAX_KEY_COLUMNS + 1);
        assert!(!int_columns(many.as_bytes(), &mut v));
        assert!(v.is_empty());
    }
}
