//! The attached processes. Each is keyed by (pid, start time) so that a reused pid
//! never reaches the state of the process that had it before; each `PythonProcess`
//! sits behind its own mutex so reads of different processes run in parallel.
//! An exec keeps both pid and start time, so an entry holds the process's whole
//! [`Identity`] (with the executable's device and inode, and a pidfd where there is one)
//! and is dropped when the pid no longer names that process. The entry also owns its
//! reads: [`Entry::read`] reads, and says whether what was read may be handed out.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use protocol::rpc::{AttachedProcess, CacheSizes};
use pyframe_reader::{CacheStats, Identity, PythonProcess, StackOptions};

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
    /// Which process this is: whether the pid still names it, cheaply.
    pub identity: Identity,
    /// Uid of the client whose request attached it (counted against
    /// `max_attached_per_uid` unless 0).
    pub owner_uid: u32,
    /// When a request last used it, in nanoseconds since [`epoch`]: eviction order.
    last_used: AtomicU64,
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
        identity: Identity,
    ) -> Entry {
        let e = Entry {
            key,
            identity,
            owner_uid: 0,
            last_used: AtomicU64::new(now()),
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

    /// Whether the pid still names this process, running the executable it was
    /// attached to.
    pub fn same_image(&self) -> bool {
        self.identity.is_same()
    }

    /// Reads the stack of the locked `process` (this entry's). Never hands out what may
    /// be another process's data, nor that of an image the process has since exec'd.
    pub fn read(&self, mut process: MutexGuard<'_, PythonProcess>, opts: &StackOptions) -> Read {
        let result = process.stack(opts);
        self.record_stats(process.cache_stats());
        drop(process);
        let same = self.identity.is_same();
        match result {
            Ok(s) if same => {
                self.count_stack();
                Read::Stack(s)
            }
            Ok(_) => Read::Gone,
            // what was learned at attach may no longer hold (an exec of the same binary
            // keeps pid, start time and executable): the caller attaches afresh
            Err(e @ pyframe_reader::Error::Inconsistent { .. }) => Read::Failed { e, stale: true },
            Err(e) => Read::Failed { e, stale: !same },
        }
    }

    fn touch(&self) {
        self.last_used.store(now(), Ordering::Relaxed);
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

/// What [`Entry::read`] gave.
pub enum Read {
    Stack(protocol::ProcessStack),
    /// The read succeeded, but the pid no longer names this process: nothing read may be
    /// handed out, and the entry is stale.
    Gone,
    /// The read failed; `stale`: the entry should be dropped (the process is gone, or its
    /// reads turned inconsistent).
    Failed {
        e: pyframe_reader::Error,
        stale: bool,
    },
}

fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now() -> u64 {
    epoch().elapsed().as_nanos() as u64
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
    /// dropped on the way, and so is this one if the process has exec'd since.
    pub fn get(&self, key: Key) -> Option<Arc<Entry>> {
        let e = {
            let mut m = self.map();
            m.retain(|k, _| k.pid != key.pid || k.start_time == key.start_time);
            m.get(&key).cloned()?
        };
        // (a stat of /proc/PID/exe: not under the map's lock)
        if !e.same_image() {
            self.remove(key);
            return None;
        }
        e.touch();
        Some(e)
    }

    /// Insert unless present (a concurrent attach won); returns the entry in the map
    /// and whether it is `entry`. When `max` entries are attached the least recently
    /// used one is evicted, but never for an owner (non-root) who already has
    /// `max_per_uid`: then `entry` is given back, usable for one request only.
    pub fn insert(
        &self,
        entry: Entry,
        max: usize,
        max_per_uid: usize,
    ) -> Result<(Arc<Entry>, bool), Box<Entry>> {
        let mut m = self.map();
        let key = entry.key;
        m.retain(|k, _| k.pid != key.pid || k.start_time == key.start_time);
        if let Some(e) = m.get(&key) {
            return Ok((e.clone(), false));
        }
        let owner = entry.owner_uid;
        if owner != 0 && m.values().filter(|e| e.owner_uid == owner).count() >= max_per_uid {
            return Err(Box::new(entry));
        }
        if max == 0 {
            return Err(Box::new(entry));
        }
        while m.len() >= max {
            let Some(lru) = m
                .iter()
                .min_by_key(|(_, e)| e.last_used.load(Ordering::Relaxed))
                .map(|(k, _)| *k)
            else {
                break;
            };
            m.remove(&lru);
            tracing::info!(pid = lru.pid, "evicted (max_attached; least recently used)");
        }
        let e = Arc::new(entry);
        m.insert(key, e.clone());
        Ok((e, true))
    }

    /// How many entries requests of `uid` attached.
    pub fn count_owned_by(&self, uid: u32) -> usize {
        self.map().values().filter(|e| e.owner_uid == uid).count()
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
            .find(|(k, e)| k.pid == pid && e.identity.has_handle())
            .map(|(_, e)| e.clone())?;
        if !e.identity.alive() {
            return None;
        }
        // exec keeps the pid and the pidfd: the image tells
        if !e.same_image() {
            self.remove(e.key);
            return None;
        }
        e.touch();
        Some(e)
    }

    /// Drop every entry of `pid` (the process is gone).
    pub fn remove_pid(&self, pid: u32) -> bool {
        let mut m = self.map();
        let before = m.len();
        m.retain(|k, _| k.pid != pid);
        m.len() != before
    }

    /// Whether this very process (pid and start time) is attached.
    pub fn contains_key(&self, key: Key) -> bool {
        self.map().contains_key(&key)
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
