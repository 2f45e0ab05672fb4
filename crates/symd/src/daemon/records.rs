//! Records of the executable mappings of the processes the daemon attached, kept for a
//! while after they exit: "posthumous" symbolization. A tracer that prints its stacks at
//! the end (DTrace aggregations, perf script after perf record) or a short-lived process
//! leaves bare addresses of a process that is gone by the time they are annotated; the
//! record still says which file was mapped where.
//!
//! Each region keeps the module that was mapped there, opened while the process ran
//! (through `/proc/PID/map_files`): the name given later is the very file's, even if the
//! file was replaced or deleted since. A record is used only by a client the daemon
//! allowed to read that process while it lived (the same credentials; at Yama scope 1
//! the same client process too), never by anyone else, and not after
//! `posthumous_secs` past the exit the daemon noticed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use symbolize::{ProcessMaps, Region, Symbolizer};

use super::cache::Key;
use super::peer::PeerCredentials;
use crate::platform::{self, ForeignNs};

/// Clients allowed per record at most (each a uid/gid pair: a process is read by a few).
const MAX_GRANTS: usize = 64;

/// Who was allowed to read a process: the credentials the access decision was made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Grant {
    uid: u32,
    gid: u32,
    foreign_userns: bool,
    userns: Option<ForeignNs>,
    /// At Yama scope 1 the decision also depended on the client being an ancestor of the
    /// target: then only that client process.
    pid: Option<Option<u32>>,
}

impl Grant {
    fn of(peer: &PeerCredentials, scope: u32) -> Grant {
        Grant {
            uid: peer.uid,
            gid: peer.gid,
            foreign_userns: peer.foreign_userns,
            userns: peer.userns,
            pid: (scope == 1).then_some(peer.pid),
        }
    }

    fn admits(&self, peer: &PeerCredentials) -> bool {
        self.uid == peer.uid
            && self.gid == peer.gid
            && self.foreign_userns == peer.foreign_userns
            && self.userns == peer.userns
            && self.pid.is_none_or(|p| p.is_some() && p == peer.pid)
    }
}

/// What a region was when read: a re-read that finds the same list keeps the record.
type Shape = Vec<(u64, u64, u64, Option<String>)>;

struct Inner {
    maps: Arc<ProcessMaps>,
    shape: Shape,
    grants: Vec<Grant>,
    /// When the daemon noticed the exit.
    exited: Option<Instant>,
    /// Last refresh (or creation): eviction order among live records.
    touched: Instant,
}

pub struct Record {
    pub key: Key,
    inner: Mutex<Inner>,
}

impl Record {
    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn maps(&self) -> Arc<ProcessMaps> {
        self.inner().maps.clone()
    }

    pub fn admits(&self, peer: &PeerCredentials) -> bool {
        peer.privileged || self.inner().grants.iter().any(|g| g.admits(peer))
    }

    pub fn exited_at(&self) -> Option<Instant> {
        self.inner().exited
    }
}

/// The executable file mappings of live process `pid`, each with its module; `None` when
/// the mappings cannot be read (the process is gone).
fn read(symbolizer: &Symbolizer, pid: u32) -> Option<(ProcessMaps, Shape)> {
    let live = ProcessMaps::for_pid(pid).ok()?;
    let mut kept = Vec::new();
    for (idx, r) in live.regions().iter().enumerate() {
        if !r.exec || !r.is_file() {
            continue;
        }
        // a file that cannot be opened or is not ELF proves nothing: left out
        if let Some(m) = symbolizer.region_module(&live, idx) {
            let region = Region {
                open_path: None,
                ..r.clone()
            };
            kept.push((region, m));
        }
    }
    let shape = kept
        .iter()
        .map(|(r, _)| (r.start, r.end, r.offset, r.path.clone()))
        .collect();
    Some((ProcessMaps::recorded(kept), shape))
}

fn shape_of(pid: u32) -> Option<Shape> {
    let live = ProcessMaps::for_pid(pid).ok()?;
    Some(
        live.regions()
            .iter()
            .filter(|r| r.exec && r.is_file())
            .map(|r| (r.start, r.end, r.offset, r.path.clone()))
            .collect(),
    )
}

#[derive(Default)]
pub struct Records {
    map: Mutex<HashMap<Key, Arc<Record>>>,
}

impl Records {
    fn map(&self) -> MutexGuard<'_, HashMap<Key, Arc<Record>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record process `key` (just attached for `peer`, who was allowed to read it), or
    /// add `peer` to its record. At most `max` records: the oldest exited ones go first.
    pub fn observe(&self, symbolizer: &Symbolizer, key: Key, peer: &PeerCredentials, max: usize) {
        if max == 0 {
            return;
        }
        if let Some(r) = self.get(key) {
            self.grant_to(&r, peer);
            return;
        }
        // (read without the map's lock: opening modules takes milliseconds)
        let Some((maps, shape)) = read(symbolizer, key.pid) else {
            return;
        };
        // the mappings read are this process's only if it still holds the pid
        if pyframe_reader::platform::start_time(key.pid).ok() != Some(key.start_time) {
            return;
        }
        let record = Arc::new(Record {
            key,
            inner: Mutex::new(Inner {
                maps: Arc::new(maps),
                shape,
                grants: Vec::new(),
                exited: None,
                touched: Instant::now(),
            }),
        });
        self.grant_to(&record, peer);
        let mut m = self.map();
        while m.len() >= max && !m.contains_key(&key) {
            // exited ones first (earliest exit), then the least recently refreshed
            let victim = m
                .values()
                .min_by_key(|r| {
                    let i = r.inner();
                    (i.exited.is_none(), i.exited.unwrap_or(i.touched))
                })
                .map(|r| r.key);
            match victim {
                Some(k) => {
                    m.remove(&k);
                }
                None => break,
            }
        }
        m.entry(key).or_insert(record);
    }

    fn get(&self, key: Key) -> Option<Arc<Record>> {
        self.map().get(&key).cloned()
    }

    fn grant_to(&self, record: &Record, peer: &PeerCredentials) {
        // privileged clients need no record of it
        if peer.privileged {
            return;
        }
        // already admitted (the common case: a client reading the same process again):
        // nothing to add, and Yama's scope (a file read) need not be asked
        if record.inner().grants.iter().any(|g| g.admits(peer)) {
            return;
        }
        let g = Grant::of(peer, platform::ptrace_scope());
        let mut i = record.inner();
        if !i.grants.contains(&g) && i.grants.len() < MAX_GRANTS {
            i.grants.push(g);
        }
    }

    /// `peer` was just allowed to read process `key`: it may use its record later.
    pub fn grant(&self, key: Key, peer: &PeerCredentials) {
        if peer.privileged {
            return;
        }
        if let Some(r) = self.get(key) {
            self.grant_to(&r, peer);
        }
    }

    /// Re-read the mappings of a live recorded process (libraries loaded since), and mark
    /// those that exited; drop records older than `keep` past their exit. Called by the
    /// daemon's periodic sweep.
    pub fn sweep(&self, symbolizer: &Symbolizer, keep: Duration) {
        for r in self.all() {
            let alive =
                pyframe_reader::platform::start_time(r.key.pid).ok() == Some(r.key.start_time);
            if !alive {
                self.mark_exited(&r);
                continue;
            }
            // an exec keeps pid and start time but maps another image: the record then
            // follows the new one, which is what the pid names from now on
            let Some(shape) = shape_of(r.key.pid) else {
                continue;
            };
            if shape == r.inner().shape {
                r.inner().touched = Instant::now();
                continue;
            }
            if let Some((maps, shape)) = read(symbolizer, r.key.pid) {
                if pyframe_reader::platform::start_time(r.key.pid).ok() == Some(r.key.start_time) {
                    let mut i = r.inner();
                    i.maps = Arc::new(maps);
                    i.shape = shape;
                    i.touched = Instant::now();
                }
            }
        }
        self.expire(keep);
    }

    fn mark_exited(&self, r: &Record) {
        let mut i = r.inner();
        if i.exited.is_none() {
            i.exited = Some(Instant::now());
            tracing::debug!(pid = r.key.pid, "process exited; its mappings are kept");
        }
    }

    fn expire(&self, keep: Duration) {
        self.map().retain(|_, r| {
            let i = r.inner();
            i.exited.is_none_or(|t| t.elapsed() < keep)
        });
    }

    fn all(&self) -> Vec<Arc<Record>> {
        self.map().values().cloned().collect()
    }

    /// The record of the exited process that last held `pid`, within `keep` of its exit;
    /// the caller found no live process with mappings there (gone, or a zombie not reaped
    /// yet: then the record with its start time is the one). `None` when two exited
    /// processes of that pid are on record (the text does not say which one it means).
    pub fn exited(&self, pid: u32, keep: Duration) -> Option<Arc<Record>> {
        let now = pyframe_reader::platform::start_time(pid).ok();
        let candidates: Vec<_> = self
            .all()
            .into_iter()
            .filter(|r| r.key.pid == pid)
            .collect();
        if let Some(zombie) = candidates.iter().find(|r| now == Some(r.key.start_time)) {
            self.mark_exited(zombie);
            return Some(zombie.clone());
        }
        let mut found = Vec::new();
        for r in candidates {
            self.mark_exited(&r);
            if r.exited_at().is_some_and(|t| t.elapsed() < keep) {
                found.push(r);
            }
        }
        self.expire(keep);
        match found.len() {
            1 => found.pop(),
            _ => None,
        }
    }
}
