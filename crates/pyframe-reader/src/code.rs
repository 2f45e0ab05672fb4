//! Code objects, decoded once per process and cached by address. A cached entry is
//! reused only while the object at that address still has the same identity fields
//! (type, name/filename/line-table pointers, first line), so a freed and reused address
//! is decoded afresh.

use rustc_hash::FxHashMap as HashMap;
use std::sync::Arc;

use crate::error::MemoryError;
use crate::layout::{Layout, OB_SIZE, OB_TYPE};
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
            ob_type: u64_at(head, OB_TYPE as usize),
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

    /// The decoded code object at `addr`, from the cache when still valid.
    pub fn get(
        &mut self,
        mem: &dyn Memory,
        layout: &Layout,
        types: &mut Types,
        addr: u64,
    ) -> MemResult<Arc<CodeInfo>> {
        let mut head = [0u8; 256];
        let size = (layout.code.size as usize).clamp(24, 256);
        let head = &mut head[..size];
        mem.read(addr, head)?;
        let id = Identity::of(layout, head);
        if let Some((cached_id, info)) = self.map.get(&addr) {
            if *cached_id == id {
                return Ok(info.clone());
            }
        }
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
            .map(|_| u64_at(head, OB_SIZE as usize));
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
