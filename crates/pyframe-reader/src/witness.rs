//! What a walk depended on, checked again after it.
//!
//! A walk of a running target reads each frame at a different moment; a thread that
//! returns and calls again meanwhile can leave the walk with a chain that never existed
//! (cut short at a frame that had just died, or a slot already reused by another call).
//! Checks on each value alone (types, bounds, cycles) cannot see that: every value was
//! real, only not at the same time. So the walk records every field it followed (each
//! thread's current-frame pointer, each frame's back link, code object and instruction
//! position) and, after the walk, all of them are read again in one batched read and
//! compared. A stack is returned only if the whole chain reads back the same: the reported
//! stack is then what one fast, dependency-free re-read saw too, not a mixture gathered
//! over the walk. The innermost frame's instruction is the one value allowed to differ (a
//! running thread moves it with every instruction; where it stood when read is where that
//! frame was at that moment, and nothing outside it depends on it).
//!
//! A frame that returned keeps its bytes, so "reads back the same" must also mean "still
//! running": up to 3.10 the frame's own running flag is one of the compared fields (the
//! walker also checks it when it reads the frame); from 3.11, frames live in the thread's
//! data stack and one above `datastack_top` has been popped, so each thread's
//! [`StackBound`] is read both before and after the frames (in the same pass) and every
//! frame of the current chunk must lie below the top both times.
//! The thread may have called further meanwhile (the top only rises): the stack returned
//! is the one it had when the walk began, which is still the base of what it runs.

use crate::error::MemoryError;
use crate::memory::{MemResult, Memory};

/// Fields per witness at most (a frame: type or owner, back link, code, instruction,
/// running flag).
const MAX_FIELDS: usize = 5;
/// Two witnesses closer than this are read as one range (frames in a data-stack chunk).
const MERGE_GAP: u64 = 256;
/// Bytes re-read at most (the walk's own limits keep it far below: 16,384 frames).
const MAX_REREAD: usize = 64 << 20;

/// Values one struct held when the walk read it.
#[derive(Debug, Clone, Copy)]
pub struct Witness {
    addr: u64,
    n: u8,
    /// (offset from `addr`, width in bytes: 1, 4 or 8, value read)
    fields: [(u32, u8, u64); MAX_FIELDS],
}

/// A 3.11+ thread's data stack and the frames the walk found in it.
#[derive(Debug, Clone)]
pub struct StackBound {
    /// Address of the thread's `datastack_chunk` field.
    pub chunk_field: u64,
    /// Offsets of `datastack_top` and `datastack_limit` from `chunk_field`.
    pub top: u64,
    pub limit: u64,
    /// Address of the thread's innermost-frame pointer (`current_frame`, in the thread
    /// state or on 3.11/3.12 in its `_PyCFrame`); 0 if none was read.
    pub current_field: u64,
    /// (address, size) of each frame the walk read, innermost first.
    pub frames: Vec<(u64, u64)>,
}

impl Witness {
    pub fn new(addr: u64) -> Self {
        Witness {
            addr,
            n: 0,
            fields: [(0, 0, 0); MAX_FIELDS],
        }
    }

    /// Also require `width` bytes at `addr + offset` to read back as `value`.
    pub fn field(mut self, offset: u64, width: u8, value: u64) -> Self {
        debug_assert!(matches!(width, 1 | 4 | 8));
        // a field past the limit would go unchecked: a walker bug, not target data
        debug_assert!(
            (self.n as usize) < MAX_FIELDS,
            "more than {MAX_FIELDS} fields"
        );
        if (self.n as usize) < MAX_FIELDS {
            self.fields[self.n as usize] = (offset as u32, width, value);
            self.n += 1;
        }
        self
    }

    fn span(&self) -> (u64, u64) {
        let f = &self.fields[..self.n as usize];
        let lo = f.iter().map(|&(o, _, _)| o as u64).min().unwrap_or(0);
        let hi = f
            .iter()
            .map(|&(o, w, _)| o as u64 + w as u64)
            .max()
            .unwrap_or(0);
        (self.addr.wrapping_add(lo), self.addr.wrapping_add(hi))
    }
}

fn value_at(buf: &[u8], at: usize, width: u8) -> u64 {
    let mut b = [0u8; 8];
    b[..width as usize].copy_from_slice(&buf[at..at + width as usize]);
    u64::from_le_bytes(b)
}

/// Read every witness again from `mem` (the process itself, not a per-walk cache), then
/// every thread's data-stack top, and fail with [`MemoryError::Invalid`] naming the first
/// value that changed or the first frame that is no longer on its thread's stack.
pub fn verify(mem: &dyn Memory, witnesses: &[Witness], bounds: &[StackBound]) -> MemResult<()> {
    verify_then(mem, witnesses, bounds, &[]).map(|_| ())
}

/// [`verify`], then (in the same batched read, after everything else) the 8-byte values
/// at `tail`, returned in order.
pub fn verify_then(
    mem: &dyn Memory,
    witnesses: &[Witness],
    bounds: &[StackBound],
    tail: &[u64],
) -> MemResult<Vec<u64>> {
    // Merge nearby spans into ranges in walk order, no sort: a thread's frames in its
    // data-stack chunk come one next to the other, so they make one range per chunk.
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    let mut at: Vec<usize> = Vec::with_capacity(witnesses.len());
    for w in witnesses {
        let (lo, hi) = w.span();
        if hi < lo {
            return Err(MemoryError::Invalid(format!(
                "witness at {:#x} wraps the address space",
                w.addr
            )));
        }
        match ranges.last_mut() {
            Some((start, end))
                if lo <= end.saturating_add(MERGE_GAP)
                    && hi.saturating_add(MERGE_GAP) >= *start =>
            {
                *start = (*start).min(lo);
                *end = (*end).max(hi);
            }
            _ => ranges.push((lo, hi)),
        }
        at.push(ranges.len() - 1);
    }
    // each thread's data-stack fields both before and after every frame, in the same
    // pass: the frames must be below the top at both ends, so a thread that returned
    // below them and called up again while the frames were copied is not missed
    let mut before = Vec::with_capacity(bounds.len());
    for b in bounds {
        let hi = b.chunk_field.wrapping_add(b.top.max(b.limit) + 8);
        if hi < b.chunk_field {
            return Err(MemoryError::Invalid(format!(
                "thread state field at {:#x} wraps the address space",
                b.chunk_field
            )));
        }
        before.push((b.chunk_field, hi));
    }
    let frames_end = ranges.len();
    ranges.extend(before.iter().copied());
    // and last, each thread's innermost-frame pointer
    let currents = bounds.iter().filter(|b| b.current_field != 0).count();
    ranges.extend(
        bounds
            .iter()
            .filter(|b| b.current_field != 0)
            .map(|b| (b.current_field, b.current_field.wrapping_add(8))),
    );
    let tail_start = ranges.len() + before.len();
    ranges.extend(tail.iter().map(|&a| (a, a.wrapping_add(8))));
    let n_before = before.len();
    ranges.splice(0..0, before);
    if ranges.is_empty() {
        return Ok(Vec::new());
    }
    let total: usize = ranges.iter().map(|&(lo, hi)| (hi - lo) as usize).sum();
    if total > MAX_REREAD {
        return Err(MemoryError::Invalid(format!(
            "{total} bytes to read again exceeds {MAX_REREAD}"
        )));
    }
    let mut buf = vec![0u8; total];
    let mut offsets = Vec::with_capacity(ranges.len());
    {
        let mut reqs: Vec<(u64, &mut [u8])> = Vec::with_capacity(ranges.len());
        let mut rest = &mut buf[..];
        let mut off = 0usize;
        for &(lo, hi) in &ranges {
            let (head, tail) = rest.split_at_mut((hi - lo) as usize);
            reqs.push((lo, head));
            offsets.push(off);
            off += (hi - lo) as usize;
            rest = tail;
        }
        mem.read_many(&mut reqs)?;
    }
    for (w, &r) in witnesses.iter().zip(&at) {
        let r = r + n_before;
        let base = ranges[r].0;
        for &(off, width, value) in &w.fields[..w.n as usize] {
            let pos = offsets[r] + (w.addr.wrapping_add(off as u64) - base) as usize;
            let now = value_at(&buf, pos, width);
            if now != value {
                return Err(MemoryError::Invalid(format!(
                    "{:#x}+{off} changed during the read ({value:#x} -> {now:#x}): the thread moved",
                    w.addr
                )));
            }
        }
    }
    let mut cur = n_before + frames_end + n_before;
    debug_assert_eq!(cur + currents + tail.len(), ranges.len());
    for (i, b) in bounds.iter().enumerate() {
        within_top(b, &buf[offsets[i]..])?;
        let after = &buf[offsets[n_before + frames_end + i]..];
        within_top(b, after)?;
        if b.current_field != 0 {
            still_linked(b, after, value_at(&buf, offsets[cur], 8))?;
            cur += 1;
        }
    }
    Ok((0..tail.len())
        .map(|i| value_at(&buf, offsets[tail_start + i], 8))
        .collect())
}

/// The walk's innermost frame must still be on the thread's chain at the end: when it
/// and the thread's current frame (`current`, read last) are both in the current chunk,
/// the current frame is that one or a later one. A current frame below it means the walk
/// started from a frame the thread had left (returned from, and pushing a frame at the
/// same place again: set up, not yet linked), whose fields it read in between.
fn still_linked(b: &StackBound, fields: &[u8], current: u64) -> MemResult<()> {
    let Some(&(innermost, _)) = b.frames.first() else {
        return Ok(());
    };
    let chunk = value_at(fields, 0, 8);
    let limit = value_at(fields, b.limit as usize, 8);
    let inside = |a: u64| a >= chunk && a < limit;
    if inside(innermost) && inside(current) && current < innermost {
        return Err(MemoryError::Invalid(format!(
            "frame {innermost:#x} is no longer the current one or inside it (current {current:#x}): the thread returned during the read"
        )));
    }
    Ok(())
}

/// Every frame of a 3.11+ thread's current data-stack chunk lies below the chunk's top,
/// given the thread's `datastack_chunk`.. fields as read (`fields` starts at `chunk_field`).
fn within_top(b: &StackBound, fields: &[u8]) -> MemResult<()> {
    let chunk = value_at(fields, 0, 8);
    let top = value_at(fields, b.top as usize, 8);
    let limit = value_at(fields, b.limit as usize, 8);
    for &(addr, size) in &b.frames {
        // frames of older chunks and of generators are elsewhere: not bounded here
        if addr >= chunk && addr < limit && addr.saturating_add(size) > top {
            return Err(MemoryError::Invalid(format!(
                "frame {addr:#x} is above its thread's data-stack top {top:#x}: it returned during the read"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::Snapshot;

    #[test]
    fn unchanged_values_pass_and_any_change_is_named() {
        let mut mem = Snapshot::new();
        let mut data = vec![0u8; 0x2000];
        data[0x10..0x18].copy_from_slice(&0xdead_beefu64.to_le_bytes());
        data[0x40] = 7;
        data[0x1800..0x1804].copy_from_slice(&42u32.to_le_bytes());
        mem.insert(0x10000, data);
        let ws = [
            Witness::new(0x10000)
                .field(0x10, 8, 0xdead_beef)
                .field(0x40, 1, 7),
            Witness::new(0x11800).field(0, 4, 42),
            Witness::new(0x10008).field(8, 8, 0xdead_beef),
        ];
        verify(&mem, &ws, &[]).unwrap();
        let changed = [Witness::new(0x11800).field(0, 4, 43)];
        let e = verify(&mem, &changed, &[]).unwrap_err().to_string();
        assert!(e.contains("changed during the read"), "{e}");
        // a witness the process no longer maps is an error, not a pass
        assert!(verify(&mem, &[Witness::new(0x90000).field(0, 8, 0)], &[]).is_err());
        assert!(verify(&mem, &[], &[]).is_ok());
    }

    #[test]
    fn frames_above_the_data_stack_top_have_returned() {
        // a thread state whose chunk is [0x50000, 0x51000) with the top at 0x50400
        let mut mem = Snapshot::new();
        let mut ts = vec![0u8; 64];
        ts[8..16].copy_from_slice(&0x50000u64.to_le_bytes());
        ts[16..24].copy_from_slice(&0x50400u64.to_le_bytes());
        ts[24..32].copy_from_slice(&0x51000u64.to_le_bytes());
        mem.insert(0x9000, ts);
        let bound = |frames: Vec<(u64, u64)>| StackBound {
            chunk_field: 0x9008,
            top: 8,
            limit: 16,
            current_field: 0,
            frames,
        };
        // below the top, and outside the chunk (a generator's frame, an older chunk)
        let ok = bound(vec![
            (0x50100, 80),
            (0x50380, 0x80),
            (0x7000, 80),
            (0x51000, 80),
        ]);
        verify(&mem, &[], &[ok]).unwrap();
        let popped = bound(vec![(0x50100, 80), (0x503c0, 80)]);
        let e = verify(&mem, &[], &[popped]).unwrap_err().to_string();
        assert!(e.contains("returned during the read"), "{e}");
    }

    #[test]
    fn the_innermost_frame_must_still_be_current_or_below_it() {
        // chunk [0x50000, 0x51000), top 0x50400; the current-frame pointer at 0x9100
        let mut mem = Snapshot::new();
        let mut ts = vec![0u8; 0x108];
        ts[8..16].copy_from_slice(&0x50000u64.to_le_bytes());
        ts[16..24].copy_from_slice(&0x50400u64.to_le_bytes());
        ts[24..32].copy_from_slice(&0x51000u64.to_le_bytes());
        ts[0x100..0x108].copy_from_slice(&0x50300u64.to_le_bytes());
        mem.insert(0x9000, ts);
        let bound = |innermost: u64| StackBound {
            chunk_field: 0x9008,
            top: 8,
            limit: 16,
            current_field: 0x9100,
            frames: vec![(innermost, 80), (0x50100, 80)],
        };
        // the walk's innermost frame is the current one, or the thread called further
        verify(&mem, &[], &[bound(0x50300)]).unwrap();
        verify(&mem, &[], &[bound(0x50200)]).unwrap();
        // above the current frame: set up again (not linked) after the thread left it
        let e = verify(&mem, &[], &[bound(0x50380)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("no longer the current one"), "{e}");
        // the values after everything else come back in order
        let tail = verify_then(&mem, &[], &[bound(0x50300)], &[0x9010, 0x9100]).unwrap();
        assert_eq!(tail, vec![0x50400, 0x50300]);
    }
}
