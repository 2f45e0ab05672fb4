//! Python values read out of the target, shown as Python's `repr()` would show them,
//! within limits (depth, items, characters) so that garbage pointers, cycles and huge
//! containers stay bounded. Never runs code in the target. Mutable containers are read,
//! rendered and read again: a value that changed meanwhile is retried, then shown as
//! `<changed while read>`, never as a mixture of two states.
//!
//! The small API ([`ValueReader::repr`], [`ValueReader::str_value`],
//! [`ValueReader::dict_get_str`]) is what other readers (e.g. `threading` names) build on.

use rustc_hash::FxHashMap as HashMap;
use std::fmt::Write as _;

use protocol::{Local, LocalKind, MidUpdate};

use crate::error::MemoryError;
use crate::layout::{
    obj, CodeLocalsLayout, DictLayout, InstanceDict, Layout, LongLayout, SplitValues, StrHash,
};
use crate::memory::{u64_at, u8_at, MemResult, Memory, MemoryExt};

/// Containers nested deeper than this show as `[…]`.
pub const MAX_DEPTH: usize = 3;
/// Items shown per container; more are `…`.
pub const MAX_ITEMS: usize = 10;
/// Characters of a `str` (bytes of a `bytes`) shown; more are `…` before the closing quote.
pub const MAX_CHARS: usize = 100;
/// 30-bit digits of an `int` converted; larger ones show as `<int of N bits>`.
pub const MAX_INT_DIGITS: u64 = 100;
/// Re-reads of a container that changed while being read.
const ATTEMPTS: usize = 3;
/// Fast locals of one frame read at most (a garbage count must not become a huge read).
const MAX_SLOTS: u64 = 4096;
/// Dict/set entries scanned at most for the shown items (deleted entries are skipped).
const MAX_SCAN: u64 = 4096;
pub const CHANGED: &str = "<changed while read>";
/// `mid_update` of a free-threaded build's value read while a container's lock was held.
pub const LOCK_HELD: &str = "read while a thread held its lock";

use crate::layout::obj::{
    CO_FAST_CELL, CO_FAST_FREE, CO_FAST_HIDDEN, CO_VARARGS, CO_VARKEYWORDS, HEAPTYPE,
};

/// A value as shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repr {
    pub type_name: String,
    pub text: String,
    pub truncated: bool,
    /// The text shows a mutable container's items (a `list`, `dict` or `set`, at any depth).
    pub mutable: bool,
    /// Free-threaded builds: such a container was read while its own lock was held (a
    /// thread was updating it: the value may be half updated).
    pub locked: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Builtin {
    Int,
    Bool,
    Float,
    Complex,
    Str,
    Bytes,
    Tuple,
    List,
    Dict,
    Set,
    FrozenSet,
    None,
    Cell,
}

#[derive(Debug, Clone)]
struct TypeInfo {
    name: String,
    builtin: Option<Builtin>,
    heap: bool,
    dict: u64,
}

/// A code object's fast locals: name and kind per slot (an empty name: not shown).
type Names = std::sync::Arc<Vec<(String, LocalKind)>>;

/// Type objects already read. Static (non-heap) types live as long as the process, so
/// they are kept across reads; heap types only for one [`ValueReader`].
#[derive(Debug, Default)]
pub struct TypeCache {
    statics: HashMap<u64, TypeInfo>,
    /// Local names per code object address, with the names tuple they were read from: a
    /// code object is immutable, so the same tuple pointer at the same address means the
    /// same names (one 8-byte read instead of a tuple of strings per frame).
    names: HashMap<u64, (u64, Names)>,
    /// The `str` object last found equal to a looked-up key (`ValueReader::find_key`).
    interned: HashMap<String, u64>,
    /// The interpreter's `str` hash, to probe a dict for a key (`ValueReader::dict_probe`).
    hash_secret: Option<HashSecret>,
}

/// Where the target's `_Py_HashSecret` is; its keys once read.
#[derive(Debug, Clone, Copy)]
struct HashSecret {
    at: u64,
    keys: Option<(u64, u64)>,
}

impl TypeCache {
    /// A cache that knows the static builtin types at these addresses (Python name, type
    /// object address in the target: the interpreter's `PyDict_Type`, `PyLong_Type`, ... by
    /// their symbols), so that their objects are recognised without reading the type
    /// object and its name. Names that are not builtin types here are ignored.
    pub fn with_builtins(types: &[(&str, u64)]) -> Self {
        let mut c = TypeCache::default();
        for &(name, addr) in types {
            if let Some(b) = builtin_named(name) {
                c.statics.insert(
                    addr,
                    TypeInfo {
                        name: name.to_string(),
                        builtin: Some(b),
                        heap: false,
                        // (only a heap type's dict is ever looked into)
                        dict: 0,
                    },
                );
            }
        }
        c
    }
}

impl TypeCache {
    /// Lets dict lookups probe the hash table as CPython does (the slots of the key's hash,
    /// a read or two) instead of comparing every key: `secret` is the address of the
    /// target's `_Py_HashSecret` (the hash function is the layout's `values.str_hash`). A
    /// build hashing otherwise finds nothing by probing and falls back to comparing keys,
    /// as without this.
    pub fn with_hash_secret(mut self, secret: Option<u64>) -> Self {
        self.hash_secret = secret.map(|at| HashSecret { at, keys: None });
        self
    }

    /// The `str` object last found equal to the key `name` in a dict lookup, if any.
    pub fn interned(&self, name: &str) -> Option<u64> {
        self.interned.get(name).copied()
    }
}

/// The builtin type a static type named `name` is.
fn builtin_named(name: &str) -> Option<Builtin> {
    Some(match name {
        "int" => Builtin::Int,
        "bool" => Builtin::Bool,
        "float" => Builtin::Float,
        "complex" => Builtin::Complex,
        "str" => Builtin::Str,
        "bytes" => Builtin::Bytes,
        "tuple" => Builtin::Tuple,
        "list" => Builtin::List,
        "dict" => Builtin::Dict,
        "set" => Builtin::Set,
        "frozenset" => Builtin::FrozenSet,
        "NoneType" => Builtin::None,
        "cell" => Builtin::Cell,
        _ => return None,
    })
}

/// Reads and renders values of one process for one stack read.
pub struct ValueReader<'a> {
    /// Where values are read first: a block cache of the whole `--locals` read (one batched
    /// fetch of the blocks the last one touched) or the process itself.
    mem: &'a dyn Memory,
    /// The process itself: what a value is checked against (a frame's slots, a container
    /// read again), and where everything is read once a check failed.
    live: &'a dyn Memory,
    /// Read everything from `live` (a check failed: the cache's copy is older than the
    /// process's state).
    fresh: bool,
    /// What objects showing no mutable container rendered as, by address, during this
    /// read (the same `self` or value in many frames is read once).
    shown: HashMap<u64, Repr>,
    layout: &'a Layout,
    cache: &'a mut TypeCache,
    heap: HashMap<u64, (TypeInfo, String)>,
    /// Containers being rendered (Python prints a cycle as `[...]`).
    active: Vec<u64>,
    /// An item of the container being rendered was no readable object: a container that
    /// holds one is being changed (or is garbage), never a value to show.
    bad_item: bool,
    /// `interned` entries confirmed to still be their `str` during this reader's life.
    checked_keys: Vec<u64>,
    /// The value being rendered showed a mutable container's items (see [`Repr::mutable`]).
    mutable: bool,
    /// ... one read while its lock was held (see [`Repr::locked`]).
    locked: bool,
}

fn invalid(msg: String) -> MemoryError {
    MemoryError::Invalid(msg)
}

impl<'a> ValueReader<'a> {
    pub fn new(mem: &'a dyn Memory, layout: &'a Layout, cache: &'a mut TypeCache) -> Self {
        Self::with_live(mem, mem, layout, cache)
    }

    /// A reader whose first reads come from `mem` (a cache) and whose checks read `live`.
    pub fn with_live(
        mem: &'a dyn Memory,
        live: &'a dyn Memory,
        layout: &'a Layout,
        cache: &'a mut TypeCache,
    ) -> Self {
        ValueReader {
            mem,
            live,
            fresh: false,
            shown: HashMap::default(),
            layout,
            cache,
            heap: HashMap::default(),
            active: Vec::new(),
            bad_item: false,
            checked_keys: Vec::new(),
            mutable: false,
            locked: false,
        }
    }

    /// Where a built-in object's field at `gil_offset` in a GIL build is in this one.
    fn f(&self, gil_offset: u64) -> u64 {
        self.layout.object.at(gil_offset)
    }

    /// Fetch these (address, length) ranges in one batched read, as a hint for what the
    /// reads that follow will touch (through a block cache: their blocks are then held);
    /// what fails is simply read again later.
    pub fn prefetch(&self, ranges: &[(u64, usize)]) {
        let total: usize = ranges.iter().map(|r| r.1).sum();
        if ranges.len() < 2 || total > 1 << 20 {
            return;
        }
        let mut bufs = vec![0u8; total];
        let mut reqs: Vec<(u64, &mut [u8])> = Vec::with_capacity(ranges.len());
        let mut rest = &mut bufs[..];
        for &(a, n) in ranges {
            let (b, r) = rest.split_at_mut(n);
            reqs.push((a, b));
            rest = r;
        }
        let _ = self.m().read_many(&mut reqs);
    }

    fn m(&self) -> &'a dyn Memory {
        if self.fresh {
            self.live
        } else {
            self.mem
        }
    }

    /// `f` reading the process itself.
    fn live<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> T {
        let was = std::mem::replace(&mut self.fresh, true);
        let r = f(self);
        self.fresh = was;
        r
    }

    /// The value at `obj`, as `repr()` shows it within the limits.
    pub fn repr(&mut self, obj: u64) -> Repr {
        if !self.fresh {
            if let Some(r) = self.shown.get(&obj) {
                return r.clone();
            }
        }
        let r = self.repr_uncached(obj);
        if !self.fresh && !r.mutable && r.text != CHANGED && self.shown.len() < 65_536 {
            self.shown.insert(obj, r.clone());
        }
        r
    }

    fn repr_uncached(&mut self, obj: u64) -> Repr {
        let mut out = String::new();
        let mut truncated = false;
        let type_name = match self.type_of(obj) {
            Ok(t) => t.name.clone(),
            Err(_) => {
                return Repr {
                    type_name: String::new(),
                    text: format!("<unreadable object at {obj:#x}>"),
                    truncated: false,
                    mutable: false,
                    locked: false,
                }
            }
        };
        self.mutable = false;
        self.locked = false;
        self.render(obj, 0, &mut out, &mut truncated);
        Repr {
            type_name,
            text: out,
            truncated,
            mutable: self.mutable,
            locked: self.locked,
        }
    }

    /// The text of a `str` object (at most [`MAX_CHARS`] * 160 characters).
    pub fn str_value(&mut self, obj: u64) -> MemResult<String> {
        let t = self.type_of(obj)?;
        if t.builtin != Some(Builtin::Str) {
            return Err(invalid(format!("{obj:#x} is not a str")));
        }
        let (cps, _) = self.str_points(obj, MAX_CHARS * 160)?;
        Ok(cps
            .into_iter()
            .map(|c| char::from_u32(c).unwrap_or('\u{fffd}'))
            .collect())
    }

    /// The value stored under the `str` key `key` in the dict at `dict`, if any.
    pub fn dict_get_str(&mut self, dict: u64, key: &str) -> MemResult<Option<u64>> {
        let t = self.type_of(dict)?;
        if t.builtin != Some(Builtin::Dict) && !t.heap {
            return Err(invalid(format!("{dict:#x} is not a dict")));
        }
        if let Some(v) = self.dict_probe(dict, key)? {
            return Ok(Some(v));
        }
        let (_, items) = self.dict_items(dict, MAX_SCAN as usize)?;
        let keys: Vec<u64> = items.iter().map(|i| i.0).collect();
        Ok(self.find_key(&keys, key).map(|i| items[i].1))
    }

    /// CPython's hash of the ASCII `str` `name` in the target, when its hash secret is known
    /// (`_Py_HashBytes`: SipHash of the characters' bytes, keyed by `_Py_HashSecret`; -1 is
    /// -2). The secret is read once from the process (it is set at start-up).
    pub(crate) fn str_hash(&mut self, name: &str) -> Option<i64> {
        use std::hash::Hasher as _;
        let h = self.cache.hash_secret.as_mut()?;
        let (k0, k1) = match h.keys {
            Some(k) => k,
            None => {
                let b = self.live.read_array::<16>(h.at).ok()?;
                let k = (u64_at(&b, 0), u64_at(&b, 8));
                h.keys = Some(k);
                k
            }
        };
        if name.is_empty() {
            return Some(0);
        }
        let x = match self.layout.values.str_hash {
            StrHash::SipHash13 => {
                let mut s = siphasher::sip::SipHasher13::new_with_keys(k0, k1);
                s.write(name.as_bytes());
                s.finish()
            }
            StrHash::SipHash24 => {
                let mut s = siphasher::sip::SipHasher24::new_with_keys(k0, k1);
                s.write(name.as_bytes());
                s.finish()
            }
        } as i64;
        Some(if x == -1 { -2 } else { x })
    }

    /// The value under the ASCII `str` key `name` in the combined dict at `d`, found as
    /// CPython's lookup finds it: the index slots the key's hash leads to, then the entry
    /// they name, whose key is compared. `None` when not found this way (no hash secret, a
    /// split dict, an empty slot reached: a key missing or a build hashing otherwise):
    /// the caller then compares every key, so that "absent" is never this probe's word.
    fn dict_probe(&mut self, d: u64, name: &str) -> MemResult<Option<u64>> {
        /// Slots tried before giving up (a full table would loop).
        const MAX_PROBES: u64 = 64;
        if !name.is_ascii() {
            return Ok(None);
        }
        let Some(hash) = self.str_hash(name) else {
            return Ok(None);
        };
        let head = self.head(d, 48)?;
        let keys = u64_at(&head, self.f(obj::DICT_KEYS) as usize);
        if u64_at(&head, self.f(obj::DICT_VALUES) as usize) != 0 || keys == 0 {
            return Ok(None);
        }
        let KeysShape {
            slots,
            width,
            index,
            entries,
            esize,
            koff,
            voff,
            hashed,
            ..
        } = self.keys_shape(keys)?;
        if !slots.is_power_of_two() || !matches!(width, 1 | 2 | 4 | 8) {
            return Ok(None);
        }
        let mask = slots - 1;
        let mut perturb = hash as u64;
        let mut i = hash as u64 & mask;
        for _ in 0..=mask.min(MAX_PROBES) {
            let mut raw = [0u8; 8];
            self.m()
                .read(index + i * width, &mut raw[..width as usize])?;
            let ix = match width {
                1 => i64::from(raw[0] as i8),
                2 => i64::from(i16::from_le_bytes([raw[0], raw[1]])),
                4 => i64::from(i32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]])),
                _ => i64::from_le_bytes(raw),
            };
            // -1: an empty slot ends the probe; -2: a deleted entry's, skipped
            if ix == -1 {
                return Ok(None);
            }
            if ix >= 0 {
                let mut e = [0u8; 24];
                let e = &mut e[..esize as usize];
                self.m().read(entries + ix as u64 * esize, e)?;
                let k = u64_at(e, koff as usize);
                if k != 0 && (!hashed || u64_at(e, 0) as i64 == hash) && self.str_is(k, name) {
                    let v = u64_at(e, voff as usize);
                    return Ok((v != 0).then_some(v));
                }
            }
            perturb >>= 5;
            i = (i.wrapping_mul(5).wrapping_add(perturb).wrapping_add(1)) & mask;
        }
        Ok(None)
    }

    /// Whether the object at `obj` is a `dict` (not a subclass).
    pub fn is_dict(&mut self, obj: u64) -> bool {
        self.type_of(obj).ok().and_then(|t| t.builtin) == Some(Builtin::Dict)
    }

    /// The first `max` (key, value) pairs of the `dict` at `dict`, in iteration order.
    /// One read: a caller that needs a consistent view reads twice and compares.
    pub fn dict_entries(&mut self, dict: u64, max: usize) -> MemResult<Vec<(u64, u64)>> {
        if !self.is_dict(dict) {
            return Err(invalid(format!("{dict:#x} is not a dict")));
        }
        Ok(self.dict_items(dict, max.min(MAX_SCAN as usize))?.1)
    }

    /// The value of the `int` at `obj` when it is one of 0..2^64 (a thread ident);
    /// `None` for a negative or larger one.
    pub fn int_u64(&mut self, obj: u64) -> MemResult<Option<u64>> {
        if self.type_of(obj)?.builtin != Some(Builtin::Int) {
            return Err(invalid(format!("{obj:#x} is not an int")));
        }
        let (neg, n, _) = self.int_head(obj)?;
        if neg || n > 3 {
            return Ok(None);
        }
        let (_, digits) = self.int_digits(obj)?;
        let mut v: u128 = 0;
        for (i, &d) in digits.iter().enumerate() {
            if d >= 1 << 30 {
                return Err(invalid(format!("int at {obj:#x} has a digit over 30 bits")));
            }
            v |= u128::from(d) << (30 * i);
        }
        Ok(u64::try_from(v).ok())
    }

    /// The text of the `str` at `obj`, or `None` when it is longer than `max` characters.
    pub fn str_limited(&mut self, obj: u64, max: usize) -> MemResult<Option<String>> {
        if self.type_of(obj)?.builtin != Some(Builtin::Str) {
            return Err(invalid(format!("{obj:#x} is not a str")));
        }
        let (cps, len) = self.str_points(obj, max)?;
        if len > max as u64 {
            return Ok(None);
        }
        cps.into_iter()
            .map(|c| char::from_u32(c).ok_or_else(|| invalid(format!("str at {obj:#x}: {c:#x}"))))
            .collect::<MemResult<String>>()
            .map(Some)
    }

    /// The attribute `name` that the object at `obj` holds in its own `__dict__` (not
    /// its class's), wherever this version keeps instance attributes
    /// ([`crate::layout::InstanceDict`]); `None` when it has none.
    pub fn instance_attr(&mut self, obj: u64, name: &str) -> MemResult<Option<u64>> {
        let t = self.type_of(obj)?;
        if !t.heap {
            return Ok(None);
        }
        let tp = self
            .m()
            .read_u64(obj.wrapping_add(self.layout.object.ob_type))?;
        let v = &self.layout.values;
        let end = (self.f(obj::TYPE_DICTOFFSET) + 8).max(v.cached_keys + 8) as usize;
        let head = self.m().read_vec(tp, end, 4096)?;
        let flags = u64_at(&head, self.f(obj::TYPE_FLAGS) as usize);
        let basicsize = u64_at(&head, self.f(obj::TYPE_BASICSIZE) as usize);
        let dictoffset = u64_at(&head, self.f(obj::TYPE_DICTOFFSET) as usize) as i64;
        let keys = u64_at(&head, v.cached_keys as usize);
        let at = |off: i64| obj.wrapping_add_signed(off);
        let dict = match v.instance_dict {
            InstanceDict::Managed { flag, dict, values } if flags & flag != 0 => {
                let vals = self.m().read_u64(at(values))?;
                if vals != 0 {
                    return self.values_get(keys, vals, name);
                }
                self.m().read_u64(at(dict))?
            }
            InstanceDict::Tagged { flag, at: off } if flags & flag != 0 => {
                let w = self.m().read_u64(at(off))?;
                if w & 1 == 1 {
                    return self.values_get(keys, w.wrapping_add(1), name);
                }
                w
            }
            InstanceDict::Inline {
                flag,
                inline_flag,
                dict,
                valid,
            } if flags & flag != 0 => {
                if flags & inline_flag != 0 {
                    if basicsize == 0 || basicsize > 1 << 16 {
                        return Err(invalid(format!("type {tp:#x}: basicsize {basicsize}")));
                    }
                    let vals = obj.wrapping_add(basicsize);
                    if self.m().read_u8(vals.wrapping_add(valid))? != 0 {
                        return self.values_get(keys, vals, name);
                    }
                }
                self.m().read_u64(at(dict))?
            }
            _ if dictoffset > 0 && dictoffset < 1 << 16 => self.m().read_u64(at(dictoffset))?,
            _ => return Ok(None),
        };
        if dict == 0 {
            return Ok(None);
        }
        self.dict_get_str(dict, name)
    }

    /// `name`'s value in split values at `vals` indexed as the shared keys at `keys`.
    fn values_get(&mut self, keys: u64, vals: u64, name: &str) -> MemResult<Option<u64>> {
        let DictLayout::Log2 {
            log2_index_bytes,
            kind,
            nentries,
            indices,
            values: split,
            ..
        } = self.layout.values.dict
        else {
            return Err(invalid("split values without 3.11+ dict keys".into()));
        };
        if keys == 0 {
            return Ok(None);
        }
        let kh = self.m().read_array::<40>(keys)?;
        let lib = u8_at(&kh, log2_index_bytes as usize);
        let n = u64_at(&kh, nentries as usize);
        // shared keys hold at most 30 names in CPython
        if lib > 40 || n > 256 {
            return Err(invalid(format!("shared keys at {keys:#x}: {n} entries")));
        }
        let (esize, koff) = if u8_at(&kh, kind as usize) == 0 {
            (24, 8)
        } else {
            (16, 0)
        };
        let entries = keys.wrapping_add(indices).wrapping_add(1u64 << lib);
        let raw = self.m().read_vec(entries, (n * esize) as usize, 256 * 24)?;
        let names: Vec<u64> = raw
            .chunks_exact(esize as usize)
            .map(|e| u64_at(e, koff))
            .collect();
        let Some(ix) = self.find_key(&names, name) else {
            return Ok(None);
        };
        let base = match split {
            SplitValues::OrderBefore => vals,
            SplitValues::Header {
                capacity, values, ..
            } => {
                let cap = self.m().read_u8(vals.wrapping_add(capacity))?;
                if ix >= usize::from(cap) {
                    return Ok(None);
                }
                vals.wrapping_add(values)
            }
        };
        let v = self.m().read_u64(base.wrapping_add(ix as u64 * 8))?;
        Ok((v != 0).then_some(v))
    }

    /// The position in `keys` of the `str` object equal to `name`. Attribute names are
    /// interned: the object last found equal to `name` (checked once per reader) is
    /// looked for by address first, sparing a read per key.
    fn find_key(&mut self, keys: &[u64], name: &str) -> Option<usize> {
        if let Some(&p) = self.cache.interned.get(name) {
            if let Some(i) = keys.iter().position(|&k| k == p) {
                if self.checked_keys.contains(&p) {
                    return Some(i);
                }
                if self.str_is(p, name) {
                    self.checked_keys.push(p);
                    return Some(i);
                }
            }
        }
        let i = match self.find_ascii_key(keys, name) {
            Some(found) => found?,
            None => keys.iter().position(|&k| self.str_is(k, name))?,
        };
        if self.cache.interned.len() < 64 {
            self.cache.interned.insert(name.to_string(), keys[i]);
        }
        self.checked_keys.push(keys[i]);
        Some(i)
    }

    /// [`Self::find_key`] for an ASCII `name` in one vectored read: every key's header and
    /// first bytes at once, compared here (a module dict like `sys.modules` has hundreds of
    /// keys: two reads each one by one). `None` when the batch could not be read (a key
    /// at the end of a mapping) or `name` is not ASCII: the caller compares one by one.
    fn find_ascii_key(&mut self, keys: &[u64], name: &str) -> Option<Option<usize>> {
        let u = &self.layout.unicode;
        let want = name.as_bytes();
        if !name.is_ascii() || keys.len() < 4 {
            return None;
        }
        // an ASCII str equal to `name` is compact and ASCII (CPython keeps strs in their
        // narrowest kind): its text starts at `ascii_data`
        let span = (u.ascii_data as usize + want.len()).max(u.state as usize + 4);
        let mut bufs = vec![0u8; span * keys.len()];
        {
            let mut reqs: Vec<(u64, &mut [u8])> = keys
                .iter()
                .copied()
                .zip(bufs.chunks_mut(span))
                .filter(|(k, _)| *k != 0 && k.is_multiple_of(8))
                .collect();
            // from the process, a few bytes per key, not through a block cache (a block
            // per key): a key is an immutable str (a freed and reused one is what the
            // callers' second read catches)
            self.live.read_many(&mut reqs).ok()?;
        }
        for (i, (&k, head)) in keys.iter().zip(bufs.chunks(span)).enumerate() {
            if k == 0 || !k.is_multiple_of(8) {
                continue;
            }
            let Ok(shape) = crate::objects::str_shape(self.layout, k, head) else {
                continue;
            };
            let at = shape.data as usize;
            if shape.ascii
                && shape.len == want.len() as u64
                && head.get(at..at + want.len()) == Some(want)
                && self.is_str_head(k, head)
            {
                return Some(Some(i));
            }
        }
        Some(None)
    }

    /// Whether the object at `k`, whose first bytes are `head`, is a `str`: by the type
    /// pointer in `head` when it is a type known already (no read), else read.
    fn is_str_head(&mut self, k: u64, head: &[u8]) -> bool {
        let tp = u64_at(head, self.layout.object.ob_type as usize);
        match self.cache.statics.get(&tp) {
            Some(t) => t.builtin == Some(Builtin::Str),
            None => self.type_of(k).ok().and_then(|t| t.builtin) == Some(Builtin::Str),
        }
    }

    /// Whether the object at `k` is a `str` equal to `name` (its length compared first).
    fn str_is(&mut self, k: u64, name: &str) -> bool {
        if self.type_of(k).ok().and_then(|t| t.builtin) != Some(Builtin::Str) {
            return false;
        }
        let want: Vec<u32> = name.chars().map(u32::from).collect();
        matches!(self.str_points(k, want.len()), Ok((cps, len)) if len == want.len() as u64 && cps == want)
    }

    fn type_of(&mut self, obj: u64) -> MemResult<TypeInfo> {
        if obj == 0 || !obj.is_multiple_of(8) {
            return Err(invalid(format!("bad object pointer {obj:#x}")));
        }
        let tp = self
            .m()
            .read_u64(obj.wrapping_add(self.layout.object.ob_type))?;
        if let Some(t) = self.cache.statics.get(&tp) {
            return Ok(t.clone());
        }
        if let Some((t, _)) = self.heap.get(&tp) {
            return Ok(t.clone());
        }
        if tp == 0 || !tp.is_multiple_of(8) {
            return Err(invalid(format!("bad type pointer {tp:#x}")));
        }
        let head = self
            .m()
            .read_vec(tp, (self.f(obj::TYPE_DICT) + 8) as usize, 512)?;
        let name = self.cstr(u64_at(&head, self.layout.type_tp_name as usize), 200)?;
        let flags = u64_at(&head, self.f(obj::TYPE_FLAGS) as usize);
        let heap = flags & HEAPTYPE != 0;
        let builtin = if heap { None } else { builtin_named(&name) };
        let info = TypeInfo {
            name,
            builtin,
            heap,
            dict: u64_at(&head, self.f(obj::TYPE_DICT) as usize),
        };
        if heap {
            if self.heap.len() < 4096 {
                self.heap.insert(tp, (info.clone(), String::new()));
            }
        } else if self.cache.statics.len() < 4096 {
            self.cache.statics.insert(tp, info.clone());
        }
        Ok(info)
    }

    /// A NUL-terminated C string (a type's `tp_name`), read in page-bounded pieces.
    fn cstr(&self, addr: u64, max: usize) -> MemResult<String> {
        let mut out = Vec::new();
        let mut at = addr;
        while out.len() < max {
            let room = (4096 - (at % 4096)).min(64) as usize;
            let mut buf = vec![0u8; room];
            self.m().read(at, &mut buf)?;
            if let Some(i) = buf.iter().position(|&b| b == 0) {
                out.extend_from_slice(&buf[..i]);
                return Ok(String::from_utf8_lossy(&out).into_owned());
            }
            out.extend_from_slice(&buf);
            at += room as u64;
        }
        Err(invalid(format!("type name at {addr:#x} too long")))
    }

    /// `__module__` of a heap type, from its dict ("" when not found).
    fn module_of(&mut self, tp: u64, info: &TypeInfo) -> String {
        if let Some((_, m)) = self.heap.get(&tp) {
            if !m.is_empty() {
                return m.clone();
            }
        }
        let m = if info.dict == 0 {
            String::new()
        } else {
            self.dict_get_str(info.dict, "__module__")
                .ok()
                .flatten()
                .and_then(|v| self.str_value(v).ok())
                .unwrap_or_default()
        };
        if let Some(e) = self.heap.get_mut(&tp) {
            e.1 = m.clone();
        }
        m
    }

    fn render(&mut self, o: u64, depth: usize, out: &mut String, trunc: &mut bool) {
        let t = match self.type_of(o) {
            Ok(t) => t,
            Err(_) => {
                self.bad_item = true;
                let _ = write!(out, "<unreadable object at {o:#x}>");
                return;
            }
        };
        let r = match t.builtin {
            Some(Builtin::None) => {
                out.push_str("None");
                Ok(())
            }
            Some(Builtin::Bool) => self.int_digits(o).map(|(neg, d)| {
                let _ = neg;
                out.push_str(if d.iter().any(|&x| x != 0) {
                    "True"
                } else {
                    "False"
                })
            }),
            Some(Builtin::Int) => self.int(o, out, trunc),
            Some(Builtin::Float) => self
                .m()
                .read_array::<8>(o + self.f(obj::FLOAT_VALUE))
                .map(|b| out.push_str(&float_repr(f64::from_le_bytes(b), true))),
            Some(Builtin::Complex) => self
                .m()
                .read_array::<16>(o + self.f(obj::COMPLEX_REAL))
                .map(|b| {
                    let re = f64::from_le_bytes(b[..8].try_into().unwrap());
                    let im = f64::from_le_bytes(b[8..].try_into().unwrap());
                    out.push_str(&complex_repr(re, im))
                }),
            Some(Builtin::Str) => self.str_points(o, MAX_CHARS).map(|(cps, len)| {
                let cut = len > MAX_CHARS as u64;
                *trunc |= cut;
                out.push_str(&str_repr(&cps, cut))
            }),
            Some(Builtin::Bytes) => self.bytes_prefix(o).map(|(b, len)| {
                let cut = len > MAX_CHARS as u64;
                *trunc |= cut;
                out.push_str(&bytes_repr(&b, cut))
            }),
            Some(
                b @ (Builtin::Tuple
                | Builtin::List
                | Builtin::Dict
                | Builtin::Set
                | Builtin::FrozenSet),
            ) => {
                self.container(o, b, depth, out, trunc);
                Ok(())
            }
            Some(Builtin::Cell) | None => {
                let tp = self
                    .m()
                    .read_u64(o + self.layout.object.ob_type)
                    .unwrap_or(0);
                let name = if t.heap {
                    match self.module_of(tp, &t).as_str() {
                        "" | "builtins" => t.name.clone(),
                        m => format!("{m}.{}", t.name),
                    }
                } else {
                    t.name.clone()
                };
                let _ = write!(out, "<{name} object at {o:#x}>");
                Ok(())
            }
        };
        if r.is_err() {
            let _ = write!(out, "<unreadable {} at {o:#x}>", t.name);
        }
    }

    /// Sign and 30-bit digits (least significant first) of an `int`, at most
    /// [`MAX_INT_DIGITS`]; `Err` when larger (the digit count is returned in the message).
    fn int_digits(&self, o: u64) -> MemResult<(bool, Vec<u32>)> {
        let (neg, n, at) = self.int_head(o)?;
        if n > MAX_INT_DIGITS {
            return Err(invalid(format!("int of {n} digits")));
        }
        let raw = self
            .m()
            .read_vec(at, n as usize * 4, MAX_INT_DIGITS as usize * 4)?;
        let d = raw
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        Ok((neg, d))
    }

    fn int_head(&self, o: u64) -> MemResult<(bool, u64, u64)> {
        Ok(match self.layout.values.long {
            LongLayout::SignedSize { digits } => {
                let size = self.m().read_u64(o + self.layout.object.ob_size)? as i64;
                (size < 0, size.unsigned_abs(), o + digits)
            }
            LongLayout::Tagged { tag, digits } => {
                let t = self.m().read_u64(o + tag)?;
                (t & 3 == 2, t >> 3, o + digits)
            }
        })
    }

    fn int(&self, o: u64, out: &mut String, trunc: &mut bool) -> MemResult<()> {
        let (_, n, at) = self.int_head(o)?;
        if n > MAX_INT_DIGITS {
            if n > 1 << 28 {
                return Err(invalid(format!("int of {n} digits")));
            }
            // the bit length needs only the top digit
            let top = self.m().read_u32(at + (n - 1) * 4)?;
            let bits = (n - 1) * 30 + u64::from(32 - top.leading_zeros());
            *trunc = true;
            let _ = write!(out, "<int of {bits} bits>");
            return Ok(());
        }
        let (neg, digits) = self.int_digits(o)?;
        if digits.iter().any(|&d| d >= 1 << 30) {
            return Err(invalid(format!("int at {o:#x} has a digit over 30 bits")));
        }
        out.push_str(&int_decimal(neg, &digits));
        Ok(())
    }

    /// Code points of a compact `str` (at most `max`) and its length.
    fn str_points(&self, o: u64, max: usize) -> MemResult<(Vec<u32>, u64)> {
        let u = &self.layout.unicode;
        let mut head = [0u8; 80];
        let head = &mut head[..(u.compact_data as usize).min(80)];
        self.m().read(o, head)?;
        let shape = crate::objects::str_shape(self.layout, o, head)?;
        let len = shape.len;
        if len > 1 << 40 {
            return Err(invalid(format!("str at {o:#x} too long")));
        }
        let n = (len as usize).min(max);
        let (data, width) = (shape.data, shape.width);
        let raw = self.m().read_vec(o + data, n * width, max * 4)?;
        let cps = match width {
            1 => raw.iter().map(|&b| u32::from(b)).collect(),
            2 => raw
                .chunks_exact(2)
                .map(|c| u32::from(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            _ => raw
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        };
        Ok((cps, len))
    }

    fn bytes_prefix(&self, o: u64) -> MemResult<(Vec<u8>, u64)> {
        let len = self.m().read_u64(o + self.layout.object.ob_size)?;
        if len > 1 << 40 {
            return Err(invalid(format!("bytes at {o:#x} too long")));
        }
        let n = (len as usize).min(MAX_CHARS);
        Ok((
            self.m()
                .read_vec(o + self.layout.bytes.data, n, MAX_CHARS)?,
            len,
        ))
    }

    fn container(&mut self, o: u64, b: Builtin, depth: usize, out: &mut String, trunc: &mut bool) {
        self.mutable |= matches!(b, Builtin::List | Builtin::Dict | Builtin::Set);
        let (open, close) = match b {
            Builtin::Tuple => ("(", ")"),
            Builtin::List => ("[", "]"),
            Builtin::FrozenSet => ("frozenset({", "})"),
            _ => ("{", "}"),
        };
        if self.active.contains(&o) {
            // Python's own notation for a container inside itself
            out.push_str(match b {
                Builtin::List => "[...]",
                Builtin::Tuple => "(...)",
                Builtin::Set => "set(...)",
                Builtin::FrozenSet => "frozenset(...)",
                _ => "{...}",
            });
            return;
        }
        let was_fresh = self.fresh;
        // a mutable container is read from the process itself, all of it, in one short
        // window (a copy from the start of the read can hold items since freed and reused
        // at the same addresses while the container looks the same again); a tuple's own
        // words cannot change
        let mutable = !matches!(b, Builtin::Tuple | Builtin::FrozenSet);
        for attempt in 0..ATTEMPTS {
            // after a failed check, everything is read from the process itself
            self.fresh = was_fresh || mutable || attempt > 0;
            // a container whose parts do not agree (a pointer followed while it changed, a
            // count ahead of its entries) is being changed: retry, then say so
            let Ok(before) = self.snapshot(o, b) else {
                continue;
            };
            let (n, ref items) = before.items;
            if n == 0 {
                if self.live(|r| r.snapshot(o, b)).ok().as_ref() == Some(&before) {
                    self.locked |= mutable && self.held(&before.words);
                    self.fresh = was_fresh;
                    out.push_str(match b {
                        Builtin::Tuple => "()",
                        Builtin::List => "[]",
                        Builtin::Dict => "{}",
                        Builtin::Set => "set()",
                        _ => "frozenset()",
                    });
                    return;
                }
                continue;
            }
            if depth >= MAX_DEPTH {
                self.fresh = was_fresh;
                *trunc = true;
                let _ = write!(out, "{open}…{close}");
                return;
            }
            // rendered twice, the container read again after each: an item freed and its
            // memory reused for another value (the container dropping and taking back the
            // same address meanwhile) shows as a difference between the two renderings
            let outer_bad = std::mem::replace(&mut self.bad_item, false);
            let (s1, t) = self.items_text(o, b, n, items, depth, open, close);
            let bad = std::mem::replace(&mut self.bad_item, outer_bad);
            if bad || self.live(|r| r.snapshot(o, b)).ok().as_ref() != Some(&before) {
                continue;
            }
            // the second rendering from the process itself
            let (s2, _) = self.live(|r| r.items_text(o, b, n, items, depth, open, close));
            if s1 != s2 || self.live(|r| r.snapshot(o, b)).ok().as_ref() != Some(&before) {
                continue;
            }
            // free-threaded: its lock held at every read (equal snapshots) is a thread in
            // the middle of updating it; it soon lets go, else the value is marked
            if mutable && self.held(&before.words) {
                if attempt + 1 < ATTEMPTS {
                    std::thread::yield_now();
                    continue;
                }
                self.locked = true;
            }
            self.fresh = was_fresh;
            out.push_str(&s1);
            *trunc |= t;
            return;
        }
        self.fresh = was_fresh;
        out.push_str(CHANGED);
    }

    #[allow(clippy::too_many_arguments)]
    fn items_text(
        &mut self,
        o: u64,
        b: Builtin,
        n: usize,
        items: &[(u64, u64)],
        depth: usize,
        open: &str,
        close: &str,
    ) -> (String, bool) {
        let mut s = String::from(open);
        let mut t = false;
        self.active.push(o);
        for (i, &(k, v)) in items.iter().enumerate() {
            if i > 0 {
                s.push_str(", ");
            }
            self.render(k, depth + 1, &mut s, &mut t);
            if b == Builtin::Dict {
                s.push_str(": ");
                self.render(v, depth + 1, &mut s, &mut t);
            }
        }
        self.active.pop();
        if n > items.len() {
            s.push_str(", …");
            t = true;
        } else if b == Builtin::Tuple && n == 1 {
            s.push(',');
        }
        s.push_str(close);
        (s, t)
    }

    /// The first words of the object at `o`, as many as a GIL build's `gil_len` cover.
    /// A free-threaded header's thread id and reference counts (which any thread moves by
    /// taking a reference) read as 0, its `ob_mutex` as its `_Py_LOCKED` bit alone: what
    /// a re-read compares is the container's own state and whether its lock was held.
    fn head(&self, o: u64, gil_len: u64) -> MemResult<Vec<u8>> {
        let h = self.layout.object;
        let mut head = self.m().read_vec(o, self.f(gil_len) as usize, 128)?;
        if let Some(m) = h.mutex {
            let bit = head[m as usize] & 1;
            head[..h.stable_from() as usize].fill(0);
            head[m as usize] = bit;
        }
        Ok(head)
    }

    /// Whether a [`ValueReader::head`] shows the object's lock held (free-threaded builds:
    /// a thread inside a critical section on it, which every update of a list, dict or
    /// set runs in).
    fn held(&self, head: &[u8]) -> bool {
        self.layout
            .object
            .mutex
            .is_some_and(|m| head.get(m as usize).is_some_and(|b| b & 1 != 0))
    }

    /// What a container holds now: its length and the first items (dict: key, value),
    /// plus the raw words compared by the re-read.
    fn snapshot(&mut self, o: u64, b: Builtin) -> MemResult<Snap> {
        match b {
            Builtin::Tuple | Builtin::List => {
                let head = self.head(o, 40)?;
                let n = u64_at(&head, self.layout.object.ob_size as usize);
                if n > 1 << 40 {
                    return Err(invalid(format!("sequence at {o:#x} too long")));
                }
                let shown = (n as usize).min(MAX_ITEMS);
                let items_at = if b == Builtin::List {
                    u64_at(&head, self.f(obj::LIST_ITEMS) as usize)
                } else {
                    o + self.layout.values.tuple_items
                };
                let raw = self.m().read_vec(items_at, shown * 8, MAX_ITEMS * 8)?;
                let items = raw.chunks_exact(8).map(|c| (u64_at(c, 0), 0)).collect();
                Ok(Snap {
                    items: (n as usize, items),
                    words: head,
                })
            }
            Builtin::Dict => {
                let (words, items) = self.dict_items(o, MAX_ITEMS)?;
                let n = u64_at(&words, self.f(obj::DICT_USED) as usize) as usize;
                Ok(Snap {
                    items: (n, items),
                    words,
                })
            }
            _ => {
                let head = self.head(o, 48)?;
                let used = u64_at(&head, self.f(obj::SET_USED) as usize);
                let mask = u64_at(&head, self.f(obj::SET_MASK) as usize);
                let table = u64_at(&head, self.f(obj::SET_TABLE) as usize);
                if mask > 1 << 32 || used > mask + 1 {
                    return Err(invalid(format!("set at {o:#x} has mask {mask}")));
                }
                let mut words = head;
                let mut items = Vec::new();
                let mut i = 0;
                while i <= mask && i < MAX_SCAN && items.len() < MAX_ITEMS {
                    let chunk = (mask + 1 - i).min(64);
                    let raw = self
                        .m()
                        .read_vec(table + i * 16, chunk as usize * 16, 1024)?;
                    for e in raw.chunks_exact(16) {
                        let (key, hash) = (u64_at(e, 0), u64_at(e, 8));
                        // empty slots have no key; deleted ones the dummy key and hash -1
                        if key != 0 && hash != u64::MAX && items.len() < MAX_ITEMS {
                            items.push((key, 0));
                        }
                    }
                    words.extend_from_slice(&raw);
                    i += chunk;
                }
                if i > mask && items.len() < (used as usize).min(MAX_ITEMS) {
                    return Err(invalid(format!("set at {o:#x}: fewer entries than `used`")));
                }
                Ok(Snap {
                    items: (used as usize, items),
                    words,
                })
            }
        }
    }

    /// Where the parts of the `PyDictKeysObject` at `keys` are (its header read once):
    /// what both a walk over its entries and a probe of its hash index need.
    fn keys_shape(&mut self, keys: u64) -> MemResult<KeysShape> {
        Ok(match self.layout.values.dict {
            DictLayout::Sized {
                size,
                nentries,
                indices,
            } => {
                let kh = self.m().read_array::<48>(keys)?;
                let dk_size = u64_at(&kh, size as usize);
                if dk_size > 1 << 40 {
                    return Err(invalid(format!("dict keys at {keys:#x} size {dk_size}")));
                }
                // (CPython's DK_IXSIZE)
                let width = match dk_size {
                    0..=0xff => 1,
                    0x100..=0xffff => 2,
                    0x1_0000..=0xffff_ffff => 4,
                    _ => 8,
                };
                KeysShape {
                    slots: dk_size,
                    width,
                    index: keys + indices,
                    entries: keys + indices + dk_size * width,
                    esize: 24,
                    koff: 8,
                    voff: 16,
                    hashed: true,
                    nentries: u64_at(&kh, nentries as usize),
                    head: kh.to_vec(),
                }
            }
            DictLayout::Log2 {
                log2_size,
                log2_index_bytes,
                kind,
                nentries,
                indices,
                values: _,
            } => {
                let kh = self.m().read_array::<40>(keys)?;
                let lib = u8_at(&kh, log2_index_bytes as usize);
                if lib > 40 {
                    return Err(invalid(format!(
                        "dict keys at {keys:#x} index bytes 2^{lib}"
                    )));
                }
                let ls = u8_at(&kh, log2_size as usize);
                let general = u8_at(&kh, kind as usize) == 0;
                let (esize, koff, voff) = if general { (24, 8, 16) } else { (16, 0, 8) };
                KeysShape {
                    // (0: sizes that do not fit, for a probe to refuse)
                    slots: if ls <= lib { 1u64 << ls } else { 0 },
                    width: if ls <= lib { 1u64 << (lib - ls) } else { 0 },
                    index: keys + indices,
                    entries: keys + indices + (1u64 << lib),
                    esize,
                    koff,
                    voff,
                    hashed: general,
                    nentries: u64_at(&kh, nentries as usize),
                    head: kh.to_vec(),
                }
            }
        })
    }

    /// The dict's head words and its first `max` (key, value) pairs in iteration order.
    fn dict_items(&mut self, d: u64, max: usize) -> MemResult<DictRead> {
        let head = self.head(d, 48)?;
        let used = u64_at(&head, self.f(obj::DICT_USED) as usize);
        let keys = u64_at(&head, self.f(obj::DICT_KEYS) as usize);
        let values = u64_at(&head, self.f(obj::DICT_VALUES) as usize);
        let mut words = head;
        let mut items = Vec::new();
        if used > 1 << 40 {
            return Err(invalid(format!("dict at {d:#x} claims {used} items")));
        }
        let shape = self.keys_shape(keys)?;
        words.extend_from_slice(&shape.head);
        let KeysShape {
            esize,
            koff,
            voff,
            entries,
            nentries,
            ..
        } = shape;
        let order = match self.layout.values.dict {
            DictLayout::Sized { .. } if values != 0 => SplitOrder::KeyOrder,
            DictLayout::Log2 { values: split, .. } if values != 0 => {
                let n = used.min(max as u64) as usize;
                let idx = match split {
                    SplitValues::OrderBefore => {
                        let raw = self.m().read_vec(values - 2 - n as u64, n, 256)?;
                        // the i-th index is the byte at -3-i
                        raw.iter().rev().copied().collect::<Vec<u8>>()
                    }
                    SplitValues::Header {
                        capacity,
                        size: _,
                        values: vals,
                    } => {
                        let cap = u64::from(self.m().read_u8(values + capacity)?);
                        self.m().read_vec(values + vals + cap * 8, n, 256)?
                    }
                };
                let base = match split {
                    SplitValues::OrderBefore => values,
                    SplitValues::Header { values: vals, .. } => values + vals,
                };
                words.extend_from_slice(&idx);
                SplitOrder::Indexed(base, idx)
            }
            _ => SplitOrder::Combined,
        };
        if nentries > 1 << 40 {
            return Err(invalid(format!(
                "dict keys at {keys:#x} {nentries} entries"
            )));
        }
        match order {
            SplitOrder::Indexed(base, idx) => {
                for ix in idx {
                    let ix = u64::from(ix);
                    if ix >= nentries {
                        return Err(invalid(format!("split dict at {d:#x}: index {ix}")));
                    }
                    let k = self.m().read_u64(entries + ix * esize + koff)?;
                    let v = self.m().read_u64(base + ix * 8)?;
                    words.extend_from_slice(&k.to_le_bytes());
                    words.extend_from_slice(&v.to_le_bytes());
                    if v != 0 {
                        items.push((k, v));
                    }
                }
            }
            SplitOrder::KeyOrder | SplitOrder::Combined => {
                let mut i = 0;
                while i < nentries && i < MAX_SCAN && items.len() < max {
                    let chunk = (nentries - i).min(32);
                    let raw =
                        self.m()
                            .read_vec(entries + i * esize, (chunk * esize) as usize, 1024)?;
                    let vals = match order {
                        SplitOrder::KeyOrder => {
                            Some(self.m().read_vec(values + i * 8, chunk as usize * 8, 256)?)
                        }
                        _ => None,
                    };
                    for j in 0..chunk as usize {
                        let e = &raw[j * esize as usize..];
                        let k = u64_at(e, koff as usize);
                        let v = match &vals {
                            Some(vs) => u64_at(vs, j * 8),
                            None => u64_at(e, voff as usize),
                        };
                        if k != 0 && v != 0 && items.len() < max {
                            items.push((k, v));
                        }
                    }
                    words.extend_from_slice(&raw);
                    if let Some(vs) = vals {
                        words.extend_from_slice(&vs);
                    }
                    i += chunk;
                }
                // a dict caught between its count and its entries (a running insert)
                if i >= nentries && items.len() < (used as usize).min(max) {
                    return Err(invalid(format!(
                        "dict at {d:#x}: fewer entries than ma_used"
                    )));
                }
            }
        }
        Ok((words, items))
    }

    /// Names and kinds of a code object's fast locals.
    pub fn local_names(&mut self, code: u64) -> MemResult<Vec<(String, LocalKind)>> {
        let strs = |r: &mut Self, tuple: u64| -> MemResult<Vec<String>> {
            let n = r.m().read_u64(tuple + r.layout.object.ob_size)?;
            if n > MAX_SLOTS {
                return Err(invalid(format!("names tuple at {tuple:#x} of {n}")));
            }
            let raw = r.m().read_vec(
                tuple + r.layout.values.tuple_items,
                n as usize * 8,
                MAX_SLOTS as usize * 8,
            )?;
            raw.chunks_exact(8)
                .map(|c| r.str_value(u64_at(c, 0)))
                .collect()
        };
        let i32_at = |r: &Self, at: u64| r.m().read_i32(at).map(|v| v.max(0) as u32);
        match self.layout.values.code {
            CodeLocalsLayout::Varnames {
                argcount,
                kwonlyargcount,
                flags,
                varnames,
                cellvars,
                freevars,
            } => {
                let fl = i32_at(self, code + flags)?;
                let nargs = nargs(
                    i32_at(self, code + argcount)?,
                    i32_at(self, code + kwonlyargcount)?,
                    fl,
                );
                let v = strs(self, self.m().read_u64(code + varnames)?)?;
                let c = strs(self, self.m().read_u64(code + cellvars)?)?;
                let f = strs(self, self.m().read_u64(code + freevars)?)?;
                let mut out: Vec<(String, LocalKind)> = v
                    .into_iter()
                    .enumerate()
                    .map(|(i, n)| {
                        let k = if (i as u32) < nargs {
                            LocalKind::Arg
                        } else {
                            LocalKind::Local
                        };
                        (n, k)
                    })
                    .collect();
                out.extend(c.into_iter().map(|n| (n, LocalKind::Cell)));
                out.extend(f.into_iter().map(|n| (n, LocalKind::Free)));
                Ok(out)
            }
            CodeLocalsLayout::Kinds {
                argcount,
                kwonlyargcount,
                flags,
                names,
                kinds,
            } => {
                let fl = i32_at(self, code + flags)?;
                let nargs = nargs(
                    i32_at(self, code + argcount)?,
                    i32_at(self, code + kwonlyargcount)?,
                    fl,
                );
                let n = strs(self, self.m().read_u64(code + names)?)?;
                let kb = self.m().read_u64(code + kinds)?;
                let len = self.m().read_u64(kb + self.layout.object.ob_size)?;
                if len != n.len() as u64 {
                    return Err(invalid(format!(
                        "code {code:#x}: {len} kinds for {} names",
                        n.len()
                    )));
                }
                let k = self.m().read_vec(
                    kb + self.layout.bytes.data,
                    len as usize,
                    MAX_SLOTS as usize,
                )?;
                Ok(n.into_iter()
                    .zip(k)
                    .enumerate()
                    .map(|(i, (name, kind))| {
                        let k = if (i as u32) < nargs {
                            LocalKind::Arg
                        } else if kind & CO_FAST_FREE != 0 {
                            LocalKind::Free
                        } else if kind & CO_FAST_CELL != 0 {
                            LocalKind::Cell
                        } else if kind & CO_FAST_HIDDEN != 0 {
                            // an inlined comprehension's variable: not a local of the
                            // function (`locals()` does not show it either)
                            return (String::new(), LocalKind::Local);
                        } else {
                            LocalKind::Local
                        };
                        (name, k)
                    })
                    .collect())
            }
        }
    }

    /// The local names of the code at `code` (cached per code object).
    fn names_of(&mut self, code: u64) -> MemResult<Names> {
        let names_field = match self.layout.values.code {
            CodeLocalsLayout::Varnames { varnames, .. } => varnames,
            CodeLocalsLayout::Kinds { names, .. } => names,
        };
        let tuple = self.m().read_u64(code + names_field)?;
        Ok(match self.cache.names.get(&code) {
            Some((t, n)) if *t == tuple => n.clone(),
            _ => {
                let n = std::sync::Arc::new(self.local_names(code)?);
                if self.cache.names.len() >= 100_000 {
                    self.cache.names.clear();
                }
                self.cache.names.insert(code, (tuple, n.clone()));
                n
            }
        })
    }

    /// Where a frame's slots are, and how many there are.
    fn slots_span(&self, frame: u64, names: &Names) -> (u64, usize) {
        (frame + self.layout.values.frame_localsplus, names.len())
    }

    fn read_slots(&self, at: u64, n: usize) -> MemResult<Vec<u64>> {
        let mask = !self.layout.values.localsplus_tag_mask;
        let raw = self.m().read_vec(at, n * 8, MAX_SLOTS as usize * 8)?;
        Ok(raw.chunks_exact(8).map(|c| u64_at(c, 0) & mask).collect())
    }

    /// The arguments and locals of the frame at `frame` running the code at `code`.
    /// Unbound variables (and empty cells) are left out, as `locals()` leaves them out.
    pub fn frame_locals(&mut self, frame: u64, code: u64) -> MemResult<Vec<Local>> {
        let names = self.names_of(code)?;
        let (at, n) = self.slots_span(frame, &names);
        let was_fresh = self.fresh;
        let mut slots = self.read_slots(at, n)?;
        let mut out = Vec::new();
        for attempt in 0..ATTEMPTS {
            // after a failed check, everything is read from the process itself
            self.fresh = was_fresh || attempt > 0;
            out = self.render_slots(&names, &slots);
            let again = self.live(|r| r.read_slots(at, n));
            self.fresh = was_fresh;
            let again = again?;
            if again == slots {
                return Ok(out);
            }
            slots = again;
            if attempt + 1 == ATTEMPTS {
                break;
            }
        }
        // the frame kept changing: its values are not shown as if they were one moment's
        for l in &mut out {
            l.repr = CHANGED.into();
            l.truncated = false;
        }
        Ok(out)
    }

    /// The frame's locals from the first memory, not yet checked against the process:
    /// [`ValueReader::check`] checks many frames in one read, and a frame that fails it is
    /// read again with [`ValueReader::frame_locals`].
    pub fn frame_locals_unchecked(&mut self, frame: u64, code: u64) -> MemResult<Unchecked> {
        let names = self.names_of(code)?;
        let (at, n) = self.slots_span(frame, &names);
        let slots = self.read_slots(at, n)?;
        let locals = self.render_slots(&names, &slots);
        Ok(Unchecked { locals, at, slots })
    }

    /// Whether each frame's slots still hold what its values were read from, now, in the
    /// process itself: one batched read for all of them (3.11+ frames sit together in their
    /// thread's data stack: slot arrays less than a page apart are read as one range).
    pub fn check(&self, frames: &[&Unchecked]) -> MemResult<Vec<bool>> {
        const GAP: u64 = 4096;
        let mask = !self.layout.values.localsplus_tag_mask;
        let mut order: Vec<usize> = (0..frames.len()).collect();
        order.sort_by_key(|&i| frames[i].at);
        // ranges [start, end) covering the slot arrays, in address order
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for &i in &order {
            let (a, e) = (
                frames[i].at,
                frames[i].at + frames[i].slots.len() as u64 * 8,
            );
            match ranges.last_mut() {
                Some(r) if a <= r.1 + GAP && e.max(r.1) - r.0 <= 16 * GAP => r.1 = r.1.max(e),
                _ => ranges.push((a, e)),
            }
        }
        let mut bufs: Vec<Vec<u8>> = ranges
            .iter()
            .map(|r| vec![0u8; (r.1 - r.0) as usize])
            .collect();
        {
            let mut reqs: Vec<(u64, &mut [u8])> = ranges
                .iter()
                .zip(bufs.iter_mut())
                .map(|(r, b)| (r.0, &mut b[..]))
                .collect();
            self.live.read_many(&mut reqs)?;
        }
        Ok(frames
            .iter()
            .map(|u| {
                if u.slots.is_empty() {
                    return true;
                }
                let r = ranges.partition_point(|r| r.1 <= u.at);
                let (start, _) = ranges[r];
                let off = (u.at - start) as usize;
                bufs[r][off..off + u.slots.len() * 8]
                    .chunks_exact(8)
                    .map(|c| u64_at(c, 0) & mask)
                    .eq(u.slots.iter().copied())
            })
            .collect())
    }

    /// The values the slots hold, rendered.
    fn render_slots(&mut self, names: &Names, slots: &[u64]) -> Vec<Local> {
        let cells = matches!(self.layout.values.code, CodeLocalsLayout::Varnames { .. });
        let mut out = Vec::new();
        // a cell var that is also an argument (≤3.10: the argument's slot was emptied
        // into the cell): shown once, as the argument, at the argument's place
        let mut moved: Vec<(usize, u64)> = Vec::new();
        if cells {
            for (i, (name, kind)) in names.iter().enumerate() {
                if *kind == LocalKind::Cell {
                    if let Some(a) = names
                        .iter()
                        .position(|(n, k)| n == name && *k == LocalKind::Arg)
                    {
                        if slots[a] == 0 {
                            moved.push((a, slots[i]));
                        }
                    }
                }
            }
        }
        for (i, (name, kind)) in names.iter().enumerate() {
            if name.is_empty() {
                continue;
            }
            let mut v = slots[i];
            let mut through_cell = *kind != LocalKind::Local;
            if let Some(&(_, c)) = moved.iter().find(|(a, _)| *a == i) {
                v = c;
                through_cell = true;
            }
            if *kind == LocalKind::Cell
                && names.iter().any(|(n, k)| n == name && *k == LocalKind::Arg)
                && cells
            {
                continue;
            }
            if v != 0 && through_cell {
                // a cell or free variable's slot holds its cell (an argument's slot on
                // 3.11+ too once the function made its cell)
                if self.type_of(v).ok().and_then(|t| t.builtin) == Some(Builtin::Cell) {
                    v = self.m().read_u64(v + self.f(obj::CELL_REF)).unwrap_or(0);
                }
            }
            if v == 0 {
                continue;
            }
            let r = self.repr(v);
            out.push(Local {
                name: name.clone(),
                kind: *kind,
                type_name: r.type_name,
                repr: r.text,
                truncated: r.truncated,
                // GIL builds: a placeholder, the caller knows who held the GIL during
                // the read and fills this in, or clears it. Free-threaded builds update a
                // list, dict or set under its own lock: marked where that was held
                // (docs/consistency.md, "Values on a free-threaded build")
                mid_update: if self.layout.object.mutex.is_some() {
                    r.locked.then(|| MidUpdate {
                        thread: None,
                        reason: LOCK_HELD.into(),
                    })
                } else {
                    r.mutable.then(MidUpdate::default)
                },
            });
        }
        out
    }
}

/// A frame's locals read but not yet checked ([`ValueReader::frame_locals_unchecked`]).
#[derive(Debug)]
pub struct Unchecked {
    pub locals: Vec<Local>,
    /// Where its slots are, and what they held.
    at: u64,
    slots: Vec<u64>,
}

/// A dict's raw words (compared by the re-read) and its first (key, value) pairs.
type DictRead = (Vec<u8>, Vec<(u64, u64)>);

/// A dict's keys object, located ([`ValueReader::keys_shape`]).
struct KeysShape {
    /// Slots of the hash index (`DK_SIZE`) and the bytes of each (`DK_IXSIZE`).
    slots: u64,
    width: u64,
    /// The first index slot and the first entry.
    index: u64,
    entries: u64,
    /// An entry's size and where its key and value are in it.
    esize: u64,
    koff: u64,
    voff: u64,
    /// Whether entries hold the key's hash (`PyDictKeyEntry`, not `PyDictUnicodeEntry`).
    hashed: bool,
    /// `dk_nentries`.
    nentries: u64,
    /// The header as read (part of what a read of the dict is checked by).
    head: Vec<u8>,
}

enum SplitOrder {
    Combined,
    /// ≤3.10 split table: the i-th value belongs to the i-th entry.
    KeyOrder,
    /// 3.11+ split table: values base and the entry index of each value, in order.
    Indexed(u64, Vec<u8>),
}

#[derive(Debug, PartialEq, Eq)]
struct Snap {
    items: (usize, Vec<(u64, u64)>),
    words: Vec<u8>,
}

fn nargs(argcount: u32, kwonly: u32, flags: u32) -> u32 {
    argcount + kwonly + u32::from(flags & CO_VARARGS != 0) + u32::from(flags & CO_VARKEYWORDS != 0)
}

/// Decimal text of an `int` from its 30-bit digits (least significant first).
pub fn int_decimal(neg: bool, digits: &[u32]) -> String {
    // base 10^9 limbs, least significant first
    let mut limbs: Vec<u32> = Vec::new();
    for &d in digits.iter().rev() {
        let mut carry = u64::from(d);
        for l in limbs.iter_mut() {
            let v = (u64::from(*l) << 30) + carry;
            *l = (v % 1_000_000_000) as u32;
            carry = v / 1_000_000_000;
        }
        while carry > 0 {
            limbs.push((carry % 1_000_000_000) as u32);
            carry /= 1_000_000_000;
        }
    }
    let mut s = String::new();
    if limbs.is_empty() {
        return "0".into();
    }
    if neg {
        s.push('-');
    }
    let _ = write!(s, "{}", limbs[limbs.len() - 1]);
    for l in limbs.iter().rev().skip(1) {
        let _ = write!(s, "{l:09}");
    }
    s
}

/// Python's `repr(float)`: the shortest digits that round-trip (Rust's `{:e}` gives the same
/// digits as Python's `'r'` mode), laid out by Python's rules: scientific when the decimal
/// point is more than 16 places right or 4 places left of the first digit, `e+16`/`e-05`
/// exponents, `.0` on integral values when `dot0` (not inside a complex).
pub fn float_repr(x: f64, dot0: bool) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.into();
    }
    let sign = if x.is_sign_negative() { "-" } else { "" };
    let e = format!("{:e}", x.abs());
    let (mant, exp) = e.split_once('e').expect("{:e} has an exponent");
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    let decpt = exp.parse::<i32>().expect("exponent") + 1;
    let n = digits.len() as i32;
    if decpt <= -4 || decpt > 16 {
        let mut s = format!("{sign}{}", &digits[..1]);
        if n > 1 {
            s.push('.');
            s.push_str(&digits[1..]);
        }
        let ex = decpt - 1;
        let _ = write!(s, "e{}{:02}", if ex < 0 { '-' } else { '+' }, ex.abs());
        s
    } else if decpt <= 0 {
        format!("{sign}0.{}{digits}", "0".repeat((-decpt) as usize))
    } else if decpt >= n {
        format!(
            "{sign}{digits}{}{}",
            "0".repeat((decpt - n) as usize),
            if dot0 { ".0" } else { "" }
        )
    } else {
        format!(
            "{sign}{}.{}",
            &digits[..decpt as usize],
            &digits[decpt as usize..]
        )
    }
}

/// Python's `repr(complex)`.
pub fn complex_repr(re: f64, im: f64) -> String {
    let imag = float_repr(im, false);
    if re == 0.0 && re.is_sign_positive() {
        return format!("{imag}j");
    }
    let sign = if imag.starts_with('-') { "" } else { "+" };
    format!("({}{sign}{imag}j)", float_repr(re, false))
}

/// Whether Python's `str.isprintable()` holds for a non-ASCII code point. pystackd carries
/// no Unicode database: controls, separators other than space, format characters,
/// surrogates, private use and non-characters are known; an unassigned code point (which
/// Python escapes) is shown as itself.
fn printable(c: u32) -> bool {
    !matches!(c,
        0x80..=0xa0 | 0xad | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x890..=0x891 | 0x8e2
        | 0x1680 | 0x180e | 0x2000..=0x200f | 0x2028..=0x202f | 0x205f..=0x2064
        | 0x2066..=0x206f | 0x3000 | 0xd800..=0xf8ff | 0xfdd0..=0xfdef | 0xfeff
        | 0xfff9..=0xfffb | 0x110bd | 0x110cd | 0x13430..=0x1343f | 0x1bca0..=0x1bca3
        | 0x1d173..=0x1d17a | 0xe0001 | 0xe0020..=0xe007f | 0xf0000..)
        && c & 0xfffe != 0xfffe
}

/// Python's `repr(str)` of the code points `cps`; `cut`: `…` before the closing quote.
pub fn str_repr(cps: &[u32], cut: bool) -> String {
    let quote = if cps.contains(&u32::from(b'\'')) && !cps.contains(&u32::from(b'"')) {
        '"'
    } else {
        '\''
    };
    let mut s = String::with_capacity(cps.len() + 2);
    s.push(quote);
    for &c in cps {
        match c {
            _ if c == quote as u32 || c == u32::from(b'\\') => {
                s.push('\\');
                s.push(char::from_u32(c).unwrap());
            }
            0x09 => s.push_str("\\t"),
            0x0a => s.push_str("\\n"),
            0x0d => s.push_str("\\r"),
            0..=0x1f | 0x7f => {
                let _ = write!(s, "\\x{c:02x}");
            }
            0x20..=0x7e => s.push(char::from_u32(c).unwrap()),
            _ => match char::from_u32(c).filter(|_| printable(c)) {
                Some(ch) => s.push(ch),
                None if c <= 0xff => {
                    let _ = write!(s, "\\x{c:02x}");
                }
                None if c <= 0xffff => {
                    let _ = write!(s, "\\u{c:04x}");
                }
                None => {
                    let _ = write!(s, "\\U{c:08x}");
                }
            },
        }
    }
    if cut {
        s.push('…');
    }
    s.push(quote);
    s
}

/// Python's `repr(bytes)`; `cut`: `…` before the closing quote.
pub fn bytes_repr(b: &[u8], cut: bool) -> String {
    let quote = if b.contains(&b'\'') && !b.contains(&b'"') {
        b'"'
    } else {
        b'\''
    };
    let mut s = String::from("b");
    s.push(quote as char);
    for &c in b {
        match c {
            _ if c == quote || c == b'\\' => {
                s.push('\\');
                s.push(c as char);
            }
            b'\t' => s.push_str("\\t"),
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            0x20..=0x7e => s.push(c as char),
            _ => {
                let _ = write!(s, "\\x{c:02x}");
            }
        }
    }
    if cut {
        s.push('…');
    }
    s.push(quote as char);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_as_python_shows_them() {
        for (x, want) in [
            (0.1, "0.1"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (1e-7, "1e-07"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-0.0, "-0.0"),
            (0.0, "0.0"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
            (f64::NAN, "nan"),
            (1.5, "1.5"),
            (123456789.125, "123456789.125"),
            (1.2345678901234567e300, "1.2345678901234567e+300"),
            (5e-324, "5e-324"),
            (2.5e16, "2.5e+16"),
        ] {
            assert_eq!(float_repr(x, true), want, "{x:e}");
        }
        assert_eq!(complex_repr(1.0, 2.0), "(1+2j)");
        assert_eq!(complex_repr(0.0, 2.0), "2j");
        assert_eq!(complex_repr(-0.0, -1.5), "(-0-1.5j)");
        assert_eq!(complex_repr(1e16, f64::NAN), "(1e+16+nanj)");
    }

    #[test]
    fn ints_and_strings() {
        assert_eq!(int_decimal(false, &[]), "0");
        // 2**30
        assert_eq!(int_decimal(true, &[0, 1]), "-1073741824");
        assert_eq!(str_repr(&[b'a' as u32, b'\'' as u32], false), "\"a'\"");
        assert_eq!(str_repr(&[0x1f600, 0x85, 0xa], true), "'😀\\x85\\n…'");
        assert_eq!(bytes_repr(b"a\x00'\xff", false), "b\"a\\x00'\\xff\"");
    }
}
