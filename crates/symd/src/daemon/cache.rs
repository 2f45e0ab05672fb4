//! The attached processes. Each is keyed by (pid, start time) so that a reused pid
//! never reaches the state of the process that had it before; each `PythonProcess`
//! sits behind its own mutex so reads of different processes run in parallel.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use protocol::rpc::{AttachedProcess, CacheSizes};
use pyframe_reader::{CacheStats, PythonProcess};

use crate::platform::ProcessHandle;

/// Identity of a process across pid reuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    pub pid: u32,
    pub start_time: u64,
}

pub struct Entry {
    pub key: Key,
    pub process: Mutex<PythonProcess>,
    pub python_version: String,
    pub python_binary: String,
    pub executable: Option<String>,
    /// Tells cheaply whether the process exited (`None` where the OS has no such
    /// handle: compare start times instead).
    pub handle: Option<ProcessHandle>,
    attached_at: Instant,
    stacks_read: AtomicU64,
    // Last known cache sizes, so that `status` and `list` never wait for a read.
    code_objects: AtomicUsize,
    cache_bytes: AtomicUsize,
}

impl Entry {
    pub fn new(
        key: Key,
        process: PythonProcess,
        executable: Option<String>,
        handle: Option<ProcessHandle>,
    ) -> Entry {
        let e = Entry {
            key,
            handle,
            python_version: process.version().to_string(),
            python_binary: process.binary_path().to_string(),
            executable,
            attached_at: Instant::now(),
            stacks_read: AtomicU64::new(0),
            code_objects: AtomicUsize::new(0),
            cache_bytes: AtomicUsize::new(0),
            process: Mutex::new(process),
        };
        let stats = e.lock().map(|p| p.cache_stats()).unwrap_or_default();
        e.record_stats(stats);
        e
    }

    /// The process, or `None` when a reader panic poisoned it (the caller drops it).
    pub fn lock(&self) -> Option<MutexGuard<'_, PythonProcess>> {
        self.process.lock().ok()
    }

    pub fn record_stats(&self, s: CacheStats) {
        self.code_objects.store(s.code_objects, Ordering::Relaxed);
        self.cache_bytes.store(s.bytes, Ordering::Relaxed);
    }

    pub fn count_stack(&self) {
        self.stacks_read.fetch_add(1, Ordering::Relaxed);
    }

    pub fn sizes(&self) -> CacheSizes {
        CacheSizes {
            code_objects: self.code_objects.load(Ordering::Relaxed),
            bytes: self.cache_bytes.load(Ordering::Relaxed),
        }
    }

    pub fn describe(&self) -> AttachedProcess {
        AttachedProcess {
            pid: self.key.pid,
            start_time: self.key.start_time,
            python_version: self.python_version.clone(),
            python_binary: self.python_binary.clone(),
            executable: self.executable.clone(),
            attached_seconds: self.attached_at.elapsed().as_secs(),
            stacks_read: self.stacks_read.load(Ordering::Relaxed),
            cache: self.sizes(),
        }
    }
}

#[derive(Default)]
pub struct Cache {
    map: Mutex<HashMap<Key, Arc<Entry>>>,
}

impl Cache {
    fn map(&self) -> MutexGuard<'_, HashMap<Key, Arc<Entry>>> {
        // The map is only touched by short code that cannot panic halfway; recover.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The entry of exactly this process; entries of earlier holders of the pid are
    /// dropped on the way.
    pub fn get(&self, key: Key) -> Option<Arc<Entry>> {
        let mut m = self.map();
        m.retain(|k, _| k.pid != key.pid || k.start_time == key.start_time);
        m.get(&key).cloned()
    }

    /// Insert unless present (a concurrent attach won); returns the entry in the map
    /// and whether it is `entry`. Gives `entry` back when the map is full.
    pub fn insert(&self, entry: Entry, max: usize) -> Result<(Arc<Entry>, bool), Box<Entry>> {
        let mut m = self.map();
        let key = entry.key;
        m.retain(|k, _| k.pid != key.pid || k.start_time == key.start_time);
        if let Some(e) = m.get(&key) {
            return Ok((e.clone(), false));
        }
        if m.len() >= max {
            return Err(Box::new(entry));
        }
        let e = Arc::new(entry);
        m.insert(key, e.clone());
        Ok((e, true))
    }

    /// Whether some process with this pid is attached (maybe an earlier holder).
    pub fn contains_pid(&self, pid: u32) -> bool {
        self.map().keys().any(|k| k.pid == pid)
    }

    /// An attached process with this pid that holds a handle and has not exited:
    /// then it is the process that holds the pid now.
    pub fn live_by_handle(&self, pid: u32) -> Option<Arc<Entry>> {
        let e = self
            .map()
            .iter()
            .find(|(k, e)| k.pid == pid && e.handle.is_some())
            .map(|(_, e)| e.clone())?;
        (!e.handle.as_ref()?.exited()).then_some(e)
    }

    /// Drop every entry of `pid` (the process is gone).
    pub fn remove_pid(&self, pid: u32) -> bool {
        let mut m = self.map();
        let before = m.len();
        m.retain(|k, _| k.pid != pid);
        m.len() != before
    }

    pub fn remove(&self, key: Key) -> bool {
        self.map().remove(&key).is_some()
    }

    pub fn entries(&self) -> Vec<Arc<Entry>> {
        let mut v: Vec<_> = self.map().values().cloned().collect();
        v.sort_by_key(|e| e.key.pid);
        v
    }

    pub fn len(&self) -> usize {
        self.map().len()
    }

    pub fn total_sizes(&self) -> CacheSizes {
        self.entries().iter().fold(CacheSizes::default(), |acc, e| {
            let s = e.sizes();
            CacheSizes {
                code_objects: acc.code_objects + s.code_objects,
                bytes: acc.bytes + s.bytes,
            }
        })
    }
}
