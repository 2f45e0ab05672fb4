//! Naming the native frames a tracer left unnamed (`??`, `[unknown]`, bare addresses), for
//! annotate: the process's mappings and each object's symbols and debug info (build-id
//! files, `.gnu_debuglink`, debuginfod) through the `symbolize` crate. This is what lets the
//! eval loop of Debian's 3.14/3.15, moved into a local `.cold` symbol only the debug info
//! names, be found and annotated.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use protocol::ThreadStack;
use stacktext::{Moment, NativeSymbol, SourceError, StackSource};
use symbolize::{Config, ProcessMaps, Symbolizer};

/// The address, in the process whose mappings are `maps`, of file offset `offset` of the
/// shared object named `module` (a file name, as tracers print `libfoo.so+0x1a2b`): exactly
/// one mapped path has that name (else which one is meant is not known), an executable
/// mapping of it holds the offset, and the object's ELF virtual address at that offset is
/// the offset itself, so that `+0x1a2b` means the same whether the tracer printed a file
/// offset or a virtual address (true of the code of most shared objects; where it is not,
/// nothing is named rather than a guess).
pub fn module_address(
    symbolizer: &Symbolizer,
    maps: &ProcessMaps,
    module: &str,
    offset: u64,
) -> Option<u64> {
    let mut path: Option<&str> = None;
    let mut found = None;
    for (idx, r) in maps.regions().iter().enumerate() {
        let Some(p) = r.path.as_deref() else {
            continue;
        };
        if !r.is_file() || p.rsplit('/').next() != Some(module) {
            continue;
        }
        match path {
            Some(q) if q != p => return None,
            _ => path = Some(p),
        }
        if r.exec && r.offset <= offset && offset - r.offset < r.end - r.start {
            found = Some((idx, r.start + (offset - r.offset)));
        }
    }
    let (idx, addr) = found?;
    let m = symbolizer.region_module(maps, idx)?;
    (m.elf().vaddr_of_offset(offset, true) == Some(offset)).then_some(addr)
}

/// Processes whose mappings are kept at once.
const MAX_PROCESSES: usize = 64;

/// A `StackSource` that also names native frames.
pub struct Naming<S> {
    inner: S,
    names: Names,
}

impl<S: StackSource> Naming<S> {
    pub fn new(inner: S) -> Self {
        Naming {
            inner,
            names: Names::new(),
        }
    }
}

/// The name of a native address of a process: the mapped object's path there, and the
/// symbol holding the address with the offset into it, when the object names one.
#[derive(Debug, Clone)]
pub struct Named {
    pub module: String,
    pub symbol: Option<(String, u64)>,
}

/// Names native addresses of live processes (used by annotate, and by trace: bpftrace
/// is told not to name user frames itself).
pub struct Names {
    symbolizer: Symbolizer,
    /// Mappings per pid and when they were read (`None`: unreadable).
    maps: HashMap<u32, (Option<ProcessMaps>, Instant)>,
    /// Answers per (pid, address): a stack repeats its addresses thousands of times.
    names: HashMap<(u32, u64), Option<Named>>,
}

/// An address in no mapping (a library loaded since) re-reads the mappings, at most this often.
const MAPS_REREAD: Duration = Duration::from_secs(1);

impl Default for Names {
    fn default() -> Self {
        Self::new()
    }
}

impl Names {
    pub fn new() -> Names {
        Names {
            // debug roots from PYSTACKD_DEBUG_ROOT (else /usr/lib/debug), DEBUGINFOD_URLS
            symbolizer: Symbolizer::new(Config::from_env()),
            maps: HashMap::new(),
            names: HashMap::new(),
        }
    }

    /// The source frames (DWARF) of `addr` of live process `pid` (after a [`Names::name`]
    /// for it, which read its mappings).
    pub fn source(&mut self, pid: u32, addr: u64) -> Vec<protocol::NativeSource> {
        let Some((Some(maps), _)) = self.maps.get(&pid) else {
            return Vec::new();
        };
        match self.symbolizer.symbolize(maps, addr, true) {
            Ok(s) => s
                .frames
                .into_iter()
                .map(crate::stack_native::native_source)
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Whether the mappings of `pid` could be read (after a [`Names::name`] for it).
    pub fn has_maps(&self, pid: u32) -> bool {
        self.maps.get(&pid).is_some_and(|(m, _)| m.is_some())
    }

    /// The name at offset `offset` of shared object `module` (a file name) of live process
    /// `pid` (see [`module_address`]).
    pub fn name_in_module(&mut self, pid: u32, module: &str, offset: u64) -> Option<Named> {
        self.load(pid);
        let maps = self.maps.get(&pid)?.0.as_ref()?;
        let addr = module_address(&self.symbolizer, maps, module, offset)?;
        self.name(pid, addr)
    }

    /// Read the mappings of `pid` unless they were.
    fn load(&mut self, pid: u32) {
        if !self.maps.contains_key(&pid) && self.maps.len() >= MAX_PROCESSES {
            self.maps.clear();
            self.names.clear();
        }
        // no mappings at all: exited, not reaped yet (a zombie), as good as unreadable
        self.maps.entry(pid).or_insert_with(|| {
            let maps = ProcessMaps::for_pid(pid).ok();
            (maps.filter(|m| !m.regions().is_empty()), Instant::now())
        });
    }

    pub fn name(&mut self, pid: u32, addr: u64) -> Option<Named> {
        if let Some(n) = self.names.get(&(pid, addr)) {
            return n.clone();
        }
        self.load(pid);
        let entry = self.maps.get_mut(&pid)?;
        let unmapped = entry.0.as_ref().is_some_and(|m| m.region(addr).is_none());
        if unmapped && entry.1.elapsed() >= MAPS_REREAD {
            if let Ok(m) = ProcessMaps::for_pid(pid) {
                *entry = ((!m.regions().is_empty()).then_some(m), Instant::now());
            }
        }
        let maps = entry.0.as_ref()?;
        let name = match self.symbolizer.symbolize(maps, addr, false) {
            Ok(s) => Some(Named {
                module: maps
                    .region(addr)
                    .and_then(|(_, r)| r.path.clone())
                    .unwrap_or_else(|| s.module.name().to_string()),
                symbol: s.symbol.map(|h| (h.name.to_string(), h.offset)),
            }),
            Err(_) => None,
        };
        if self.names.len() >= 1 << 16 {
            self.names.clear();
        }
        self.names.insert((pid, addr), name.clone());
        name
    }
}

impl<S: StackSource> StackSource for Naming<S> {
    fn thread_stacks(&mut self, pid: u32) -> Result<Vec<ThreadStack>, SourceError> {
        self.inner.thread_stacks(pid)
    }
    fn resume(&mut self, pid: u32) -> Result<(), SourceError> {
        self.inner.resume(pid)
    }
    fn pid_of_tid(&mut self, tid: u64) -> Option<u32> {
        self.inner.pid_of_tid(tid)
    }
    fn captured(
        &mut self,
        pid: u32,
        tid: Option<u64>,
        tokens: &[String],
    ) -> Result<ThreadStack, SourceError> {
        self.inner.captured(pid, tid, tokens)
    }
    fn moment(&mut self, pid: u32, tid: Option<u64>) -> Moment {
        self.inner.moment(pid, tid)
    }

    fn native_source(&mut self, pid: u32, addr: u64) -> Vec<protocol::NativeSource> {
        if self.names.name(pid, addr).is_none() && !self.names.has_maps(pid) {
            return self.inner.native_source(pid, addr);
        }
        self.names.source(pid, addr)
    }

    fn native_in_module(&mut self, pid: u32, module: &str, offset: u64) -> Option<NativeSymbol> {
        let named = self.names.name_in_module(pid, module, offset);
        if named.is_none() && !self.names.has_maps(pid) {
            return self.inner.native_in_module(pid, module, offset);
        }
        native_symbol_of(named?)
    }

    fn native_symbol(&mut self, pid: u32, addr: u64) -> Option<NativeSymbol> {
        let named = self.names.name(pid, addr);
        if named.is_none() && !self.names.has_maps(pid) {
            // not readable here (exited, or not ours): the inner source may know more
            // (the daemon: its record of an exited process)
            return self.inner.native_symbol(pid, addr);
        }
        native_symbol_of(named?)
    }
}

/// A live name as annotate prints it: the object's file name, symbol and offset.
fn native_symbol_of(named: Named) -> Option<NativeSymbol> {
    let (symbol, offset) = named.symbol?;
    Some(NativeSymbol {
        module: named
            .module
            .rsplit('/')
            .next()
            .unwrap_or(&named.module)
            .to_string(),
        symbol,
        offset,
        posthumous: false,
    })
}
