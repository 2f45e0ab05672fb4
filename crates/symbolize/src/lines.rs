//! DWARF line tables and inlined frames, through `addr2line` on `gimli`, parsed lazily
//! (a compilation unit's lines and inline tree are read the first time an address in
//! it is asked for).

use std::path::PathBuf;

use crate::elf::{Bytes, ElfFile};
use crate::error::{Error, Result};

type Reader = gimli::EndianReader<gimli::RunTimeEndian, Bytes>;

/// One source-level frame of an address: the innermost (inlined) first, the function
/// that holds the machine code last, as `addr2line -f -i` prints them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFrame {
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub column: Option<u32>,
    /// Inlined into the next frame (every frame but the last).
    pub inlined: bool,
}

/// The DWARF of one module.
pub struct Lines {
    ctx: addr2line::Context<Reader>,
    path: PathBuf,
    heap_bytes: u64,
}

impl std::fmt::Debug for Lines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lines({})", self.path.display())
    }
}

impl Lines {
    /// Load the DWARF sections of `file`. `Ok(None)` when it has no `.debug_info`.
    /// Compressed sections are inflated up to `section_limit` bytes each.
    pub fn load(file: &ElfFile, section_limit: u64) -> Result<Option<Lines>> {
        let endian = {
            let obj = file.object()?;
            use object::Object;
            if obj.is_little_endian() {
                gimli::RunTimeEndian::Little
            } else {
                gimli::RunTimeEndian::Big
            }
        };
        let mut heap_bytes = 0u64;
        let mut missing_info = false;
        let empty = Bytes::empty();
        let dwarf = gimli::Dwarf::load(|id: gimli::SectionId| -> Result<Reader> {
            let data = match file.section(id.name(), section_limit)? {
                Some(b) => b,
                None => {
                    if id == gimli::SectionId::DebugInfo {
                        missing_info = true;
                    }
                    empty.clone()
                }
            };
            if data.is_heap() {
                heap_bytes += data.len() as u64;
            }
            Ok(gimli::EndianReader::new(data, endian))
        })?;
        if missing_info {
            return Ok(None);
        }
        let ctx = addr2line::Context::from_dwarf(dwarf).map_err(|e| Error::BadDwarf {
            path: file.path.clone(),
            reason: e.to_string(),
        })?;
        Ok(Some(Lines {
            ctx,
            path: file.path.clone(),
            heap_bytes,
        }))
    }

    /// Heap bytes known to be held (inflated sections); the lazily parsed units are
    /// not counted exactly.
    pub fn heap_bytes(&self) -> u64 {
        self.heap_bytes
    }

    /// The source frames of ELF virtual address `addr`, innermost first.
    pub fn frames(&self, addr: u64) -> Result<Vec<SourceFrame>> {
        let bad = |e: gimli::Error| Error::BadDwarf {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        // addr2line 0.24 computes `probe + 1`: the last address is no code anyway
        if addr == u64::MAX {
            return Ok(Vec::new());
        }
        let mut iter = self.ctx.find_frames(addr).skip_all_loads().map_err(bad)?;
        let mut out = Vec::new();
        // a hostile inline tree could be deep: bound it
        while let Some(frame) = iter.next().map_err(bad)? {
            if out.len() >= 256 {
                break;
            }
            let function = frame
                .function
                .as_ref()
                .and_then(|f| f.raw_name().ok().map(|n| n.into_owned()));
            let (file, line, column) = match &frame.location {
                Some(loc) => (loc.file.map(str::to_string), loc.line, loc.column),
                None => (None, None, None),
            };
            out.push(SourceFrame {
                function,
                file,
                line,
                column,
                inlined: true,
            });
        }
        if let Some(last) = out.last_mut() {
            last.inlined = false;
        }
        Ok(out)
    }
}
