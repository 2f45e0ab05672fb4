//! What every connection and request shares: the configuration, the attached processes,
//! the access checkers and the counters.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use super::cache::Cache;
use super::checker::Checkers;
use super::config::Config;
use super::profiles::Sessions;
use super::records::Records;

/// Everything the connections share.
pub struct State {
    pub config: RwLock<Config>,
    pub cache: Cache,
    pub started: Instant,
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub denied: AtomicU64,
    /// Open connections.
    pub connections: AtomicU64,
    /// Open connections by client uid (root's too, against `max_connections_root`).
    pub connections_by_uid: Mutex<HashMap<u32, usize>>,
    /// Counters of each client uid, for its own `status`.
    pub by_uid: Mutex<HashMap<u32, UidCounts>>,
    /// The access checkers of non-root clients.
    pub checkers: Checkers,
    /// Profiling sessions (`profile`).
    pub profiles: Arc<Sessions>,
    /// Names native addresses (`symbolize`, `annotate`): one module cache for every
    /// process, shared with the records.
    pub symbolizer: symbolize::Symbolizer,
    /// The mappings of attached processes, kept a while after they exit.
    pub records: Records,
}

/// One client uid's share of the counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct UidCounts {
    pub requests: u64,
    pub errors: u64,
    pub denied: u64,
    /// Open connections (filled in by [`State::counts_of`]).
    pub connections: u64,
}

/// Uids whose counters are kept at most; past it, those of uids without an open
/// connection are dropped (a uid is a real user of the machine, so this is rarely hit).
const MAX_COUNTED_UIDS: usize = 4096;

impl State {
    pub fn new(config: Config) -> State {
        State {
            config: RwLock::new(config),
            cache: Cache::default(),
            started: Instant::now(),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            denied: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            connections_by_uid: Mutex::new(HashMap::new()),
            by_uid: Mutex::new(HashMap::new()),
            checkers: Checkers::default(),
            profiles: Arc::new(Sessions::default()),
            symbolizer: symbolize::Symbolizer::new(symbolize::Config::from_env()),
            records: Records::default(),
        }
    }

    fn count(&self, uid: u32, f: impl FnOnce(&mut UidCounts)) {
        let mut m = self.by_uid.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= MAX_COUNTED_UIDS && !m.contains_key(&uid) {
            let open = self
                .connections_by_uid
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            m.retain(|u, _| open.contains_key(u));
        }
        f(m.entry(uid).or_default());
    }

    /// A request answered to `uid` (`error`: with an error).
    pub fn count_request(&self, uid: u32, error: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if error {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.count(uid, |c| {
            c.requests += 1;
            c.errors += u64::from(error);
        });
    }

    /// A request of `uid` refused by the access check.
    pub fn count_denied(&self, uid: u32) {
        self.denied.fetch_add(1, Ordering::Relaxed);
        self.count(uid, |c| c.denied += 1);
    }

    /// `uid`'s counters and open connections.
    pub fn counts_of(&self, uid: u32) -> UidCounts {
        let mut c = self
            .by_uid
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&uid)
            .copied()
            .unwrap_or_default();
        c.connections = self
            .connections_by_uid
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&uid)
            .copied()
            .unwrap_or(0) as u64;
        c
    }

    pub fn config(&self) -> Config {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
