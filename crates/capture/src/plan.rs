//! The capture plan: everything a tracer needs to find the firing thread's Python frames
//! in probe context, as data. It is derived from the reader's layout table for the target's
//! version and the live process's `_PyRuntime` address, so no CPython offset is written
//! anywhere but in `pyframe_reader::layout`.

use pyframe_reader::layout::{CurrentFrame, FrameLayout, Layout, LineTableFormat};
use pyframe_reader::PythonProcess;

/// Default number of frames (steps along the frame chain) a capture follows.
pub const DEFAULT_DEPTH: u32 = 32;
/// Largest depth a plan accepts: bpftrace and D programs grow with it.
pub const MAX_DEPTH: u32 = 256;
/// Thread states looked at before giving up on finding the firing thread. A bounded loop
/// is what both in-kernel tracers require; a process with more Python threads than this
/// gets `nothread` for the rest (documented in docs/trace.md).
pub const DEFAULT_MAX_THREADS: u32 = 64;

/// The OS the tracer runs on: decides what identifies the firing thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Os {
    Linux,
    Illumos,
}

/// How the firing thread's `PyThreadState` is recognised while walking the thread list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadMatch {
    /// `tstate->native_thread_id == tid` (3.11+ on Linux: the kernel's thread id).
    NativeThreadId { offset: u64 },
    /// `tstate->thread_id == fsbase` (before 3.11 on Linux: glibc's `pthread_t` is the
    /// address of its thread control block, which is the thread's FS base register;
    /// bpftrace reads it as `curtask->thread.fsbase`).
    ThreadIdIsFsBase { offset: u64 },
    /// `tstate->thread_id == tid` (illumos: `pthread_t` is the LWP id, DTrace `tid`).
    ThreadIdIsLwp { offset: u64 },
}

impl ThreadMatch {
    pub fn offset(self) -> u64 {
        match self {
            ThreadMatch::NativeThreadId { offset }
            | ThreadMatch::ThreadIdIsFsBase { offset }
            | ThreadMatch::ThreadIdIsLwp { offset } => offset,
        }
    }
}

/// How one frame of the chain is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameSteps {
    /// ≤3.10 `PyFrameObject`: code at `code`, next at `back`, position `f_lasti` (int) in
    /// units of `lasti_unit` bytes.
    Object {
        back: u64,
        code: u64,
        lasti: u64,
        lasti_unit: u32,
    },
    /// 3.11+ `_PyInterpreterFrame`: code at `code` (tag bits `code_tag_mask` cleared), next
    /// at `previous`; the offset is `instr - (code + code_adaptive)` bytes.
    Interpreter {
        previous: u64,
        code: u64,
        code_tag_mask: u64,
        instr: u64,
        code_adaptive: u64,
        /// `owner` (char): frames owned by the C stack (3.12+ shim / base frames, at or
        /// above `first_non_python_owner`) are not Python frames and are not recorded.
        owner: u64,
        first_non_python_owner: Option<u8>,
        /// Generator frames are never "incomplete".
        generator_owner: u8,
        /// 3.11: `is_entry` (bool): the frame is the first its eval call ran. Captured as
        /// the low bit of the offset (offsets are even), see [`crate::frames`].
        is_entry: Option<u64>,
        /// `_co_firsttraceable` (int, in code units) of the code object: a non-generator
        /// frame whose offset is still before it is being set up (or is an internal
        /// cleanup frame) and is not recorded, as CPython's tracebacks (and the walker)
        /// skip it.
        first_traceable: Option<u64>,
    },
}

/// Offsets in the code object of the two fields that make up a frame's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdentFields {
    /// `co_name` (pointer to the interned name).
    pub name: u64,
    /// `co_firstlineno` (int).
    pub firstlineno: u64,
}

/// Everything the capture does, in order:
/// 1. `interp = *(runtime + interpreters_head)` (the main interpreter: the one whose
///    threads run user code in nearly every program; subinterpreters are not followed);
/// 2. `ts = *(interp + threads_head)`, then `ts = *(ts + tstate_next)` until
///    [`ThreadMatch`] holds, at most `max_threads` thread states;
/// 3. the innermost frame, [`CurrentFrame`];
/// 4. up to `depth` steps along the chain, recording for each Python frame
///    `(code, offset, ident)` (see [`crate::frames`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub version: (u8, u8),
    pub os: Os,
    /// Address of `_PyRuntime` in the target (changes per process: ASLR).
    pub runtime: u64,
    pub interpreters_head: u64,
    pub threads_head: u64,
    pub tstate_next: u64,
    pub thread_match: ThreadMatch,
    pub current_frame: CurrentFrame,
    pub frames: FrameSteps,
    pub ident: IdentFields,
    pub depth: u32,
    pub max_threads: u32,
    /// How the resolver turns offsets into lines (kept here so a plan is self-describing).
    pub linetable_format: LineTableFormat,
}

/// A plan could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("depth {0} is out of range (1 to {MAX_DEPTH})")]
    Depth(u32),
    #[error("the {0}.{1} layout has no thread id field usable on this OS")]
    NoThreadId(u8, u8),
}

impl Plan {
    /// The plan for a version's layout and a `_PyRuntime` address.
    pub fn from_layout(
        layout: &Layout,
        runtime: u64,
        os: Os,
        depth: u32,
    ) -> Result<Plan, PlanError> {
        if depth == 0 || depth > MAX_DEPTH {
            return Err(PlanError::Depth(depth));
        }
        let t = &layout.tstate;
        let thread_match = match (os, t.native_thread_id) {
            (Os::Linux, Some(offset)) => ThreadMatch::NativeThreadId { offset },
            (Os::Linux, None) => ThreadMatch::ThreadIdIsFsBase {
                offset: t.thread_id,
            },
            (Os::Illumos, _) => ThreadMatch::ThreadIdIsLwp {
                offset: t.thread_id,
            },
        };
        if thread_match.offset() == 0 {
            return Err(PlanError::NoThreadId(layout.version.0, layout.version.1));
        }
        let frames = match layout.frame {
            FrameLayout::Object(f) => FrameSteps::Object {
                back: f.back,
                code: f.code,
                lasti: f.lasti,
                lasti_unit: f.lasti_unit,
            },
            FrameLayout::Interpreter(f) => FrameSteps::Interpreter {
                previous: f.previous,
                code: f.code,
                code_tag_mask: f.code_tag_mask,
                instr: f.instr,
                code_adaptive: layout.code.code_adaptive.unwrap_or(0),
                owner: f.owner,
                first_non_python_owner: f.first_non_python_owner,
                generator_owner: f.generator_owner,
                is_entry: f.is_entry,
                first_traceable: layout.code.first_traceable,
            },
        };
        Ok(Plan {
            version: layout.version,
            os,
            runtime,
            interpreters_head: layout.runtime.interpreters_head,
            threads_head: layout.interp.threads_head,
            tstate_next: t.next,
            thread_match,
            current_frame: t.current_frame,
            frames,
            ident: IdentFields {
                name: layout.code.name,
                firstlineno: layout.code.firstlineno,
            },
            depth,
            max_threads: DEFAULT_MAX_THREADS,
            linetable_format: layout.code.linetable_format,
        })
    }

    /// The plan for an attached process (its layout, with 3.13+ `_Py_DebugOffsets`
    /// corrections already applied by the reader, and its `_PyRuntime`).
    pub fn for_process(process: &PythonProcess, os: Os, depth: u32) -> Result<Plan, PlanError> {
        Plan::from_layout(process.layout(), process.runtime_address(), os, depth)
    }

    /// The OS the running build targets.
    pub fn host_os() -> Os {
        if cfg!(any(target_os = "illumos", target_os = "solaris")) {
            Os::Illumos
        } else {
            Os::Linux
        }
    }
}
