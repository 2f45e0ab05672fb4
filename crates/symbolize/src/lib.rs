//! pystackd's native symbolizer: an address of a live (or recorded) process, or of an
//! ELF file, to its module, function symbol and offset and, with DWARF, its source
//! file, line and inlined frames.
//!
//! - [`elf`]: a memory-mapped ELF file: build-id, `.gnu_debuglink`, PT_LOAD segments;
//! - [`symtab`]: function symbols of `.symtab`/`.dynsym`, one binary search a lookup;
//! - [`lines`]: DWARF lines and inlined frames (`addr2line` on `gimli`);
//! - [`debuginfo`]: where separate debug files are looked for (as gdb and perf do);
//! - [`debuginfod`]: the debuginfod HTTP client and its download cache;
//! - [`cache`]: the per-build-id module cache with an LRU byte budget;
//! - [`maps`]: process mappings and address → file → ELF virtual address;
//! - [`module`]: one binary with its lazily loaded debug file, symbols and DWARF;
//! - [`unwind`]: native stack unwinding with `.eh_frame`/`.debug_frame` CFI and frame pointers.
//!
//! ```no_run
//! use symbolize::{Config, ProcessMaps, Symbolizer};
//! let sym = Symbolizer::new(Config::from_env());
//! let maps = ProcessMaps::for_pid(1234)?;
//! let s = sym.symbolize(&maps, 0x7f3a_1234_5678, true)?;
//! println!("{}", s);
//! # Ok::<(), symbolize::Error>(())
//! ```

pub mod cache;
pub mod debuginfo;
pub mod debuginfod;
pub mod elf;
pub mod error;
pub mod lines;
pub mod maps;
pub mod module;
pub mod symtab;
pub mod unwind;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use cache::CacheStats;
pub use debuginfo::DebugOrigin;
pub use debuginfod::{Debuginfod, DebuginfodConfig};
pub use elf::{BuildId, ElfFile};
pub use error::{DebuginfodError, Error, Result};
pub use lines::SourceFrame;
pub use maps::{ProcessMaps, Region};
pub use module::Module;
pub use symtab::{SymbolHit, SymbolTable};

use cache::{Key, ModuleCache};
use module::Settings;

/// Settings of a [`Symbolizer`].
#[derive(Debug, Clone)]
pub struct Config {
    /// Debug roots searched as gdb's `debug-file-directory` (default `/usr/lib/debug`).
    pub debug_roots: Vec<PathBuf>,
    /// The debuginfod client, `None` to never download.
    pub debuginfod: Option<DebuginfodConfig>,
    /// Bytes the module cache may hold (mapped files, symbol tables, DWARF) before
    /// least recently used modules are dropped.
    pub cache_budget: u64,
    /// Largest inflated size accepted for one compressed DWARF section.
    pub section_limit: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            debug_roots: vec![PathBuf::from("/usr/lib/debug")],
            debuginfod: None,
            cache_budget: 1 << 30,
            section_limit: 1 << 30,
        }
    }
}

impl Config {
    /// The default debug root (or `PYSTACKD_DEBUG_ROOT`, colon-separated, like gdb's
    /// `debug-file-directory`), and debuginfod from `DEBUGINFOD_URLS`.
    pub fn from_env() -> Config {
        let mut c = Config::default();
        if let Some(roots) = std::env::var_os("PYSTACKD_DEBUG_ROOT") {
            c.debug_roots = std::env::split_paths(&roots)
                .filter(|p| !p.as_os_str().is_empty())
                .collect();
        }
        c.debuginfod = DebuginfodConfig::from_env();
        c
    }

    /// Only the given debug roots, no debuginfod (tests, offline use).
    pub fn local(debug_roots: Vec<PathBuf>) -> Config {
        Config {
            debug_roots,
            ..Config::default()
        }
    }
}

/// The symbolizer: a module cache shared by all the processes and files it is asked
/// about. `Sync`: share one per daemon.
pub struct Symbolizer {
    settings: Arc<Settings>,
    cache: Mutex<ModuleCache>,
}

impl fmt::Debug for Symbolizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Symbolizer")
            .field("settings", &self.settings)
            .finish()
    }
}

/// The answer for one address.
#[derive(Debug, Clone)]
pub struct Symbolized {
    pub addr: u64,
    pub module: Arc<Module>,
    /// Offset of the address in the module's file.
    pub file_offset: u64,
    /// The ELF virtual address (as in `nm`, `addr2line -e`, DWARF).
    pub vaddr: u64,
    pub symbol: Option<SymbolHit>,
    /// Source frames, innermost first (only when asked for, and DWARF is there).
    pub frames: Vec<SourceFrame>,
    /// Why `frames` is empty though asked for, when DWARF was there but unusable.
    pub frames_error: Option<String>,
}

impl fmt::Display for Symbolized {
    /// The DTrace `ustack()` form: `module`symbol+0xoff`, or `module+0xoff` (file
    /// virtual address) without a symbol.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.symbol {
            Some(s) if s.offset == 0 => write!(f, "{}`{}", self.module.basename(), s.name),
            Some(s) => write!(f, "{}`{}+{:#x}", self.module.basename(), s.name, s.offset),
            None => write!(f, "{}+{:#x}", self.module.basename(), self.vaddr),
        }
    }
}

impl Symbolizer {
    pub fn new(config: Config) -> Symbolizer {
        Symbolizer {
            settings: Arc::new(Settings {
                debug_roots: config.debug_roots,
                debuginfod: config.debuginfod.map(Debuginfod::new),
                section_limit: config.section_limit,
            }),
            cache: Mutex::new(ModuleCache::new(config.cache_budget)),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, ModuleCache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The module of the file at `open_path` (how this process can open it), whose path
    /// in the target is `target_path` (where debug files are looked for by path).
    /// From the cache when the same file, or another with its build-id, was loaded.
    pub fn module(&self, open_path: &Path, target_path: Option<&Path>) -> Result<Arc<Module>> {
        let id = elf::FileId::of(open_path)?;
        if let Some(m) = self.cache().get_by_file(&id) {
            return Ok(m);
        }
        // opened and checked without the lock: other lookups go on meanwhile
        let file = ElfFile::open(open_path)?;
        let key = match &file.build_id {
            Some(b) => Key::BuildId(b.clone()),
            None => Key::File(file.id),
        };
        let mut cache = self.cache();
        if let Some(m) = cache.get_by_key(&key, id) {
            return Ok(m);
        }
        let m = Arc::new(Module::new(
            file,
            Some(target_path.unwrap_or(open_path).to_path_buf()),
            self.settings.clone(),
        ));
        cache.insert(key, id, m.clone());
        Ok(m)
    }

    /// Symbolize ELF virtual address `vaddr` of the file at `path`.
    pub fn symbolize_file(&self, path: &Path, vaddr: u64, lines: bool) -> Result<Symbolized> {
        let module = self.module(path, None)?;
        let file_offset = module
            .elf()
            .segments
            .iter()
            .find(|s| vaddr >= s.vaddr && vaddr - s.vaddr < s.memsz)
            .map(|s| vaddr - s.vaddr + s.offset)
            .unwrap_or(vaddr);
        Ok(finish(module, vaddr, file_offset, vaddr, lines))
    }

    /// The module mapped at region `idx` of `maps` (resolved once per `maps`).
    pub fn region_module(&self, maps: &ProcessMaps, idx: usize) -> Option<Arc<Module>> {
        let region = maps.regions().get(idx)?;
        maps.modules[idx]
            .get_or_init(|| {
                if !region.is_file() {
                    return None;
                }
                let target = Path::new(region.path.as_deref()?);
                let open = region.open_path.as_deref().unwrap_or(target);
                self.module(open, Some(target))
                    .or_else(|_| self.module(target, Some(target)))
                    .ok()
            })
            .clone()
    }

    /// Symbolize address `addr` of the process whose mappings are `maps`; with `lines`,
    /// also its source frames from DWARF.
    pub fn symbolize(&self, maps: &ProcessMaps, addr: u64, lines: bool) -> Result<Symbolized> {
        let (idx, region) = maps.region(addr).ok_or(Error::NoMapping { addr })?;
        if !region.is_file() {
            return Err(Error::AnonymousMapping { addr });
        }
        let module = match self.region_module(maps, idx) {
            Some(m) => m,
            None => {
                // the reason, uncached (rare: an unreadable or non-ELF mapped file)
                let target = Path::new(region.path.as_deref().unwrap_or_default());
                let open = region.open_path.as_deref().unwrap_or(target);
                return Err(self
                    .module(open, Some(target))
                    .err()
                    .unwrap_or(Error::NoMapping { addr }));
            }
        };
        let file_offset = addr - region.start + region.offset;
        let vaddr = module
            .elf()
            .vaddr_of_offset(file_offset, region.exec)
            .ok_or_else(|| Error::NotInSegment {
                addr,
                file_offset,
                path: module.name().to_string(),
            })?;
        Ok(finish(module, addr, file_offset, vaddr, lines))
    }

    /// Symbolize many addresses of one process (results in the same order).
    pub fn symbolize_all(
        &self,
        maps: &ProcessMaps,
        addrs: &[u64],
        lines: bool,
    ) -> Vec<Result<Symbolized>> {
        addrs
            .iter()
            .map(|&a| self.symbolize(maps, a, lines))
            .collect()
    }

    pub fn cache_stats(&self) -> CacheStats {
        self.cache().stats()
    }

    /// Drop every cached module (callers' `Arc`s stay valid).
    pub fn clear_cache(&self) {
        self.cache().clear()
    }
}

fn finish(module: Arc<Module>, addr: u64, file_offset: u64, vaddr: u64, lines: bool) -> Symbolized {
    let symbol = module.symbol(vaddr);
    let (frames, frames_error) = if lines {
        match module.frames(vaddr) {
            Ok(mut f) => {
                // DWARF with lines but no subprogram for the code (as for some
                // assembler or clinic code): name it by its symbol, as binutils does
                if let (Some(last), Some(sym)) = (f.last_mut(), &symbol) {
                    if last.function.is_none() {
                        last.function = Some(sym.name.to_string());
                    }
                }
                (f, None)
            }
            Err(e) => (Vec::new(), Some(e.to_string())),
        }
    } else {
        (Vec::new(), None)
    };
    Symbolized {
        addr,
        module,
        file_offset,
        vaddr,
        symbol,
        frames,
        frames_error,
    }
}

#[allow(dead_code)]
fn assert_thread_safe() {
    fn is<T: Send + Sync>() {}
    is::<Symbolizer>();
    is::<Module>();
    is::<Symbolized>();
    is::<ProcessMaps>();
}
