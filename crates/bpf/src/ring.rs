//! The consumer side of a BPF ring buffer (`BPF_MAP_TYPE_RINGBUF`), as the kernel lays it
//! out (Documentation/bpf/ringbuf.rst): a read-write page holding the consumer position,
//! then a read-only page holding the producer position followed by the data area mapped
//! twice in a row (so a record that wraps reads contiguously).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Error, Map, MapKind, Result};

/// A record's header: its length with these two bits.
const BUSY: u32 = 1 << 31;
const DISCARD: u32 = 1 << 30;
const HEADER: usize = 8;

pub struct RingBuffer {
    consumer: *mut u8,
    producer: *mut u8,
    page: usize,
    size: usize,
}

// SAFETY: the mappings are owned by this value and only touched through &mut self
unsafe impl Send for RingBuffer {}

impl RingBuffer {
    /// Map a ring-buffer map for reading.
    pub fn new(map: &Map) -> Result<RingBuffer> {
        if map.kind() != MapKind::RingBuf {
            return Err(Error {
                what: "mapping a ring buffer".into(),
                source: std::io::Error::other("the map is not a ring buffer"),
                log: None,
            });
        }
        // SAFETY: sysconf has no preconditions
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let size = map.max_entries() as usize;
        // SAFETY: mapping the kernel's pages of our own map descriptor, at the offsets and
        // with the protections the kernel documents; checked for failure
        let consumer = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd(),
                0,
            )
        };
        if consumer == libc::MAP_FAILED {
            return Err(Error::last_os("mapping a ring buffer's consumer page"));
        }
        // SAFETY: as above
        let producer = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                page + 2 * size,
                libc::PROT_READ,
                libc::MAP_SHARED,
                map.fd(),
                page as libc::off_t,
            )
        };
        if producer == libc::MAP_FAILED {
            let e = Error::last_os("mapping a ring buffer's data");
            // SAFETY: unmapping what was mapped above
            unsafe { libc::munmap(consumer, page) };
            return Err(e);
        }
        Ok(RingBuffer {
            consumer: consumer as *mut u8,
            producer: producer as *mut u8,
            page,
            size,
        })
    }

    fn consumer_pos(&self) -> &AtomicU64 {
        // SAFETY: the first 8 bytes of the consumer page, 8-aligned, shared with the kernel
        unsafe { &*(self.consumer as *const AtomicU64) }
    }

    fn producer_pos(&self) -> &AtomicU64 {
        // SAFETY: the first 8 bytes of the producer page
        unsafe { &*(self.producer as *const AtomicU64) }
    }

    /// Hand every record committed when the call starts to `f`, in order; returns how
    /// many. Records that come meanwhile wait for the next call: a producer faster than
    /// `f` cannot keep the caller here.
    pub fn drain(&mut self, mut f: impl FnMut(&[u8])) -> usize {
        let mut n = 0;
        let mask = (self.size - 1) as u64;
        let mut cons = self.consumer_pos().load(Ordering::Acquire);
        let prod = self.producer_pos().load(Ordering::Acquire);
        loop {
            if cons >= prod {
                break;
            }
            let at = self.page + (cons & mask) as usize;
            // SAFETY: `at` is inside the data area (mapped twice, so header and record are
            // contiguous); the header is written by the kernel and read atomically
            let hdr = unsafe { &*(self.producer.add(at) as *const std::sync::atomic::AtomicU32) }
                .load(Ordering::Acquire);
            if hdr & BUSY != 0 {
                // reserved, not committed yet
                break;
            }
            let len = (hdr & !(BUSY | DISCARD)) as usize;
            if hdr & DISCARD == 0 {
                // SAFETY: a committed record of `len` bytes after its header
                let data =
                    unsafe { std::slice::from_raw_parts(self.producer.add(at + HEADER), len) };
                f(data);
                n += 1;
            }
            cons += (len + HEADER).div_ceil(8) as u64 * 8;
            self.consumer_pos().store(cons, Ordering::Release);
        }
        n
    }
}

impl Drop for RingBuffer {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what new() mapped
        unsafe {
            libc::munmap(self.consumer as *mut libc::c_void, self.page);
            libc::munmap(
                self.producer as *mut libc::c_void,
                self.page + 2 * self.size,
            );
        }
    }
}
