//! Walking interpreters → thread states → frames with a [`Layout`]. Everything read is
//! validated as it goes (type pointers, bounds, cycles); a failed check is reported as
//! [`MemoryError::Invalid`] so the caller can retry a torn read of a running target.

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use protocol::Frame;

use crate::code::CodeCache;
use crate::error::MemoryError;
use crate::layout::{
    CurrentFrame, FrameLayout, FrameWords, Layout, GIL_LAST_HOLDER, GIL_SWITCH_NUMBER,
    STACK_CHUNK_DATA, STACK_CHUNK_PREVIOUS, STACK_CHUNK_TOP,
};
use crate::memory::{i32_at, u32_at, u64_at, u8_at, MemResult, Memory, MemoryExt};
use crate::objects::{Kind, Types};
use crate::witness::{StackBound, Witness};

pub const MAX_INTERPRETERS: usize = 256;
pub const MAX_THREADS: usize = 4096;
pub const MAX_FRAMES: usize = 16_384;

/// One thread state as read from the target, before OS thread ids are attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawThread {
    pub tstate: u64,
    /// Address of the thread's `PyInterpreterState`.
    pub interp: u64,
    pub interpreter_id: i64,
    pub thread_id: u64,
    pub native_thread_id: Option<u64>,
    pub holds_gil: Option<bool>,
    /// The address of the `struct _gil_runtime_state` this thread runs under.
    pub gil: Option<u64>,
    /// 3.13: the thread state's own `_status.holds_gil` bit.
    pub own_holds_gil: Option<bool>,
    /// Innermost first.
    pub frames: Vec<Frame>,
    /// Per frame, the address of the frame and of its code object (`--locals` reads there).
    pub frame_addrs: Vec<(u64, u64)>,
    /// 3.10-3.12, a subinterpreter's state running Python: where its `cframe` points, on
    /// the C stack of the thread running it (witnessed).
    pub running_cframe: Option<u64>,
}

/// Decides from `(memory, thread_id, native_thread_id)` whether a thread's frames are read.
pub type ThreadFilter<'f> = dyn Fn(&dyn Memory, u64, Option<u64>) -> bool + 'f;

pub struct Walker<'a> {
    pub mem: &'a dyn Memory,
    pub layout: &'a Layout,
    pub types: &'a mut Types,
    pub codes: &'a mut CodeCache,
    /// Only threads for which this returns true (given `thread_id` and
    /// `native_thread_id`) have their frames read; the others are skipped entirely.
    pub want: Option<&'a ThreadFilter<'a>>,
    /// Every pointer and field the walk followed, as read (see [`crate::witness`]): the
    /// caller reads them again after the walk and retries when any changed.
    pub witnesses: Vec<Witness>,
    /// 3.11+: each walked thread's data stack, checked after the walk.
    pub bounds: Vec<StackBound>,
    /// The target's threads are stopped for this walk (nothing moves while it reads).
    pub stopped: bool,
    /// Versions without `native_thread_id` (before 3.11): where the OS tid sits in the
    /// block `thread_id` (`pthread_self()`) points to (Linux: glibc's `struct pthread`).
    /// Read in the walk, and witnessed, so the tid is the walked thread's: a mapping made
    /// after the walk misses threads that ended meanwhile, or finds a reused block.
    pub pthread_tid_offset: Option<u64>,
    /// With `pthread_tid_offset`: a thread running Python whose block holds no tid (seen
    /// for a thread at its start or end) fails the walk, to be retried, instead of coming
    /// back without its OS tid. The caller clears it for its last attempts.
    pub require_tid: bool,
    /// Where each walked thread's innermost-frame pointer was read (the thread state's
    /// field, and on 3.11/3.12 the `_PyCFrame`'s): the caller fetches these before the
    /// frames, so that a walk never starts from a pointer newer than the frames it reads.
    pub entries: Vec<u64>,
    /// 3.11+: data-stack words per frame of each code object seen in this walk.
    frame_words: HashMap<u64, u64>,
    last_frame_words: (u64, u64),
    /// Opcode addresses found to be call sites in this walk (a recursion asks for the same
    /// few again and again). Only for one walk: a freed code object's memory can hold
    /// other code later.
    call_sites_seen: HashSet<u64>,
    /// Per walked thread: what in `witnesses` and `bounds` is its own, and the GIL it runs
    /// under (see [`ThreadSpan`]).
    pub spans: Vec<ThreadSpan>,
    runtime: u64,
    /// A cold walk (nothing fetched in advance): the block cache `mem` is, to fetch every
    /// thread's way to its innermost frame a level at a time for all threads together
    /// (one batched read per level instead of one read per thread per level).
    pub cold: Option<&'a crate::memory::BlockCache<'a>>,
}

/// The part of a walk's witnesses and bounds that belongs to one thread.
#[derive(Debug, Clone)]
pub struct ThreadSpan {
    pub tstate: u64,
    /// Addresses of the `last_holder` and `switch_number` fields of the GIL this thread
    /// needs to run Python code, where the layout knows them.
    pub gil: Option<(u64, u64)>,
    pub witnesses: std::ops::Range<usize>,
    pub bounds: std::ops::Range<usize>,
}

/// `FRAME_OWNED_BY_THREAD` (every version with interpreter frames): the frame is in the
/// thread's data stack.
const OWNED_BY_THREAD: u8 = 0;

/// Mark the frame read last (the outermost so far) as its eval call's entry frame.
fn close_group(frames: &mut [Frame]) {
    if let Some(last) = frames.last_mut() {
        last.entry = true;
    }
}

fn invalid(msg: String) -> MemoryError {
    MemoryError::Invalid(msg)
}

fn struct_span(offsets: &[u64]) -> usize {
    offsets.iter().copied().max().unwrap_or(0) as usize + 8
}

impl<'a> Walker<'a> {
    pub fn new(
        mem: &'a dyn Memory,
        layout: &'a Layout,
        types: &'a mut Types,
        codes: &'a mut CodeCache,
    ) -> Self {
        Walker {
            mem,
            layout,
            types,
            codes,
            want: None,
            // sized for a few threads of typical depth: grown from empty, these were
            // reallocated several times per read
            witnesses: Vec::with_capacity(512),
            bounds: Vec::new(),
            stopped: false,
            pthread_tid_offset: None,
            require_tid: false,
            entries: Vec::new(),
            frame_words: HashMap::default(),
            last_frame_words: (0, 0),
            call_sites_seen: HashSet::default(),
            spans: Vec::new(),
            runtime: 0,
            cold: None,
        }
    }

    /// Cold walks: each thread state's innermost-frame pointer and the block of the frame
    /// it points to, fetched for all the threads of the list at `head` at once, a level at
    /// a time (the entry pointers first, then the frames: as the walk itself reads them).
    /// Only fills the cache; the walk reads and checks everything as always.
    fn fetch_entries(&self, cache: &crate::memory::BlockCache, head: u64) {
        let tl = &self.layout.tstate;
        // the list itself: each state's `next` is in its own block (read one by one, as the
        // walk would)
        let mut states = Vec::new();
        let mut t = head;
        while t != 0 && states.len() < 64 && !states.contains(&t) {
            states.push(t);
            let Ok(next) = self.mem.read_u64(t.wrapping_add(tl.next)) else {
                break;
            };
            t = next;
        }
        if states.len() < 2 {
            return;
        }
        let entry = |t: u64| -> MemResult<()> {
            let frame = match tl.current_frame {
                CurrentFrame::Direct(o) => self.mem.read_u64(t.wrapping_add(o))?,
                CurrentFrame::ViaCFrame {
                    cframe,
                    current_frame,
                } => match self.mem.read_u64(t.wrapping_add(cframe))? {
                    0 => 0,
                    cf => self.mem.read_u64(cf.wrapping_add(current_frame))?,
                },
            };
            if frame != 0 {
                self.mem.read_u64(frame)?;
            }
            Ok(())
        };
        // (at most two levels: the `_PyCFrame` on the C stack, then the frame)
        for _ in 0..2 {
            let wanted = cache.speculate(|| {
                for &t in &states {
                    let _ = entry(t);
                }
            });
            if wanted.is_empty() {
                break;
            }
            cache.prefetch(&wanted);
        }
    }

    /// Every thread of every interpreter reachable from `_PyRuntime` at `runtime`.
    pub fn walk(&mut self, runtime: u64) -> MemResult<Vec<RawThread>> {
        self.runtime = runtime;
        let l = self.layout;
        let head = self
            .mem
            .read_u64(runtime.wrapping_add(l.runtime.interpreters_head))?;
        let gil_current = match l.runtime.gilstate_tstate_current {
            Some(off) => Some(self.mem.read_u64(runtime.wrapping_add(off))?),
            None => None,
        };
        let mut out = Vec::new();
        let mut seen = HashSet::default();
        let mut interp = head;
        while interp != 0 {
            if !seen.insert(interp) || seen.len() > MAX_INTERPRETERS {
                return Err(invalid(format!("interpreter list loops at {interp:#x}")));
            }
            let (next, mut threads) = self.interpreter(interp, gil_current)?;
            out.append(&mut threads);
            interp = next;
        }
        Ok(out)
    }

    fn interpreter(
        &mut self,
        interp: u64,
        gil_current: Option<u64>,
    ) -> MemResult<(u64, Vec<RawThread>)> {
        let il = &self.layout.interp;
        let mut offs = vec![il.next, il.threads_head, il.id];
        if let Some(g) = il.gil {
            offs.push(g.pointer);
        }
        let buf = self.mem.read_vec(interp, struct_span(&offs), 1 << 20)?;
        let next = u64_at(&buf, il.next as usize);
        let id = u64_at(&buf, il.id as usize) as i64;
        let gil_holder = match (gil_current, il.gil) {
            // no holder to name: `threadstate` says why (and reads a GIL turned back on)
            _ if self.layout.free_threaded => None,
            (Some(cur), _) => Some(cur),
            (None, Some(g)) => {
                let gil = u64_at(&buf, g.pointer as usize);
                if gil == 0 {
                    None
                } else {
                    let holder = self.mem.read_u64(gil.wrapping_add(g.last_holder))?;
                    let locked = self.mem.read_i32(gil.wrapping_add(g.locked))?;
                    Some(if locked != 0 { holder } else { 0 })
                }
            }
            (None, None) => None,
        };
        // the GIL this interpreter's threads run under: `_PyRuntime`'s up to 3.11, the
        // one the interpreter points to from 3.12
        let gil_base = match (self.layout.runtime.gil, il.gil) {
            (Some(off), _) => Some(self.runtime.wrapping_add(off)),
            (None, Some(g)) => Some(u64_at(&buf, g.pointer as usize)).filter(|&p| p != 0),
            _ => None,
        };
        // A free-threaded build's threads run Python without taking the GIL (3.13t turns
        // it on and off at run time): an unchanged GIL shows none of them still, every one
        // is re-read (docs/consistency.md).
        let gil_fields = match (self.layout.runtime.gil, il.gil) {
            _ if self.layout.free_threaded => None,
            (Some(off), _) => Some(self.runtime.wrapping_add(off)),
            (None, Some(g)) if g.switch_number.is_some() => {
                Some(u64_at(&buf, g.pointer as usize)).filter(|&p| p != 0)
            }
            _ => None,
        }
        .map(|gil| {
            let (holder, switch) = match il.gil {
                Some(g) if self.layout.runtime.gil.is_none() => {
                    (g.last_holder, g.switch_number.unwrap_or(GIL_SWITCH_NUMBER))
                }
                _ => (GIL_LAST_HOLDER, GIL_SWITCH_NUMBER),
            };
            (gil.wrapping_add(holder), gil.wrapping_add(switch))
        });
        let mut threads = Vec::new();
        let mut seen = HashSet::default();
        let mut t = u64_at(&buf, il.threads_head as usize);
        // Every list link the walk follows is witnessed (outside every thread's span, so
        // always read back): a list caught while a thread state is linked in or out can
        // read short (a new head whose `next` is not stored yet, a freed state's), and a
        // walk of it would leave out threads that ran all along (one CI run: 3.9, a walk
        // that saw 2 of 9 thread states). A head that changed is not a torn read: the walk
        // saw the list as it was before an insertion.
        self.witnesses
            .push(Witness::new(interp).field(il.next, 8, next));
        if let Some(cache) = self.cold {
            self.fetch_entries(cache, t);
        }
        while t != 0 {
            if !seen.insert(t) || seen.len() > MAX_THREADS {
                return Err(invalid(format!("thread list loops at {t:#x}")));
            }
            let (w0, b0) = (self.witnesses.len(), self.bounds.len());
            let (next, mut thread) = self.thread(t, id, interp, gil_holder)?;
            if let Some(th) = &mut thread {
                th.gil = gil_base;
            }
            if thread.is_some() {
                self.spans.push(ThreadSpan {
                    tstate: t,
                    gil: gil_fields,
                    witnesses: w0..self.witnesses.len(),
                    bounds: b0..self.bounds.len(),
                });
            }
            threads.extend(thread);
            // after the thread's span: checked even when the thread itself is not
            self.witnesses
                .push(Witness::new(t).field(self.layout.tstate.next, 8, next));
            t = next;
        }
        // the list is newest first; the main thread reads better first
        threads.reverse();
        Ok((next, threads))
    }

    fn thread(
        &mut self,
        t: u64,
        interp_id: i64,
        interp: u64,
        gil_holder: Option<u64>,
    ) -> MemResult<(u64, Option<RawThread>)> {
        let tl = &self.layout.tstate;
        let mut offs = vec![tl.next, tl.interp, tl.thread_id];
        offs.extend(tl.native_thread_id);
        offs.extend(tl.tracing);
        offs.extend(self.layout.gil_fields.tstate_holds_gil.map(|(o, _)| o));
        match tl.current_frame {
            CurrentFrame::Direct(o) => offs.push(o),
            CurrentFrame::ViaCFrame { cframe, .. } => offs.push(cframe),
        }
        offs.extend(tl.cframe.map(|c| c.cframe));
        let buf = self.mem.read_vec(t, struct_span(&offs), 1 << 20)?;
        if u64_at(&buf, tl.interp as usize) != interp {
            return Err(invalid(format!(
                "thread state {t:#x} does not point back to its interpreter"
            )));
        }
        let tracing = tl.tracing.is_some_and(|o| i32_at(&buf, o as usize) != 0);
        let thread_id = u64_at(&buf, tl.thread_id as usize);
        let mut native_thread_id = tl.native_thread_id.map(|o| u64_at(&buf, o as usize));
        if let (None, Some(off), true) =
            (tl.native_thread_id, self.pthread_tid_offset, thread_id != 0)
        {
            // an unreadable or cleared tid (a thread that ended) leaves the later mapping.
            // A cleared one is witnessed too: the block may be a copy taken before a new
            // thread reused it (glibc caches stacks), and must read back 0 after the walk
            if let Ok(v) = self.mem.read_i32(thread_id.wrapping_add(off)) {
                self.witnesses
                    .push(Witness::new(thread_id).field(off, 4, v as u32 as u64));
                if v > 0 {
                    native_thread_id = Some(v as u64);
                }
            }
        }
        let next = u64_at(&buf, tl.next as usize);
        if let Some(want) = self.want {
            if !want(self.mem, thread_id, native_thread_id) {
                return Ok((next, None));
            }
        }
        // a subinterpreter's state may be lent to any thread (`lent_states`): where its
        // eval loop's `_PyCFrame` is tells which (`PythonProcess::lent_runners`)
        let running_cframe = match tl.cframe {
            Some(c) if interp_id != 0 => {
                let cf = u64_at(&buf, c.cframe as usize);
                if matches!(tl.current_frame, CurrentFrame::Direct(_)) {
                    // (3.11/3.12 witness it below, as the way to the frames)
                    self.witnesses.push(Witness::new(t).field(c.cframe, 8, cf));
                }
                (cf != 0 && cf != t.wrapping_add(c.root)).then_some(cf)
            }
            _ => None,
        };
        // where the innermost-frame pointer is (read again after the walk)
        let mut cur_field = 0;
        let frame = match tl.current_frame {
            CurrentFrame::Direct(o) => {
                self.entries.push(t.wrapping_add(o));
                cur_field = t.wrapping_add(o);
                u64_at(&buf, o as usize)
            }
            CurrentFrame::ViaCFrame {
                cframe,
                current_frame,
            } => {
                let cf = u64_at(&buf, cframe as usize);
                self.entries.push(t.wrapping_add(cframe));
                // the thread's entry into its current eval loop must still be the same
                // one after the walk (its innermost frame moves on; that is checked
                // through the data-stack top)
                self.witnesses.push(Witness::new(t).field(cframe, 8, cf));
                if cf == 0 {
                    0
                } else {
                    self.entries.push(cf.wrapping_add(current_frame));
                    cur_field = cf.wrapping_add(current_frame);
                    self.mem.read_u64(cf.wrapping_add(current_frame))?
                }
            }
        };
        if frame != 0
            && native_thread_id.is_none()
            && self.pthread_tid_offset.is_some()
            && self.require_tid
        {
            return Err(invalid(format!(
                "thread state {t:#x} runs Python, but its pthread block holds no thread id"
            )));
        }
        let mut frame_addrs = Vec::new();
        let frames = match self.layout.frame {
            FrameLayout::Object(_) => self.object_frames(frame, tracing, &mut frame_addrs)?,
            FrameLayout::Interpreter(fl) => {
                let mut addrs = Vec::with_capacity(64);
                let frames = self.interpreter_frames(frame, &mut addrs, &mut frame_addrs)?;
                if let Some(ds) = tl.datastack {
                    self.bounds.push(StackBound {
                        chunk_field: t.wrapping_add(ds.chunk),
                        top: ds.top.wrapping_sub(ds.chunk),
                        limit: ds.limit.wrapping_sub(ds.chunk),
                        current_field: cur_field,
                        frames: addrs.into_iter().map(|a| (a, fl.size)).collect(),
                    });
                }
                frames
            }
        };
        Ok((
            next,
            Some(RawThread {
                tstate: t,
                interp,
                interpreter_id: interp_id,
                thread_id,
                native_thread_id,
                holds_gil: gil_holder.map(|h| h == t),
                gil: None,
                own_holds_gil: self
                    .layout
                    .gil_fields
                    .tstate_holds_gil
                    .map(|(o, bit)| u32_at(&buf, o as usize) >> bit & 1 != 0),
                frames,
                frame_addrs,
                running_cframe,
            }),
        ))
    }

    /// ≤3.10: `PyFrameObject` chain; every frame is its own eval call. Each frame must be
    /// running: one that returned may sit whole on a free list or as its code's zombie
    /// frame, and its stale back link would cut the chain short. Inside a trace or profile
    /// function (`tracing`), the traced frame itself may not be running yet (call event)
    /// or any more (return event), so the flag is then only compared after the walk.
    fn object_frames(
        &mut self,
        mut addr: u64,
        tracing: bool,
        shown: &mut Vec<(u64, u64)>,
    ) -> MemResult<Vec<Frame>> {
        let FrameLayout::Object(fl) = self.layout.frame else {
            unreachable!()
        };
        let mut frames = Vec::with_capacity(64);
        let mut seen = frame_set();
        let mut buf = vec![0u8; fl.size as usize];
        while addr != 0 {
            if !seen.insert(addr) || frames.len() >= MAX_FRAMES {
                return Err(invalid(format!(
                    "frame chain loops or exceeds {MAX_FRAMES} at {addr:#x}"
                )));
            }
            self.mem.read(addr, &mut buf)?;
            let live = u8_at(&buf, fl.live.offset() as usize);
            // A stopped thread's innermost frame may be caught on its way in or out of its
            // eval call (the thread state already or still points at it): true at that
            // moment. Running, that window is a few instructions and a retry passes it;
            // a dead frame read as innermost (popped after its address was read) is not.
            let window = self.stopped && frames.is_empty();
            if !tracing && !window && !fl.live.running(live) {
                return Err(invalid(format!(
                    "frame {addr:#x} is not running (flag {live}): it returned during the read"
                )));
            }
            self.types.expect(
                self.mem,
                self.layout,
                Kind::Frame,
                addr,
                u64_at(&buf, self.layout.object.ob_type as usize),
            )?;
            let code = self.codes.get(
                self.mem,
                self.layout,
                self.types,
                u64_at(&buf, fl.code as usize),
            )?;
            let lasti = i32_at(&buf, fl.lasti as usize) as i64;
            frames.push(code.frame(lasti * i64::from(fl.lasti_unit), true));
            shown.push((addr, u64_at(&buf, fl.code as usize)));
            let back = u64_at(&buf, fl.back as usize);
            let mut w = Witness::new(addr)
                .field(
                    self.layout.object.ob_type,
                    8,
                    u64_at(&buf, self.layout.object.ob_type as usize),
                )
                .field(fl.back, 8, back)
                .field(fl.code, 8, u64_at(&buf, fl.code as usize))
                .field(fl.live.offset(), 1, live as u64);
            if frames.len() > 1 {
                // the innermost frame's position moves while it runs (see witness.rs)
                w = w.field(fl.lasti, 4, lasti as u32 as u64);
            }
            self.witnesses.push(w);
            addr = back;
        }
        Ok(frames)
    }

    /// Data-stack words a frame of the code object at `code` takes, if the layout says.
    /// 3.14t: where copy `index` of the code at `code` starts (copy 0 is
    /// `co_code_adaptive`; the others are `co_tlbc->entries[index]`).
    fn tlbc_start(&self, code: u64, index: i32, array: u64, adaptive: u64) -> MemResult<u64> {
        if index == 0 {
            return Ok(code.wrapping_add(adaptive));
        }
        let arr = self.mem.read_u64(code.wrapping_add(array))?;
        let size = if arr == 0 { 0 } else { self.mem.read_u64(arr)? };
        if index < 0 || index as u64 >= size.min(1 << 16) {
            return Err(invalid(format!(
                "code {code:#x}: bytecode copy {index} of {size}"
            )));
        }
        self.mem.read_u64(
            arr.wrapping_add(crate::layout::CODE_ARRAY_ENTRIES)
                .wrapping_add(index as u64 * 8),
        )
    }

    fn code_frame_words(&mut self, code: u64) -> MemResult<Option<u64>> {
        let Some(fw) = self.layout.code.frame_words else {
            return Ok(None);
        };
        // recursion: the same code object frame after frame
        if self.last_frame_words.0 == code && code != 0 {
            return Ok(Some(self.last_frame_words.1));
        }
        if let Some(&w) = self.frame_words.get(&code) {
            self.last_frame_words = (code, w);
            return Ok(Some(w));
        }
        let words = match fw {
            FrameWords::Field(o) => i64::from(self.mem.read_i32(code.wrapping_add(o))?),
            FrameWords::Sum {
                nlocalsplus,
                stacksize,
                specials,
            } => {
                i64::from(self.mem.read_i32(code.wrapping_add(nlocalsplus))?)
                    + i64::from(self.mem.read_i32(code.wrapping_add(stacksize))?)
                    + specials as i64
            }
        };
        // a code object's frame is its specials, locals and value stack: never empty,
        // never megabytes
        if !(1..=1 << 20).contains(&words) {
            return Err(invalid(format!(
                "code object {code:#x} states a frame of {words} words"
            )));
        }
        self.frame_words.insert(code, words as u64);
        self.last_frame_words = (code, words as u64);
        Ok(Some(words as u64))
    }

    /// A data-stack frame at `callee` whose caller's frame ends at `end` elsewhere must be
    /// the first frame of a chunk pushed while that caller was the innermost frame: the
    /// chunk's `previous` chunk then has its saved top exactly at `end`. Anything else is a
    /// chain read from two different moments (a frame whose caller's slot was meanwhile
    /// reused by another call). A root chunk's first frame (a data stack of its own, such
    /// as a greenlet's) has no caller in the data stack to check.
    fn chunk_start(&mut self, callee: u64, end: u64) -> MemResult<()> {
        let chunk = callee.wrapping_sub(STACK_CHUNK_DATA);
        let previous = self
            .mem
            .read_u64(chunk.wrapping_add(STACK_CHUNK_PREVIOUS))?;
        if previous != 0 {
            if let Ok(top) = self.mem.read_u64(previous.wrapping_add(STACK_CHUNK_TOP)) {
                let saved_top = previous
                    .wrapping_add(STACK_CHUNK_DATA)
                    .wrapping_add(top.wrapping_mul(8));
                if saved_top == end {
                    self.witnesses.push(Witness::new(chunk).field(
                        STACK_CHUNK_PREVIOUS,
                        8,
                        previous,
                    ));
                    self.witnesses
                        .push(Witness::new(previous).field(STACK_CHUNK_TOP, 8, top));
                    return Ok(());
                }
            }
        }
        if self.root_chunk_start(callee)? {
            return Ok(());
        }
        Err(invalid(format!(
            "frame {callee:#x} does not start where its caller ends ({end:#x}): the stack changed during the read"
        )))
    }

    /// A frame with a callee it called inline must stand on an instruction that makes such
    /// calls ([`crate::layout::CallSites`]): the opcode `back_units` before its position
    /// `units` in its bytecode at `start`. Anything else is a frame read at another moment
    /// than its callee (the re-read cannot tell when the thread rebuilt the same chain).
    fn at_call_site(
        &mut self,
        addr: u64,
        start: u64,
        units: i64,
        code_units: Option<u64>,
        sites: crate::layout::CallSites,
    ) -> MemResult<()> {
        let at = units - sites.back_units as i64;
        if at < 0 || code_units.is_some_and(|n| at as u64 >= n) {
            return Err(invalid(format!(
                "frame {addr:#x} has a callee but stands at unit {units} of its code, where no call is: the stack changed during the read"
            )));
        }
        let opcode_at = start.wrapping_add(at as u64 * 2);
        if self.call_sites_seen.contains(&opcode_at) {
            return Ok(());
        }
        let opcode = self.mem.read_u8(opcode_at)?;
        if sites.contains(opcode) {
            self.call_sites_seen.insert(opcode_at);
        } else {
            return Err(invalid(format!(
                "frame {addr:#x} has a callee but stands on opcode {opcode} (unit {at}), which calls none: the stack changed during the read"
            )));
        }
        Ok(())
    }

    /// Whether the data-stack frame at `frame` is the first frame of a root chunk
    /// (`data[1]` of a page-aligned chunk with no previous one): the start of a data
    /// stack of its own (a thread's first frame, or a greenlet's).
    fn root_chunk_start(&mut self, frame: u64) -> MemResult<bool> {
        let root = frame.wrapping_sub(STACK_CHUNK_DATA + 8);
        if !root.is_multiple_of(4096) {
            return Ok(false);
        }
        let mut hdr = [0u8; 16];
        self.mem.read(root, &mut hdr)?;
        let (prev, size) = (u64_at(&hdr, 0), u64_at(&hdr, 8));
        if prev == 0 && size >= 4096 && size.is_multiple_of(4096) && size <= 1 << 30 {
            self.witnesses.push(
                Witness::new(root)
                    .field(STACK_CHUNK_PREVIOUS, 8, 0)
                    .field(8, 8, size),
            );
            return Ok(true);
        }
        Ok(false)
    }

    /// Before a 3.11+ chain is walked: its code objects the cache does not hold, found by
    /// a quick pass over the chain's links (in the data stack: blocks the walk reads
    /// anyway), fetched in batches ([`CodeCache::prefetch`]). Only a hint: the walk
    /// reads and checks everything itself.
    fn prefetch_codes(&mut self, mut addr: u64) {
        const LOOK: usize = 1024;
        let FrameLayout::Interpreter(fl) = self.layout.frame else {
            return;
        };
        let mut buf = vec![0u8; fl.size as usize];
        let mut codes = Vec::new();
        let mut n = 0;
        while addr != 0 && n < LOOK {
            if self.mem.read(addr, &mut buf).is_err() {
                break;
            }
            let owner = u8_at(&buf, fl.owner as usize);
            if fl.first_non_python_owner.is_none_or(|m| owner < m) {
                let code = u64_at(&buf, fl.code as usize) & !fl.code_tag_mask;
                // a warm chain (a sampler's every read): its innermost code is known, and
                // the pass would be the walk done twice
                if codes.is_empty() && self.codes.holds(code) {
                    return;
                }
                codes.push(code);
            }
            addr = u64_at(&buf, fl.previous as usize);
            n += 1;
        }
        codes.sort_unstable();
        codes.dedup();
        self.codes.prefetch(self.mem, self.layout, &codes);
    }

    /// 3.11+: `_PyInterpreterFrame` chain; entry frames close each eval call's group.
    fn interpreter_frames(
        &mut self,
        mut addr: u64,
        addrs: &mut Vec<u64>,
        shown: &mut Vec<(u64, u64)>,
    ) -> MemResult<Vec<Frame>> {
        let FrameLayout::Interpreter(fl) = self.layout.frame else {
            unreachable!()
        };
        self.prefetch_codes(addr);
        let code_adaptive = self.layout.code.code_adaptive.unwrap_or(0);
        let mut frames: Vec<Frame> = Vec::with_capacity(64);
        let mut seen = frame_set();
        let mut buf = vec![0u8; fl.size as usize];
        let mut innermost = true;
        // the data-stack frame read last (the one called by the next one out)
        let mut callee: Option<u64> = None;
        // the frame read last is a Python frame the next one out called itself (not
        // through a C call into a new eval loop)
        let mut called_inline = false;
        while addr != 0 {
            if !seen.insert(addr) || seen.len() > MAX_FRAMES {
                return Err(invalid(format!(
                    "frame chain loops or exceeds {MAX_FRAMES} at {addr:#x}"
                )));
            }
            self.mem.read(addr, &mut buf)?;
            let previous = u64_at(&buf, fl.previous as usize);
            let owner = u8_at(&buf, fl.owner as usize);
            let mut w = Witness::new(addr)
                .field(fl.previous, 8, previous)
                .field(fl.owner, 1, owner as u64)
                .field(fl.code, 8, u64_at(&buf, fl.code as usize));
            if !innermost {
                // the innermost frame's position moves while it runs (see witness.rs)
                w = w.field(fl.instr, 8, u64_at(&buf, fl.instr as usize));
                // and a caller must still be calling, not running again at the same place
                if let Some(o) = fl.running_stacktop {
                    w = w.field(o, 4, u64::from(u32_at(&buf, o as usize)));
                }
            }
            innermost = false;
            self.witnesses.push(w);
            addrs.push(addr);
            if owner == OWNED_BY_THREAD {
                if let Some(words) =
                    self.code_frame_words(u64_at(&buf, fl.code as usize) & !fl.code_tag_mask)?
                {
                    let end = addr.wrapping_add(words.wrapping_mul(8));
                    if let Some(callee) = callee {
                        if callee != end {
                            self.chunk_start(callee, end)?;
                        }
                    }
                    callee = Some(addr);
                    // A chain ends only where a stack can: a thread's first frame (on
                    // 3.12+ even that one links to its eval call's C-stack frame). A frame
                    // that is being set up in a new chunk has no link yet (the chunk's
                    // pages are fresh): the pointer to it was read before it was pushed
                    // again (a thread that returned and called again meanwhile).
                    if previous == 0 && !self.root_chunk_start(addr)? {
                        return Err(invalid(format!(
                            "frame {addr:#x} has no caller but does not start a data stack: the stack changed during the read"
                        )));
                    }
                }
            }
            if fl.first_non_python_owner.is_some_and(|mark| owner >= mark) {
                // the C-stack shim (or interpreter base frame): the frame inside it was
                // the first one its eval call ran
                close_group(&mut frames);
                called_inline = false;
                addr = previous;
                continue;
            }
            let code_addr = u64_at(&buf, fl.code as usize) & !fl.code_tag_mask;
            let code = self
                .codes
                .get(self.mem, self.layout, self.types, code_addr)?;
            let instr = u64_at(&buf, fl.instr as usize);
            let start = match fl.tlbc {
                // 3.14t: the thread's own copy of the bytecode (layout::ThreadLocalBytecode)
                Some(t) => {
                    let index = crate::memory::i32_at(&buf, t.frame_index as usize);
                    if let Some(w) = self.witnesses.last_mut() {
                        *w = w.field(t.frame_index, 4, u64::from(index as u32));
                    }
                    self.tlbc_start(code_addr, index, t.code_array, code_adaptive)?
                }
                None => code_addr.wrapping_add(code_adaptive),
            };
            let units = (instr as i64).wrapping_sub(start as i64) / 2;
            if let Some(n) = code.code_units {
                if units > n as i64 || units < -1 {
                    return Err(invalid(format!(
                        "frame {addr:#x}: instruction pointer {instr:#x} outside its code ({n} units)"
                    )));
                }
            }
            let entry = fl.is_entry.is_some_and(|o| u8_at(&buf, o as usize) != 0);
            let inner_called_inline = std::mem::replace(&mut called_inline, !entry);
            // A frame read while it ran had no callee of its own then: the frame inside it
            // is from another moment (a thread that returned to this frame and left the
            // callee's bytes behind, read with this frame as it was later or earlier).
            // The re-read cannot see it when the thread has since made the same calls
            // again: the frames are rebuilt at the same addresses with the same values.
            if inner_called_inline
                && fl
                    .running_stacktop
                    .is_some_and(|o| i32_at(&buf, o as usize) == -1)
            {
                return Err(invalid(format!(
                    "frame {addr:#x} was running when read but has a callee: the stack changed during the read"
                )));
            }
            if owner != fl.generator_owner && units < code.first_traceable as i64 {
                // incomplete (not yet started, or an internal cleanup frame): CPython's
                // tracebacks skip it; its eval call's grouping stays with the frames inside.
                // Up to 3.12 such a frame has run none of its code, so it has called no
                // Python function itself (code it starts through C, such as a finalizer run
                // while it makes its generator, has an entry frame of its own): a frame
                // inside it was read at another moment than this one (3.13's `__init__`
                // cleanup frame does call `__init__` itself)
                if inner_called_inline && self.layout.version <= (3, 12) {
                    return Err(invalid(format!(
                        "frame {addr:#x} has not started but has a callee: the stack changed during the read"
                    )));
                }
                if entry {
                    close_group(&mut frames);
                }
                addr = previous;
                continue;
            }
            if inner_called_inline {
                if let Some(sites) = fl.call_sites {
                    self.at_call_site(addr, start, units, code.code_units, sites)?;
                }
            }
            frames.push(code.frame(units * 2, entry));
            shown.push((addr, code_addr));
            addr = previous;
        }
        // the outermost frame was run by the outermost eval call
        close_group(&mut frames);
        Ok(frames)
    }
}

/// A set for the frames of one thread, sized for a typical stack: growing it from empty
/// rehashed it several times per thread per read.
fn frame_set() -> HashSet<u64> {
    HashSet::with_capacity_and_hasher(128, Default::default())
}
