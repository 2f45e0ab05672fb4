//! The module cache: one [`Module`] per build-id (files without one: per device,
//! inode, size and mtime), so one libpython mapped by a hundred processes is mapped
//! and parsed once; least recently used modules are dropped when the modules' bytes
//! exceed a budget, so a long-running daemon does not grow without bound.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::elf::{BuildId, FileId};
use crate::module::Module;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    BuildId(BuildId),
    File(FileId),
}

struct Entry {
    module: Arc<Module>,
    last_used: u64,
}

/// Counters of the cache, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub modules: usize,
    pub bytes: u64,
    pub budget: u64,
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
}

pub(crate) struct ModuleCache {
    by_file: FxHashMap<FileId, Key>,
    entries: FxHashMap<Key, Entry>,
    tick: u64,
    budget: u64,
    hits: u64,
    misses: u64,
    evictions: u64,
}

impl ModuleCache {
    pub fn new(budget: u64) -> ModuleCache {
        ModuleCache {
            by_file: FxHashMap::default(),
            entries: FxHashMap::default(),
            tick: 0,
            budget,
            hits: 0,
            misses: 0,
            evictions: 0,
        }
    }

    fn touch(&mut self, key: &Key) -> Option<Arc<Module>> {
        self.tick += 1;
        let tick = self.tick;
        let e = self.entries.get_mut(key)?;
        e.last_used = tick;
        Some(e.module.clone())
    }

    pub fn get_by_file(&mut self, id: &FileId) -> Option<Arc<Module>> {
        let key = self.by_file.get(id)?.clone();
        let m = self.touch(&key);
        if m.is_some() {
            self.hits += 1;
            // modules grow as they are parsed lazily: keep within budget
            self.evict();
        }
        m
    }

    /// Another file with the same identity (same build-id) already loaded: reuse it.
    pub fn get_by_key(&mut self, key: &Key, file: FileId) -> Option<Arc<Module>> {
        let m = self.touch(key)?;
        self.hits += 1;
        self.by_file.insert(file, key.clone());
        Some(m)
    }

    pub fn insert(&mut self, key: Key, file: FileId, module: Arc<Module>) {
        self.misses += 1;
        self.tick += 1;
        self.by_file.insert(file, key.clone());
        self.entries.insert(
            key,
            Entry {
                module,
                last_used: self.tick,
            },
        );
        self.evict();
    }

    pub fn bytes(&self) -> u64 {
        self.entries.values().map(|e| e.module.approx_bytes()).sum()
    }

    /// Drop least recently used modules until within budget; the most recently used
    /// one stays even when it alone is over (callers hold it anyway).
    pub fn evict(&mut self) {
        let mut total = self.bytes();
        while total > self.budget && self.entries.len() > 1 {
            let Some(key) = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(e) = self.entries.remove(&key) {
                total = total.saturating_sub(e.module.approx_bytes());
                self.evictions += 1;
            }
            self.by_file.retain(|_, k| *k != key);
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.by_file.clear();
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            modules: self.entries.len(),
            bytes: self.bytes(),
            budget: self.budget,
            hits: self.hits,
            misses: self.misses,
            evictions: self.evictions,
        }
    }
}
