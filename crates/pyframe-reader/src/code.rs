//! Code objects, decoded once per process and cached by address. A cached entry is
//! reused only while the object at that address still has the same identity fields
//! (type, name/filename/line-table pointers, first line), so a freed and reused address
//! is decoded afresh.

use rustc_hash::FxHashMap as HashMap;
use std::sync::Arc;

use protocol::Frame;

use crate::error::MemoryError;
use crate::layout::Layout;
use crate::linetable::LineTable;
use crate::memory::{i32_at, u64_at, MemResult, Memory};
use crate::objects::{read_bytes, read_str, Kind, Types};

/// What the walker needs of one code object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeInfo {
    pub filename: Arc<str>,
    pub name: Arc<str>,
    pub qualname: Option<Arc<str>>,
    pub first_line: u32,
    pub lines: LineTable,
    /// 3.11+: number of code units of the inline bytecode (`Py_SIZE(co)`).
    pub code_units: Option<u64>,
    /// 3.11+: `_co_firsttraceable`, in code units (0 where the version has none).
    pub first_traceable: u32,
}

impl CodeInfo {
    /// The frame running this code at `byte_offset` into its bytecode (negative: not
    /// started yet, reported at `co_firstlineno` as CPython does).
    pub fn frame(&self, byte_offset: i64, entry: bool) -> Frame {
        Frame {
            locals: None,
            function: self.name.clone(),
            qualname: self.qualname.clone(),
            filename: self.filename.clone(),
            line: self.lines.line_for_lasti(byte_offset),
            first_line: self.first_line,
            entry,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    ob_type: u64,
    filename: u64,
    name: u64,
    qualname: u64,
    linetable: u64,
    first_line: i32,
}

impl Identity {
    fn of(layout: &Layout, head: &[u8]) -> Identity {
        let c = &layout.code;
        Identity {
            ob_type: u64_at(head, layout.object.ob_type as usize),
            filename: u64_at(head, c.filename as usize),
            name: u64_at(head, c.name as usize),
            qualname: c.qualname.map_or(0, |q| u64_at(head, q as usize)),
            linetable: u64_at(head, c.linetable as usize),
            first_line: i32_at(head, c.firstlineno as usize),
        }
    }
}

/// Per-process cache of decoded code objects.
#[derive(Debug, Default)]
pub struct CodeCache {
    map: HashMap<u64, (Identity, Arc<CodeInfo>)>,
    bytes: usize,
    /// Cached entries handed out during the current walk, not yet re-validated.
    deferred: Vec<u64>,
}

/// Entries kept before the cache is cleared (a long-running daemon must stay bounded).
const MAX_ENTRIES: usize = 200_000;

impl CodeCache {
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
    /// Approximate heap bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Start a walk: forget what the previous one left to verify.
    pub fn begin_walk(&mut self) {
        self.deferred.clear();
    }

    /// Re-read the identity fields of every cached code object the walk used, in one
    /// batched read. An entry whose object changed (freed, address reused) is dropped
    /// and the walk must be redone: its frames may name the wrong code.
    pub fn verify_deferred(&mut self, mem: &dyn Memory, layout: &Layout) -> MemResult<()> {
        if self.deferred.is_empty() {
            return Ok(());
        }
        let size = (layout.code.size as usize).clamp(24, 256);
        let mut heads = vec![0u8; size * self.deferred.len()];
        {
            let mut reqs: Vec<(u64, &mut [u8])> = self
                .deferred
                .iter()
                .copied()
                .zip(heads.chunks_mut(size))
                .collect();
            mem.read_many(&mut reqs)?;
        }
        let mut stale = Vec::new();
        for (addr, head) in self.deferred.iter().zip(heads.chunks(size)) {
            let id = Identity::of(layout, head);
            if self.map.get(addr).is_some_and(|(cached, _)| *cached != id) {
                stale.push(*addr);
            }
        }
        self.deferred.clear();
        if stale.is_empty() {
            return Ok(());
        }
        for a in &stale {
            self.map.remove(a);
        }
        Err(MemoryError::Invalid(format!(
            "{} cached code object(s) changed (first at {:#x})",
            stale.len(),
            stale[0]
        )))
    }

    /// Whether the code object at `addr` is cached (its identity is checked when used).
    pub fn holds(&self, addr: u64) -> bool {
        self.map.contains_key(&addr)
    }

    /// Fetch, in two batched reads, what decoding these code objects will read: their
    /// heads, then the first bytes of their name, qualified name, file name and line
    /// table. Through a walk's block cache this turns one read per object touched into
    /// two for all of them (a cold `stack` of 40 frames made ~70 reads of one block
    /// each). Only a hint: what fails is read again, and checked, when decoded.
    pub fn prefetch(&self, mem: &dyn Memory, layout: &Layout, addrs: &[u64]) {
        let addrs: Vec<u64> = addrs
            .iter()
            .copied()
            .filter(|a| *a != 0 && a % 8 == 0 && !self.map.contains_key(a))
            .collect();
        if addrs.len() < 2 {
            return;
        }
        let size = (layout.code.size as usize).clamp(24, 256);
        let mut heads = vec![0u8; size * addrs.len()];
        {
            let mut reqs: Vec<(u64, &mut [u8])> =
                addrs.iter().copied().zip(heads.chunks_mut(size)).collect();
            if mem.read_many(&mut reqs).is_err() {
                return;
            }
        }
        let mut ptrs: Vec<u64> = Vec::with_capacity(addrs.len() * 4);
        for head in heads.chunks(size) {
            let id = Identity::of(layout, head);
            ptrs.extend([id.filename, id.name, id.linetable]);
            if layout.code.qualname.is_some() {
                ptrs.push(id.qualname);
            }
        }
        ptrs.retain(|p| *p != 0 && p % 8 == 0);
        ptrs.sort_unstable();
        ptrs.dedup();
        const PEEK: usize = 64;
        let mut bufs = vec![0u8; PEEK * ptrs.len()];
        let mut reqs: Vec<(u64, &mut [u8])> =
            ptrs.iter().copied().zip(bufs.chunks_mut(PEEK)).collect();
        let _ = mem.read_many(&mut reqs);
    }

    /// The decoded code object at `addr`, from the cache when still valid.
    pub fn get(
        &mut self,
        mem: &dyn Memory,
        layout: &Layout,
        types: &mut Types,
        addr: u64,
    ) -> MemResult<Arc<CodeInfo>> {
        // cached: hand it out now and check its identity later, together with every
        // other code object of this walk, in one batched read (see `verify_deferred`)
        if let Some((_, info)) = self.map.get(&addr) {
            if !self.deferred.contains(&addr) {
                self.deferred.push(addr);
            }
            return Ok(info.clone());
        }
        let mut head = [0u8; 256];
        let size = (layout.code.size as usize).clamp(24, 256);
        let head = &mut head[..size];
        mem.read(addr, head)?;
        let id = Identity::of(layout, head);
        types.expect(mem, layout, Kind::Code, addr, id.ob_type)?;
        if id.first_line < 0 {
            return Err(MemoryError::Invalid(format!(
                "code at {addr:#x} has first line {}",
                id.first_line
            )));
        }
        let filename: Arc<str> = read_str(mem, layout, types, id.filename)?.into();
        let name: Arc<str> = read_str(mem, layout, types, id.name)?.into();
        let qualname = match layout.code.qualname {
            Some(_) => Some(read_str(mem, layout, types, id.qualname)?.into()),
            None => None,
        };
        let table = read_bytes(mem, layout, types, id.linetable)?;
        let first_line = id.first_line as u32;
        let lines = LineTable::decode(layout.code.linetable_format, &table, first_line);
        let code_units = layout
            .code
            .code_adaptive
            .map(|_| u64_at(head, layout.object.ob_size as usize));
        let first_traceable = layout
            .code
            .first_traceable
            .map_or(0, |o| i32_at(head, o as usize).max(0) as u32);
        let info = Arc::new(CodeInfo {
            filename,
            name,
            qualname,
            first_line,
            lines,
            code_units,
            first_traceable,
        });
        if self.map.len() >= MAX_ENTRIES {
            self.map.clear();
            self.bytes = 0;
        }
        self.bytes += info.filename.len()
            + info.name.len()
            + info.qualname.as_ref().map_or(0, |q| q.len())
            + info.lines.heap_size()
            + std::mem::size_of::<CodeInfo>()
            + 64;
        self.map.insert(addr, (id, info.clone()));
        Ok(info)
    }
}
