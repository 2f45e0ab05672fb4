//! Remote memory behind one small trait, so that a live process, a saved snapshot
//! (tests, fuzzing) and later a core file look the same to the walker.

use std::collections::BTreeMap;

use crate::error::MemoryError;

pub type MemResult<T> = std::result::Result<T, MemoryError>;

/// Read-only access to another address space.
pub trait Memory: Send + Sync {
    /// Fill `buf` from `addr`; fails rather than returning a short read.
    fn read(&self, addr: u64, buf: &mut [u8]) -> MemResult<()>;

    /// Several reads at once (one syscall where the OS allows); fails if any fails.
    fn read_many(&self, reqs: &mut [(u64, &mut [u8])]) -> MemResult<()> {
        for (addr, buf) in reqs.iter_mut() {
            self.read(*addr, buf)?;
        }
        Ok(())
    }
}

impl<M: Memory + ?Sized> Memory for &M {
    fn read(&self, addr: u64, buf: &mut [u8]) -> MemResult<()> {
        (**self).read(addr, buf)
    }
    fn read_many(&self, reqs: &mut [(u64, &mut [u8])]) -> MemResult<()> {
        (**self).read_many(reqs)
    }
}

impl<M: Memory + ?Sized> Memory for Box<M> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> MemResult<()> {
        (**self).read(addr, buf)
    }
    fn read_many(&self, reqs: &mut [(u64, &mut [u8])]) -> MemResult<()> {
        (**self).read_many(reqs)
    }
}

impl<M: Memory + ?Sized> Memory for std::sync::Arc<M> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> MemResult<()> {
        (**self).read(addr, buf)
    }
    fn read_many(&self, reqs: &mut [(u64, &mut [u8])]) -> MemResult<()> {
        (**self).read_many(reqs)
    }
}

/// Typed little-endian reads on top of [`Memory`] (x86_64 and the 64-bit targets we support).
pub trait MemoryExt: Memory {
    fn read_array<const N: usize>(&self, addr: u64) -> MemResult<[u8; N]> {
        let mut b = [0u8; N];
        self.read(addr, &mut b)?;
        Ok(b)
    }
    fn read_u64(&self, addr: u64) -> MemResult<u64> {
        Ok(u64::from_le_bytes(self.read_array(addr)?))
    }
    fn read_u32(&self, addr: u64) -> MemResult<u32> {
        Ok(u32::from_le_bytes(self.read_array(addr)?))
    }
    fn read_i32(&self, addr: u64) -> MemResult<i32> {
        Ok(i32::from_le_bytes(self.read_array(addr)?))
    }
    fn read_u8(&self, addr: u64) -> MemResult<u8> {
        Ok(self.read_array::<1>(addr)?[0])
    }
    /// Read `len` bytes, refusing lengths above `max` (a garbage length must not
    /// become an unbounded allocation).
    fn read_vec(&self, addr: u64, len: usize, max: usize) -> MemResult<Vec<u8>> {
        if len > max {
            return Err(MemoryError::Invalid(format!(
                "length {len} at {addr:#x} exceeds limit {max}"
            )));
        }
        let mut v = vec![0u8; len];
        self.read(addr, &mut v)?;
        Ok(v)
    }
}

impl<M: Memory + ?Sized> MemoryExt for M {}

/// Little-endian field access on a local copy of a remote struct.
pub fn u64_at(buf: &[u8], off: usize) -> u64 {
    buf.get(off..off + 8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
        .unwrap_or(0)
}
pub fn u32_at(buf: &[u8], off: usize) -> u32 {
    buf.get(off..off + 4)
        .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
        .unwrap_or(0)
}
pub fn i32_at(buf: &[u8], off: usize) -> i32 {
    u32_at(buf, off) as i32
}
pub fn u8_at(buf: &[u8], off: usize) -> u8 {
    buf.get(off).copied().unwrap_or(0)
}

/// A saved set of memory regions: what a test or a fuzzer hands the walker instead
/// of a live process.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    regions: BTreeMap<u64, Vec<u8>>,
}

impl Snapshot {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add (or overwrite) the bytes at `addr`. Regions must not overlap.
    pub fn insert(&mut self, addr: u64, bytes: Vec<u8>) {
        self.regions.insert(addr, bytes);
    }

    pub fn regions(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.regions.iter().map(|(a, b)| (*a, b.as_slice()))
    }

    /// Serialise as a sequence of `addr:u64 len:u64 bytes` records.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (a, b) in &self.regions {
            out.extend_from_slice(&a.to_le_bytes());
            out.extend_from_slice(&(b.len() as u64).to_le_bytes());
            out.extend_from_slice(b);
        }
        out
    }

    /// Inverse of [`Snapshot::to_bytes`]; tolerant of truncation (fuzz input).
    pub fn from_bytes(mut data: &[u8]) -> Self {
        let mut s = Snapshot::new();
        while data.len() >= 16 {
            let addr = u64::from_le_bytes(data[..8].try_into().unwrap());
            let len = u64::from_le_bytes(data[8..16].try_into().unwrap()) as usize;
            data = &data[16..];
            let len = len.min(data.len());
            s.insert(addr, data[..len].to_vec());
            data = &data[len..];
        }
        s
    }
}

impl Memory for Snapshot {
    fn read(&self, addr: u64, buf: &mut [u8]) -> MemResult<()> {
        let unmapped = MemoryError::Unmapped {
            addr,
            len: buf.len(),
        };
        let (start, bytes) = self
            .regions
            .range(..=addr)
            .next_back()
            .ok_or(unmapped.clone())?;
        let off = (addr - start) as usize;
        let end = off.checked_add(buf.len()).ok_or(unmapped.clone())?;
        if end > bytes.len() {
            return Err(unmapped);
        }
        buf.copy_from_slice(&bytes[off..end]);
        Ok(())
    }
}

/// Serves small reads from 4 KiB blocks fetched once per walk: frames of 3.11+ sit
/// together in the thread's data stack and recursion reuses one code object, so one
/// syscall covers many reads. Created afresh for each walk (it never goes stale); its
/// buffers can be handed to the next walk ([`BlockCache::with_spare`]).
pub struct BlockCache<'a> {
    inner: &'a dyn Memory,
    state: std::sync::Mutex<Blocks>,
}

/// One 4 KiB block of the target's memory.
pub type Block = Box<[u8; BLOCK]>;

#[derive(Default)]
struct Blocks {
    held: rustc_hash::FxHashMap<u64, Block>,
    /// Buffers to fill before allocating: allocating and zeroing ~50 blocks per warm read
    /// (3.8-3.10 frames are spread over the heap) cost more than the consistency check.
    /// A buffer is only ever served after a read filled it whole.
    spare: Vec<Block>,
    /// While [`BlockCache::speculate`] runs: the blocks reads wanted and did not find (the
    /// read fails instead of fetching them).
    wanted: Option<Vec<u64>>,
}

impl Blocks {
    fn buffer(&mut self) -> Block {
        self.spare.pop().unwrap_or_else(|| Box::new([0u8; BLOCK]))
    }
}

/// The size of a block ([`Block`]).
pub const BLOCK: usize = 4096;
/// Blocks kept per walk (bounded memory on garbage chains).
const MAX_BLOCKS: usize = 4096;

impl<'a> BlockCache<'a> {
    pub fn new(inner: &'a dyn Memory) -> Self {
        Self::with_spare(inner, Vec::new())
    }

    /// A cache that fills these buffers (an earlier walk's, [`BlockCache::into_spare`])
    /// before allocating new ones.
    pub fn with_spare(inner: &'a dyn Memory, mut spare: Vec<Block>) -> Self {
        spare.truncate(MAX_BLOCKS);
        BlockCache {
            inner,
            state: std::sync::Mutex::new(Blocks {
                held: Default::default(),
                spare,
                wanted: None,
            }),
        }
    }

    /// Every buffer of this walk, for the next one.
    pub fn into_spare(self) -> Vec<Block> {
        let Blocks {
            held, mut spare, ..
        } = self.state.into_inner().unwrap_or_else(|e| e.into_inner());
        spare.extend(held.into_values());
        spare.truncate(MAX_BLOCKS);
        spare
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Blocks> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fetch these blocks now, in one batched read: the blocks the previous walk of the
    /// same process touched, which a stack that has not moved much touches again. A
    /// failed batch (some block no longer mapped) is simply not used.
    pub fn prefetch(&self, blocks: &[u64]) {
        let blocks = &blocks[..blocks.len().min(MAX_BLOCKS)];
        if blocks.is_empty() {
            return;
        }
        let mut bufs: Vec<Block> = {
            let mut st = self.lock();
            blocks.iter().map(|_| st.buffer()).collect()
        };
        let ok = {
            let mut reqs: Vec<(u64, &mut [u8])> = blocks
                .iter()
                .copied()
                .zip(bufs.iter_mut().map(|b| &mut b[..]))
                .collect();
            self.inner.read_many(&mut reqs).is_ok()
        };
        let mut st = self.lock();
        if ok {
            st.held.reserve(blocks.len());
            for (a, b) in blocks.iter().zip(bufs) {
                st.held.insert(*a, b);
            }
        } else {
            st.spare.extend(bufs);
        }
    }

    /// Runs `f` with reads that do not fetch: a read of a block not held fails, and its
    /// address is noted. Returns the blocks `f` wanted, for one batched
    /// [`BlockCache::prefetch`]. Lets independent pointer chains (each thread's object,
    /// then its attributes, then their values) be followed together, one batched read
    /// per link instead of one read per chain per link: what `f` computes is thrown away
    /// (a read that failed may have looked like "not found"), only its reads count.
    pub fn speculate(&self, f: impl FnOnce()) -> Vec<u64> {
        self.lock().wanted = Some(Vec::new());
        f();
        let mut st = self.lock();
        let mut wanted = st.wanted.take().unwrap_or_default();
        wanted.sort_unstable();
        wanted.dedup();
        wanted.truncate(MAX_BLOCKS.saturating_sub(st.held.len()));
        wanted
    }

    /// Addresses of the blocks this walk read.
    pub fn touched(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.lock().held.keys().copied().collect();
        v.sort_unstable();
        v
    }
}

impl Memory for BlockCache<'_> {
    fn read_many(&self, reqs: &mut [(u64, &mut [u8])]) -> MemResult<()> {
        // the blocks not held yet, fetched in one batched read (many small objects spread
        // over the heap: one system call instead of one per block)
        let mut missing: Vec<u64> = {
            let st = self.lock();
            reqs.iter()
                .filter(|(a, b)| !b.is_empty() && a.checked_add(b.len() as u64).is_some())
                .flat_map(|(a, b)| {
                    let first = a & !(BLOCK as u64 - 1);
                    let last = (a + b.len() as u64 - 1) & !(BLOCK as u64 - 1);
                    (first..=last).step_by(BLOCK)
                })
                .filter(|p| !st.held.contains_key(p))
                .collect()
        };
        missing.sort_unstable();
        missing.dedup();
        if let Some(w) = self.lock().wanted.as_mut() {
            if !missing.is_empty() {
                w.extend_from_slice(&missing);
                return Err(not_held(missing[0]));
            }
        }
        if missing.len() > 1 && missing.len() + self.lock().held.len() <= MAX_BLOCKS {
            self.prefetch(&missing);
        }
        // every block here was read during this walk: as fresh as a new read
        for (addr, buf) in reqs.iter_mut() {
            self.read(*addr, buf)?;
        }
        Ok(())
    }

    fn read(&self, addr: u64, buf: &mut [u8]) -> MemResult<()> {
        let len = buf.len() as u64;
        let first = addr & !(BLOCK as u64 - 1);
        let Some(end) = addr.checked_add(len) else {
            return Err(MemoryError::Unmapped {
                addr,
                len: buf.len(),
            });
        };
        if buf.is_empty() || end - first > 2 * BLOCK as u64 {
            if self.lock().wanted.is_some() {
                // (a long read is made when it is really made)
                return Err(not_held(first));
            }
            return self.inner.read(addr, buf);
        }
        let mut st = self.lock();
        let mut pos = first;
        let mut done = 0usize;
        while pos < end {
            if !st.held.contains_key(&pos) {
                if let Some(w) = st.wanted.as_mut() {
                    w.push(pos);
                    return Err(not_held(pos));
                }
                if st.held.len() >= MAX_BLOCKS {
                    drop(st);
                    return self.inner.read(addr, buf);
                }
                let mut b = st.buffer();
                if self.inner.read(pos, &mut b[..]).is_err() {
                    // a page we may not read whole (guard pages, special mappings)
                    st.spare.push(b);
                    drop(st);
                    return self.inner.read(addr, buf);
                }
                st.held.insert(pos, b);
            }
            let b = &st.held[&pos];
            let from = addr.max(pos) - pos;
            let to = end.min(pos + BLOCK as u64) - pos;
            let n = (to - from) as usize;
            buf[done..done + n].copy_from_slice(&b[from as usize..to as usize]);
            done += n;
            let Some(next) = pos.checked_add(BLOCK as u64) else {
                break;
            };
            pos = next;
        }
        Ok(())
    }
}

/// What a read during [`BlockCache::speculate`] fails with.
fn not_held(block: u64) -> MemoryError {
    MemoryError::Invalid(format!("block {block:#x} not read yet (speculating)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_reads_inside_regions_only() {
        let mut s = Snapshot::new();
        s.insert(0x1000, (0u8..32).collect());
        assert_eq!(
            s.read_u32(0x1004).unwrap(),
            u32::from_le_bytes([4, 5, 6, 7])
        );
        assert!(s.read_u64(0x101c).is_err());
        assert!(s.read_u8(0xfff).is_err());
        let round = Snapshot::from_bytes(&s.to_bytes());
        assert_eq!(round.read_u8(0x101f).unwrap(), 31);
    }
}
