//! The `threading` module's thread names (`threading.Thread(name=...)`, `MainThread`),
//! read out of the target: `sys.modules["threading"]`, its `_active` dict (thread ident
//! → `Thread`), each `Thread`'s `_name`. The ident is `PyThreadState.thread_id`.
//!
//! Read while the target runs: the whole map is read twice and used only when both reads
//! agree; otherwise (and for a thread without an entry: one started by
//! `_thread.start_new_thread`) no name is given and the OS name stands. Never a name
//! from a half-changed dict. Bounded: at most [`MAX_THREADS`] entries, names of at most
//! [`MAX_NAME_CHARS`] characters (a longer one is not given).

use std::time::{Duration, Instant};

use rustc_hash::FxHashMap as HashMap;

use crate::layout::{obj, Layout};
use crate::memory::{Block, BlockCache, Memory, MemoryExt, BLOCK};
use crate::values::{TypeCache, ValueReader};

/// The dict keys looked up on the way to the names.
const KEYS: [&str; 3] = ["threading", "_active", "_name"];

/// Entries of `_active` read at most.
pub const MAX_THREADS: usize = 1024;
/// Longer names are not given (the OS name is shown instead).
pub const MAX_NAME_CHARS: usize = 1024;
/// Pairs of reads tried before giving up on a changing `_active`.
const ATTEMPTS: usize = 3;
/// How long a map read stays in use while no new thread appears (a rename shows after
/// at most this long).
pub const NAMES_TTL: Duration = Duration::from_secs(1);
/// A thread is seen (its thread state exists) a moment before `threading` registers it in
/// `_active`: while a thread without a name is younger than [`NAMES_TTL`], the map is
/// read again once it is this old, so that a new thread is named promptly. A thread that
/// never gets a name (`_thread.start_new_thread`) costs these re-reads only in its first
/// second.
pub const NEW_THREAD_RECHECK: Duration = Duration::from_millis(50);

/// Thread ident → name of one interpreter's `threading._active`.
pub type NameMap = HashMap<u64, String>;

/// Per process: the names last read, per interpreter.
#[derive(Debug, Default)]
pub struct ThreadNames {
    /// Interpreter address → the last read.
    last: HashMap<u64, Last>,
    /// Full reads made (tests and benchmarks: the cache at work).
    reads: u64,
    /// Benchmarks only: what to do instead of using the cache.
    pub bench: BenchMode,
    empty: NameMap,
}

/// Benchmarks only: how [`ThreadNames`] behaves, to measure what names cost a read.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BenchMode {
    /// The normal behaviour: the map is re-read when a thread appears or it is stale.
    #[default]
    Cached,
    /// No names read at all (a read as before thread names).
    Off,
    /// The map read again (twice) at every stack read.
    Reread,
}

#[derive(Debug)]
struct Last {
    at: Instant,
    /// The threads it was read for, as (ident, OS tid or thread-state address), with
    /// when each was first seen: a new thread that reuses an ended one's ident (glibc
    /// reuses `pthread_t`s) is a new pair.
    known: HashMap<(u64, u64), Instant>,
    names: NameMap,
}

impl ThreadNames {
    /// The names (by ident) of interpreter `interp`'s threads `threads`, each given as
    /// (ident, OS tid or else its thread state's address). `spare`: block buffers to read
    /// into (a walk's, handed back filled with other data) rather than fresh pages. The last map is reused while it
    /// is fresh ([`NAMES_TTL`]) and was read for every one of these threads.
    pub fn names(
        &mut self,
        mem: &dyn Memory,
        layout: &Layout,
        types: &mut TypeCache,
        interp: u64,
        threads: &[(u64, u64)],
        spare: &mut Vec<Block>,
    ) -> &NameMap {
        let now = Instant::now();
        if self.bench == BenchMode::Off {
            return &self.empty;
        }
        let fresh = self.bench == BenchMode::Cached
            && self.last.get(&interp).is_some_and(|l| {
                let age = now.duration_since(l.at);
                age < NAMES_TTL
                    && threads.iter().all(|t| l.known.contains_key(t))
                    && (age < NEW_THREAD_RECHECK
                        || !threads.iter().any(|t| {
                            !l.names.contains_key(&t.0)
                                && now.duration_since(l.known[t]) < NAMES_TTL
                        }))
            });
        if !fresh {
            self.reads += 1;
            let names = self
                .read(mem, layout, types, interp, spare)
                .unwrap_or_default();
            let old = self.last.get(&interp).map(|l| &l.known);
            let known = threads
                .iter()
                .map(|t| (*t, old.and_then(|o| o.get(t)).copied().unwrap_or(now)))
                .collect();
            if self.last.len() > 64 {
                self.last.clear();
            }
            self.last.insert(
                interp,
                Last {
                    at: now,
                    known,
                    names,
                },
            );
        }
        &self.last[&interp].names
    }

    /// How many times the map was read (not taken from the cache).
    pub fn reads(&self) -> u64 {
        self.reads
    }

    /// Two reads that agree, each from `sys.modules` on (a `threading` reloaded between
    /// them has a new `_active`), or `None`. Each read goes through its own block cache:
    /// the first follows the pointers (a block read once however many objects it holds),
    /// the second starts by reading every block the first used in one batch, so that it
    /// sees the process after the first read ended, in a window of one system call.
    fn read(
        &mut self,
        mem: &dyn Memory,
        layout: &Layout,
        types: &mut TypeCache,
        interp: u64,
        spare: &mut Vec<Block>,
    ) -> Option<NameMap> {
        for _ in 0..ATTEMPTS {
            // a lookup can fail on a dict being resized (sys.modules during an import):
            // tried again like a disagreement
            let one = BlockCache::with_spare(mem, std::mem::take(spare));
            let (first, a) = {
                let mut r = ValueReader::with_live(&one, mem, layout, types);
                let first = locate(&mut r, &one, layout, interp);
                (first, first.and_then(|d| read_once(&mut r, d, Some(&one))))
            };
            let mut touched = one.touched();
            // the keys looked up were compared as read straight from the process (not
            // through `one`): their blocks are read back too (the second read checks them)
            touched.extend(
                KEYS.iter()
                    .filter_map(|k| types.interned(k))
                    .map(|a| a & !(BLOCK as u64 - 1)),
            );
            touched.sort_unstable();
            touched.dedup();
            let two = BlockCache::with_spare(mem, one.into_spare());
            two.prefetch(&touched);
            let mut r = ValueReader::with_live(&two, mem, layout, types);
            let second = locate(&mut r, &two, layout, interp);
            let b = second.and_then(|d| read_once(&mut r, d, None));
            drop(r);
            *spare = two.into_spare();
            match (a, b) {
                (Some(a), Some(b)) if first == second && a == b => {
                    return Some(a.into_iter().map(|(id, _, n)| (id, n)).collect())
                }
                _ => std::thread::yield_now(),
            }
        }
        None
    }
}

/// `sys.modules["threading"].__dict__["_active"]` of the interpreter at `interp`; `None`
/// before `threading` is imported.
fn locate(r: &mut ValueReader, mem: &dyn Memory, layout: &Layout, interp: u64) -> Option<u64> {
    let modules = mem
        .read_u64(interp.wrapping_add(layout.interp.modules))
        .ok()?;
    if modules == 0 || !r.is_dict(modules) {
        return None;
    }
    let module = r.dict_get_str(modules, KEYS[0]).ok()??;
    let globals = mem
        .read_u64(module.wrapping_add(layout.object.at(obj::MODULE_DICT)))
        .ok()?;
    if !r.is_dict(globals) {
        return None;
    }
    let active = r.dict_get_str(globals, KEYS[1]).ok()??;
    r.is_dict(active).then_some(active)
}

/// One read of `_active`: (ident, `Thread` object, name) in the dict's order (so that two
/// reads agree only on the same objects). `None` when the dict itself could not be read.
/// `cache`: the block cache `r` reads through, when the reads of each thread's chain
/// (its `Thread`'s attributes, then the name) are to be batched across threads.
fn read_once(
    r: &mut ValueReader,
    active: u64,
    cache: Option<&BlockCache>,
) -> Option<Vec<(u64, u64, String)>> {
    let items = r.dict_entries(active, MAX_THREADS).ok()?;
    // every key and `Thread` object in one batched read (then each object's attributes)
    let heads: Vec<(u64, usize)> = items
        .iter()
        .flat_map(|&(k, t)| [(k, 32), (t, 64)])
        .filter(|&(a, _)| a != 0 && a % 8 == 0)
        .collect();
    r.prefetch(&heads);
    let one = |r: &mut ValueReader, k: u64, thread: u64| -> Option<(u64, u64, String)> {
        let ident = r.int_u64(k).ok()??;
        let name = r.instance_attr(thread, KEYS[2]).ok()??;
        let text = r.str_limited(name, MAX_NAME_CHARS).ok()??;
        Some((ident, thread, text))
    };
    // the threads' chains followed together: each link of all of them in one batched
    // read (a chain is a few links long: bounded)
    if let Some(cache) = cache.filter(|_| items.len() > 1) {
        for _ in 0..6 {
            let wanted = cache.speculate(|| {
                for &(k, thread) in &items {
                    one(r, k, thread);
                }
            });
            if wanted.is_empty() {
                break;
            }
            cache.prefetch(&wanted);
        }
    }
    Some(
        items
            .into_iter()
            .filter_map(|(k, thread)| one(r, k, thread))
            .collect(),
    )
}
