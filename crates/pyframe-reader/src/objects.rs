//! Reading Python objects the walker needs: type checks, `str` and `bytes`.

use rustc_hash::FxHashMap as HashMap;

use crate::error::MemoryError;
use crate::layout::Layout;
use crate::memory::{u32_at, u64_at, MemResult, Memory, MemoryExt};

/// Limits that keep a garbage pointer from becoming a huge read.
pub const MAX_STRING_CHARS: u64 = 16 * 1024;
pub const MAX_BYTES: u64 = 4 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Code,
    Frame,
    Str,
    Bytes,
}

impl Kind {
    fn tp_name(self) -> &'static [u8] {
        match self {
            Kind::Code => b"code",
            Kind::Frame => b"frame",
            Kind::Str => b"str",
            Kind::Bytes => b"bytes",
        }
    }
}

/// Type addresses: from the symbol table where exported, else learned once by reading
/// `tp_name` of the first object that claims to be of the type.
#[derive(Debug, Default, Clone)]
pub struct Types {
    known: HashMap<Kind, u64>,
    /// type pointers already found NOT to be a given kind (garbage or other types)
    rejected: HashMap<(Kind, u64), ()>,
}

impl Types {
    pub fn new(
        code: Option<u64>,
        frame: Option<u64>,
        str_: Option<u64>,
        bytes: Option<u64>,
    ) -> Self {
        let mut known = HashMap::default();
        for (k, v) in [
            (Kind::Code, code),
            (Kind::Frame, frame),
            (Kind::Str, str_),
            (Kind::Bytes, bytes),
        ] {
            if let Some(v) = v {
                known.insert(k, v);
            }
        }
        Types {
            known,
            rejected: HashMap::default(),
        }
    }

    /// Is `type_ptr` the type `kind`?
    pub fn check(&mut self, mem: &dyn Memory, layout: &Layout, kind: Kind, type_ptr: u64) -> bool {
        if let Some(&t) = self.known.get(&kind) {
            return t == type_ptr;
        }
        if type_ptr == 0 || self.rejected.contains_key(&(kind, type_ptr)) {
            return false;
        }
        let ok = (|| -> MemResult<bool> {
            let name_ptr = mem.read_u64(type_ptr.wrapping_add(layout.type_tp_name))?;
            let mut buf = [0u8; 8];
            mem.read(name_ptr, &mut buf)?;
            let want = kind.tp_name();
            Ok(&buf[..want.len()] == want && buf[want.len()] == 0)
        })()
        .unwrap_or(false);
        if ok {
            self.known.insert(kind, type_ptr);
        } else if self.rejected.len() < 1024 {
            self.rejected.insert((kind, type_ptr), ());
        }
        ok
    }

    pub fn expect(
        &mut self,
        mem: &dyn Memory,
        layout: &Layout,
        kind: Kind,
        obj: u64,
        type_ptr: u64,
    ) -> MemResult<()> {
        if self.check(mem, layout, kind, type_ptr) {
            Ok(())
        } else {
            Err(MemoryError::Invalid(format!(
                "object at {obj:#x} is not a {kind:?} object"
            )))
        }
    }
}

/// Where a compact `str`'s characters are, from its header (the first
/// `layout.unicode.compact_data` bytes, at most 80): the walker's names and `--locals`
/// values read strings through this one decoding of the state bits.
#[derive(Debug, Clone, Copy)]
pub struct StrShape {
    /// Length in code points, as the object states it (not yet bounded).
    pub len: u64,
    /// Bytes per code point: 1, 2 or 4.
    pub width: usize,
    /// Offset of the characters from the object's start.
    pub data: u64,
    pub ascii: bool,
}

pub fn str_shape(layout: &Layout, addr: u64, head: &[u8]) -> MemResult<StrShape> {
    let u = &layout.unicode;
    let len = u64_at(head, u.length as usize);
    let state = u32_at(head, u.state as usize);
    let kind = (state >> u.kind_shift) & 7;
    let compact = (state >> u.compact_bit) & 1 == 1;
    let ascii = (state >> u.ascii_bit) & 1 == 1;
    if !compact {
        return Err(MemoryError::Invalid(format!(
            "str at {addr:#x} is not compact"
        )));
    }
    if ascii && kind != 1 {
        return Err(MemoryError::Invalid(format!(
            "ASCII str at {addr:#x} has kind {kind}"
        )));
    }
    if !matches!(kind, 1 | 2 | 4) {
        return Err(MemoryError::Invalid(format!(
            "str at {addr:#x} has kind {kind}"
        )));
    }
    Ok(StrShape {
        len,
        width: kind as usize,
        data: if ascii { u.ascii_data } else { u.compact_data },
        ascii,
    })
}

/// Read a compact `str` and return it as UTF-8.
pub fn read_str(
    mem: &dyn Memory,
    layout: &Layout,
    types: &mut Types,
    addr: u64,
) -> MemResult<String> {
    let u = &layout.unicode;
    let mut head = [0u8; 80];
    let head = &mut head[..(u.compact_data as usize).min(80)];
    mem.read(addr, head)?;
    types.expect(
        mem,
        layout,
        Kind::Str,
        addr,
        u64_at(head, layout.object.ob_type as usize),
    )?;
    let shape = str_shape(layout, addr, head)?;
    if shape.len > MAX_STRING_CHARS {
        return Err(MemoryError::Invalid(format!(
            "str at {addr:#x} claims {} characters",
            shape.len
        )));
    }
    let n = shape.len as usize;
    let data = addr.wrapping_add(shape.data);
    if shape.ascii {
        let bytes = mem.read_vec(data, n, MAX_STRING_CHARS as usize)?;
        if !bytes.is_ascii() {
            return Err(MemoryError::Invalid(format!(
                "ASCII str at {addr:#x} has non-ASCII data"
            )));
        }
        // SAFETY-free: checked ASCII
        return Ok(String::from_utf8(bytes).expect("ascii"));
    }
    match shape.width {
        1 => {
            let b = mem.read_vec(data, n, MAX_STRING_CHARS as usize)?;
            Ok(b.iter().map(|&c| c as char).collect())
        }
        2 => {
            let b = mem.read_vec(data, n * 2, 2 * MAX_STRING_CHARS as usize)?;
            let units = b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]));
            // UCS2 holds no surrogate pairs in a valid str; map lone ones to U+FFFD
            Ok(units
                .map(|c| char::from_u32(c as u32).unwrap_or('\u{fffd}'))
                .collect())
        }
        _ => {
            let b = mem.read_vec(data, n * 4, 4 * MAX_STRING_CHARS as usize)?;
            let chars = b
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
            let mut s = String::with_capacity(n);
            for c in chars {
                s.push(char::from_u32(c).ok_or_else(|| {
                    MemoryError::Invalid(format!(
                        "str at {addr:#x} holds invalid code point {c:#x}"
                    ))
                })?);
            }
            Ok(s)
        }
    }
}

/// Read the contents of a `bytes` object.
pub fn read_bytes(
    mem: &dyn Memory,
    layout: &Layout,
    types: &mut Types,
    addr: u64,
) -> MemResult<Vec<u8>> {
    let o = layout.object;
    let mut head = [0u8; 40];
    let head = &mut head[..o.ob_size as usize + 8];
    mem.read(addr, head)?;
    types.expect(
        mem,
        layout,
        Kind::Bytes,
        addr,
        u64_at(head, o.ob_type as usize),
    )?;
    let len = u64_at(head, o.ob_size as usize);
    if len > MAX_BYTES {
        return Err(MemoryError::Invalid(format!(
            "bytes at {addr:#x} claims {len} bytes"
        )));
    }
    mem.read_vec(
        addr.wrapping_add(layout.bytes.data),
        len as usize,
        MAX_BYTES as usize,
    )
}
