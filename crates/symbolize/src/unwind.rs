//! Native stack unwinding (x86-64): from a stopped thread's registers to its return
//! addresses, with the call frame information of `.eh_frame` and `.debug_frame` (gimli's
//! unwinder), falling back to frame pointers where no CFI covers the pc.
//!
//! The unwinder itself ([`unwind`]) knows neither processes nor files: it reads memory
//! through [`ReadMemory`] and asks a [`CfiLookup`] for the rule row of an address, so it is
//! tested with synthetic stacks. [`ProcessCfi`] is the lookup of a live process: its
//! mappings, each module's CFI (parsed once per module, see [`Module::unwind_tables`]).
//!
//! Bounded on every path: at most `max_frames` frames, and it stops at a return address of
//! zero or one the CFI marks undefined (the outermost frame: `_start`, `clone3`), at a pc in
//! no executable mapping, at a stack pointer that does not grow, and at a failed read.
//!
//! [`Module::unwind_tables`]: crate::Module::unwind_tables

use std::sync::Arc;

use gimli::{BaseAddresses, CfaRule, Reader as _, RegisterRule, UnwindContext, UnwindSection};

use crate::elf::{Bytes, ElfFile};
use crate::maps::ProcessMaps;
use crate::module::Module;
use crate::Symbolizer;

type Reader = gimli::EndianReader<gimli::RunTimeEndian, Bytes>;

/// The DWARF number of the return address column on x86-64 (`rip`).
pub const RA: usize = 16;
/// DWARF numbers of `rbp` and `rsp` on x86-64.
pub const RBP: usize = 6;
pub const RSP: usize = 7;
/// Registers the callee must preserve (System V x86-64): with no rule in a row they keep
/// their value (`rbx`, `rbp`, `r12`-`r15`).
const CALLEE_SAVED: [usize; 6] = [3, 6, 12, 13, 14, 15];

/// Reads of the target's memory.
pub trait ReadMemory {
    /// The 8-byte little-endian word at `addr`; `None` when it cannot be read.
    fn read_u64(&self, addr: u64) -> Option<u64>;
}

impl<M: pyframe_reader::memory::Memory + ?Sized> ReadMemory for M {
    fn read_u64(&self, addr: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b).ok()?;
        Some(u64::from_le_bytes(b))
    }
}

/// How a register is recovered in the caller (an owned copy of gimli's rule).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    Undefined,
    SameValue,
    /// Saved at CFA + offset.
    Offset(i64),
    /// Is CFA + offset.
    ValOffset(i64),
    /// Is in another register.
    Register(u16),
    /// Saved at the address a DWARF expression computes.
    Expression(Arc<[u8]>),
    /// Is the value a DWARF expression computes.
    ValExpression(Arc<[u8]>),
}

/// How the canonical frame address is computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cfa {
    RegisterOffset(u16, i64),
    Expression(Arc<[u8]>),
}

/// The CFI row for one address: the CFA rule and the rules of registers 0..=16.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub cfa: Cfa,
    /// Rules by DWARF number; `None`: no rule in the row.
    pub regs: [Option<Rule>; 17],
}

/// What a [`CfiLookup`] knows of an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Row(Box<Row>),
    /// Executable memory with no CFI covering it (frame pointers then).
    NoCfi,
    /// No executable mapping holds it: not a return address.
    Unmapped,
}

/// The CFI of an address space.
pub trait CfiLookup {
    /// The row for `addr` (a pc, or a return address minus one).
    fn lookup(&self, addr: u64) -> Lookup;
}

/// How a frame's caller was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// The innermost frame: from the thread's registers.
    Registers,
    Cfi,
    FramePointer,
}

/// One frame: its pc (the return address for all but the innermost) and stack pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub pc: u64,
    pub sp: u64,
    /// How this frame was reached from the one inside it.
    pub method: Method,
}

impl Frame {
    /// The address to name the frame by: the pc itself for the innermost frame, the
    /// return address minus one for the others (the call instruction, not the one after
    /// it, which may start the next function or another line).
    pub fn lookup_address(&self) -> u64 {
        match self.method {
            Method::Registers => self.pc,
            _ => self.pc.saturating_sub(1),
        }
    }
}

/// Why the walk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The outermost frame (return address undefined or zero, frame pointer zero).
    End,
    /// The frame limit was reached.
    Limit,
    /// A return address in no executable mapping.
    Unmapped(u64),
    /// The caller's stack pointer was not above the callee's.
    SpNotIncreasing,
    /// Reading the stack failed.
    ReadFailed(u64),
    /// A CFI rule the unwinder cannot follow (an expression it cannot evaluate).
    Unsupported,
}

/// The frames of a thread, innermost first, and why the walk stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unwound {
    pub frames: Vec<Frame>,
    pub stop: Stop,
}

/// The frame limit of `pystackd stack --native`.
pub const MAX_FRAMES: usize = 256;

/// Unwind from `pc`, `sp` and the general-purpose registers `gpr` (DWARF numbers 0..=15).
pub fn unwind(
    pc: u64,
    gpr: &[u64; 16],
    mem: &dyn ReadMemory,
    cfi: &dyn CfiLookup,
    max_frames: usize,
) -> Unwound {
    let mut regs: [Option<u64>; 17] = [None; 17];
    for (r, v) in regs.iter_mut().zip(gpr) {
        *r = Some(*v);
    }
    regs[RA] = Some(pc);
    let mut frames = Vec::new();
    let mut method = Method::Registers;
    loop {
        let (Some(pc), Some(sp)) = (regs[RA], regs[RSP]) else {
            return Unwound {
                frames,
                stop: Stop::End,
            };
        };
        let frame = Frame { pc, sp, method };
        let lookup = cfi.lookup(frame.lookup_address());
        if method != Method::Registers && lookup == Lookup::Unmapped {
            return Unwound {
                frames,
                stop: Stop::Unmapped(pc),
            };
        }
        frames.push(frame);
        if frames.len() >= max_frames {
            return Unwound {
                frames,
                stop: Stop::Limit,
            };
        }
        let step = match lookup {
            Lookup::Row(row) => {
                method = Method::Cfi;
                step_cfi(&row, &regs, mem)
            }
            Lookup::NoCfi | Lookup::Unmapped => {
                method = Method::FramePointer;
                step_fp(&regs, mem)
            }
        };
        let next = match step {
            Ok(n) => n,
            Err(stop) => return Unwound { frames, stop },
        };
        match (next[RA], next[RSP]) {
            (None, _) | (Some(0), _) => {
                return Unwound {
                    frames,
                    stop: Stop::End,
                }
            }
            (_, Some(nsp)) if nsp <= sp => {
                return Unwound {
                    frames,
                    stop: Stop::SpNotIncreasing,
                }
            }
            (_, None) => {
                return Unwound {
                    frames,
                    stop: Stop::Unsupported,
                }
            }
            _ => {}
        }
        regs = next;
    }
}

type Regs = [Option<u64>; 17];

fn read(mem: &dyn ReadMemory, addr: u64) -> Result<u64, Stop> {
    mem.read_u64(addr).ok_or(Stop::ReadFailed(addr))
}

/// The caller's registers by the frame-pointer convention: the CFA is rbp + 16, the return
/// address at rbp + 8, the caller's rbp at rbp.
fn step_fp(regs: &Regs, mem: &dyn ReadMemory) -> Result<Regs, Stop> {
    let bp = match regs[RBP] {
        Some(0) | None => return Err(Stop::End),
        Some(bp) => bp,
    };
    if bp % 8 != 0 || regs[RSP].is_some_and(|sp| bp < sp) {
        // not a frame pointer into this stack (a build without frame pointers)
        return Err(Stop::SpNotIncreasing);
    }
    let mut next = *regs;
    next[RA] = Some(read(mem, bp.wrapping_add(8))?);
    next[RBP] = Some(read(mem, bp)?);
    next[RSP] = Some(bp.wrapping_add(16));
    Ok(next)
}

fn step_cfi(row: &Row, regs: &Regs, mem: &dyn ReadMemory) -> Result<Regs, Stop> {
    let cfa = match &row.cfa {
        Cfa::RegisterOffset(r, off) => regs
            .get(*r as usize)
            .copied()
            .flatten()
            .ok_or(Stop::Unsupported)?
            .wrapping_add_signed(*off),
        Cfa::Expression(e) => eval(e, regs, mem, None)?,
    };
    let mut next: Regs = [None; 17];
    for (r, slot) in next.iter_mut().enumerate() {
        let rule = match &row.regs[r] {
            Some(rule) => rule.clone(),
            None if CALLEE_SAVED.contains(&r) => Rule::SameValue,
            None => Rule::Undefined,
        };
        let value = match rule {
            Rule::Undefined => Ok(None),
            Rule::SameValue => Ok(regs[r]),
            Rule::Offset(o) => read(mem, cfa.wrapping_add_signed(o)).map(Some),
            Rule::ValOffset(o) => Ok(Some(cfa.wrapping_add_signed(o))),
            Rule::Register(x) => Ok(regs.get(x as usize).copied().flatten()),
            Rule::Expression(e) => {
                eval(&e, regs, mem, Some(cfa)).and_then(|a| read(mem, a).map(Some))
            }
            Rule::ValExpression(e) => eval(&e, regs, mem, Some(cfa)).map(Some),
        };
        // only the return address must be found; another register lost is unknown
        *slot = match value {
            Ok(v) => v,
            Err(e) if r == RA => return Err(e),
            Err(_) => None,
        };
    }
    next[RSP] = Some(cfa);
    Ok(next)
}

/// Evaluates a CFI DWARF expression (the PLT's CFA, signal frames): register and memory
/// reads answered from `regs` and `mem`; `cfa` is pushed first for register rules.
fn eval(expr: &[u8], regs: &Regs, mem: &dyn ReadMemory, cfa: Option<u64>) -> Result<u64, Stop> {
    use gimli::{EvaluationResult, Value};
    let encoding = gimli::Encoding {
        address_size: 8,
        format: gimli::Format::Dwarf32,
        version: 4,
    };
    let bytes = gimli::EndianSlice::new(expr, gimli::LittleEndian);
    let mut ev = gimli::Expression(bytes).evaluation(encoding);
    if let Some(c) = cfa {
        ev.set_initial_value(c);
    }
    let mut result = ev.evaluate().map_err(|_| Stop::Unsupported)?;
    for _ in 0..64 {
        result = match result {
            EvaluationResult::Complete => {
                let pieces = ev.result();
                return match pieces.first().map(|p| &p.location) {
                    Some(gimli::Location::Address { address }) => Ok(*address),
                    _ => Err(Stop::Unsupported),
                };
            }
            EvaluationResult::RequiresRegister { register, .. } => {
                let v = regs
                    .get(register.0 as usize)
                    .copied()
                    .flatten()
                    .ok_or(Stop::Unsupported)?;
                ev.resume_with_register(Value::Generic(v))
                    .map_err(|_| Stop::Unsupported)?
            }
            EvaluationResult::RequiresMemory { address, size, .. } => {
                let v = read(mem, address)?;
                let v = if size >= 8 {
                    v
                } else {
                    v & ((1u64 << (u32::from(size) * 8)) - 1)
                };
                ev.resume_with_memory(Value::Generic(v))
                    .map_err(|_| Stop::Unsupported)?
            }
            _ => return Err(Stop::Unsupported),
        };
    }
    Err(Stop::Unsupported)
}

/// One CFI section with an index of its FDEs by address.
struct Section<S> {
    section: S,
    bases: BaseAddresses,
    /// (start, end, offset of the FDE), sorted by start (empty when `hdr` has a table).
    index: Vec<(u64, u64, usize)>,
    /// `.eh_frame_hdr` with its binary-search table: no index to build.
    hdr: Option<gimli::ParsedEhFrameHdr<Reader>>,
}

/// The CFI of one module: `.eh_frame` and `.debug_frame` (of the binary or its debug file).
#[derive(Default)]
pub struct UnwindTables {
    eh_frame: Option<Section<gimli::EhFrame<Reader>>>,
    debug_frame: Option<Section<gimli::DebugFrame<Reader>>>,
}

impl std::fmt::Debug for UnwindTables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnwindTables")
            .field("eh_frame", &self.eh_frame.as_ref().map(|s| s.index.len()))
            .field(
                "debug_frame",
                &self.debug_frame.as_ref().map(|s| s.index.len()),
            )
            .finish()
    }
}

fn section_address(file: &ElfFile, name: &str) -> Option<u64> {
    use object::{Object, ObjectSection};
    let obj = file.object().ok()?;
    let s = obj.section_by_name(name)?;
    Some(s.address())
}

fn index_of<S: UnwindSection<Reader>>(
    section: &S,
    bases: &BaseAddresses,
) -> Vec<(u64, u64, usize)> {
    let mut index = Vec::new();
    let mut entries = section.entries(bases);
    // a corrupt section ends the index where it stops parsing
    while let Ok(Some(entry)) = entries.next() {
        if let gimli::CieOrFde::Fde(partial) = entry {
            if let Ok(fde) = partial.parse(S::cie_from_offset) {
                if fde.len() > 0 {
                    let off = fde.offset();
                    index.push((fde.initial_address(), fde.end_address(), off));
                }
            }
        }
        if index.len() > 4_000_000 {
            break;
        }
    }
    index.sort_unstable();
    index
}

impl UnwindTables {
    /// The CFI of `binary` (`.eh_frame`, `.debug_frame`) and, when it has no
    /// `.debug_frame`, its debug file's.
    pub(crate) fn load(binary: &ElfFile, debug: Option<&ElfFile>, limit: u64) -> UnwindTables {
        let endian = gimli::RunTimeEndian::Little;
        let eh_frame = binary
            .section(".eh_frame", limit)
            .ok()
            .flatten()
            .map(|bytes| {
                let section = gimli::EhFrame::from(Reader::new(bytes, endian));
                let mut bases = BaseAddresses::default()
                    .set_eh_frame(section_address(binary, ".eh_frame").unwrap_or(0));
                if let Some(t) = section_address(binary, ".text") {
                    bases = bases.set_text(t);
                }
                let mut hdr = None;
                if let Some(h) = section_address(binary, ".eh_frame_hdr") {
                    bases = bases.set_eh_frame_hdr(h);
                    hdr = binary
                        .section(".eh_frame_hdr", limit)
                        .ok()
                        .flatten()
                        .and_then(|b| {
                            gimli::EhFrameHdr::from(Reader::new(b, endian))
                                .parse(&bases, 8)
                                .ok()
                        })
                        .filter(|p| p.table().is_some());
                }
                let index = match hdr {
                    Some(_) => Vec::new(),
                    None => index_of(&section, &bases),
                };
                Section {
                    section,
                    bases,
                    index,
                    hdr,
                }
            });
        let debug_frame = [Some(binary), debug]
            .into_iter()
            .flatten()
            .find_map(|f| f.section(".debug_frame", limit).ok().flatten())
            .map(|bytes| {
                let mut section = gimli::DebugFrame::from(Reader::new(bytes, endian));
                section.set_address_size(8);
                let bases = BaseAddresses::default();
                let index = index_of(&section, &bases);
                Section {
                    section,
                    bases,
                    index,
                    hdr: None,
                }
            });
        UnwindTables {
            eh_frame,
            debug_frame,
        }
    }

    /// Bytes the index holds (for the cache budget).
    pub fn heap_bytes(&self) -> u64 {
        let n = self.eh_frame.as_ref().map_or(0, |s| s.index.len())
            + self.debug_frame.as_ref().map_or(0, |s| s.index.len());
        (n * std::mem::size_of::<(u64, u64, usize)>()) as u64
    }

    /// Whether any CFI was found.
    pub fn is_empty(&self) -> bool {
        self.eh_frame
            .as_ref()
            .map_or(true, |s| s.index.is_empty() && s.hdr.is_none())
            && self
                .debug_frame
                .as_ref()
                .map_or(true, |s| s.index.is_empty())
    }

    /// The row for ELF virtual address `vaddr`: `.eh_frame` first, then `.debug_frame`.
    pub fn row(&self, vaddr: u64) -> Option<Row> {
        if let Some(s) = &self.eh_frame {
            let hit = match &s.hdr {
                Some(h) => h.table().and_then(|t| {
                    let fde = t
                        .fde_for_address(
                            &s.section,
                            &s.bases,
                            vaddr,
                            gimli::EhFrame::cie_from_offset,
                        )
                        .ok()?;
                    row_of(s, fde, vaddr)
                }),
                None => row_in(s, vaddr),
            };
            if hit.is_some() {
                return hit;
            }
        }
        self.debug_frame.as_ref().and_then(|s| row_in(s, vaddr))
    }
}

fn row_in<S: UnwindSection<Reader>>(s: &Section<S>, vaddr: u64) -> Option<Row>
where
    S::Offset: gimli::UnwindOffset<usize>,
{
    let i = s.index.partition_point(|e| e.0 <= vaddr).checked_sub(1)?;
    let (start, end, off) = s.index[i];
    if vaddr < start || vaddr >= end {
        return None;
    }
    let fde = s
        .section
        .fde_from_offset(&s.bases, S::Offset::from(off), S::cie_from_offset)
        .ok()?;
    row_of(s, fde, vaddr)
}

fn row_of<S: UnwindSection<Reader>>(
    s: &Section<S>,
    fde: gimli::FrameDescriptionEntry<Reader>,
    vaddr: u64,
) -> Option<Row> {
    let mut ctx = UnwindContext::new();
    let row = fde
        .unwind_info_for_address(&s.section, &s.bases, &mut ctx, vaddr)
        .ok()?;
    let expr = |e: &gimli::UnwindExpression<usize>| -> Option<Arc<[u8]>> {
        let ex = e.get(&s.section).ok()?;
        Some(Arc::from(&*ex.0.to_slice().ok()?))
    };
    let cfa = match row.cfa() {
        CfaRule::RegisterAndOffset { register, offset } => Cfa::RegisterOffset(register.0, *offset),
        CfaRule::Expression(e) => Cfa::Expression(expr(e)?),
    };
    let mut regs: [Option<Rule>; 17] = Default::default();
    for (r, slot) in regs.iter_mut().enumerate() {
        *slot = match row.register(gimli::Register(r as u16)) {
            RegisterRule::Undefined => None,
            RegisterRule::SameValue => Some(Rule::SameValue),
            RegisterRule::Offset(o) => Some(Rule::Offset(o)),
            RegisterRule::ValOffset(o) => Some(Rule::ValOffset(o)),
            RegisterRule::Register(x) => Some(Rule::Register(x.0)),
            RegisterRule::Expression(e) => Some(Rule::Expression(expr(&e)?)),
            RegisterRule::ValExpression(e) => Some(Rule::ValExpression(expr(&e)?)),
            _ => None,
        };
    }
    // the return address: no rule in a row that has a CFA means "undefined" (outermost)
    // only when the CIE said so; gimli reports both as Undefined, and the x86-64 CIEs
    // always give RA a rule (cfa-8), so no rule here is the explicit end of the stack
    Some(Row { cfa, regs })
}

/// The CFI of a live process: its mappings and each mapped module's CFI.
pub struct ProcessCfi<'a> {
    pub symbolizer: &'a Symbolizer,
    pub maps: &'a ProcessMaps,
}

impl ProcessCfi<'_> {
    /// The module and ELF virtual address of `addr`, when an executable file mapping
    /// holds it.
    pub fn module_vaddr(&self, addr: u64) -> Option<(Arc<Module>, u64)> {
        let (idx, region) = self.maps.region(addr)?;
        let module = self.symbolizer.region_module(self.maps, idx)?;
        let vaddr = module
            .elf()
            .vaddr_of_offset(addr - region.start + region.offset, region.exec)?;
        Some((module, vaddr))
    }
}

impl CfiLookup for ProcessCfi<'_> {
    fn lookup(&self, addr: u64) -> Lookup {
        let Some((_, region)) = self.maps.region(addr) else {
            return Lookup::Unmapped;
        };
        if !region.exec {
            return Lookup::Unmapped;
        }
        match self.module_vaddr(addr) {
            Some((m, vaddr)) => match m.unwind_tables().row(vaddr) {
                Some(r) => Lookup::Row(Box::new(r)),
                None => Lookup::NoCfi,
            },
            // [vdso], JIT code, a deleted file
            None => Lookup::NoCfi,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Mem(HashMap<u64, u64>);
    impl ReadMemory for Mem {
        fn read_u64(&self, addr: u64) -> Option<u64> {
            self.0.get(&addr).copied()
        }
    }

    /// Functions at [0x1000, 0x2000) with CFI "CFA = rsp + 16 (after push rbp), RA at
    /// CFA-8, rbp at CFA-16"; [0x2000, 0x3000) executable without CFI; the rest unmapped.
    struct Cfi;
    impl CfiLookup for Cfi {
        fn lookup(&self, addr: u64) -> Lookup {
            match addr {
                0x1000..=0x1fff => {
                    let mut regs: [Option<Rule>; 17] = Default::default();
                    regs[RA] = Some(Rule::Offset(-8));
                    regs[RBP] = Some(Rule::Offset(-16));
                    Lookup::Row(Box::new(Row {
                        cfa: Cfa::RegisterOffset(RSP as u16, 16),
                        regs,
                    }))
                }
                0x2000..=0x2fff => Lookup::NoCfi,
                // "end of stack" function: RA undefined
                0x3000..=0x3fff => Lookup::Row(Box::new(Row {
                    cfa: Cfa::RegisterOffset(RSP as u16, 8),
                    regs: Default::default(),
                })),
                _ => Lookup::Unmapped,
            }
        }
    }

    fn gpr(sp: u64, bp: u64) -> [u64; 16] {
        let mut g = [0u64; 16];
        g[RSP] = sp;
        g[RBP] = bp;
        g
    }

    #[test]
    fn cfi_chain_to_the_outermost_frame() {
        // frame 0 at 0x1100, sp 0x7000: RA at 0x7008 -> 0x1200 (cfa 0x7010), rbp saved
        // at 0x7000; frame 1 at 0x1200, sp 0x7010: RA at 0x7018 -> 0x3001 (end)
        let mem = Mem(HashMap::from([
            (0x7000, 0xaaaa),
            (0x7008, 0x1200),
            (0x7010, 0xbbbb),
            (0x7018, 0x3001),
        ]));
        let u = unwind(0x1100, &gpr(0x7000, 1), &mem, &Cfi, MAX_FRAMES);
        let pcs: Vec<u64> = u.frames.iter().map(|f| f.pc).collect();
        assert_eq!(pcs, vec![0x1100, 0x1200, 0x3001]);
        assert_eq!(u.stop, Stop::End);
        assert_eq!(u.frames[0].method, Method::Registers);
        assert_eq!(u.frames[1].method, Method::Cfi);
        assert_eq!(u.frames[1].lookup_address(), 0x11ff);
    }

    #[test]
    fn frame_pointer_fallback() {
        // frame 0 in code without CFI: rbp = 0x8000 -> [0x8000] = 0 (caller's rbp),
        // [0x8008] = 0x1300; caller (CFI) at 0x1300, sp 0x8010: RA at 0x8018 = 0
        let mem = Mem(HashMap::from([
            (0x8000, 0),
            (0x8008, 0x1300),
            (0x8010, 0),
            (0x8018, 0),
        ]));
        let u = unwind(0x2100, &gpr(0x7f00, 0x8000), &mem, &Cfi, MAX_FRAMES);
        let pcs: Vec<u64> = u.frames.iter().map(|f| f.pc).collect();
        assert_eq!(pcs, vec![0x2100, 0x1300]);
        assert_eq!(u.frames[1].method, Method::FramePointer);
        assert_eq!(u.stop, Stop::End);
    }

    #[test]
    fn loops_and_garbage_are_bounded() {
        // a return address pointing at itself with the same sp: stops, no loop
        let mem = Mem(HashMap::from([(0x7008, 0x1100), (0x7000, 0)]));
        let mut g = gpr(0x6ff0, 0);
        g[RSP] = 0x6ff0;
        // CFA = sp + 16 = 0x7000: RA at 0x6ff8 (unreadable)
        let u = unwind(0x1100, &g, &mem, &Cfi, MAX_FRAMES);
        assert_eq!(u.stop, Stop::ReadFailed(0x6ff8));
        assert_eq!(u.frames.len(), 1);

        // a frame-pointer cycle: rbp -> itself; the sp does not grow on the second step
        let mem = Mem(HashMap::from([(0x9000, 0x9000), (0x9008, 0x2200)]));
        let u = unwind(0x2100, &gpr(0x8ff0, 0x9000), &mem, &Cfi, MAX_FRAMES);
        assert_eq!(u.stop, Stop::SpNotIncreasing);
        assert_eq!(u.frames.len(), 2);

        // an unmapped return address ends the walk without a frame for it
        let mem = Mem(HashMap::from([(0x7000, 0), (0x7008, 0xdead_0000)]));
        let u = unwind(0x1100, &gpr(0x7000, 0), &mem, &Cfi, MAX_FRAMES);
        assert_eq!(u.stop, Stop::Unmapped(0xdead_0000));
        assert_eq!(u.frames.len(), 1);

        // an endless well-formed chain stops at the limit
        let mem: HashMap<u64, u64> = (0..1000u64)
            .flat_map(|i| {
                let sp = 0x10_0000 + i * 16;
                [(sp, 0), (sp + 8, 0x1100)]
            })
            .collect();
        let u = unwind(0x1100, &gpr(0x10_0000, 0), &Mem(mem), &Cfi, 256);
        assert_eq!(u.stop, Stop::Limit);
        assert_eq!(u.frames.len(), 256);
    }

    #[test]
    fn plt_style_cfa_expression() {
        // DW_OP_breg7 8; DW_OP_breg16 0; DW_OP_lit15; DW_OP_and; DW_OP_lit11; DW_OP_ge;
        // DW_OP_lit3; DW_OP_shl; DW_OP_plus  (the x86-64 .plt CFA)
        let e: Arc<[u8]> = Arc::from(
            &[
                0x77, 0x08, 0x80, 0x00, 0x3f, 0x1a, 0x3b, 0x2a, 0x33, 0x24, 0x22,
            ][..],
        );
        let mut regs: Regs = [None; 17];
        regs[RSP] = Some(0x7000);
        regs[RA] = Some(0x4004); // low nibble 4 < 11: CFA = rsp + 8
        let mem = Mem(HashMap::new());
        assert_eq!(eval(&e, &regs, &mem, None), Ok(0x7008));
        regs[RA] = Some(0x400c); // >= 11: rsp + 16
        assert_eq!(eval(&e, &regs, &mem, None), Ok(0x7010));
    }

    #[test]
    fn cfi_of_this_test_binary_unwinds_itself() {
        // the running test's own .eh_frame: a row covers this function
        let exe = std::env::current_exe().unwrap();
        let file = ElfFile::open(&exe).unwrap();
        let t = UnwindTables::load(&file, None, 1 << 30);
        assert!(!t.is_empty());
        let maps = crate::ProcessMaps::for_pid(std::process::id()).unwrap();
        let here = cfi_of_this_test_binary_unwinds_itself as fn() as usize as u64;
        let (idx, region) = maps.region(here).unwrap();
        let vaddr = file
            .vaddr_of_offset(here - region.start + region.offset, true)
            .unwrap();
        let _ = idx;
        let row = t.row(vaddr).expect("a CFI row for a Rust function");
        assert_eq!(row.regs[RA], Some(Rule::Offset(-8)));

        // the .eh_frame_hdr search table finds the rows the full index finds
        let eh = t.eh_frame.as_ref().unwrap();
        assert!(eh.hdr.is_some(), "a linked binary has .eh_frame_hdr");
        let plain = Section {
            section: eh.section.clone(),
            bases: eh.bases.clone(),
            index: index_of(&eh.section, &eh.bases),
            hdr: None,
        };
        assert!(plain.index.len() > 100);
        let mut compared = 0;
        for &(start, end, _) in plain.index.iter().step_by(37) {
            for a in [start, start + (end - start) / 2, end - 1] {
                assert_eq!(row_in(&plain, a), t.row(a), "at {a:#x}");
                compared += 1;
            }
        }
        assert!(compared > 30);
    }
}
