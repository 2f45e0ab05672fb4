//! `bpf(2)`: maps and programs.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::{Error, Result};

// commands, map and program types (include/uapi/linux/bpf.h)
const MAP_CREATE: libc::c_long = 0;
const MAP_LOOKUP_ELEM: libc::c_long = 1;
const PROG_LOAD: libc::c_long = 5;

/// The map types pystackd uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapKind {
    /// `BPF_MAP_TYPE_PERCPU_ARRAY`: one value per CPU per index.
    PerCpuArray,
    /// `BPF_MAP_TYPE_RINGBUF`: records to user space.
    RingBuf,
}

impl MapKind {
    fn number(self) -> u32 {
        match self {
            MapKind::PerCpuArray => 6,
            MapKind::RingBuf => 27,
        }
    }
}

/// The program types pystackd loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgKind {
    /// `BPF_PROG_TYPE_KPROBE` (uprobes too).
    Kprobe,
    /// `BPF_PROG_TYPE_TRACEPOINT`.
    Tracepoint,
    /// `BPF_PROG_TYPE_PERF_EVENT` (`profile`).
    PerfEvent,
}

impl ProgKind {
    fn number(self) -> u32 {
        match self {
            ProgKind::Kprobe => 2,
            ProgKind::Tracepoint => 5,
            ProgKind::PerfEvent => 7,
        }
    }
}

#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> libc::c_long {
    // SAFETY: attr is a properly laid out, initialised bpf_attr prefix of its size
    unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    }
}

fn name16(name: &str) -> [u8; 16] {
    // object names: 15 characters of [A-Za-z0-9_.]
    let mut out = [0u8; 16];
    for (o, b) in out.iter_mut().zip(
        name.bytes()
            .filter(|b| b.is_ascii_alphanumeric() || *b == b'_')
            .take(15),
    ) {
        *o = b;
    }
    out
}

/// A map (closed when dropped).
#[derive(Debug)]
pub struct Map {
    fd: OwnedFd,
    kind: MapKind,
    value_size: u32,
    max_entries: u32,
}

impl Map {
    /// Create a map. For a ring buffer, `max_entries` is its size in bytes (a power of two,
    /// a multiple of the page size) and the key and value sizes are 0.
    pub fn create(
        kind: MapKind,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        name: &str,
    ) -> Result<Map> {
        let mut attr = MapCreateAttr {
            map_type: kind.number(),
            key_size,
            value_size,
            max_entries,
            map_name: name16(name),
            ..Default::default()
        };
        let fd = bpf(MAP_CREATE, &mut attr);
        if fd < 0 {
            return Err(Error::last_os(format!("creating BPF map {name}")));
        }
        Ok(Map {
            // SAFETY: a new descriptor the kernel just returned, owned by nobody else
            fd: unsafe { OwnedFd::from_raw_fd(fd as RawFd) },
            kind,
            value_size,
            max_entries,
        })
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn kind(&self) -> MapKind {
        self.kind
    }

    pub fn max_entries(&self) -> u32 {
        self.max_entries
    }

    /// A per-CPU array's element `index`: one value per possible CPU.
    pub fn lookup_percpu(&self, index: u32, cpus: usize) -> Result<Vec<Vec<u8>>> {
        let stride = (self.value_size as usize).div_ceil(8) * 8;
        let mut buf = vec![0u8; stride * cpus];
        let key = index;
        let mut attr = ElemAttr {
            map_fd: self.fd() as u32,
            key: &key as *const u32 as u64,
            value: buf.as_mut_ptr() as u64,
            ..Default::default()
        };
        if bpf(MAP_LOOKUP_ELEM, &mut attr) < 0 {
            return Err(Error::last_os("reading a BPF map"));
        }
        Ok(buf
            .chunks(stride)
            .map(|c| c[..self.value_size as usize].to_vec())
            .collect())
    }
}

/// The number of possible CPUs (per-CPU map values come in this many).
pub fn possible_cpus() -> std::io::Result<usize> {
    // "0-3" or "0,2-5"
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    let mut max = 0usize;
    for part in text.trim().split(',') {
        let last = part.rsplit('-').next().unwrap_or(part);
        let n: usize = last
            .trim()
            .parse()
            .map_err(|_| std::io::Error::other(format!("cannot read possible CPUs {text:?}")))?;
        max = max.max(n);
    }
    Ok(max + 1)
}

/// A loaded program (unloaded when dropped and no perf event holds it).
#[derive(Debug)]
pub struct Program {
    fd: OwnedFd,
}

impl Program {
    /// Load `insns` (the bytes of `struct bpf_insn`s). A program the verifier refuses is
    /// loaded again with its log on, and the end of the log is in the error.
    pub fn load(kind: ProgKind, insns: &[u8], name: &str) -> Result<Program> {
        let license = CString::new("GPL").expect("no NUL");
        let mut attr = ProgLoadAttr {
            prog_type: kind.number(),
            insn_cnt: (insns.len() / 8) as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            prog_name: name16(name),
            ..Default::default()
        };
        let fd = bpf(PROG_LOAD, &mut attr);
        if fd >= 0 {
            // SAFETY: a new descriptor the kernel just returned
            return Ok(Program {
                fd: unsafe { OwnedFd::from_raw_fd(fd as RawFd) },
            });
        }
        let first = std::io::Error::last_os_error();
        // again, with the verifier's log
        let mut log = vec![0u8; 16 << 20];
        attr.log_level = 1;
        attr.log_size = log.len() as u32;
        attr.log_buf = log.as_mut_ptr() as u64;
        let fd = bpf(PROG_LOAD, &mut attr);
        if fd >= 0 {
            // SAFETY: as above (it loaded the second time)
            return Ok(Program {
                fd: unsafe { OwnedFd::from_raw_fd(fd as RawFd) },
            });
        }
        let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
        let text = String::from_utf8_lossy(&log[..end]);
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(12)..].join("\n");
        Err(Error {
            what: format!("loading BPF program {name}"),
            source: first,
            log: (!tail.is_empty()).then_some(tail),
        })
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
