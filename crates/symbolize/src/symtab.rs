//! Function symbols from `.symtab` and `.dynsym`, sorted by address, looked up with
//! one binary search. Sized symbols cover their size; no_size ones reach the next
//! symbol or their section's end.
//!
//! Local symbols are kept: GCC's hot/cold splitting emits `_PyEval_EvalFrameDefault.cold`
//! as a local symbol of the debug file's `.symtab`, and it is the only name of that code.

use std::sync::Arc;

use object::{Object, ObjectSection, ObjectSymbol, SymbolKind, SymbolSection};

use crate::elf::ElfFile;
use crate::error::Result;

/// One function symbol.
#[derive(Debug, Clone)]
pub struct Symbol {
    pub addr: u64,
    pub size: u64,
    pub name: Arc<str>,
    pub global: bool,
}

/// A symbol that contains an address, and the address's offset into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymbolHit {
    pub name: Arc<str>,
    /// Start of the symbol (ELF virtual address).
    pub addr: u64,
    pub size: u64,
    pub offset: u64,
}

/// Sized function symbols of one module, sorted by address.
#[derive(Debug, Default)]
pub struct SymbolTable {
    syms: Vec<Symbol>,
    /// The start addresses alone, for a cache-friendly binary search (8 bytes per
    /// symbol: a libpython's 13,000 fit in L2).
    starts: Vec<u64>,
    name_bytes: usize,
}

/// How far back a lookup walks past the nearest symbol start to find one that
/// contains the address (symbols nested in others are rare; aliases are deduplicated).
const MAX_WALK_BACK: usize = 8;

impl SymbolTable {
    /// Symbols of `files` in order: an earlier file's name wins for an address both
    /// name (the debug file's full `.symtab` after the binary's).
    pub fn build(files: &[&ElfFile]) -> Result<SymbolTable> {
        let mut syms: Vec<(Symbol, u32)> = Vec::new();
        // no_size function symbols (`_init`, `deregister_tm_clones`, assembler code)
        // extend to the next symbol or the end of their section, as gdb reads them
        let mut no_size: Vec<(Symbol, u32, u64)> = Vec::new();
        let mut rank = 0u32;
        for file in files {
            let obj = file.object()?;
            for table in [obj.symbols(), obj.dynamic_symbols()] {
                for sym in table {
                    rank += 1;
                    if sym.kind() != SymbolKind::Text || sym.address() == 0 {
                        continue;
                    }
                    let SymbolSection::Section(index) = sym.section() else {
                        continue;
                    };
                    let name = match sym.name() {
                        // `memcpy@@GLIBC_2.14` in glibc's .symtab: gdb and perf drop the version
                        Ok(n) => n.split('@').next().unwrap_or(n),
                        _ => continue,
                    };
                    if name.is_empty() {
                        continue;
                    }
                    let symbol = Symbol {
                        addr: sym.address(),
                        size: sym.size(),
                        name: Arc::from(name),
                        global: sym.is_global(),
                    };
                    if sym.size() > 0 {
                        syms.push((symbol, rank));
                    } else if let Ok(section) = obj.section_by_index(index) {
                        let end = section.address().saturating_add(section.size());
                        if end > symbol.addr {
                            no_size.push((symbol, rank, end));
                        }
                    }
                }
            }
        }
        // PLT stubs, named `callee@plt` as gdb, perf and objdump name them
        for file in files {
            for sym in plt_symbols(file) {
                rank += 1;
                syms.push((sym, rank));
            }
        }
        if !no_size.is_empty() {
            let mut starts: Vec<u64> = syms
                .iter()
                .map(|(s, _)| s.addr)
                .chain(no_size.iter().map(|u| u.0.addr))
                .collect();
            starts.sort_unstable();
            starts.dedup();
            let sized: Vec<(u64, u64)> = {
                let mut v: Vec<(u64, u64)> = syms.iter().map(|(s, _)| (s.addr, s.size)).collect();
                v.sort_unstable();
                v
            };
            for (mut symbol, rank, section_end) in no_size {
                // a sized symbol at the same address already names it
                if sized.binary_search_by_key(&symbol.addr, |x| x.0).is_ok() {
                    continue;
                }
                let next = starts
                    .get(starts.partition_point(|&a| a <= symbol.addr))
                    .copied()
                    .unwrap_or(u64::MAX);
                symbol.size = next.min(section_end) - symbol.addr;
                syms.push((symbol, rank));
            }
        }
        // per address: global before local, then the first seen
        syms.sort_by(|(a, ra), (b, rb)| {
            a.addr
                .cmp(&b.addr)
                .then(b.global.cmp(&a.global))
                .then(ra.cmp(rb))
        });
        let mut out: Vec<Symbol> = Vec::with_capacity(syms.len());
        for (s, _) in syms {
            match out.last_mut() {
                Some(last) if last.addr == s.addr => {
                    // an alias: keep the preferred name, the larger extent
                    last.size = last.size.max(s.size);
                }
                _ => out.push(s),
            }
        }
        out.shrink_to_fit();
        let name_bytes = out.iter().map(|s| s.name.len() + 16 + 8).sum();
        let starts = out.iter().map(|s| s.addr).collect();
        Ok(SymbolTable {
            syms: out,
            starts,
            name_bytes,
        })
    }

    pub fn len(&self) -> usize {
        self.syms.len()
    }
    pub fn is_empty(&self) -> bool {
        self.syms.is_empty()
    }
    pub fn symbols(&self) -> &[Symbol] {
        &self.syms
    }

    /// Approximate heap bytes held.
    pub fn heap_bytes(&self) -> u64 {
        (self.syms.capacity() * std::mem::size_of::<Symbol>() + self.name_bytes) as u64
    }

    /// The symbol containing ELF virtual address `addr`.
    pub fn lookup(&self, addr: u64) -> Option<SymbolHit> {
        let idx = self.starts.partition_point(|&a| a <= addr);
        self.syms[..idx]
            .iter()
            .rev()
            .take(MAX_WALK_BACK)
            .find(|s| addr - s.addr < s.size)
            .map(|s| SymbolHit {
                name: s.name.clone(),
                addr: s.addr,
                size: s.size,
                offset: addr - s.addr,
            })
    }
}

/// x86-64 PLT entries, named as objdump (BFD's synthetic symbols) names them: each
/// 16-byte entry of `.plt.sec` (IBT builds), else of `.plt` after the resolver's
/// trampoline, jumps through a GOT slot (`jmp *disp(%rip)`, possibly after `endbr64`
/// and with a `bnd` prefix); the `.rela.plt` relocation of that slot names the callee:
/// `callee@plt`, or `*ABS*+0xADDEND@plt` for a library's own ifuncs (IRELATIVE).
/// Other architectures and files without a lazy PLT (only `.plt.got`) give none.
fn plt_symbols(file: &ElfFile) -> Vec<Symbol> {
    use object::read::elf::{FileHeader, SectionHeader};
    const R_X86_64_JUMP_SLOT: u32 = 7;
    const R_X86_64_IRELATIVE: u32 = 37;
    const ENTRY: u64 = 16;
    let data: &[u8] = &file.data;
    let Ok(elf) = object::read::elf::ElfFile64::<object::Endianness>::parse(data) else {
        return Vec::new();
    };
    let endian = elf.endian();
    if elf.elf_header().e_machine(endian) != object::elf::EM_X86_64 {
        return Vec::new();
    }
    let sections = elf.elf_section_table();
    let Some((_, rela_plt)) = sections.section_by_name(endian, b".rela.plt") else {
        return Vec::new();
    };
    let Ok(Some((relas, link))) = rela_plt.rela(endian, data) else {
        return Vec::new();
    };
    let Ok(dynsym) = sections.symbol_table_by_index(endian, data, link) else {
        return Vec::new();
    };
    // GOT slot -> name
    let mut by_slot: rustc_hash::FxHashMap<u64, String> = rustc_hash::FxHashMap::default();
    for r in relas {
        let name = match r.r_type(endian, false) {
            R_X86_64_JUMP_SLOT => {
                let Ok(sym) = dynsym.symbol(object::SymbolIndex(r.r_sym(endian, false) as usize))
                else {
                    continue;
                };
                match dynsym.symbol_name(endian, sym) {
                    Ok(n) if !n.is_empty() => {
                        let n = String::from_utf8_lossy(n);
                        format!("{}@plt", n.split('@').next().unwrap_or(&n))
                    }
                    _ => continue,
                }
            }
            R_X86_64_IRELATIVE => format!("*ABS*+{:#x}@plt", r.r_addend.get(endian)),
            _ => continue,
        };
        by_slot.insert(r.r_offset.get(endian), name);
    }
    let section = |name: &[u8]| {
        sections
            .section_by_name(endian, name)
            .map(|(_, h)| h)
            .filter(|h| h.sh_type(endian) == object::elf::SHT_PROGBITS)
            .and_then(|h| Some((h.sh_addr(endian), h.data(endian, data).ok()?)))
    };
    let (base, bytes, first) = match (section(b".plt.sec"), section(b".plt")) {
        (Some((a, b)), _) => (a, b, 0),
        (None, Some((a, b))) => (a, b, 1),
        _ => return Vec::new(),
    };
    let mut out = Vec::new();
    for k in first..(bytes.len() as u64 / ENTRY) {
        let entry = &bytes[(k * ENTRY) as usize..((k + 1) * ENTRY) as usize];
        let addr = base + k * ENTRY;
        // `ff 25 disp32` within the entry's first bytes
        let Some(i) = (0..=8).find(|&i| entry[i] == 0xff && entry[i + 1] == 0x25) else {
            continue;
        };
        let disp = i32::from_le_bytes([entry[i + 2], entry[i + 3], entry[i + 4], entry[i + 5]]);
        let slot = (addr + i as u64 + 6).wrapping_add(disp as i64 as u64);
        if let Some(name) = by_slot.get(&slot) {
            out.push(Symbol {
                addr,
                size: ENTRY,
                name: Arc::from(name.as_str()),
                global: false,
            });
        }
    }
    out
}
