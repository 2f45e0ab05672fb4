//! Line-number tables of code objects: `co_lnotab` (3.8, 3.9), PEP 626 `co_linetable`
//! (3.10) and the 3.11+ location table. Decoded once per code object into address
//! ranges, then looked up per frame.

use crate::layout::LineTableFormat;

/// A decoded line table: sorted, non-overlapping byte-offset ranges with their line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LineTable {
    /// (start byte offset, end byte offset (exclusive), line or None for "no line")
    ranges: Vec<(u32, u32, Option<u32>)>,
}

impl LineTable {
    /// Decode `table` (the raw bytes of `co_lnotab`/`co_linetable`) of a code object
    /// whose `co_firstlineno` is `first_line`. Never panics on garbage input.
    pub fn decode(_format: LineTableFormat, _table: &[u8], _first_line: u32) -> LineTable {
        todo!("linetable decoders")
    }

    /// The line of the instruction at `byte_offset` into the bytecode, as the
    /// interpreter computes a frame's current line. `None` for instructions without a line.
    pub fn line_for_offset(&self, _byte_offset: u32) -> Option<u32> {
        todo!("linetable lookup")
    }

    /// Approximate heap size, for cache accounting.
    pub fn heap_size(&self) -> usize {
        self.ranges.capacity() * std::mem::size_of::<(u32, u32, Option<u32>)>()
    }
}
