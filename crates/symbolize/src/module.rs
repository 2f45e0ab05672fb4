//! One loaded binary or shared library: its mapped ELF file, the debug file found for
//! it, and its symbol table and DWARF, each parsed the first time it is needed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::debuginfo::{find_debug_file, DebugOrigin, DebugSearch};
use crate::debuginfod::Debuginfod;
use crate::elf::{BuildId, ElfFile};
use crate::error::{Error, Result};
use crate::lines::{Lines, SourceFrame};
use crate::symtab::{SymbolHit, SymbolTable};
use crate::unwind::UnwindTables;

/// What every module of one symbolizer shares.
#[derive(Debug)]
pub(crate) struct Settings {
    pub debug_roots: Vec<PathBuf>,
    pub debuginfod: Option<Debuginfod>,
    pub section_limit: u64,
}

pub struct Module {
    binary: ElfFile,
    target_path: Option<PathBuf>,
    name: Arc<str>,
    settings: Arc<Settings>,
    debug: OnceLock<DebugSearch>,
    symbols: OnceLock<(SymbolTable, Option<Error>)>,
    lines: OnceLock<Result<Option<Mutex<Lines>>, Error>>,
    unwind: OnceLock<UnwindTables>,
    bytes: AtomicU64,
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Module")
            .field("name", &self.name)
            .field("binary", &self.binary)
            .finish()
    }
}

impl Module {
    pub(crate) fn new(
        binary: ElfFile,
        target_path: Option<PathBuf>,
        settings: Arc<Settings>,
    ) -> Module {
        let name: Arc<str> = Arc::from(
            target_path
                .as_deref()
                .unwrap_or(&binary.path)
                .to_string_lossy()
                .as_ref(),
        );
        let bytes = AtomicU64::new(binary.mapped_len());
        Module {
            binary,
            target_path,
            name,
            settings,
            debug: OnceLock::new(),
            symbols: OnceLock::new(),
            lines: OnceLock::new(),
            unwind: OnceLock::new(),
            bytes,
        }
    }

    /// The module's path as the target sees it (or as opened).
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }
    /// The last component of [`Module::name`], as DTrace and perf print modules.
    pub fn basename(&self) -> &str {
        self.name.rsplit('/').next().unwrap_or(&self.name)
    }
    pub fn build_id(&self) -> Option<&BuildId> {
        self.binary.build_id.as_ref()
    }
    pub fn elf(&self) -> &ElfFile {
        &self.binary
    }

    /// The debug file search (run once, on first use).
    pub fn debug_search(&self) -> &DebugSearch {
        self.debug.get_or_init(|| {
            let s = find_debug_file(
                &self.binary,
                self.target_path.as_deref(),
                &self.settings.debug_roots,
                self.settings.debuginfod.as_ref(),
            );
            if let Some((f, _)) = &s.found {
                self.bytes.fetch_add(f.mapped_len(), Ordering::Relaxed);
            }
            s
        })
    }

    /// The separate debug file in use, and how it was found.
    pub fn debug_file(&self) -> Option<(&Path, DebugOrigin)> {
        self.debug_search()
            .found
            .as_ref()
            .map(|(f, o)| (f.path.as_path(), *o))
    }

    /// Function symbols of the binary and of its debug file (loaded on first use). A
    /// debug file whose symbol table cannot be read is skipped (see
    /// [`Module::symbols_error`]) and the binary's own symbols are used.
    pub fn symbols(&self) -> &SymbolTable {
        &self.symbols_entry().0
    }

    pub fn symbols_error(&self) -> Option<&Error> {
        self.symbols_entry().1.as_ref()
    }

    fn symbols_entry(&self) -> &(SymbolTable, Option<Error>) {
        self.symbols.get_or_init(|| {
            let debug = self.debug_search().found.as_ref().map(|(f, _)| f);
            let mut files: Vec<&ElfFile> = Vec::new();
            if let Some(d) = debug {
                files.push(d);
            }
            files.push(&self.binary);
            let (table, err) = match SymbolTable::build(&files) {
                Ok(t) => (t, None),
                Err(e) => (
                    SymbolTable::build(&[&self.binary]).unwrap_or_default(),
                    Some(e),
                ),
            };
            self.bytes.fetch_add(table.heap_bytes(), Ordering::Relaxed);
            (table, err)
        })
    }

    /// The function symbol containing ELF virtual address `vaddr`.
    pub fn symbol(&self, vaddr: u64) -> Option<SymbolHit> {
        self.symbols().lookup(vaddr)
    }

    fn lines(&self) -> Result<Option<&Mutex<Lines>>, &Error> {
        self.lines
            .get_or_init(|| {
                let debug = self.debug_search().found.as_ref().map(|(f, _)| f);
                let src = match debug {
                    Some(d) if d.has_debug_info => d,
                    _ if self.binary.has_debug_info => &self.binary,
                    _ => return Ok(None),
                };
                let lines = Lines::load(src, self.settings.section_limit)?;
                if let Some(l) = &lines {
                    // the parsed units are not measured: count the DWARF once more
                    self.bytes
                        .fetch_add(l.heap_bytes() + dwarf_size_hint(src), Ordering::Relaxed);
                }
                Ok(lines.map(Mutex::new))
            })
            .as_ref()
            .map(|o| o.as_ref())
    }

    /// The module's call frame information (`.eh_frame`, and `.debug_frame` of the
    /// binary or its debug file), indexed on first use.
    pub fn unwind_tables(&self) -> &UnwindTables {
        self.unwind.get_or_init(|| {
            let debug = self.debug_search().found.as_ref().map(|(f, _)| f);
            let t = UnwindTables::load(&self.binary, debug, self.settings.section_limit);
            self.bytes.fetch_add(t.heap_bytes(), Ordering::Relaxed);
            t
        })
    }

    /// Whether DWARF (lines, inlined frames) is available.
    pub fn has_lines(&self) -> bool {
        matches!(self.lines(), Ok(Some(_)))
    }

    /// The source frames of ELF virtual address `vaddr` (innermost first); empty when
    /// the module has no DWARF or none covers the address.
    pub fn frames(&self, vaddr: u64) -> Result<Vec<SourceFrame>> {
        match self.lines() {
            Ok(Some(l)) => {
                let guard = l.lock().unwrap_or_else(|p| p.into_inner());
                guard.frames(vaddr)
            }
            Ok(None) => Ok(Vec::new()),
            Err(e) => Err(Error::BadDwarf {
                path: self.binary.path.clone(),
                reason: e.to_string(),
            }),
        }
    }

    /// Bytes this module holds now (mapped files, symbol table, DWARF), for the cache.
    pub fn approx_bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

fn dwarf_size_hint(f: &ElfFile) -> u64 {
    // the size of the mapped file bounds what addr2line's lazily parsed tables reach
    // in practice (they are a fraction of .debug_info/.debug_line)
    f.mapped_len() / 2
}
