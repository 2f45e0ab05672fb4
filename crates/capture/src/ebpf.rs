//! The plan as eBPF bytecode, for `pystackd trace`'s own loader (Linux).
//!
//! bpftrace's language costs the capture most of its time (docs/benchmarks.md, "Where the
//! time goes"): each struct field is its own `probe_read_user`, and output goes out as up to
//! five `printf` records of 8 frames each. Rendered directly as instructions, the same plan
//! reads each frame's fields in **one** read of the span that holds them, each code object's
//! identity in one more (skipped when the code object repeats, as in recursion), and sends a
//! firing as **one** ring-buffer record. The steps are those of [`crate::interpret`]
//! one for one; [`emulate`] runs the bytecode in Rust against any [`Memory`] so that tests
//! can check it against the plan interpreter (and so the walker) on every version, without
//! root; the kernel runs the same bytes in `pystackd trace`.
//!
//! One program per probe (its index is an immediate). It:
//! 1. returns at once unless the firing thread's process is the target;
//! 2. counts the firing (per-CPU `counters[probe].fired`);
//! 3. fills the per-CPU scratch record: header, then the capture's slots, in the slot
//!    rules of [`crate::frames::from_columns`] (code 0 and offset 1: an eval-call boundary; an
//!    odd offset: 3.11's entry flag);
//! 4. adds the user stack (`bpf_get_stack(BPF_F_USER_STACK)`), if asked;
//! 5. sends the record (`bpf_ringbuf_output`), or counts it lost when the ring is full.
//!
//! A read that fails (an address not mapped, a page not resident in probe context) ends the
//! capture and sets [`FLAG_READ_FAILED`]: the frames before it are what was seen, the
//! consumer must say that the rest was not.

use std::collections::HashMap;

use pyframe_reader::layout::CurrentFrame;
use pyframe_reader::Memory;

use crate::frames::{from_columns, Capture};
use crate::plan::{FrameSteps, Plan, ThreadMatch};

/// One eBPF instruction, as the kernel takes it (`struct bpf_insn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Insn {
    pub code: u8,
    /// dst in the low nibble, src in the high one.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

impl Insn {
    fn dst(&self) -> usize {
        (self.regs & 0xf) as usize
    }
    fn src(&self) -> usize {
        (self.regs >> 4) as usize
    }
}

// instruction classes, sizes, modes and operations (include/uapi/linux/bpf.h)
const LD: u8 = 0x00;
const LDX: u8 = 0x01;
const ST: u8 = 0x02;
const STX: u8 = 0x03;
const JMP: u8 = 0x05;
const ALU64: u8 = 0x07;
const K: u8 = 0x00;
const X: u8 = 0x08;
const W: u8 = 0x00;
const B: u8 = 0x10;
const DW: u8 = 0x18;
const IMM: u8 = 0x00;
const MEM: u8 = 0x60;
const ADD: u8 = 0x00;
const SUB: u8 = 0x10;
const MUL: u8 = 0x20;
const OR: u8 = 0x40;
const AND: u8 = 0x50;
const LSH: u8 = 0x60;
const RSH: u8 = 0x70;
const XOR: u8 = 0xa0;
const MOV: u8 = 0xb0;
const ARSH: u8 = 0xc0;
const JA: u8 = 0x00;
const JEQ: u8 = 0x10;
const JGE: u8 = 0x30;
const JNE: u8 = 0x50;
const JSLT: u8 = 0xc0;
const CALL: u8 = 0x80;
const EXIT: u8 = 0x90;
/// `src_reg` of a 64-bit immediate load holding a map's file descriptor.
const PSEUDO_MAP_FD: u8 = 1;

/// Helper function ids (`enum bpf_func_id`).
mod helper {
    pub const MAP_LOOKUP_ELEM: i32 = 1;
    pub const KTIME_GET_NS: i32 = 5;
    pub const GET_CURRENT_PID_TGID: i32 = 14;
    pub const GET_CURRENT_TASK: i32 = 35;
    pub const GET_STACK: i32 = 67;
    pub const PROBE_READ_USER: i32 = 112;
    pub const PROBE_READ_KERNEL: i32 = 113;
    pub const RINGBUF_OUTPUT: i32 = 130;
}
/// `bpf_get_stack` flag: the user-space stack.
const F_USER_STACK: i32 = 1 << 8;
/// `bpf_ringbuf_output` flag: do not wake the consumer.
const RB_NO_WAKEUP: i32 = 1;

/// Frames of user stack a record holds (the kernel's default `perf_event_max_stack`).
pub const USER_STACK_FRAMES: usize = 127;
/// Record header: probe (u32), tid (u32), time (u64), flags (u32), user-stack bytes or a
/// negative error (i32), slots used (u32), padding.
pub const HEADER: usize = 32;
/// Bytes per slot: code (u64), offset (i64), identity (u64).
pub const SLOT: usize = 24;

/// The firing thread has no Python thread state.
pub const FLAG_NO_THREAD: u32 = 1;
/// The chain went on past the plan's depth.
pub const FLAG_TRUNCATED: u32 = 2;
/// A read failed: the capture ends there, the frames before it stand.
pub const FLAG_READ_FAILED: u32 = 4;

/// The per-probe counters (a per-CPU array indexed by probe): firings of the target's
/// threads, and records the ring had no room for.
pub const COUNTERS_VALUE: usize = 16;

/// File descriptors of the maps a program refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Maps {
    /// Per-CPU array, one element of [`record_size`] bytes: the record is built there (the
    /// BPF stack, 512 bytes, cannot hold it).
    pub scratch: i32,
    /// Ring buffer the records go to.
    pub ring: i32,
    /// Per-CPU array of [`COUNTERS_VALUE`]-byte elements, one per probe.
    pub counters: i32,
}

/// What a program is rendered for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// The target's pid (the kernel's tgid).
    pub pid: u32,
    /// This probe's index (its counters' element, its records' first field).
    pub probe: u32,
    /// Add the user stack to each record.
    pub user_stack: bool,
    /// For [`ThreadMatch::ThreadIdIsFsBase`] plans: the offset of `thread.fsbase` in the
    /// kernel's `task_struct` (from the kernel's BTF).
    pub fsbase_offset: Option<u32>,
}

/// A plan that cannot be rendered as bytecode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("this plan matches threads on their FS base, and the kernel's task_struct offset of thread.fsbase is not known")]
    NoFsBaseOffset,
    #[error("the fields the capture reads from one {0} span {1} bytes (at most {MAX_SPAN})")]
    SpanTooLarge(&'static str, u64),
    #[error("plan for {0} cannot be rendered for this OS")]
    WrongOs(&'static str),
}

/// Largest span of one struct read into the BPF stack.
const MAX_SPAN: u64 = 192;

/// Size of a record for a plan.
pub fn record_size(plan: &Plan, user_stack: bool) -> usize {
    HEADER + SLOT * plan.depth as usize + if user_stack { 8 * USER_STACK_FRAMES } else { 0 }
}

/// The bytecode of one probe's program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    pub insns: Vec<Insn>,
    pub record_size: usize,
}

impl Program {
    /// The instructions as the bytes `BPF_PROG_LOAD` takes.
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.insns.len() * 8);
        for i in &self.insns {
            out.push(i.code);
            out.push(i.regs);
            out.extend_from_slice(&i.off.to_le_bytes());
            out.extend_from_slice(&i.imm.to_le_bytes());
        }
        out
    }

    /// A listing (`--print-program`): one instruction per line, jumps with their targets.
    pub fn listing(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        for (n, i) in self.insns.iter().enumerate() {
            let _ = writeln!(
                s,
                "{n:5}: code {:#04x} dst r{} src r{} off {:6} imm {:#x}",
                i.code,
                i.dst(),
                i.src(),
                i.off,
                i.imm
            );
        }
        s
    }
}

/// Registers: r0 return values, r1-r5 helper arguments (clobbered by calls), r6-r9 kept
/// across calls, r10 the frame pointer.
type Reg = u8;
const R0: Reg = 0;
const R1: Reg = 1;
const R2: Reg = 2;
const R3: Reg = 3;
const R4: Reg = 4;
/// The program's context (for `bpf_get_stack`).
const CTX: Reg = 6;
/// The scratch record.
const REC: Reg = 7;
/// The thread state, then the current frame.
const CUR: Reg = 8;
/// What identifies the firing thread (its tid or FS base).
const KEY: Reg = 9;
const FP: Reg = 10;

// BPF stack slots (offsets from r10)
const S_TMP: i16 = -8;
const S_LAST_CODE: i16 = -16;
const S_LAST_IDENT: i16 = -24;
const S_LAST_TRACEABLE: i16 = -32;
const S_KEY32: i16 = -40;
const S_CODE: i16 = -48;
/// The frame span is read to [S_FRAME, S_FRAME + span).
const S_FRAME: i16 = -48 - MAX_SPAN as i16;
/// The code-object span.
const S_CODEBUF: i16 = S_FRAME - MAX_SPAN as i16;

/// A label to jump to, bound later.
#[derive(Clone, Copy)]
struct Label(usize);

#[derive(Default)]
struct Asm {
    insns: Vec<Insn>,
    labels: Vec<Option<usize>>,
    /// (instruction, label) of jumps to patch.
    fixups: Vec<(usize, usize)>,
}

impl Asm {
    fn raw(&mut self, code: u8, dst: Reg, src: Reg, off: i16, imm: i32) {
        self.insns.push(Insn {
            code,
            regs: (src << 4) | dst,
            off,
            imm,
        });
    }
    fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }
    fn bind(&mut self, l: Label) {
        self.labels[l.0] = Some(self.insns.len());
    }
    fn alu_k(&mut self, op: u8, dst: Reg, imm: i32) {
        self.raw(ALU64 | op | K, dst, 0, 0, imm);
    }
    fn alu_x(&mut self, op: u8, dst: Reg, src: Reg) {
        self.raw(ALU64 | op | X, dst, src, 0, 0);
    }
    fn mov_k(&mut self, dst: Reg, imm: i32) {
        self.alu_k(MOV, dst, imm);
    }
    fn mov_x(&mut self, dst: Reg, src: Reg) {
        self.alu_x(MOV, dst, src);
    }
    /// dst = a 64-bit constant.
    fn ld_imm64(&mut self, dst: Reg, v: u64) {
        self.raw(LD | IMM | DW, dst, 0, 0, v as u32 as i32);
        self.raw(0, 0, 0, 0, (v >> 32) as u32 as i32);
    }
    fn ld_map(&mut self, dst: Reg, fd: i32) {
        self.raw(LD | IMM | DW, dst, PSEUDO_MAP_FD, 0, fd);
        self.raw(0, 0, 0, 0, 0);
    }
    fn ldx(&mut self, size: u8, dst: Reg, src: Reg, off: i16) {
        self.raw(LDX | MEM | size, dst, src, off, 0);
    }
    fn stx(&mut self, size: u8, dst: Reg, off: i16, src: Reg) {
        self.raw(STX | MEM | size, dst, src, off, 0);
    }
    fn st(&mut self, size: u8, dst: Reg, off: i16, imm: i32) {
        self.raw(ST | MEM | size, dst, 0, off, imm);
    }
    fn jmp_k(&mut self, op: u8, dst: Reg, imm: i32, to: Label) {
        self.fixups.push((self.insns.len(), to.0));
        self.raw(JMP | op | K, dst, 0, 0, imm);
    }
    fn jmp_x(&mut self, op: u8, dst: Reg, src: Reg, to: Label) {
        self.fixups.push((self.insns.len(), to.0));
        self.raw(JMP | op | X, dst, src, 0, 0);
    }
    fn ja(&mut self, to: Label) {
        self.fixups.push((self.insns.len(), to.0));
        self.raw(JMP | JA, 0, 0, 0, 0);
    }
    fn call(&mut self, id: i32) {
        self.raw(JMP | CALL, 0, 0, 0, id);
    }
    fn exit(&mut self) {
        self.raw(JMP | EXIT, 0, 0, 0, 0);
    }
    fn finish(mut self) -> Vec<Insn> {
        for (at, label) in self.fixups {
            let to = self.labels[label].expect("every label is bound");
            self.insns[at].off = (to as i64 - at as i64 - 1) as i16;
        }
        self.insns
    }

    /// `size` bytes of user memory at `base + off` (or at `off` when `base` is `None`) into
    /// the BPF stack at `fp + to`; a failed read jumps to `fail`. Clobbers r0-r5.
    fn read_user(&mut self, to: i16, size: u64, base: Option<Reg>, off: u64, fail: Label) {
        match base {
            Some(r) => {
                self.mov_x(R3, r);
                if off != 0 {
                    self.alu_k(ADD, R3, off as i32);
                }
            }
            None => self.ld_imm64(R3, off),
        }
        self.mov_x(R1, FP);
        self.alu_k(ADD, R1, i32::from(to));
        self.mov_k(R2, size as i32);
        self.call(helper::PROBE_READ_USER);
        self.jmp_k(JNE, R0, 0, fail);
    }

    /// dst = the u64 at `base + off` in user memory.
    fn read_u64(&mut self, dst: Reg, base: Option<Reg>, off: u64, fail: Label) {
        self.read_user(S_TMP, 8, base, off, fail);
        self.ldx(DW, dst, FP, S_TMP);
    }

    /// Sign-extend the low 32 bits of `r`.
    fn sext32(&mut self, r: Reg) {
        self.alu_k(LSH, r, 32);
        self.alu_k(ARSH, r, 32);
    }
}

/// The span `[low, high)` of the fields `(offset, size)`, `low` 8-aligned (the verifier
/// refuses misaligned stack loads, and fields keep their alignment in the copy).
fn span(fields: &[(u64, u64)]) -> (u64, u64) {
    let low = fields.iter().map(|f| f.0).min().unwrap_or(0) & !7;
    let high = fields.iter().map(|f| f.0 + f.1).max().unwrap_or(0);
    (low, high)
}

fn slot_off(k: u32, field: usize) -> i16 {
    (HEADER + SLOT * k as usize + 8 * field) as i16
}

/// Render one probe's program.
pub fn render(plan: &Plan, maps: &Maps, opts: &Options) -> Result<Program, RenderError> {
    if plan.os != crate::plan::Os::Linux {
        return Err(RenderError::WrongOs("illumos"));
    }
    let size = record_size(plan, opts.user_stack);
    let mut a = Asm::default();
    let out = a.label();
    let done = a.label();
    let no_thread = a.label();
    let failed = a.label();
    let found = a.label();

    // 1. the target's threads only
    a.mov_x(CTX, R1);
    a.call(helper::GET_CURRENT_PID_TGID);
    a.mov_x(R1, R0);
    a.alu_k(RSH, R1, 32);
    a.jmp_k(JNE, R1, opts.pid as i32, out);
    a.mov_x(KEY, R0);
    a.alu_k(LSH, KEY, 32);
    a.alu_k(RSH, KEY, 32);

    // 2. count it
    a.st(W, FP, S_KEY32, opts.probe as i32);
    a.ld_map(R1, maps.counters);
    a.mov_x(R2, FP);
    a.alu_k(ADD, R2, i32::from(S_KEY32));
    a.call(helper::MAP_LOOKUP_ELEM);
    a.jmp_k(JEQ, R0, 0, out);
    a.ldx(DW, R1, R0, 0);
    a.alu_k(ADD, R1, 1);
    a.stx(DW, R0, 0, R1);

    // 3. the record
    a.st(W, FP, S_KEY32, 0);
    a.ld_map(R1, maps.scratch);
    a.mov_x(R2, FP);
    a.alu_k(ADD, R2, i32::from(S_KEY32));
    a.call(helper::MAP_LOOKUP_ELEM);
    a.jmp_k(JEQ, R0, 0, out);
    a.mov_x(REC, R0);
    a.st(W, REC, 0, opts.probe as i32);
    a.stx(W, REC, 4, KEY);
    a.call(helper::KTIME_GET_NS);
    a.stx(DW, REC, 8, R0);
    a.st(W, REC, 16, 0);
    a.st(W, REC, 20, 0);
    a.st(W, REC, 24, 0);
    a.st(W, REC, 28, 0);

    if let ThreadMatch::ThreadIdIsFsBase { .. } = plan.thread_match {
        // glibc's pthread_t is the thread's FS base: task->thread.fsbase
        let off = opts.fsbase_offset.ok_or(RenderError::NoFsBaseOffset)?;
        a.call(helper::GET_CURRENT_TASK);
        a.mov_x(R3, R0);
        a.alu_k(ADD, R3, off as i32);
        a.mov_x(R1, FP);
        a.alu_k(ADD, R1, i32::from(S_TMP));
        a.mov_k(R2, 8);
        a.call(helper::PROBE_READ_KERNEL);
        a.jmp_k(JNE, R0, 0, failed);
        a.ldx(DW, KEY, FP, S_TMP);
    }

    // the main interpreter's thread list, searched for the firing thread
    a.read_u64(
        R1,
        None,
        plan.runtime.wrapping_add(plan.interpreters_head),
        failed,
    );
    a.jmp_k(JEQ, R1, 0, no_thread);
    a.mov_x(CUR, R1);
    a.read_u64(CUR, Some(CUR), plan.threads_head, failed);
    for _ in 0..plan.max_threads {
        a.jmp_k(JEQ, CUR, 0, no_thread);
        a.read_u64(R1, Some(CUR), plan.thread_match.offset(), failed);
        a.jmp_x(JEQ, R1, KEY, found);
        a.read_u64(CUR, Some(CUR), plan.tstate_next, failed);
    }
    a.ja(no_thread);

    // the innermost frame
    a.bind(found);
    match plan.current_frame {
        CurrentFrame::Direct(o) => a.read_u64(CUR, Some(CUR), o, failed),
        CurrentFrame::ViaCFrame {
            cframe,
            current_frame,
        } => {
            a.read_u64(CUR, Some(CUR), cframe, failed);
            let none = a.label();
            a.jmp_k(JEQ, CUR, 0, none);
            a.read_u64(CUR, Some(CUR), current_frame, failed);
            a.bind(none);
        }
    }
    a.st(DW, FP, S_LAST_CODE, 0);
    a.st(DW, FP, S_LAST_IDENT, 0);
    a.st(DW, FP, S_LAST_TRACEABLE, 0);

    // the code object's identity fields, read as one span
    let mut code_fields = vec![(plan.ident.name, 8), (plan.ident.firstlineno, 4)];
    let first_traceable = match plan.frames {
        FrameSteps::Interpreter {
            first_traceable, ..
        } => first_traceable,
        FrameSteps::Object { .. } => None,
    };
    if let Some(ft) = first_traceable {
        code_fields.push((ft, 4));
    }
    let (clow, chigh) = span(&code_fields);
    if chigh - clow > MAX_SPAN {
        return Err(RenderError::SpanTooLarge("code object", chigh - clow));
    }
    let frame_fields: Vec<(u64, u64)> = match plan.frames {
        FrameSteps::Object {
            back, code, lasti, ..
        } => vec![(back, 8), (code, 8), (lasti, 4)],
        FrameSteps::Interpreter {
            previous,
            code,
            instr,
            owner,
            is_entry,
            ..
        } => {
            let mut v = vec![(previous, 8), (code, 8), (instr, 8), (owner, 1)];
            if let Some(e) = is_entry {
                v.push((e, 1));
            }
            v
        }
    };
    let (flow, fhigh) = span(&frame_fields);
    if fhigh - flow > MAX_SPAN {
        return Err(RenderError::SpanTooLarge("frame", fhigh - flow));
    }
    let fld = |o: u64| S_FRAME + (o - flow) as i16;
    let cfld = |o: u64| S_CODEBUF + (o - clow) as i16;

    // the code object in R1 → its identity in S_LAST_IDENT (read only when it changed)
    let identity = |a: &mut Asm, fail: Label| {
        let same = a.label();
        a.ldx(DW, R2, FP, S_LAST_CODE);
        a.jmp_x(JEQ, R1, R2, same);
        a.stx(DW, FP, S_LAST_CODE, R1);
        a.read_user(S_CODEBUF, chigh - clow, Some(R1), clow, fail);
        a.ldx(DW, R1, FP, cfld(plan.ident.name));
        a.ldx(W, R2, FP, cfld(plan.ident.firstlineno));
        a.alu_k(LSH, R2, 48);
        a.alu_x(XOR, R1, R2);
        a.stx(DW, FP, S_LAST_IDENT, R1);
        if let Some(ft) = first_traceable {
            a.ldx(W, R1, FP, cfld(ft));
            a.sext32(R1);
            a.stx(DW, FP, S_LAST_TRACEABLE, R1);
        }
        a.bind(same);
    };

    // 4. the steps, unrolled: step k writes slot k
    for k in 0..plan.depth {
        let next = a.label();
        a.jmp_k(JEQ, CUR, 0, done);
        a.read_user(S_FRAME, fhigh - flow, Some(CUR), flow, failed);
        match plan.frames {
            FrameSteps::Object {
                back,
                code,
                lasti,
                lasti_unit,
            } => {
                a.ldx(DW, R1, FP, fld(code));
                a.stx(DW, FP, S_CODE, R1);
                identity(&mut a, failed);
                a.ldx(DW, R1, FP, S_CODE);
                a.stx(DW, REC, slot_off(k, 0), R1);
                a.ldx(W, R1, FP, fld(lasti));
                a.sext32(R1);
                a.alu_k(MUL, R1, lasti_unit as i32);
                a.stx(DW, REC, slot_off(k, 1), R1);
                a.ldx(DW, R1, FP, S_LAST_IDENT);
                a.stx(DW, REC, slot_off(k, 2), R1);
                a.ldx(DW, CUR, FP, fld(back));
            }
            FrameSteps::Interpreter {
                previous,
                code,
                code_tag_mask,
                instr,
                code_adaptive,
                owner,
                first_non_python_owner,
                generator_owner,
                is_entry,
                ..
            } => {
                // each outcome writes the whole slot; `next` follows `previous`
                let empty = |a: &mut Asm, offset_from: Option<i16>| {
                    a.st(DW, REC, slot_off(k, 0), 0);
                    match offset_from {
                        Some(s) => {
                            a.ldx(B, R1, FP, s);
                            a.stx(DW, REC, slot_off(k, 1), R1);
                        }
                        None => a.st(DW, REC, slot_off(k, 1), 0),
                    }
                    a.st(DW, REC, slot_off(k, 2), 0);
                };
                if let Some(mark) = first_non_python_owner {
                    // a C-stack shim frame: an eval-call boundary, 0:1:0
                    let python = a.label();
                    a.ldx(B, R1, FP, fld(owner));
                    a.jmp_k(JSLT, R1, i32::from(mark), python);
                    a.st(DW, REC, slot_off(k, 0), 0);
                    a.st(DW, REC, slot_off(k, 1), 1);
                    a.st(DW, REC, slot_off(k, 2), 0);
                    a.ja(next);
                    a.bind(python);
                }
                a.ldx(DW, R1, FP, fld(code));
                if code_tag_mask != 0 {
                    a.alu_k(AND, R1, !(code_tag_mask as i32));
                }
                a.stx(DW, FP, S_CODE, R1);
                identity(&mut a, failed);
                // offset = instr - code - code_adaptive
                a.ldx(DW, R4, FP, fld(instr));
                a.ldx(DW, R1, FP, S_CODE);
                a.alu_x(SUB, R4, R1);
                if code_adaptive != 0 {
                    a.alu_k(SUB, R4, code_adaptive as i32);
                }
                if first_traceable.is_some() {
                    // frames not started yet (or internal cleanup) are skipped; a skipped
                    // entry frame still ends its eval call's group (3.11: 0:1:0)
                    let keep = a.label();
                    a.ldx(B, R1, FP, fld(owner));
                    a.jmp_k(JEQ, R1, i32::from(generator_owner), keep);
                    a.ldx(DW, R1, FP, S_LAST_TRACEABLE);
                    a.alu_k(LSH, R1, 1);
                    a.jmp_x(JGE_S, R4, R1, keep);
                    empty(&mut a, is_entry.map(fld));
                    a.ja(next);
                    a.bind(keep);
                }
                if let Some(e) = is_entry {
                    a.ldx(B, R1, FP, fld(e));
                    a.alu_x(OR, R4, R1);
                }
                a.stx(DW, REC, slot_off(k, 1), R4);
                a.ldx(DW, R1, FP, S_CODE);
                a.stx(DW, REC, slot_off(k, 0), R1);
                a.ldx(DW, R1, FP, S_LAST_IDENT);
                a.stx(DW, REC, slot_off(k, 2), R1);
                a.bind(next);
                a.ldx(DW, CUR, FP, fld(previous));
            }
        }
        a.st(W, REC, 24, (k + 1) as i32);
    }
    // past the depth: truncated when the chain goes on
    a.jmp_k(JEQ, CUR, 0, done);
    a.ldx(W, R1, REC, 16);
    a.alu_k(OR, R1, FLAG_TRUNCATED as i32);
    a.stx(W, REC, 16, R1);
    a.ja(done);

    a.bind(no_thread);
    a.ldx(W, R1, REC, 16);
    a.alu_k(OR, R1, FLAG_NO_THREAD as i32);
    a.stx(W, REC, 16, R1);
    a.ja(done);

    a.bind(failed);
    a.ldx(W, R1, REC, 16);
    a.alu_k(OR, R1, FLAG_READ_FAILED as i32);
    a.stx(W, REC, 16, R1);

    // 5. the user stack, then the record out
    a.bind(done);
    if opts.user_stack {
        a.mov_x(R1, CTX);
        a.mov_x(R2, REC);
        a.alu_k(ADD, R2, (HEADER + SLOT * plan.depth as usize) as i32);
        a.mov_k(R3, (8 * USER_STACK_FRAMES) as i32);
        a.mov_k(R4, F_USER_STACK);
        a.call(helper::GET_STACK);
        a.stx(W, REC, 20, R0);
    }
    a.ld_map(R1, maps.ring);
    a.mov_x(R2, REC);
    a.mov_k(R3, size as i32);
    // no wakeup per record (an interrupt each time the consumer had caught up): the
    // consumer reads on a timer
    a.mov_k(R4, RB_NO_WAKEUP);
    a.call(helper::RINGBUF_OUTPUT);
    a.jmp_k(JEQ, R0, 0, out);
    // no room: counted, never silently dropped
    a.st(W, FP, S_KEY32, opts.probe as i32);
    a.ld_map(R1, maps.counters);
    a.mov_x(R2, FP);
    a.alu_k(ADD, R2, i32::from(S_KEY32));
    a.call(helper::MAP_LOOKUP_ELEM);
    a.jmp_k(JEQ, R0, 0, out);
    a.ldx(DW, R1, R0, 8);
    a.alu_k(ADD, R1, 1);
    a.stx(DW, R0, 8, R1);

    a.bind(out);
    a.mov_k(R0, 0);
    a.exit();
    Ok(Program {
        insns: a.finish(),
        record_size: size,
    })
}

/// Signed `>=` (BPF_JSGE).
const JGE_S: u8 = 0x70;

/// One record, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub probe: u32,
    pub tid: u32,
    /// `bpf_ktime_get_ns` at the firing.
    pub time_ns: u64,
    pub capture: Capture,
    /// A read failed: the capture stops there.
    pub read_failed: bool,
    /// The user stack, innermost first, or the kernel's error number.
    pub user_stack: Result<Vec<u64>, i32>,
}

/// Decode a record of a plan of `depth` steps; `None` when it is too short.
pub fn decode(bytes: &[u8], depth: u32, user_stack: bool) -> Option<Record> {
    let u32_at = |o: usize| {
        bytes
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    };
    let u64_at = |o: usize| {
        bytes
            .get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    };
    let probe = u32_at(0)?;
    let tid = u32_at(4)?;
    let time_ns = u64_at(8)?;
    let flags = u32_at(16)?;
    let stack_bytes = u32_at(20)? as i32;
    let used = u32_at(24)?.min(depth) as usize;
    let mut columns = Vec::with_capacity(used * 3);
    for k in 0..used {
        for f in 0..3 {
            columns.push(u64_at(HEADER + SLOT * k + 8 * f)? as i64);
        }
    }
    let mut capture = from_columns(&columns)?;
    capture.no_thread = flags & FLAG_NO_THREAD != 0;
    capture.truncated = flags & FLAG_TRUNCATED != 0;
    let stack = if !user_stack {
        Ok(Vec::new())
    } else if stack_bytes < 0 {
        Err(-stack_bytes)
    } else {
        let base = HEADER + SLOT * depth as usize;
        let n = (stack_bytes as usize / 8).min(USER_STACK_FRAMES);
        let mut v = Vec::with_capacity(n);
        for i in 0..n {
            v.push(u64_at(base + 8 * i)?);
        }
        Ok(v)
    };
    Some(Record {
        probe,
        tid,
        time_ns,
        capture,
        read_failed: flags & FLAG_READ_FAILED != 0,
        user_stack: stack,
    })
}

/// Where [`emulate`] puts what is not user memory (above any user address).
const EMU_STACK: u64 = 0xffff_9000_0000_0000;
const EMU_MAP: u64 = 0xffff_a000_0000_0000;
const EMU_TASK: u64 = 0xffff_b000_0000_0000;

/// Why [`emulate`] stopped without a result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmulateError {
    #[error("instruction {0}: {1}")]
    Bad(usize, String),
}

/// Run a program in Rust, for tests: `mem` is the target's memory, the firing thread is
/// `tid` of process `pid`, and its FS base (for ≤3.10 plans) is `fsbase`. Returns the
/// record it sent (`None`: it returned early, e.g. another process). Helpers behave as the
/// kernel's do for these programs; the user stack is empty.
pub fn emulate(
    program: &Program,
    maps: &Maps,
    mem: &dyn Memory,
    pid: u32,
    tid: u32,
    fsbase: u64,
    fsbase_offset: u32,
) -> Result<Option<Vec<u8>>, EmulateError> {
    let bad = |pc: usize, m: &str| EmulateError::Bad(pc, m.to_string());
    let mut r = [0u64; 11];
    let mut stack = vec![0u8; 512];
    // map fd → its one element's bytes
    let mut values: HashMap<i32, Vec<u8>> = HashMap::new();
    values.insert(maps.scratch, vec![0; program.record_size]);
    values.insert(maps.counters, vec![0; COUNTERS_VALUE * 64]);
    r[10] = EMU_STACK + 512;
    let mut sent = None;
    let insns = &program.insns;
    let mut pc = 0usize;
    let mut steps = 0u64;
    // (region, offset) of an address the program may load from or store to
    enum At {
        Stack(usize),
        Map(i32, usize),
    }
    let locate = |addr: u64, size: usize| -> Option<At> {
        if (EMU_STACK..EMU_STACK + 512).contains(&addr) && addr + size as u64 <= EMU_STACK + 512 {
            return Some(At::Stack((addr - EMU_STACK) as usize));
        }
        if (EMU_MAP..EMU_MAP + (1 << 40)).contains(&addr) {
            let fd = ((addr - EMU_MAP) >> 24) as i32;
            return Some(At::Map(fd, ((addr - EMU_MAP) & 0xff_ffff) as usize));
        }
        None
    };
    loop {
        steps += 1;
        if steps > 1_000_000 {
            return Err(bad(pc, "more than a million steps"));
        }
        let i = *insns.get(pc).ok_or_else(|| bad(pc, "ran off the end"))?;
        let (d, s) = (i.dst(), i.src());
        let class = i.code & 0x07;
        match class {
            ALU64 => {
                let v = if i.code & X != 0 {
                    r[s]
                } else {
                    i.imm as i64 as u64
                };
                let op = i.code & 0xf0;
                r[d] = match op {
                    ADD => r[d].wrapping_add(v),
                    SUB => r[d].wrapping_sub(v),
                    MUL => r[d].wrapping_mul(v),
                    OR => r[d] | v,
                    AND => r[d] & v,
                    LSH => r[d] << (v & 63),
                    RSH => r[d] >> (v & 63),
                    XOR => r[d] ^ v,
                    MOV => v,
                    ARSH => ((r[d] as i64) >> (v & 63)) as u64,
                    _ => return Err(bad(pc, "unknown ALU operation")),
                };
                pc += 1;
            }
            LD => {
                let hi = insns
                    .get(pc + 1)
                    .ok_or_else(|| bad(pc, "truncated ld_imm64"))?;
                r[d] = if s == PSEUDO_MAP_FD as usize {
                    EMU_MAP + ((i.imm as u64) << 24)
                } else {
                    (i.imm as u32 as u64) | ((hi.imm as u32 as u64) << 32)
                };
                pc += 2;
            }
            LDX | STX | ST => {
                let size = match i.code & 0x18 {
                    W => 4,
                    B => 1,
                    DW => 8,
                    _ => 2,
                };
                let base = if class == LDX { r[s] } else { r[d] };
                let addr = base.wrapping_add(i.off as i64 as u64);
                let at =
                    locate(addr, size).ok_or_else(|| bad(pc, "access outside stack and maps"))?;
                let buf: &mut [u8] = match at {
                    At::Stack(o) => &mut stack[o..o + size],
                    At::Map(fd, o) => {
                        let v = values
                            .get_mut(&fd)
                            .ok_or_else(|| bad(pc, "no such map value"))?;
                        v.get_mut(o..o + size)
                            .ok_or_else(|| bad(pc, "outside the map value"))?
                    }
                };
                if class == LDX {
                    let mut b = [0u8; 8];
                    b[..size].copy_from_slice(buf);
                    r[d] = u64::from_le_bytes(b);
                } else {
                    let v = if class == STX {
                        r[s]
                    } else {
                        i.imm as i64 as u64
                    };
                    buf.copy_from_slice(&v.to_le_bytes()[..size]);
                }
                pc += 1;
            }
            JMP => {
                let op = i.code & 0xf0;
                if op == EXIT {
                    return Ok(sent);
                }
                if op == CALL {
                    r[0] = match i.imm {
                        helper::GET_CURRENT_PID_TGID => (u64::from(pid) << 32) | u64::from(tid),
                        helper::KTIME_GET_NS => 1,
                        helper::GET_CURRENT_TASK => EMU_TASK,
                        helper::MAP_LOOKUP_ELEM => {
                            let fd = ((r[1] - EMU_MAP) >> 24) as i32;
                            let key = match locate(r[2], 4) {
                                Some(At::Stack(o)) => {
                                    u32::from_le_bytes(stack[o..o + 4].try_into().unwrap())
                                }
                                _ => return Err(bad(pc, "map key not on the stack")),
                            };
                            let elem = if fd == maps.counters {
                                COUNTERS_VALUE
                            } else {
                                0
                            };
                            EMU_MAP + ((fd as u64) << 24) + u64::from(key) * elem as u64
                        }
                        helper::PROBE_READ_USER | helper::PROBE_READ_KERNEL => {
                            let size = r[2] as usize;
                            let Some(At::Stack(o)) = locate(r[1], size) else {
                                return Err(bad(pc, "read into something not the stack"));
                            };
                            let mut got = vec![0u8; size];
                            let ok = if i.imm == helper::PROBE_READ_KERNEL {
                                if r[3] == EMU_TASK + u64::from(fsbase_offset) && size == 8 {
                                    got.copy_from_slice(&fsbase.to_le_bytes());
                                    true
                                } else {
                                    false
                                }
                            } else {
                                mem.read(r[3], &mut got).is_ok()
                            };
                            if !ok {
                                got.iter_mut().for_each(|b| *b = 0);
                            }
                            stack[o..o + size].copy_from_slice(&got);
                            if ok {
                                0
                            } else {
                                (-14i64) as u64
                            }
                        }
                        helper::GET_STACK => 0,
                        helper::RINGBUF_OUTPUT => {
                            let size = r[3] as usize;
                            let Some(At::Map(fd, o)) = locate(r[2], size) else {
                                return Err(bad(pc, "output not from a map value"));
                            };
                            let v = &values[&fd];
                            sent = Some(v[o..o + size].to_vec());
                            0
                        }
                        _ => return Err(bad(pc, "unknown helper")),
                    };
                    // r1-r5 are clobbered by calls
                    for reg in r.iter_mut().take(6).skip(1) {
                        *reg = 0xdead_beef;
                    }
                    pc += 1;
                    continue;
                }
                let v = if i.code & X != 0 {
                    r[s]
                } else {
                    i.imm as i64 as u64
                };
                let take = match op {
                    JA => true,
                    JEQ => r[d] == v,
                    JNE => r[d] != v,
                    JGE => r[d] >= v,
                    JGE_S => (r[d] as i64) >= (v as i64),
                    JSLT => (r[d] as i64) < (v as i64),
                    _ => return Err(bad(pc, "unknown jump")),
                };
                pc = if take {
                    (pc as i64 + 1 + i64::from(i.off)) as usize
                } else {
                    pc + 1
                };
            }
            _ => return Err(bad(pc, "unknown instruction class")),
        }
    }
}

/// [`emulate`] and [`decode`]: the capture a program takes for a thread.
pub fn emulate_capture(
    plan: &Plan,
    mem: &dyn Memory,
    pid: u32,
    tid: u32,
    fsbase: u64,
) -> Result<Record, EmulateError> {
    let maps = Maps {
        scratch: 3,
        ring: 4,
        counters: 5,
    };
    const FSBASE_AT: u32 = 0x1000;
    let program = render(
        plan,
        &maps,
        &Options {
            pid,
            probe: 0,
            user_stack: false,
            fsbase_offset: Some(FSBASE_AT),
        },
    )
    .map_err(|e| EmulateError::Bad(0, e.to_string()))?;
    let bytes = emulate(&program, &maps, mem, pid, tid, fsbase, FSBASE_AT)?
        .ok_or_else(|| EmulateError::Bad(0, "no record sent".into()))?;
    decode(&bytes, plan.depth, false)
        .ok_or_else(|| EmulateError::Bad(0, "record does not decode".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Os;
    use pyframe_reader::layout::ALL;

    #[test]
    fn every_layout_renders_within_limits() {
        for layout in ALL {
            let plan = Plan::from_layout(layout, 0x7f00_0000_1000, Os::Linux, 256).unwrap();
            let p = render(
                &plan,
                &Maps {
                    scratch: 3,
                    ring: 4,
                    counters: 5,
                },
                &Options {
                    pid: 42,
                    probe: 1,
                    user_stack: true,
                    fsbase_offset: Some(0x1000),
                },
            )
            .unwrap_or_else(|e| panic!("{:?}: {e}", layout.version));
            // the kernel's limit for a privileged program is a million; jumps are 16-bit
            assert!(
                p.insns.len() < 32_000,
                "{:?}: {}",
                layout.version,
                p.insns.len()
            );
            assert_eq!(p.bytes().len(), p.insns.len() * 8);
        }
    }
}
