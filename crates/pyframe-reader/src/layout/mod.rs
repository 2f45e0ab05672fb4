//! CPython struct layouts as data: one table per minor version (x86_64 / 64-bit
//! little-endian, default GIL build). The walker reads only through these tables;
//! nothing else in the reader knows a CPython offset.
//!
//! Offsets are byte offsets from the start of the named struct. Each table states the
//! header it comes from and is checked against a real interpreter's DWARF
//! (`gdb ptype /o`) in `tests/layout_dwarf.rs`; 3.13+ tables are also cross-checked
//! against the target's own `_Py_DebugOffsets` at attach time.

pub mod debug_offsets;
mod v3_10;
mod v3_11;
mod v3_12;
mod v3_13;
mod v3_13t;
mod v3_14;
mod v3_14t;
mod v3_15;
mod v3_8;
mod v3_9;

/// Everything the walker needs to know about one CPython minor version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// (major, minor)
    pub version: (u8, u8),
    pub runtime: RuntimeLayout,
    pub interp: InterpLayout,
    pub tstate: ThreadStateLayout,
    pub frame: FrameLayout,
    pub code: CodeLayout,
    pub unicode: UnicodeLayout,
    pub bytes: BytesLayout,
    /// `PyTypeObject.tp_name` (type validation by name when a type symbol is missing).
    pub type_tp_name: u64,
    /// A free-threaded build (PEP 703, `--disable-gil`): a larger object header, no GIL.
    pub free_threaded: bool,
    /// Where every object's `ob_type` and `ob_size` are.
    pub object: ObjectHeader,
    /// What `stack --locals` needs: fast locals, their names, built-in value objects.
    pub values: ValuesLayout,
    /// What a thread's GIL state is read from (`stack`'s `holds_gil`, `waiting_for_gil`).
    pub gil_fields: GilFields,
}

/// `struct _gil_runtime_state` (Include/internal/pycore_gil.h) beyond `last_holder` and
/// `switch_number`, and the thread state's own word on the GIL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GilFields {
    /// `locked` (int): 1 while a thread holds the GIL.
    pub locked: u64,
    /// `(offset of cond, sizeof)`: `cond`, `mutex`, `switch_cond` and `switch_mutex` fill
    /// the bytes between. A thread asleep in the kernel on a futex in them is waiting to
    /// take the GIL (or, `switch_cond`, for a waiter to take the one it dropped).
    pub waits: Option<(u64, u64)>,
    /// 3.13 only: `PyThreadState._status.holds_gil` as (offset of `_status`, bit): set by
    /// the thread after taking the GIL, cleared before dropping it.
    pub tstate_holds_gil: Option<(u64, u32)>,
    /// Free-threaded builds: `enabled` (int), 0 while the GIL is off (the default; it is
    /// turned on at run time by `PYTHON_GIL=1` or by importing an extension module that
    /// does not declare itself free-threading safe).
    pub enabled: Option<u64>,
}

/// Where a frame's local variables are and how the built-in objects `--locals` shows
/// are laid out (`crate::values`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValuesLayout {
    /// Offset of the fast locals in the frame: `PyFrameObject.f_localsplus` (≤3.10),
    /// `_PyInterpreterFrame.localsplus` (3.11+).
    pub frame_localsplus: u64,
    /// 3.14+: the slots are `_PyStackRef`s; clear these low tag bits (as for `f_executable`).
    pub localsplus_tag_mask: u64,
    pub code: CodeLocalsLayout,
    /// `PyTupleObject.ob_item` (3.14 put `ob_hash` before it).
    pub tuple_items: u64,
    pub long: LongLayout,
    pub dict: DictLayout,
    /// `PyHeapTypeObject.ht_cached_keys`: the keys an instance's split values (3.11+: its
    /// values without a dict object) are indexed by.
    pub cached_keys: u64,
    /// The function CPython's `str` hash runs (`Py_HASH_ALGORITHM`'s default), keyed by
    /// `_Py_HashSecret`: what a dict's hash index is probed with.
    pub str_hash: StrHash,
    /// Where an instance of a class keeps its attributes.
    pub instance_dict: InstanceDict,
}

/// `Py_HASH_ALGORITHM`'s default: SipHash-2-4 up to 3.10, SipHash-1-3 from 3.11 (a build
/// configured otherwise is still read: a probe that finds nothing falls back to comparing
/// every key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrHash {
    SipHash24,
    SipHash13,
}

/// Where an instance of a heap type keeps its attributes (`__dict__`). A type without the
/// managed-dict flag (every type before 3.11) has its dict pointer `tp_dictoffset` bytes
/// into the object when that is positive. Offsets are relative to the object (negative:
/// in the pre-header before it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceDict {
    /// ≤3.10: only `tp_dictoffset`.
    DictOffset,
    /// 3.11: with `flag` set in `tp_flags`, a values pointer at `values` (the attributes,
    /// indexed as the type's cached keys) or, when that is NULL, a dict pointer at `dict`.
    Managed { flag: u64, dict: i64, values: i64 },
    /// 3.12: with `flag`, one word at `at`: with bit 0 set the values pointer minus one,
    /// else the dict pointer.
    Tagged { flag: u64, at: i64 },
    /// 3.13+: with `inline_flag`, a `PyDictValues` right after the object (at
    /// `tp_basicsize`), used while its byte at `valid` is non-zero; else (and with only
    /// `flag`) the dict pointer at `dict`.
    Inline {
        flag: u64,
        inline_flag: u64,
        dict: i64,
        valid: u64,
    },
}

/// Where a code object names its fast locals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeLocalsLayout {
    /// ≤3.10: `co_varnames` (tuple of str: arguments first, then locals), `co_cellvars`,
    /// `co_freevars`; the frame holds the locals, then a cell per cell var, then per free var.
    Varnames {
        argcount: u64,
        kwonlyargcount: u64,
        flags: u64,
        varnames: u64,
        cellvars: u64,
        freevars: u64,
    },
    /// 3.11+: `co_localsplusnames` (tuple of str) and `co_localspluskinds` (bytes, one
    /// `CO_FAST_*` kind per slot).
    Kinds {
        argcount: u64,
        kwonlyargcount: u64,
        flags: u64,
        names: u64,
        kinds: u64,
    },
}

/// How an `int` states its size and sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LongLayout {
    /// ≤3.11: `ob_size` is the digit count, negative for a negative number; digits at 24.
    SignedSize { digits: u64 },
    /// 3.12+: `long_value.lv_tag` = digit count << 3 | sign (0 positive, 1 zero, 2 negative).
    Tagged { tag: u64, digits: u64 },
}

/// `PyDictKeysObject` and the split-table values, by version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DictLayout {
    /// ≤3.10: `dk_size` (entries of the hash index), `dk_nentries`, `dk_indices`; every
    /// entry is `{hash, key, value}`; split values are a plain array in key order.
    Sized {
        size: u64,
        nentries: u64,
        indices: u64,
    },
    /// 3.11+: `dk_log2_size`, `dk_log2_index_bytes`, `dk_kind` (0 general: 24-byte
    /// entries, else 16-byte `{key, value}` entries), `dk_nentries`, `dk_indices`.
    Log2 {
        log2_size: u64,
        log2_index_bytes: u64,
        kind: u64,
        nentries: u64,
        indices: u64,
        values: SplitValues,
    },
}

/// How a split dict's values record their insertion order (3.11+).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitValues {
    /// 3.11/3.12: `ma_values` points at the values; the count is the byte at -2 and the
    /// entry index of the i-th value inserted the byte at -3-i.
    OrderBefore,
    /// 3.13+: `PyDictValues {capacity, size, embedded, valid, values[capacity]}`, the
    /// order bytes right after `values[capacity]`.
    Header {
        capacity: u64,
        size: u64,
        values: u64,
    },
}

/// Offsets of built-in objects that are the same in every version 3.8-3.15 (checked
/// against each one's DWARF in `tests/layout_dwarf.rs`).
pub mod obj {
    /// `PyFloatObject.ob_fval`; `PyComplexObject.cval.real`, `.imag`.
    pub const FLOAT_VALUE: u64 = 16;
    pub const COMPLEX_REAL: u64 = 16;
    pub const COMPLEX_IMAG: u64 = 24;
    /// `PyListObject.ob_item` (a `PyObject **`); the length is `ob_size`.
    pub const LIST_ITEMS: u64 = 24;
    /// `PyDictObject.ma_used`, `ma_keys`, `ma_values`.
    pub const DICT_USED: u64 = 16;
    pub const DICT_KEYS: u64 = 32;
    pub const DICT_VALUES: u64 = 40;
    /// `PySetObject.used`, `mask`, `table` (entries `{key, hash}`, 16 bytes).
    pub const SET_USED: u64 = 24;
    pub const SET_MASK: u64 = 32;
    pub const SET_TABLE: u64 = 40;
    /// `PyCellObject.ob_ref`.
    pub const CELL_REF: u64 = 16;
    /// `PyTypeObject.tp_flags`, `tp_dict`.
    pub const TYPE_FLAGS: u64 = 168;
    pub const TYPE_DICT: u64 = 264;
    /// `PyTypeObject.tp_basicsize`, `tp_dictoffset` (instance attributes).
    pub const TYPE_BASICSIZE: u64 = 32;
    pub const TYPE_DICTOFFSET: u64 = 288;
    /// `PyModuleObject.md_dict` (a module's globals).
    pub const MODULE_DICT: u64 = 16;
    /// `Py_TPFLAGS_HEAPTYPE` in `tp_flags` (a class defined in Python).
    pub const HEAPTYPE: u64 = 1 << 9;
    /// `co_flags`: `CO_VARARGS`, `CO_VARKEYWORDS` (the same on 3.8-3.15).
    pub const CO_VARARGS: u32 = 4;
    pub const CO_VARKEYWORDS: u32 = 8;
    /// `co_localspluskinds` bits (3.11+; `CO_FAST_HIDDEN` is never set before 3.12).
    pub const CO_FAST_HIDDEN: u8 = 0x10;
    pub const CO_FAST_CELL: u8 = 0x40;
    pub const CO_FAST_FREE: u8 = 0x80;
}

/// `_PyRuntimeState` (`Include/internal/pycore_runtime.h`; `pystate.h` on 3.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeLayout {
    /// `interpreters.head`: first `PyInterpreterState*`.
    pub interpreters_head: u64,
    /// `gilstate.tstate_current` (≤3.11): the thread state holding the GIL.
    pub gilstate_tstate_current: Option<u64>,
    /// ≤3.11: offset of `ceval.gil` (`struct _gil_runtime_state`, embedded), whose
    /// `last_holder` and `switch_number` are at [`GIL_LAST_HOLDER`] and
    /// [`GIL_SWITCH_NUMBER`]. 3.12+: see [`GilLayout::switch_number`].
    pub gil: Option<u64>,
}

/// `struct _gil_runtime_state`: `last_holder` (the thread state that took the GIL last)
/// and `switch_number` (incremented whenever a thread other than `last_holder` takes it).
/// The same offsets in 3.8-3.13 (checked against each one's DWARF).
pub const GIL_LAST_HOLDER: u64 = 8;
pub const GIL_SWITCH_NUMBER: u64 = 24;

/// `PyInterpreterState` (`Include/internal/pycore_interp.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterpLayout {
    pub next: u64,
    /// `threads.head` (`tstate_head` on 3.8–3.10).
    pub threads_head: u64,
    /// `id` (int64_t).
    pub id: u64,
    /// `sys.modules` (a dict): `modules` up to 3.11, `imports.modules` from 3.12.
    pub modules: u64,
    /// 3.12+: `ceval.gil`, a pointer to `struct _gil_runtime_state`.
    pub gil: Option<GilLayout>,
}

/// 3.12+ GIL state reached from the interpreter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GilLayout {
    /// Offset in `PyInterpreterState` of the `struct _gil_runtime_state *` (`ceval.gil`).
    pub pointer: u64,
    /// Offsets in `struct _gil_runtime_state`.
    pub last_holder: u64,
    pub locked: u64,
    /// `switch_number`, where checked against the version's DWARF (3.12, 3.13).
    pub switch_number: Option<u64>,
}

/// `PyThreadState` (`Include/cpython/pystate.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadStateLayout {
    pub next: u64,
    pub interp: u64,
    /// How to get from the thread state to its innermost frame.
    pub current_frame: CurrentFrame,
    /// `thread_id` (`pthread_self()`).
    pub thread_id: u64,
    /// `native_thread_id` (3.11+).
    pub native_thread_id: Option<u64>,
    /// `tracing` (int, ≤3.10): non-zero while the thread runs a trace or profile
    /// function, the one time a frame on its chain may legitimately not be executing.
    pub tracing: Option<u64>,
    /// Whether a subinterpreter's thread state may run on a thread other than the one its
    /// ids name: up to 3.12, `_xxsubinterpreters.run_string` switches the calling thread to
    /// the interpreter's head thread state, which keeps its creator's `thread_id` and
    /// `native_thread_id`; from 3.13 `_interpreters.exec` binds a new state to the caller.
    pub lent_states: bool,
    /// `cframe` and `root_cframe` (3.10-3.12): while the state runs Python, `cframe`
    /// points at the eval loop's `_PyCFrame` local, on the C stack of the thread running
    /// it; otherwise at the state's own `root_cframe`. How the thread running a lent state
    /// is found.
    pub cframe: Option<CFrameFields>,
    /// `datastack_chunk`, `datastack_top`, `datastack_limit` (3.11+): the live part of
    /// the current data-stack chunk, where the thread's frames are.
    pub datastack: Option<DataStackLayout>,
}

/// `PyThreadState.cframe` and `.root_cframe` offsets (3.10-3.12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CFrameFields {
    pub cframe: u64,
    pub root: u64,
}

/// Where a 3.11+ thread's data stack is (`PyThreadState` fields, pointers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataStackLayout {
    pub chunk: u64,
    pub top: u64,
    pub limit: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CurrentFrame {
    /// `tstate->FIELD` is the innermost frame (≤3.10 `frame`, 3.13+ `current_frame`).
    Direct(u64),
    /// `tstate->cframe->current_frame` (3.11, 3.12).
    ViaCFrame { cframe: u64, current_frame: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameLayout {
    /// ≤3.10: heap `PyFrameObject`s linked by `f_back`.
    Object(FrameObjectLayout),
    /// 3.11+: `_PyInterpreterFrame`s linked by `previous`.
    Interpreter(InterpreterFrameLayout),
}

/// `PyFrameObject` (≤3.10, `Include/cpython/frameobject.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameObjectLayout {
    pub back: u64,
    pub code: u64,
    /// `f_lasti` (int).
    pub lasti: u64,
    /// Unit of `f_lasti`: 1 (bytes, ≤3.9) or 2 (code units, 3.10).
    pub lasti_unit: u32,
    /// How to tell a frame that is running from one that has returned (its memory may
    /// be freed, on a free list or a code object's zombie frame, and still look whole).
    pub live: FrameLive,
    /// Bytes to read to cover every field above.
    pub size: u64,
}

/// The field of a `PyFrameObject` that says whether it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameLive {
    /// `f_executing` (char, 3.8/3.9): 1 from the start of its eval call to the end.
    Executing(u64),
    /// `f_state` (signed char, 3.10): `FRAME_EXECUTING` (0) or `FRAME_UNWINDING` (2)
    /// while it runs.
    State(u64),
}

impl FrameLive {
    pub fn offset(self) -> u64 {
        match self {
            FrameLive::Executing(o) | FrameLive::State(o) => o,
        }
    }
    /// Whether the byte at [`FrameLive::offset`] says the frame is running.
    pub fn running(self, byte: u8) -> bool {
        match self {
            FrameLive::Executing(_) => byte != 0,
            FrameLive::State(_) => matches!(byte as i8, 0 | 2),
        }
    }
}

/// `_PyInterpreterFrame` (3.11+, `Include/internal/pycore_frame.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterpreterFrameLayout {
    pub previous: u64,
    /// `f_code` (3.11/3.12) or `f_executable` (3.13+).
    pub code: u64,
    /// 3.14+: `f_executable` is a `_PyStackRef`; clear these low tag bits.
    pub code_tag_mask: u64,
    /// `prev_instr` (3.11/3.12, points at the last executed unit) or `instr_ptr` (3.13+,
    /// the current unit).
    pub instr: u64,
    /// True for `prev_instr`.
    pub instr_is_prev: bool,
    /// `owner` (char).
    pub owner: u64,
    /// `is_entry` (bool, 3.11 only).
    pub is_entry: Option<u64>,
    /// `stacktop` (int) where it marks a running frame (3.12, 3.13): `-1` from the moment
    /// the frame (re)starts running (`_PyFrame_GetStackPointer`) until it calls a Python
    /// function itself (`_PyFrame_SetStackPointer` in `DISPATCH_INLINED`). A frame read
    /// with `-1` therefore had no callee of its own at that moment. 3.11 leaves the field
    /// as it was and 3.14+ keep a `stackpointer` that is set but never cleared: `None`.
    pub running_stacktop: Option<u64>,
    /// Where no field marks a running frame: the instructions a frame can call a Python
    /// function from in the same eval loop (see [`CallSites`]).
    pub call_sites: Option<CallSites>,
    /// Owner values at or above this mark a frame that is not a Python frame (the C-stack
    /// shim / interpreter base frames of 3.12+). `None` on 3.11.
    pub first_non_python_owner: Option<u8>,
    /// `FRAME_OWNED_BY_GENERATOR`: generator frames are never incomplete.
    pub generator_owner: u8,
    /// 3.14+ free-threaded builds: the thread-local bytecode copy `instr_ptr` points into.
    pub tlbc: Option<ThreadLocalBytecode>,
    /// Bytes to read to cover every field above.
    pub size: u64,
}

/// The instructions that push a Python frame in the same eval loop (an inline call), for
/// the versions whose frames carry no running mark (`running_stacktop`). A frame whose
/// callee it called inline stands on one of them for as long as the callee runs, so a
/// frame read at any other instruction had no such callee at that moment: the frame inside
/// it is from another moment. Each entry is a whole family (the base instruction with
/// every specialised form: the bytes of one call site change between them as frames of
/// the same code run it), plus the instrumented forms and the opcodes that hide the
/// original one (`INSTRUMENTED_LINE`, `INSTRUMENTED_INSTRUCTION`, `ENTER_EXECUTOR`).
/// Checked against each interpreter's own `opcode` metadata (tests/layout_opcodes.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallSites {
    /// Code units from the frame's instruction pointer back to the opcode: 3.11's
    /// `prev_instr` of a caller points at the last of the call's 4 cache units (`CALL` and
    /// `BINARY_SUBSCR` alike), 3.13+'s `instr_ptr` at the opcode.
    pub back_units: u64,
    /// The opcodes, sorted.
    pub opcodes: &'static [u8],
}

impl CallSites {
    pub fn contains(&self, opcode: u8) -> bool {
        self.opcodes.binary_search(&opcode).is_ok()
    }
}

/// Thread-local bytecode (3.14t, `Py_GIL_DISABLED`): a thread that specialises code runs
/// its own copy of the bytecode, copy `tlbc_index` of the code's `co_tlbc` array (copy 0
/// is `co_code_adaptive` itself), so its `instr_ptr` is relative to that copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadLocalBytecode {
    /// `_PyInterpreterFrame.tlbc_index` (int32_t).
    pub frame_index: u64,
    /// `PyCodeObject.co_tlbc` (`_PyCodeArray *`: `Py_ssize_t size; char *entries[]`).
    pub code_array: u64,
}

/// `_PyCodeArray.entries` (Include/internal/pycore_code.h): after its `Py_ssize_t size`.
pub const CODE_ARRAY_ENTRIES: u64 = 8;

/// `PyCodeObject` (`Include/cpython/code.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeLayout {
    pub filename: u64,
    pub name: u64,
    pub qualname: Option<u64>,
    /// `co_firstlineno` (int).
    pub firstlineno: u64,
    /// `co_lnotab` (≤3.9) or `co_linetable` (3.10+): a `bytes` object.
    pub linetable: u64,
    pub linetable_format: LineTableFormat,
    /// 3.11+: offset of the inline bytecode `co_code_adaptive`.
    pub code_adaptive: Option<u64>,
    /// 3.11+: `_co_firsttraceable` (int): a frame whose instruction is still before this
    /// code unit is "incomplete" (being set up, or an internal frame such as 3.13's
    /// `__init__` cleanup shim) and is not shown, as CPython's own tracebacks do not.
    pub first_traceable: Option<u64>,
    /// 3.11+: how many words a frame of this code takes in the thread's data stack. A
    /// frame pushed there starts exactly where its caller's frame ends (or at the start of
    /// a new chunk), which the walker checks. `None` where no table states it.
    pub frame_words: Option<FrameWords>,
    /// Bytes to read to cover every pointer field above (not the inline bytecode).
    pub size: u64,
}

/// Where a code object states the size of its frames, in words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameWords {
    /// `co_framesize` (int, 3.12+).
    Field(u64),
    /// 3.11: `co_nlocalsplus + co_stacksize + FRAME_SPECIALS_SIZE` (both ints), as
    /// `_PyFrame_PushUnchecked` computes it.
    Sum {
        nlocalsplus: u64,
        stacksize: u64,
        specials: u64,
    },
}

/// `_PyStackChunk` (3.11+, `Include/cpython/pystate.h`): `previous`, `size`, `top` (the
/// saved top of a chunk that is not the current one, in words from `data`), then `data`.
/// The same on every version with a data stack (checked against 3.11-3.13 DWARF).
pub const STACK_CHUNK_PREVIOUS: u64 = 0;
pub const STACK_CHUNK_TOP: u64 = 16;
pub const STACK_CHUNK_DATA: u64 = 24;

/// Which line-table encoding a version uses (see `linetable`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineTableFormat {
    /// ≤3.9 `co_lnotab`.
    Lnotab,
    /// 3.10 PEP 626 `co_linetable`.
    Pep626,
    /// 3.11+ location table (`Objects/locations.md`).
    Locations,
}

/// `PyASCIIObject` / `PyCompactUnicodeObject` (`Include/cpython/unicodeobject.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnicodeLayout {
    pub length: u64,
    pub state: u64,
    /// `sizeof(PyASCIIObject)`: compact ASCII data follows.
    pub ascii_data: u64,
    /// `sizeof(PyCompactUnicodeObject)`: compact non-ASCII data follows.
    pub compact_data: u64,
    /// Bit positions inside the 32-bit `state` word.
    pub kind_shift: u32,
    pub compact_bit: u32,
    pub ascii_bit: u32,
}

/// `PyBytesObject`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BytesLayout {
    pub size: u64,
    pub data: u64,
}

/// Every version with a table, oldest first.
pub const ALL: &[&Layout] = &[
    &v3_8::LAYOUT,
    &v3_9::LAYOUT,
    &v3_10::LAYOUT,
    &v3_11::LAYOUT,
    &v3_12::LAYOUT,
    &v3_13::LAYOUT,
    &v3_14::LAYOUT,
    &v3_15::LAYOUT,
];

/// The versions with a table, as messages and `--help` print them ("3.8 to 3.15").
pub fn supported() -> String {
    let (first, last) = (ALL[0].version, ALL[ALL.len() - 1].version);
    format!("{}.{} to {}.{}", first.0, first.1, last.0, last.1)
}

/// The table for `major.minor`, if pystackd has one.
pub fn for_version(major: u8, minor: u8) -> Option<&'static Layout> {
    ALL.iter().copied().find(|l| l.version == (major, minor))
}

/// Free-threaded builds with a table. 3.14t's is derived from the 3.14 headers and not
/// run here: see [`headers_only`].
pub const FREE_THREADED: &[&Layout] = &[&v3_13t::LAYOUT, &v3_14t::LAYOUT];

/// A table derived from headers only, never checked against a build of its version (no
/// DWARF, no running interpreter here): 3.14t. A target is read with it only when its own
/// `_Py_DebugOffsets` is read and agrees with every value of the table it states
/// (`debug_offsets::cross_check`, and [`debug_offsets::apply`]'s differences outside
/// [`FROM_TARGET`]); else it is refused, never misread.
pub fn headers_only(l: &Layout) -> bool {
    *l == v3_14t::LAYOUT
}

/// The fields a [`headers_only`] table takes from the target's `_Py_DebugOffsets`
/// instead of stating them (as [`debug_offsets::apply`] names them).
pub const FROM_TARGET: &[&str] = &[
    "runtime.interpreters_head",
    "interp.next",
    "interp.threads_head",
    "interp.id",
    "interp.modules",
    "interp.gil.pointer",
];

/// The free-threaded versions with a table, as messages print them ("3.13t").
pub fn supported_free_threaded() -> String {
    let v: Vec<String> = FREE_THREADED
        .iter()
        .map(|l| format!("{}.{}t", l.version.0, l.version.1))
        .collect();
    v.join(", ")
}

/// Whether `(major, minor)` has a free-threaded table.
pub fn has_free_threaded(version: (u8, u8)) -> bool {
    FREE_THREADED.iter().any(|l| l.version == version)
}

/// The table for a GIL or a free-threaded build of `major.minor`.
pub fn for_build(major: u8, minor: u8, free_threaded: bool) -> Option<&'static Layout> {
    if free_threaded {
        FREE_THREADED
            .iter()
            .copied()
            .find(|l| l.version == (major, minor))
    } else {
        for_version(major, minor)
    }
}

/// Fields common to every GIL build since 3.8: `PyObject.ob_type`, `PyVarObject.ob_size`.
pub const OB_TYPE: u64 = 8;
pub const OB_SIZE: u64 = 16;

/// `PyObject.ob_type` and `PyVarObject.ob_size` (Include/object.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectHeader {
    pub ob_type: u64,
    pub ob_size: u64,
    /// Free-threaded builds: `ob_mutex` (a `PyMutex`, one byte, bit 0 `_Py_LOCKED`), the
    /// per-object lock a list, dict or set is updated under (`Py_BEGIN_CRITICAL_SECTION`).
    pub mutex: Option<u64>,
}

impl ObjectHeader {
    /// `ob_refcnt`, `ob_type`.
    pub const GIL: ObjectHeader = ObjectHeader {
        ob_type: OB_TYPE,
        ob_size: OB_SIZE,
        mutex: None,
    };
    /// Free-threaded builds (3.13t, 3.14t: Include/object.h under `Py_GIL_DISABLED`):
    /// `uintptr_t ob_tid` (0), `uint16_t _padding` (8), `PyMutex ob_mutex` (10),
    /// `uint8_t ob_gc_bits` (11), `uint32_t ob_ref_local` (12), `Py_ssize_t ob_ref_shared`
    /// (16), then `ob_type` (24) and `ob_size` (32).
    pub const FREE_THREADED: ObjectHeader = ObjectHeader {
        ob_type: 24,
        ob_size: 32,
        mutex: Some(10),
    };

    /// Where a field that the [`obj`] constants (and other GIL-build offsets of a built-in
    /// object's own fields) place at `gil_offset` is in this build: every field after the
    /// header is the header's extra length further in (checked against the free-threaded
    /// build's DWARF in `tests/layout_dwarf.rs`).
    pub const fn at(self, gil_offset: u64) -> u64 {
        gil_offset + self.ob_type - OB_TYPE
    }

    /// Where the words of an object that only its owner changes start: the reference
    /// counts of a free-threaded header (before `ob_type`) move whenever any thread takes a
    /// reference, so a re-read compares from `ob_type` on there.
    pub const fn stable_from(self) -> u64 {
        match self.mutex {
            Some(_) => self.ob_type,
            None => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 3.13t and 3.14t (headers only) have tables of their own; 3.15t none (refused by name:
    /// `binary.rs`), and no GIL lookup ever answers with a free-threaded table.
    #[test]
    fn free_threaded_tables() {
        let t = for_build(3, 13, true).expect("3.13t");
        assert!(t.free_threaded && t.object == ObjectHeader::FREE_THREADED);
        assert!(!for_version(3, 13).unwrap().free_threaded);
        assert!(ALL
            .iter()
            .all(|l| !l.free_threaded && l.object == ObjectHeader::GIL));
        let t = for_build(3, 14, true).expect("3.14t");
        assert!(t.free_threaded && t.object == ObjectHeader::FREE_THREADED && headers_only(t));
        assert!(!headers_only(for_build(3, 13, true).unwrap()));
        assert!(ALL.iter().all(|l| !headers_only(l)));
        assert!(for_build(3, 15, true).is_none() && !has_free_threaded((3, 15)));
        assert_eq!(supported_free_threaded(), "3.13t, 3.14t");
        let e = crate::error::Error::UnsupportedVersion {
            version: "3.15t (a free-threaded build)".into(),
        };
        assert_eq!(
            e.to_string(),
            "CPython 3.15t (a free-threaded build) is not supported (pystackd knows 3.8 to 3.15 \
             GIL builds and free-threaded 3.13t, 3.14t)"
        );
        assert_eq!(e.kind(), protocol::ErrorKind::UnsupportedVersion);
    }
}
