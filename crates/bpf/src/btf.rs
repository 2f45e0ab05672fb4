//! One thing out of the kernel's BTF (`/sys/kernel/btf/vmlinux`): the byte offset of a
//! member path in a struct, e.g. `task_struct` → `thread.fsbase`. A small reader of the
//! documented format (Documentation/bpf/btf.rst) rather than a crate: btf-rs is LGPL and
//! aya-obj keeps its type lookup private.

use std::collections::HashMap;

const MAGIC: u16 = 0xeb9f;
const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, Clone)]
struct Member {
    name: u32,
    ty: u32,
    bit_offset: u32,
}

#[derive(Debug, Clone)]
struct Type {
    name: u32,
    kind: u32,
    /// The referenced type (typedef, const, ...).
    refers: u32,
    members: Vec<Member>,
}

/// A parsed BTF blob (types and strings).
pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
    by_name: HashMap<String, Vec<u32>>,
}

fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
}

impl Btf {
    /// The running kernel's BTF.
    pub fn kernel() -> std::io::Result<Btf> {
        let bytes = std::fs::read("/sys/kernel/btf/vmlinux")?;
        Btf::parse(&bytes).ok_or_else(|| std::io::Error::other("malformed /sys/kernel/btf/vmlinux"))
    }

    /// Parse a little-endian BTF blob; `None` when it is malformed.
    pub fn parse(b: &[u8]) -> Option<Btf> {
        if u16::from_le_bytes(b.get(0..2)?.try_into().ok()?) != MAGIC {
            return None;
        }
        let hdr_len = u32_at(b, 4)? as usize;
        let (type_off, type_len) = (u32_at(b, 8)? as usize, u32_at(b, 12)? as usize);
        let (str_off, str_len) = (u32_at(b, 16)? as usize, u32_at(b, 20)? as usize);
        let types_b = b.get(hdr_len + type_off..hdr_len + type_off + type_len)?;
        let strings = b
            .get(hdr_len + str_off..hdr_len + str_off + str_len)?
            .to_vec();
        // type id 0 is void
        let mut types = vec![Type {
            name: 0,
            kind: 0,
            refers: 0,
            members: Vec::new(),
        }];
        let mut o = 0usize;
        while o < types_b.len() {
            let name = u32_at(types_b, o)?;
            let info = u32_at(types_b, o + 4)?;
            let refers = u32_at(types_b, o + 8)?;
            o += 12;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let kind_flag = info >> 31;
            let mut members = Vec::new();
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION => {
                    for m in 0..vlen {
                        let at = o + 12 * m;
                        let off = u32_at(types_b, at + 8)?;
                        members.push(Member {
                            name: u32_at(types_b, at)?,
                            ty: u32_at(types_b, at + 4)?,
                            bit_offset: if kind_flag == 1 { off & 0xff_ffff } else { off },
                        });
                    }
                    12 * vlen
                }
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
                KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                _ => 0,
            };
            o += extra;
            types.push(Type {
                name,
                kind,
                refers,
                members,
            });
        }
        let mut btf = Btf {
            types,
            strings,
            by_name: HashMap::new(),
        };
        for (id, t) in btf.types.iter().enumerate() {
            if t.kind == KIND_STRUCT || t.kind == KIND_UNION {
                let n = btf.string(t.name).to_string();
                if !n.is_empty() {
                    btf.by_name.entry(n).or_default().push(id as u32);
                }
            }
        }
        Some(btf)
    }

    fn string(&self, off: u32) -> &str {
        let s = self.strings.get(off as usize..).unwrap_or(&[]);
        let end = s.iter().position(|c| *c == 0).unwrap_or(s.len());
        std::str::from_utf8(&s[..end]).unwrap_or("")
    }

    /// Follow typedefs and qualifiers to the type itself.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..32 {
            let t = self.types.get(id as usize)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.refers
                }
                _ => return Some(t),
            }
        }
        None
    }

    /// Byte offset of `member` in `t`, looking into anonymous structs and unions (the
    /// kernel groups fields in them).
    fn member_offset(&self, t: &Type, member: &str, depth: u32) -> Option<(u32, u32)> {
        if depth > 8 {
            return None;
        }
        for m in &t.members {
            let name = self.string(m.name);
            if name == member {
                return Some((m.bit_offset, m.ty));
            }
            if name.is_empty() {
                let inner = self.resolve(m.ty)?;
                if let Some((bits, ty)) = self.member_offset(inner, member, depth + 1) {
                    return Some((m.bit_offset + bits, ty));
                }
            }
        }
        None
    }

    /// Byte offset of the member path `path` (`"thread.fsbase"`) in struct `name`.
    pub fn offset_of(&self, name: &str, path: &str) -> Option<u32> {
        let ids = self.by_name.get(name)?;
        // the definition with members (forward declarations have none)
        let mut t = ids
            .iter()
            .filter_map(|id| self.types.get(*id as usize))
            .find(|t| !t.members.is_empty())?;
        let mut bits = 0u32;
        let parts: Vec<&str> = path.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            let (b, ty) = self.member_offset(t, part, 0)?;
            bits += b;
            if i + 1 < parts.len() {
                t = self.resolve(ty)?;
            }
        }
        (bits & 7 == 0).then_some(bits / 8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_task_struct_fsbase() {
        let Ok(btf) = Btf::kernel() else {
            eprintln!("SKIP: no /sys/kernel/btf/vmlinux");
            return;
        };
        let off = btf.offset_of("task_struct", "thread.fsbase");
        // x86-64 only has fsbase; there it is inside task_struct, past its start
        if cfg!(target_arch = "x86_64") {
            let off = off.expect("task_struct.thread.fsbase");
            assert!(off > 64 && off < 64 * 1024, "{off}");
            // the same path spelt in two steps agrees
            let thread = btf.offset_of("task_struct", "thread").unwrap();
            let fsbase = btf.offset_of("thread_struct", "fsbase").unwrap();
            assert_eq!(off, thread + fsbase);
        }
        assert!(btf.offset_of("task_struct", "no_such_member").is_none());
        assert!(Btf::parse(b"garbage").is_none());
    }
}
