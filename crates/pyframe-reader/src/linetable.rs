//! Line-number tables of code objects: `co_lnotab` (3.8, 3.9), PEP 626 `co_linetable`
//! (3.10) and the 3.11+ location table. Decoded once per code object into address
//! ranges, then looked up per frame.
//!
//! # What the frame walker must pass
//!
//! Every lookup takes the offset in **bytes** of the frame's current instruction from
//! the start of the bytecode. The interpreter computes a frame's line as
//! `PyCode_Addr2Line(code, addrq)`, and `addrq` comes from a different field per version:
//!
//! | version    | field read from the frame                         | `byte_offset`                                  |
//! |------------|---------------------------------------------------|------------------------------------------------|
//! | 3.8, 3.9   | `PyFrameObject.f_lasti` (an `int`, bytes)         | `f_lasti`                                      |
//! | 3.10       | `PyFrameObject.f_lasti` (an `int`, code units)    | `f_lasti * 2`                                  |
//! | 3.11, 3.12 | `_PyInterpreterFrame.prev_instr` (pointer)        | `prev_instr - (code + offsetof(co_code_adaptive))`, in bytes |
//! | 3.13+      | `_PyInterpreterFrame.instr_ptr` (pointer)         | `instr_ptr - (code + offsetof(co_code_adaptive))`, in bytes  |
//!
//! (3.8/3.9 `PyFrame_GetLineNumber` = `PyCode_Addr2Line(f_code, f_lasti)`; 3.10 passes
//! `f_lasti * sizeof(_Py_CODEUNIT)`; 3.11+ `_PyInterpreterFrame_GetLine` passes
//! `_PyInterpreterFrame_LASTI(frame) * sizeof(_Py_CODEUNIT)`, where `LASTI` is
//! `prev_instr - _PyCode_CODE(code)` in 3.11/3.12 and `instr_ptr - _PyCode_CODE(code)`
//! (3.14+: `- _PyFrame_GetBytecode(frame)`) from 3.13 on.)
//!
//! The offset can be negative, and the walker must then report `co_firstlineno`, which is
//! what every version's `PyCode_Addr2Line` returns for `addrq < 0` (3.8/3.9 by the shape of
//! its loop, 3.10+ explicitly). Cases: `f_lasti == -1` ("not started yet") in 3.8–3.10,
//! and in 3.11/3.12 `prev_instr == _PyCode_CODE(code) - 1` for a frame that has not run
//! its first instruction (`_PyFrame_Initialize` sets it so; the byte offset is then -2).
//! [`LineTable::line_for_lasti`] takes such a signed offset and does this.
//!
//! Subtleties the walker should know:
//! - 3.11/3.12 `prev_instr` of a caller frame points at the last inline `CACHE` entry of
//!   its `CALL` (the caches are skipped before the callee frame is pushed), while 3.13+
//!   `instr_ptr` points at the `CALL` itself. The location table covers every code unit,
//!   caches and `EXTENDED_ARG` prefixes included, with the instruction's own entry, so
//!   both resolve to the call's line; no rounding is needed.
//! - Generator frames that have not run yet: 3.8–3.10 have `f_lasti == -1`; from 3.11
//!   `RETURN_GENERATOR` has already run, so the offset is a small non-negative one at the
//!   start of the code (seen: 0 on 3.11/3.12, 2 on 3.13+) whose line is the `def` line.
//! - In 3.8–3.10 `f_lasti` points at the instruction proper, after any `EXTENDED_ARG`.
//! - A line of `None` means "no line" (artificial instructions, 3.10+); the interpreter
//!   reports -1 there. An offset past the end of a 3.10+ table is also `None`; 3.8/3.9
//!   keep the last line for any offset past the table.
//! - 3.14+ free-threaded builds execute thread-local bytecode copies (`tlbc_index`), so
//!   `instr_ptr` must be taken relative to that copy, not `co_code_adaptive`. GIL builds
//!   are unaffected.
//! - These rules are checked against live frames of every available interpreter by
//!   `tests/linetable/frame_offsets.py` (run from `tests/linetable_real.rs`): the offset
//!   computed from the raw frame field equals `frame.f_lasti` and its line `f_lineno`.
//! - When a frame is being traced, 3.8–3.10 report the cached `f_lineno` instead; a
//!   reader of memory cannot tell and uses the table, which agrees except mid-jump.

use crate::layout::LineTableFormat;

/// A decoded line table: sorted, non-overlapping byte-offset ranges with their line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LineTable {
    /// (start byte offset, end byte offset (exclusive), line or None for "no line")
    ranges: Vec<(u32, u32, Option<u32>)>,
    /// `co_firstlineno`: the line of a frame that has not started.
    first_line: u32,
}

/// `PyCodeObject` bytecode is made of 2-byte code units (3.10+ tables count in them).
const CODE_UNIT: u64 = 2;

impl LineTable {
    /// Decode `table` (the raw bytes of `co_lnotab`/`co_linetable`) of a code object
    /// whose `co_firstlineno` is `first_line`. Never panics on garbage input; work and
    /// memory are linear in `table.len()`.
    pub fn decode(format: LineTableFormat, table: &[u8], first_line: u32) -> LineTable {
        let mut builder = Builder::new(first_line, table.len());
        match format {
            LineTableFormat::Lnotab => decode_lnotab(table, &mut builder),
            LineTableFormat::Pep626 => decode_pep626(table, &mut builder),
            LineTableFormat::Locations => decode_locations(table, &mut builder),
        }
        builder.ranges.shrink_to_fit();
        LineTable {
            ranges: builder.ranges,
            first_line,
        }
    }

    /// The line of the instruction at `byte_offset` into the bytecode, as the
    /// interpreter computes a frame's current line. `None` for instructions without a line.
    pub fn line_for_offset(&self, byte_offset: u32) -> Option<u32> {
        let idx = self
            .ranges
            .partition_point(|&(start, _, _)| start <= byte_offset);
        let &(_, end, line) = self.ranges.get(idx.checked_sub(1)?)?;
        if byte_offset < end {
            line
        } else {
            None
        }
    }

    /// Like [`line_for_offset`](Self::line_for_offset) for a signed offset as computed
    /// from a frame (see the module docs): negative means "not started" and gives
    /// `co_firstlineno`, as `PyCode_Addr2Line` does.
    pub fn line_for_lasti(&self, byte_offset: i64) -> Option<u32> {
        if byte_offset < 0 {
            return Some(self.first_line);
        }
        self.line_for_offset(u32::try_from(byte_offset).ok()?)
    }

    /// The `co_firstlineno` this table was decoded with.
    pub fn first_line(&self) -> u32 {
        self.first_line
    }

    /// Number of decoded ranges (adjacent ranges with the same line are merged).
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Approximate heap size, for cache accounting.
    pub fn heap_size(&self) -> usize {
        self.ranges.capacity() * std::mem::size_of::<(u32, u32, Option<u32>)>()
    }
}

/// Accumulates ranges in address order, merging neighbours with the same line.
struct Builder {
    ranges: Vec<(u32, u32, Option<u32>)>,
    line: i64,
}

impl Builder {
    fn new(first_line: u32, table_len: usize) -> Self {
        // At most one range per table entry (2 bytes for lnotab/PEP 626, ≥1 for locations).
        Builder {
            ranges: Vec::with_capacity(table_len.min(1 << 16)),
            line: i64::from(first_line),
        }
    }

    /// The current computed line as the interpreter would report it; negative or
    /// out-of-range values (only from garbage tables) have no usable line.
    fn current_line(&self) -> Option<u32> {
        u32::try_from(self.line).ok()
    }

    /// Add `[start, end)` with `line`. Returns false once addresses leave `u32`, which
    /// only garbage can reach; the caller stops there.
    fn push(&mut self, start: u64, end: u64, line: Option<u32>) -> bool {
        if end <= start {
            return true;
        }
        let (Ok(start), Ok(end)) = (u32::try_from(start), u32::try_from(end)) else {
            return false;
        };
        if let Some(last) = self.ranges.last_mut() {
            if last.1 == start && last.2 == line {
                last.1 = end;
                return true;
            }
        }
        self.ranges.push((start, end, line));
        true
    }
}

/// 3.8/3.9 `co_lnotab`: (unsigned address increment, signed line increment) pairs.
/// `PyCode_Addr2Line` adds the line increment of every pair whose cumulative address is
/// `<= addrq`, so a pair's line increment takes effect at the address it ends on, and the
/// last line holds for every address past the table.
fn decode_lnotab(table: &[u8], b: &mut Builder) {
    let mut start: u64 = 0;
    let mut addr: u64 = 0;
    for pair in table.chunks_exact(2) {
        addr += u64::from(pair[0]);
        if addr > start {
            if !b.push(start, addr, b.current_line()) {
                return;
            }
            start = addr;
        }
        b.line += i64::from(pair[1] as i8);
    }
    b.push(start, u64::from(u32::MAX), b.current_line());
}

/// 3.10 PEP 626 `co_linetable`: (unsigned address delta in bytes, signed line delta)
/// pairs, each describing the range that follows the previous one; a line delta of -128
/// means the range has no line and leaves the computed line unchanged. Zero-length
/// entries only move the computed line. Addresses past the table have no line.
fn decode_pep626(table: &[u8], b: &mut Builder) {
    let mut addr: u64 = 0;
    for pair in table.chunks_exact(2) {
        let start = addr;
        addr += u64::from(pair[0]);
        let delta = pair[1] as i8;
        let line = if delta == -128 {
            None
        } else {
            b.line += i64::from(delta);
            b.current_line()
        };
        if !b.push(start, addr, line) {
            return;
        }
    }
}

/// Location-table codes (`Objects/locations.md`, `PY_CODE_LOCATION_INFO_*`).
const LOCATION_ONE_LINE0: u8 = 10;
const LOCATION_ONE_LINE2: u8 = 12;
const LOCATION_NO_COLUMNS: u8 = 13;
const LOCATION_LONG: u8 = 14;
/// A header byte whose top five bits are all set: bit 7 plus code 15, "no location".
const NO_LOCATION_MARKER: u8 = 0x1f;

/// 3.11+ location table. Each entry starts with a header byte (bit 7 set, code in bits
/// 3-6, length-1 in code units in bits 0-2) followed by varint payload bytes (bit 7
/// clear). Only the line matters here: codes 0-9 keep it, 10-12 add `code - 10`, 13 and
/// 14 start with a signed varint line delta, 15 has no location. Like CPython's
/// `advance()`, the next entry is found by skipping to the next byte with bit 7 set.
fn decode_locations(table: &[u8], b: &mut Builder) {
    let mut addr: u64 = 0;
    let mut pos = 0;
    while pos < table.len() {
        let header = table[pos];
        let code = (header >> 3) & 15;
        let delta = match code {
            LOCATION_ONE_LINE0..=LOCATION_ONE_LINE2 => i64::from(code - LOCATION_ONE_LINE0),
            LOCATION_NO_COLUMNS | LOCATION_LONG => signed_varint(&table[pos + 1..]),
            _ => 0,
        };
        b.line += delta;
        let line = if header >> 3 == NO_LOCATION_MARKER {
            None
        } else {
            b.current_line()
        };
        let start = addr;
        addr += (u64::from(header & 7) + 1) * CODE_UNIT;
        if !b.push(start, addr, line) {
            return;
        }
        pos += 1;
        while pos < table.len() && table[pos] & 0x80 == 0 {
            pos += 1;
        }
    }
}

/// Unsigned varint of 6-bit chunks, least significant first, bit 6 = more follow.
/// Bounded to 32 bits of payload (CPython's `unsigned int`) and to the slice, so
/// garbage cannot make one read scan the whole table.
fn varint(bytes: &[u8]) -> u32 {
    let mut val: u32 = 0;
    let mut shift = 0;
    for &byte in bytes {
        val |= u32::from(byte & 63) << shift;
        shift += 6;
        if byte & 64 == 0 || shift >= 32 {
            break;
        }
    }
    val
}

/// Signed varint: zig-zag on bit 0 (set = negative).
fn signed_varint(bytes: &[u8]) -> i64 {
    let uval = varint(bytes);
    let magnitude = i64::from(uval >> 1);
    if uval & 1 != 0 {
        -magnitude
    } else {
        magnitude
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALL: [LineTableFormat; 3] = [
        LineTableFormat::Lnotab,
        LineTableFormat::Pep626,
        LineTableFormat::Locations,
    ];

    #[test]
    fn empty_tables() {
        // 3.8/3.9: no pairs, every address is on co_firstlineno.
        let t = LineTable::decode(LineTableFormat::Lnotab, &[], 7);
        assert_eq!(t.line_for_offset(0), Some(7));
        assert_eq!(t.line_for_offset(1000), Some(7));
        // 3.10+: no ranges, no line.
        for f in [LineTableFormat::Pep626, LineTableFormat::Locations] {
            let t = LineTable::decode(f, &[], 7);
            assert_eq!(t.line_for_offset(0), None);
            assert_eq!(t.line_for_lasti(-2), Some(7));
        }
    }

    #[test]
    fn lnotab_increment_applies_at_its_address() {
        // Offsets 0..6 on line 10, 6..8 on 11, then a zero-address pair moves
        // +200 (as two pairs the compiler splits large deltas into), then -3.
        let table = [6, 1, 2, 127, 0, 73, 4, (-3i8) as u8];
        let t = LineTable::decode(LineTableFormat::Lnotab, &table, 10);
        assert_eq!(t.line_for_offset(0), Some(10));
        assert_eq!(t.line_for_offset(5), Some(10));
        assert_eq!(t.line_for_offset(6), Some(11));
        assert_eq!(t.line_for_offset(7), Some(11));
        assert_eq!(t.line_for_offset(8), Some(211));
        assert_eq!(t.line_for_offset(11), Some(211));
        assert_eq!(t.line_for_offset(12), Some(208));
        assert_eq!(t.line_for_offset(1 << 30), Some(208));
        assert_eq!(t.line_for_lasti(-1), Some(10));
    }

    #[test]
    fn lnotab_trailing_odd_byte_ignored() {
        let t = LineTable::decode(LineTableFormat::Lnotab, &[4, 2, 9], 1);
        assert_eq!(t.line_for_offset(3), Some(1));
        assert_eq!(t.line_for_offset(4), Some(3));
        assert_eq!(t.line_for_offset(400), Some(3));
    }

    #[test]
    fn pep626_no_line_and_zero_length() {
        // [0,4) line 6; zero-length +1 then [4,8) +1 = 8; [8,10) no line; [10,14) -1 = 7.
        let table = [4, 1, 0, 1, 4, 1, 2, 0x80, 4, 0xff];
        let t = LineTable::decode(LineTableFormat::Pep626, &table, 5);
        assert_eq!(t.line_for_offset(0), Some(6));
        assert_eq!(t.line_for_offset(3), Some(6));
        assert_eq!(t.line_for_offset(4), Some(8));
        assert_eq!(t.line_for_offset(8), None);
        assert_eq!(t.line_for_offset(9), None);
        assert_eq!(t.line_for_offset(10), Some(7));
        assert_eq!(t.line_for_offset(14), None);
    }

    #[test]
    fn locations_forms() {
        let table = [
            0x80 | (10 << 3), // one-line form 0, 1 unit: [0,2) line 1
            5,
            6,
            0x80 | (12 << 3) | 1, // one-line form +2, 2 units: [2,6) line 3
            5,
            6,
            0x80 | (15 << 3), // no location: [6,8)
            0x80 | (13 << 3), // no columns, delta -70 (zig-zag 141): [8,10) line 32
            0x40 | 13,
            2,
            0x80 | (14 << 3) | 7, // long form, +300 (600 = 0b1001_011000), 8 units: [10,26)
            0x40 | 24,
            9,
            0,
            1,
            1,
            0x80 | 3 | (3 << 3), // short form, same line, 4 units: [26,34)
            0x11,
        ];
        let t = LineTable::decode(LineTableFormat::Locations, &table, 100);
        assert_eq!(t.line_for_offset(0), Some(100));
        assert_eq!(t.line_for_offset(2), Some(102));
        assert_eq!(t.line_for_offset(5), Some(102));
        assert_eq!(t.line_for_offset(6), None);
        assert_eq!(t.line_for_offset(8), Some(32));
        assert_eq!(t.line_for_offset(10), Some(332));
        assert_eq!(t.line_for_offset(25), Some(332));
        assert_eq!(t.line_for_offset(26), Some(332));
        assert_eq!(t.line_for_offset(33), Some(332));
        assert_eq!(t.line_for_offset(34), None);
        // Same-line neighbours are merged.
        assert_eq!(t.len(), 5);
    }

    #[test]
    fn locations_negative_line_is_no_line() {
        // Long-form delta -5 from line 2.
        let table = [0x80 | (13 << 3), 11, 0x80 | (10 << 3) | 1, 0, 0];
        let t = LineTable::decode(LineTableFormat::Locations, &table, 2);
        assert_eq!(t.line_for_offset(0), None);
        assert_eq!(t.line_for_offset(2), None);
    }

    #[test]
    fn varint_is_bounded() {
        assert_eq!(varint(&[0x7f; 100]), u32::MAX);
        assert_eq!(varint(&[]), 0);
        assert_eq!(varint(&[0x41, 0x01]), 1 | (1 << 6));
        assert_eq!(signed_varint(&[3]), -1);
        assert_eq!(signed_varint(&[4]), 2);
    }

    #[test]
    fn huge_address_deltas_stop_at_u32() {
        // Locations entries are at most 16 bytes each, so they cannot overflow; lnotab
        // ones cannot either within the sizes tested; this only checks the lookup edge.
        let t = LineTable::decode(LineTableFormat::Lnotab, &[255, 1], 1);
        assert_eq!(t.line_for_offset(u32::MAX), None);
        assert_eq!(t.line_for_offset(u32::MAX - 1), Some(2));
        assert_eq!(t.line_for_lasti(i64::MAX), None);
    }

    proptest! {
        #[test]
        fn garbage_never_panics(table in proptest::collection::vec(any::<u8>(), 0..2048),
                                first in any::<u32>(),
                                offsets in proptest::collection::vec(any::<u32>(), 0..32)) {
            for format in ALL {
                let t = LineTable::decode(format, &table, first);
                prop_assert!(t.len() <= table.len() + 1);
                // Ranges are sorted and disjoint: the binary search relies on it.
                for w in t.ranges.windows(2) {
                    prop_assert!(w[0].1 <= w[1].0);
                }
                for r in &t.ranges {
                    prop_assert!(r.0 < r.1);
                }
                for &o in &offsets {
                    let _ = t.line_for_offset(o);
                    let _ = t.line_for_lasti(i64::from(o) - 3);
                }
                for r in &t.ranges {
                    prop_assert_eq!(t.line_for_offset(r.0), r.2);
                    prop_assert_eq!(t.line_for_offset(r.1 - 1), r.2);
                }
                let _ = t.heap_size();
            }
        }
    }
}
