//! Naming the native frames a tracer left unnamed (`??`, `[unknown]`, bare addresses), for
//! annotate: the process's mappings and each object's symbols and debug info (build-id
//! files, `.gnu_debuglink`, debuginfod) through the `symbolize` crate. This is what lets the
//! eval loop of Debian's 3.14/3.15, moved into a local `.cold` symbol only the debug info
//! names, be found and annotated.

use std::collections::HashMap;

use protocol::ThreadStack;
use stacktext::{Moment, NativeSymbol, SourceError, StackSource};
use symbolize::{Config, ProcessMaps, Symbolizer};

/// Processes whose mappings are kept at once.
const MAX_PROCESSES: usize = 64;

/// A `StackSource` that also names native frames.
pub struct Naming<S> {
    inner: S,
    symbolizer: Symbolizer,
    /// Mappings per pid, read once per run (`None`: unreadable, asked once).
    maps: HashMap<u32, Option<ProcessMaps>>,
    /// Answers per (pid, address): a stack repeats its addresses thousands of times.
    names: HashMap<(u32, u64), Option<NativeSymbol>>,
}

impl<S: StackSource> Naming<S> {
    pub fn new(inner: S) -> Self {
        Naming {
            inner,
            // debug roots from PYSTACKD_DEBUG_ROOT (else /usr/lib/debug), DEBUGINFOD_URLS
            symbolizer: Symbolizer::new(Config::from_env()),
            maps: HashMap::new(),
            names: HashMap::new(),
        }
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

    fn native_symbol(&mut self, pid: u32, addr: u64) -> Option<NativeSymbol> {
        if let Some(n) = self.names.get(&(pid, addr)) {
            return n.clone();
        }
        if !self.maps.contains_key(&pid) && self.maps.len() >= MAX_PROCESSES {
            self.maps.clear();
            self.names.clear();
        }
        let maps = self
            .maps
            .entry(pid)
            .or_insert_with(|| ProcessMaps::for_pid(pid).ok())
            .as_ref()?;
        let name = self
            .symbolizer
            .symbolize(maps, addr, false)
            .ok()
            .and_then(|s| {
                let hit = s.symbol?;
                Some(NativeSymbol {
                    module: s.module.basename().to_string(),
                    symbol: hit.name.to_string(),
                    offset: hit.offset,
                })
            });
        if self.names.len() >= 1 << 16 {
            self.names.clear();
        }
        self.names.insert((pid, addr), name.clone());
        name
    }
}
