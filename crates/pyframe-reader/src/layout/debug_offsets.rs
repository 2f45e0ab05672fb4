//! `_Py_DebugOffsets` (3.13+, `Include/internal/pycore_debug_offsets.h`; in
//! `pycore_runtime.h` on 3.13): the statically initialised table at the very start of
//! `_PyRuntime` in which the interpreter states its own struct offsets. We read it from
//! the target to confirm (and if need be correct) our per-version tables.
//!
//! The table's own layout changes between minor versions, so where each value sits is
//! data too ([`Format`], one per version), checked against DWARF in `tests/layout_dwarf.rs`.

use super::{CurrentFrame, FrameLayout, GilLayout, Layout};

/// The first 8 bytes of `_Py_DebugOffsets` (`_Py_Debug_Cookie`).
pub const COOKIE: &[u8; 8] = b"xdebugpy";

/// Largest struct size we believe (the biggest, `_PyRuntimeState`, is ~350 KiB on 3.15).
const MAX_STRUCT_SIZE: u64 = 16 << 20;
/// `struct _gil_runtime_state` is ~200 bytes; a larger field offset is garbage.
const MAX_GIL_FIELD: u64 = 4096;

/// Why a `_Py_DebugOffsets` buffer was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DebugOffsetsError {
    #[error("_Py_DebugOffsets truncated: need {need} bytes, have {have}")]
    Truncated { need: usize, have: usize },
    #[error("_Py_DebugOffsets cookie is {found:?}, expected \"xdebugpy\"")]
    BadCookie { found: [u8; 8] },
    #[error("no _Py_DebugOffsets format known for Python {major}.{minor}")]
    UnsupportedVersion { major: u8, minor: u8 },
    #[error("_Py_DebugOffsets says version {found:#x}, expected {}.{}", expected.0, expected.1)]
    VersionMismatch { expected: (u8, u8), found: u64 },
    #[error(
        "_Py_DebugOffsets describes a {} build, the binary a {} one",
        if *target { "free-threaded" } else { "GIL" },
        if *target { "GIL" } else { "free-threaded" }
    )]
    FreeThreaded { target: bool },
    #[error("_Py_DebugOffsets field {field} = {value} is implausible (limit {limit})")]
    Implausible {
        field: &'static str,
        value: u64,
        limit: u64,
    },
}

/// One value of `_Py_DebugOffsets` that maps onto a [`Layout`] field (or is a struct
/// size used to validate the others).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slot {
    RuntimeSize,
    RuntimeInterpretersHead,
    InterpSize,
    InterpId,
    InterpNext,
    InterpThreadsHead,
    /// `imports.modules` (sys.modules), 3.14+.
    InterpImportsModules,
    InterpCevalGil,
    /// Offset in the interpreter of its embedded `_gil` (`struct _gil_runtime_state`).
    InterpGilRuntimeState,
    /// `_gil.locked`, as an offset in the interpreter.
    InterpGilLocked,
    /// `_gil.last_holder`, as an offset in the interpreter.
    InterpGilHolder,
    TstateSize,
    TstateNext,
    TstateInterp,
    TstateCurrentFrame,
    TstateThreadId,
    TstateNativeThreadId,
    FrameSize,
    FramePrevious,
    FrameExecutable,
    FrameInstrPtr,
    FrameOwner,
    CodeSize,
    CodeFilename,
    CodeName,
    CodeQualname,
    CodeLinetable,
    CodeFirstlineno,
    CodeAdaptive,
    TypeSize,
    TypeTpName,
    BytesSize,
    BytesObSize,
    BytesObSval,
    UnicodeSize,
    UnicodeState,
    UnicodeLength,
    UnicodeAsciiSize,
    /// `sizeof(PyCompactUnicodeObject)`, 3.15+.
    UnicodeCompactSize,
    // The rest (3.14's format) are not read into the layout by [`apply`]: [`cross_check`]
    // compares them with the table, whose values for them come from the headers.
    /// `offsetof(struct _gil_runtime_state, enabled)` (0: the first member, or no member).
    InterpGilEnabled,
    TstateDatastackChunk,
    FrameLocalsplus,
    /// `_PyInterpreterFrame.tlbc_index`, 0 on a GIL build (no such member).
    FrameTlbcIndex,
    CodeArgcount,
    CodeLocalsplusnames,
    CodeLocalspluskinds,
    /// `PyCodeObject.co_tlbc`, 0 on a GIL build (no such member).
    CodeTlbc,
    ObjectSize,
    ObjectObType,
    TypeTpFlags,
    TupleSize,
    TupleObItem,
    ListSize,
    ListObItem,
    SetSize,
    SetUsed,
    SetTable,
    SetMask,
    DictSize,
    DictMaKeys,
    DictMaValues,
    FloatSize,
    FloatObFval,
    LongSize,
    LongLvTag,
    LongObDigit,
}

const SLOT_COUNT: usize = Slot::LongObDigit as usize + 1;
/// The slots only 3.14's format lists here ([`cross_check`]).
#[cfg(test)]
const CROSS_SLOTS: usize = Slot::LongObDigit as usize - Slot::InterpGilEnabled as usize + 1;

impl Slot {
    /// The member's path in `struct _Py_DebugOffsets` (as gdb's `ptype /o` names it).
    pub fn dwarf_path(self) -> &'static str {
        use Slot::*;
        match self {
            RuntimeSize => "runtime_state.size",
            RuntimeInterpretersHead => "runtime_state.interpreters_head",
            InterpSize => "interpreter_state.size",
            InterpId => "interpreter_state.id",
            InterpNext => "interpreter_state.next",
            InterpThreadsHead => "interpreter_state.threads_head",
            InterpImportsModules => "interpreter_state.imports_modules",
            InterpCevalGil => "interpreter_state.ceval_gil",
            InterpGilRuntimeState => "interpreter_state.gil_runtime_state",
            InterpGilLocked => "interpreter_state.gil_runtime_state_locked",
            InterpGilHolder => "interpreter_state.gil_runtime_state_holder",
            TstateSize => "thread_state.size",
            TstateNext => "thread_state.next",
            TstateInterp => "thread_state.interp",
            TstateCurrentFrame => "thread_state.current_frame",
            TstateThreadId => "thread_state.thread_id",
            TstateNativeThreadId => "thread_state.native_thread_id",
            FrameSize => "interpreter_frame.size",
            FramePrevious => "interpreter_frame.previous",
            FrameExecutable => "interpreter_frame.executable",
            FrameInstrPtr => "interpreter_frame.instr_ptr",
            FrameOwner => "interpreter_frame.owner",
            CodeSize => "code_object.size",
            CodeFilename => "code_object.filename",
            CodeName => "code_object.name",
            CodeQualname => "code_object.qualname",
            CodeLinetable => "code_object.linetable",
            CodeFirstlineno => "code_object.firstlineno",
            CodeAdaptive => "code_object.co_code_adaptive",
            TypeSize => "type_object.size",
            TypeTpName => "type_object.tp_name",
            BytesSize => "bytes_object.size",
            BytesObSize => "bytes_object.ob_size",
            BytesObSval => "bytes_object.ob_sval",
            UnicodeSize => "unicode_object.size",
            UnicodeState => "unicode_object.state",
            UnicodeLength => "unicode_object.length",
            UnicodeAsciiSize => "unicode_object.asciiobject_size",
            UnicodeCompactSize => "unicode_object.compactunicodeobject_size",
            InterpGilEnabled => "interpreter_state.gil_runtime_state_enabled",
            TstateDatastackChunk => "thread_state.datastack_chunk",
            FrameLocalsplus => "interpreter_frame.localsplus",
            FrameTlbcIndex => "interpreter_frame.tlbc_index",
            CodeArgcount => "code_object.argcount",
            CodeLocalsplusnames => "code_object.localsplusnames",
            CodeLocalspluskinds => "code_object.localspluskinds",
            CodeTlbc => "code_object.co_tlbc",
            ObjectSize => "pyobject.size",
            ObjectObType => "pyobject.ob_type",
            TypeTpFlags => "type_object.tp_flags",
            TupleSize => "tuple_object.size",
            TupleObItem => "tuple_object.ob_item",
            ListSize => "list_object.size",
            ListObItem => "list_object.ob_item",
            SetSize => "set_object.size",
            SetUsed => "set_object.used",
            SetTable => "set_object.table",
            SetMask => "set_object.mask",
            DictSize => "dict_object.size",
            DictMaKeys => "dict_object.ma_keys",
            DictMaValues => "dict_object.ma_values",
            FloatSize => "float_object.size",
            FloatObFval => "float_object.ob_fval",
            LongSize => "long_object.size",
            LongLvTag => "long_object.lv_tag",
            LongObDigit => "long_object.ob_digit",
        }
    }

    /// The slot holding the size of the struct this slot's offset points into (`None`
    /// for the sizes themselves).
    fn section_size(self) -> Option<Slot> {
        use Slot::*;
        match self {
            RuntimeSize | InterpSize | TstateSize | FrameSize | CodeSize | TypeSize | BytesSize
            | UnicodeSize | ObjectSize | TupleSize | ListSize | SetSize | DictSize | FloatSize
            | LongSize => None,
            InterpGilEnabled => Some(InterpSize),
            TstateDatastackChunk => Some(TstateSize),
            FrameLocalsplus | FrameTlbcIndex => Some(FrameSize),
            CodeArgcount | CodeLocalsplusnames | CodeLocalspluskinds | CodeTlbc => Some(CodeSize),
            ObjectObType => Some(ObjectSize),
            TypeTpFlags => Some(TypeSize),
            TupleObItem => Some(TupleSize),
            ListObItem => Some(ListSize),
            SetUsed | SetTable | SetMask => Some(SetSize),
            DictMaKeys | DictMaValues => Some(DictSize),
            FloatObFval => Some(FloatSize),
            LongLvTag | LongObDigit => Some(LongSize),
            RuntimeInterpretersHead => Some(RuntimeSize),
            InterpId
            | InterpNext
            | InterpThreadsHead
            | InterpImportsModules
            | InterpCevalGil
            | InterpGilRuntimeState
            | InterpGilLocked
            | InterpGilHolder => Some(InterpSize),
            TstateNext | TstateInterp | TstateCurrentFrame | TstateThreadId
            | TstateNativeThreadId => Some(TstateSize),
            FramePrevious | FrameExecutable | FrameInstrPtr | FrameOwner => Some(FrameSize),
            CodeFilename | CodeName | CodeQualname | CodeLinetable | CodeFirstlineno
            | CodeAdaptive => Some(CodeSize),
            TypeTpName => Some(TypeSize),
            BytesObSize | BytesObSval => Some(BytesSize),
            UnicodeState | UnicodeLength | UnicodeAsciiSize | UnicodeCompactSize => {
                Some(UnicodeSize)
            }
        }
    }
}

/// Where the values sit inside one version's `_Py_DebugOffsets`.
#[derive(Debug, Clone, Copy)]
pub struct Format {
    pub version: (u8, u8),
    /// `sizeof(_Py_DebugOffsets)`: bytes to read from the start of `_PyRuntime`.
    pub size: usize,
    /// Byte position of each `uint64_t` value; slots a version lacks are absent.
    pub slots: &'static [(Slot, usize)],
}

// Header fields common to every version: cookie[8], version (PY_VERSION_HEX), free_threaded.
const VERSION_AT: usize = 8;
const FREE_THREADED_AT: usize = 16;

use Slot::*;

/// 3.13 (`Include/internal/pycore_runtime.h`).
const V3_13: Format = Format {
    version: (3, 13),
    size: 584,
    slots: &[
        (RuntimeSize, 24),
        (RuntimeInterpretersHead, 40),
        (InterpSize, 48),
        (InterpId, 56),
        (InterpNext, 64),
        (InterpThreadsHead, 72),
        (InterpCevalGil, 112),
        (InterpGilRuntimeState, 120),
        (InterpGilLocked, 136),
        (InterpGilHolder, 144),
        (TstateSize, 152),
        (TstateNext, 168),
        (TstateInterp, 176),
        (TstateCurrentFrame, 184),
        (TstateThreadId, 192),
        (TstateNativeThreadId, 200),
        (FrameSize, 224),
        (FramePrevious, 232),
        (FrameExecutable, 240),
        (FrameInstrPtr, 248),
        (FrameOwner, 264),
        (CodeSize, 272),
        (CodeFilename, 280),
        (CodeName, 288),
        (CodeQualname, 296),
        (CodeLinetable, 304),
        (CodeFirstlineno, 312),
        (CodeAdaptive, 344),
        (TypeSize, 368),
        (TypeTpName, 376),
        (BytesSize, 512),
        (BytesObSize, 520),
        (BytesObSval, 528),
        (UnicodeSize, 536),
        (UnicodeState, 544),
        (UnicodeLength, 552),
        (UnicodeAsciiSize, 560),
    ],
};

/// 3.14 (`Include/internal/pycore_debug_offsets.h`): adds threads_main, tlbc and
/// set/gen/llist/debugger sections.
const V3_14: Format = Format {
    version: (3, 14),
    size: 760,
    slots: &[
        (RuntimeSize, 24),
        (RuntimeInterpretersHead, 40),
        (InterpSize, 48),
        (InterpId, 56),
        (InterpNext, 64),
        (InterpThreadsHead, 72),
        (InterpImportsModules, 96),
        (InterpCevalGil, 120),
        (InterpGilRuntimeState, 128),
        (InterpGilLocked, 144),
        (InterpGilHolder, 152),
        (TstateSize, 176),
        (TstateNext, 192),
        (TstateInterp, 200),
        (TstateCurrentFrame, 208),
        (TstateThreadId, 216),
        (TstateNativeThreadId, 224),
        (FrameSize, 248),
        (FramePrevious, 256),
        (FrameExecutable, 264),
        (FrameInstrPtr, 272),
        (FrameOwner, 288),
        (CodeSize, 312),
        (CodeFilename, 320),
        (CodeName, 328),
        (CodeQualname, 336),
        (CodeLinetable, 344),
        (CodeFirstlineno, 352),
        (CodeAdaptive, 384),
        (TypeSize, 416),
        (TypeTpName, 424),
        (BytesSize, 592),
        (BytesObSize, 600),
        (BytesObSval, 608),
        (UnicodeSize, 616),
        (UnicodeState, 624),
        (UnicodeLength, 632),
        (UnicodeAsciiSize, 640),
        // the rest of 3.14's sections, in its struct's order: interpreter_state (..., sysdict
        // 104, builtins 112, ceval_gil, gil_runtime_state, gil_runtime_state_enabled, ...),
        // thread_state (..., native_thread_id, datastack_chunk, status),
        // interpreter_frame {size, previous, executable, instr_ptr, localsplus, owner,
        // stackpointer, tlbc_index}, code_object {size, filename, name, qualname,
        // linetable, firstlineno, argcount, localsplusnames, localspluskinds,
        // co_code_adaptive, co_tlbc}, pyobject {size, ob_type}, type_object {size,
        // tp_name, tp_repr, tp_flags}, tuple_object, list_object {size, ob_item, ob_size},
        // set_object {size, used, table, mask}, dict_object {size, ma_keys, ma_values},
        // float_object {size, ob_fval}, long_object {size, lv_tag, ob_digit}, then
        // bytes_object at 592 (checked against 3.14's DWARF in tests/layout_dwarf.rs)
        (InterpGilEnabled, 136),
        (TstateDatastackChunk, 232),
        (FrameLocalsplus, 280),
        (FrameTlbcIndex, 304),
        (CodeArgcount, 360),
        (CodeLocalsplusnames, 368),
        (CodeLocalspluskinds, 376),
        (CodeTlbc, 392),
        (ObjectSize, 400),
        (ObjectObType, 408),
        (TypeTpFlags, 440),
        (TupleSize, 448),
        (TupleObItem, 456),
        (ListSize, 472),
        (ListObItem, 480),
        (SetSize, 496),
        (SetUsed, 504),
        (SetTable, 512),
        (SetMask, 520),
        (DictSize, 528),
        (DictMaKeys, 536),
        (DictMaValues, 544),
        (FloatSize, 552),
        (FloatObFval, 560),
        (LongSize, 568),
        (LongLvTag, 576),
        (LongObDigit, 584),
    ],
};

/// 3.15 (`Include/internal/pycore_debug_offsets.h`): thread_state grows (base_frame,
/// last_profiled_frame, ...), err_stackitem and heap_type sections, compact unicode size.
const V3_15: Format = Format {
    version: (3, 15),
    size: 888,
    slots: &[
        (RuntimeSize, 24),
        (RuntimeInterpretersHead, 40),
        (InterpSize, 48),
        (InterpId, 56),
        (InterpNext, 64),
        (InterpThreadsHead, 72),
        (InterpImportsModules, 96),
        (InterpCevalGil, 120),
        (InterpGilRuntimeState, 128),
        (InterpGilLocked, 144),
        (InterpGilHolder, 152),
        (TstateSize, 176),
        (TstateNext, 192),
        (TstateInterp, 200),
        (TstateCurrentFrame, 208),
        (TstateThreadId, 240),
        (TstateNativeThreadId, 248),
        (FrameSize, 312),
        (FramePrevious, 320),
        (FrameExecutable, 328),
        (FrameInstrPtr, 336),
        (FrameOwner, 352),
        (CodeSize, 376),
        (CodeFilename, 384),
        (CodeName, 392),
        (CodeQualname, 400),
        (CodeLinetable, 408),
        (CodeFirstlineno, 416),
        (CodeAdaptive, 448),
        (TypeSize, 480),
        (TypeTpName, 488),
        (BytesSize, 688),
        (BytesObSize, 696),
        (BytesObSval, 704),
        (UnicodeSize, 712),
        (UnicodeState, 720),
        (UnicodeLength, 728),
        (UnicodeAsciiSize, 736),
        (UnicodeCompactSize, 744),
    ],
};

/// Every known format, oldest first.
pub const FORMATS: &[&Format] = &[&V3_13, &V3_14, &V3_15];

/// The `_Py_DebugOffsets` format of `major.minor`, if known.
pub fn format_for(major: u8, minor: u8) -> Option<&'static Format> {
    FORMATS
        .iter()
        .copied()
        .find(|f| f.version == (major, minor))
}

/// Bytes to read from the start of `_PyRuntime` to parse any known format.
pub const MAX_SIZE: usize = 888;

/// The values a target's `_Py_DebugOffsets` carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebugOffsets {
    /// `PY_VERSION_HEX` of the target.
    pub version_hex: u64,
    values: [Option<u64>; SLOT_COUNT],
}

impl DebugOffsets {
    /// `(major, minor)` from `PY_VERSION_HEX`.
    pub fn version(&self) -> (u8, u8) {
        split_version(self.version_hex)
    }

    pub fn get(&self, slot: Slot) -> Option<u64> {
        self.values[slot as usize]
    }
}

fn split_version(hex: u64) -> (u8, u8) {
    (((hex >> 24) & 0xff) as u8, ((hex >> 16) & 0xff) as u8)
}

fn read_u64(buf: &[u8], at: usize) -> Option<u64> {
    let bytes = buf.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

/// Checks the cookie and returns `PY_VERSION_HEX` (enough to pick a [`Format`]).
pub fn peek_version(buf: &[u8]) -> Result<u64, DebugOffsetsError> {
    let have = buf.len();
    let cookie: [u8; 8] = buf
        .get(..8)
        .and_then(|c| c.try_into().ok())
        .ok_or(DebugOffsetsError::Truncated { need: 8, have })?;
    if &cookie != COOKIE {
        return Err(DebugOffsetsError::BadCookie { found: cookie });
    }
    read_u64(buf, VERSION_AT).ok_or(DebugOffsetsError::Truncated {
        need: VERSION_AT + 8,
        have,
    })
}

/// Parses the `_Py_DebugOffsets` at the start of `buf` for a target believed to be
/// `expected` (major, minor).
/// `free_threaded`: whether the target is a free-threaded build (its `_Py_DebugOffsets`
/// must say the same).
pub fn parse(
    buf: &[u8],
    expected: (u8, u8),
    free_threaded: bool,
) -> Result<DebugOffsets, DebugOffsetsError> {
    let version_hex = peek_version(buf)?;
    if split_version(version_hex) != expected {
        return Err(DebugOffsetsError::VersionMismatch {
            expected,
            found: version_hex,
        });
    }
    let format =
        format_for(expected.0, expected.1).ok_or(DebugOffsetsError::UnsupportedVersion {
            major: expected.0,
            minor: expected.1,
        })?;
    if buf.len() < format.size {
        return Err(DebugOffsetsError::Truncated {
            need: format.size,
            have: buf.len(),
        });
    }
    if (read_u64(buf, FREE_THREADED_AT) != Some(0)) != free_threaded {
        return Err(DebugOffsetsError::FreeThreaded {
            target: !free_threaded,
        });
    }
    let mut values = [None; SLOT_COUNT];
    for &(slot, at) in format.slots {
        let value = read_u64(buf, at).ok_or(DebugOffsetsError::Truncated {
            need: at + 8,
            have: buf.len(),
        })?;
        values[slot as usize] = Some(value);
    }
    let parsed = DebugOffsets {
        version_hex,
        values,
    };
    validate(&parsed, format)?;
    Ok(parsed)
}

fn validate(parsed: &DebugOffsets, format: &Format) -> Result<(), DebugOffsetsError> {
    for &(slot, _) in format.slots {
        let value = parsed.get(slot).unwrap_or(0);
        let limit = match slot.section_size() {
            // A struct size: non-zero and sane.
            None => {
                if value == 0 || value > MAX_STRUCT_SIZE {
                    return Err(DebugOffsetsError::Implausible {
                        field: slot.dwarf_path(),
                        value,
                        limit: MAX_STRUCT_SIZE,
                    });
                }
                continue;
            }
            Some(size_slot) => parsed.get(size_slot).unwrap_or(0),
        };
        // Offsets lie inside their struct; the object sizes inside `unicode_object` may
        // equal it (a compact object with no data is as big as its header).
        let ok = match slot {
            UnicodeAsciiSize | UnicodeCompactSize => value <= limit,
            _ => value < limit,
        };
        if !ok {
            return Err(DebugOffsetsError::Implausible {
                field: slot.dwarf_path(),
                value,
                limit,
            });
        }
    }
    // The GIL fields are given as offsets in the interpreter; they must lie just past
    // the embedded `_gil`.
    let base = parsed.get(InterpGilRuntimeState).unwrap_or(0);
    for slot in [InterpGilLocked, InterpGilHolder] {
        let value = parsed.get(slot).unwrap_or(0);
        if value < base || value - base >= MAX_GIL_FIELD {
            return Err(DebugOffsetsError::Implausible {
                field: slot.dwarf_path(),
                value,
                limit: base.saturating_add(MAX_GIL_FIELD),
            });
        }
    }
    Ok(())
}

/// Overrides `table` with the target's own offsets and lists each field where they
/// differ (`"interp.threads_head: table 7344, target 7352"`).
pub fn apply(table: &Layout, parsed: &DebugOffsets) -> (Layout, Vec<String>) {
    let mut out = *table;
    let mut d = Vec::new();
    if parsed.version() != table.version {
        d.push(format!(
            "version: table {}.{}, target {}.{}",
            table.version.0,
            table.version.1,
            parsed.version().0,
            parsed.version().1
        ));
    }
    for &(slot, name, field) in PLAIN {
        set(&mut d, name, field(&mut out), parsed.get(slot));
    }
    for &(slot, name, field) in OPTIONAL {
        if let Some(v) = parsed.get(slot) {
            let f = field(&mut out);
            if *f != Some(v) {
                d.push(format!("{name}: table {f:?}, target {v}"));
                *f = Some(v);
            }
        }
    }
    apply_gil(&mut d, &mut out, parsed);
    if let Some(v) = parsed.get(TstateCurrentFrame) {
        match table.tstate.current_frame {
            CurrentFrame::Direct(t) if t == v => {}
            other => {
                d.push(format!(
                    "tstate.current_frame: table {other:?}, target Direct({v})"
                ));
                out.tstate.current_frame = CurrentFrame::Direct(v);
            }
        }
    }
    match &mut out.frame {
        FrameLayout::Interpreter(f) => {
            for &(slot, name, field) in FRAME {
                set(&mut d, name, field(f), parsed.get(slot));
            }
            // Keep covering every field we read.
            let need = [f.previous + 8, f.code + 8, f.instr + 8, f.owner + 1]
                .into_iter()
                .chain(f.is_entry.map(|e| e + 1))
                .max()
                .unwrap_or(0);
            f.size = f.size.max(need);
        }
        FrameLayout::Object(_) => {
            d.push("frame: table has PyFrameObject frames, target has interpreter frames".into())
        }
    }
    let c = &mut out.code;
    let need = [
        c.filename + 8,
        c.name + 8,
        c.qualname.map_or(0, |q| q + 8),
        c.firstlineno + 4,
        c.linetable + 8,
    ]
    .into_iter()
    .max()
    .unwrap_or(0);
    c.size = c.size.max(need);
    // the target does not state its frame size field: the table's is trusted only where
    // the target's code object agrees with the table everywhere else
    if d.iter().any(|x| x.starts_with("code.")) {
        c.frame_words = None;
    }
    (out, d)
}

/// The fields of `table` that the target's offsets state but [`apply`] does not take over
/// (the object header and built-in objects `--locals` reads, the frame's fast locals and
/// bytecode copy, the data stack): each one where they differ
/// (`"object.ob_type: table 24, target 8"`). Only slots the target's format has.
pub fn cross_check(table: &Layout, parsed: &DebugOffsets) -> Vec<String> {
    use super::{obj, CodeLocalsLayout, LongLayout};
    let o = table.object;
    let v = &table.values;
    let (argcount, names, kinds) = match v.code {
        CodeLocalsLayout::Kinds {
            argcount,
            names,
            kinds,
            ..
        } => (argcount, names, kinds),
        CodeLocalsLayout::Varnames { argcount, .. } => (argcount, 0, 0),
    };
    let (tag, digits) = match v.long {
        LongLayout::Tagged { tag, digits } => (tag, digits),
        LongLayout::SignedSize { digits } => (o.ob_size, digits),
    };
    let tlbc = match table.frame {
        FrameLayout::Interpreter(f) => f.tlbc,
        FrameLayout::Object(_) => None,
    };
    let gil_enabled = table.gil_fields.enabled.unwrap_or(0);
    let want: [(Slot, &str, u64); 21] = [
        (InterpGilEnabled, "gil_fields.enabled", gil_enabled),
        (
            TstateDatastackChunk,
            "tstate.datastack.chunk",
            table.tstate.datastack.map_or(0, |d| d.chunk),
        ),
        (
            FrameLocalsplus,
            "values.frame_localsplus",
            v.frame_localsplus,
        ),
        (
            FrameTlbcIndex,
            "frame.tlbc.frame_index",
            tlbc.map_or(0, |t| t.frame_index),
        ),
        (CodeArgcount, "values.code.argcount", argcount),
        (CodeLocalsplusnames, "values.code.names", names),
        (CodeLocalspluskinds, "values.code.kinds", kinds),
        (
            CodeTlbc,
            "frame.tlbc.code_array",
            tlbc.map_or(0, |t| t.code_array),
        ),
        (ObjectObType, "object.ob_type", o.ob_type),
        (TypeTpFlags, "obj::TYPE_FLAGS", o.at(obj::TYPE_FLAGS)),
        (TupleObItem, "values.tuple_items", v.tuple_items),
        (ListObItem, "obj::LIST_ITEMS", o.at(obj::LIST_ITEMS)),
        (SetUsed, "obj::SET_USED", o.at(obj::SET_USED)),
        (SetTable, "obj::SET_TABLE", o.at(obj::SET_TABLE)),
        (SetMask, "obj::SET_MASK", o.at(obj::SET_MASK)),
        (DictMaKeys, "obj::DICT_KEYS", o.at(obj::DICT_KEYS)),
        (DictMaValues, "obj::DICT_VALUES", o.at(obj::DICT_VALUES)),
        (FloatObFval, "obj::FLOAT_VALUE", o.at(obj::FLOAT_VALUE)),
        (LongLvTag, "values.long.tag", tag),
        (LongObDigit, "values.long.digits", digits),
        (ListSize, "sizeof(PyListObject)", o.at(obj::LIST_ITEMS) + 16),
    ];
    want.iter()
        .filter_map(|&(slot, name, t)| {
            let got = parsed.get(slot)?;
            (got != t).then(|| format!("{name}: table {t}, target {got}"))
        })
        .collect()
}

/// For a table derived from headers only ([`super::headers_only`]): every value the
/// target states that differs from the table, outside the fields such a table takes from
/// the target ([`super::FROM_TARGET`]). Not empty: the table is not this build's.
pub fn unconfirmed(table: &Layout, parsed: &DebugOffsets) -> Vec<String> {
    let (_, diffs) = apply(table, parsed);
    diffs
        .into_iter()
        .filter(|d| {
            !super::FROM_TARGET
                .iter()
                .any(|f| d.strip_prefix(f).is_some_and(|r| r.starts_with(':')))
        })
        .chain(cross_check(table, parsed))
        .collect()
}

/// Overrides one field from its slot, noting a difference.
fn set(diffs: &mut Vec<String>, name: &str, field: &mut u64, value: Option<u64>) {
    if let Some(v) = value {
        if *field != v {
            diffs.push(format!("{name}: table {field}, target {v}"));
            *field = v;
        }
    }
}

/// The GIL: a pointer and two fields given relative to the runtime state's base.
fn apply_gil(d: &mut Vec<String>, out: &mut Layout, parsed: &DebugOffsets) {
    let (Some(ptr), Some(base), Some(locked), Some(holder)) = (
        parsed.get(InterpCevalGil),
        parsed.get(InterpGilRuntimeState),
        parsed.get(InterpGilLocked),
        parsed.get(InterpGilHolder),
    ) else {
        return;
    };
    // `parse` guarantees locked/holder >= base.
    let target = GilLayout {
        pointer: ptr,
        last_holder: holder.saturating_sub(base),
        locked: locked.saturating_sub(base),
        // not in the target's offsets: the table's, if the rest agrees (below)
        switch_number: out.interp.gil.and_then(|g| g.switch_number),
    };
    match &mut out.interp.gil {
        Some(gil) => {
            set(
                d,
                "interp.gil.pointer",
                &mut gil.pointer,
                Some(target.pointer),
            );
            set(
                d,
                "interp.gil.last_holder",
                &mut gil.last_holder,
                Some(target.last_holder),
            );
            set(d, "interp.gil.locked", &mut gil.locked, Some(target.locked));
            if d.iter().any(|x| gil_struct_differs(x)) {
                gil.switch_number = None;
            }
        }
        none => {
            d.push(format!("interp.gil: table None, target {target:?}"));
            *none = Some(target);
        }
    }
    // the rest of the table's GIL struct is not trusted where the target's disagrees
    if d.iter().any(|x| gil_struct_differs(x)) {
        out.gil_fields.waits = None;
        out.gil_fields.locked = target.locked;
    }
}

/// A difference inside `struct _gil_runtime_state` (where the interpreter keeps its
/// pointer to it says nothing of the struct's own layout).
fn gil_struct_differs(diff: &str) -> bool {
    diff.starts_with("interp.gil") && !diff.starts_with("interp.gil.pointer")
}

/// A `u64` field of the layout a slot overrides: one line per field, where a new field
/// takes one new line.
type Field<T> = (Slot, &'static str, fn(&mut T) -> &mut u64);
type OptField = (Slot, &'static str, fn(&mut Layout) -> &mut Option<u64>);

const PLAIN: &[Field<Layout>] = &[
    (RuntimeInterpretersHead, "runtime.interpreters_head", |l| {
        &mut l.runtime.interpreters_head
    }),
    (InterpNext, "interp.next", |l| &mut l.interp.next),
    (InterpThreadsHead, "interp.threads_head", |l| {
        &mut l.interp.threads_head
    }),
    (InterpId, "interp.id", |l| &mut l.interp.id),
    (InterpImportsModules, "interp.modules", |l| {
        &mut l.interp.modules
    }),
    (TstateNext, "tstate.next", |l| &mut l.tstate.next),
    (TstateInterp, "tstate.interp", |l| &mut l.tstate.interp),
    (TstateThreadId, "tstate.thread_id", |l| {
        &mut l.tstate.thread_id
    }),
    (CodeFilename, "code.filename", |l| &mut l.code.filename),
    (CodeName, "code.name", |l| &mut l.code.name),
    (CodeFirstlineno, "code.firstlineno", |l| {
        &mut l.code.firstlineno
    }),
    (CodeLinetable, "code.linetable", |l| &mut l.code.linetable),
    (UnicodeLength, "unicode.length", |l| &mut l.unicode.length),
    (UnicodeState, "unicode.state", |l| &mut l.unicode.state),
    (UnicodeAsciiSize, "unicode.ascii_data", |l| {
        &mut l.unicode.ascii_data
    }),
    (UnicodeCompactSize, "unicode.compact_data", |l| {
        &mut l.unicode.compact_data
    }),
    (BytesObSize, "bytes.size", |l| &mut l.bytes.size),
    (BytesObSval, "bytes.data", |l| &mut l.bytes.data),
    (TypeTpName, "type_tp_name", |l| &mut l.type_tp_name),
];

const OPTIONAL: &[OptField] = &[
    (TstateNativeThreadId, "tstate.native_thread_id", |l| {
        &mut l.tstate.native_thread_id
    }),
    (CodeQualname, "code.qualname", |l| &mut l.code.qualname),
    (CodeAdaptive, "code.code_adaptive", |l| {
        &mut l.code.code_adaptive
    }),
];

const FRAME: &[Field<super::InterpreterFrameLayout>] = &[
    (FramePrevious, "frame.previous", |f| &mut f.previous),
    (FrameExecutable, "frame.code", |f| &mut f.code),
    (FrameInstrPtr, "frame.instr", |f| &mut f.instr),
    (FrameOwner, "frame.owner", |f| &mut f.owner),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer that passes every check: each size 4096, each offset 8, GIL fields
    /// just past a base of 8.
    fn plausible(format: &Format) -> Vec<u8> {
        let mut buf = vec![0u8; format.size];
        buf[..8].copy_from_slice(COOKIE);
        let hex = (u64::from(format.version.0) << 24) | (u64::from(format.version.1) << 16);
        buf[VERSION_AT..VERSION_AT + 8].copy_from_slice(&hex.to_le_bytes());
        for &(slot, at) in format.slots {
            let v: u64 = match slot.section_size() {
                None => 4096,
                Some(_) => 16,
            };
            buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
        }
        buf
    }

    #[test]
    fn formats_are_consistent() {
        for f in FORMATS {
            assert!(f.size <= MAX_SIZE);
            for &(slot, at) in f.slots {
                assert!(at + 8 <= f.size, "{:?} {slot:?}", f.version);
                assert!(at >= 24, "{:?} {slot:?} overlaps the header", f.version);
            }
            // Every slot but the 3.15-only compact size and the 3.14+ sys.modules is present.
            let n = f.slots.len();
            let absent = usize::from(f.version < (3, 15))
                + usize::from(f.version < (3, 14))
                + if f.version == (3, 14) { 0 } else { CROSS_SLOTS };
            assert!(n == SLOT_COUNT - absent, "{:?}: {n} slots", f.version);
            let buf = plausible(f);
            parse(&buf, f.version, false).expect("plausible buffer parses");
        }
    }

    #[test]
    fn wrong_cookie_version_and_free_threaded_are_errors() {
        let f = &V3_14;
        let mut buf = plausible(f);
        buf[0] = b'y';
        assert!(matches!(
            parse(&buf, (3, 14), false),
            Err(DebugOffsetsError::BadCookie { .. })
        ));
        let buf = plausible(f);
        assert!(matches!(
            parse(&buf, (3, 13), false),
            Err(DebugOffsetsError::VersionMismatch { .. })
        ));
        let mut buf = plausible(f);
        buf[FREE_THREADED_AT] = 1;
        assert_eq!(
            parse(&buf, (3, 14), false),
            Err(DebugOffsetsError::FreeThreaded { target: true })
        );
        assert!(parse(&buf, (3, 14), true).is_ok());
        let buf = plausible(f);
        assert_eq!(
            parse(&buf, (3, 14), true),
            Err(DebugOffsetsError::FreeThreaded { target: false })
        );
        let mut buf = plausible(&V3_13);
        buf[VERSION_AT + 2] = 12; // claims 3.12
        assert!(matches!(
            parse(&buf, (3, 12), false),
            Err(DebugOffsetsError::UnsupportedVersion { .. })
        ));
    }

    #[test]
    fn offsets_outside_their_struct_are_implausible() {
        for f in FORMATS {
            for &(slot, at) in f.slots {
                let mut buf = plausible(f);
                let bad: u64 = if slot.section_size().is_none() {
                    0
                } else {
                    1 << 40
                };
                buf[at..at + 8].copy_from_slice(&bad.to_le_bytes());
                assert!(
                    matches!(
                        parse(&buf, f.version, false),
                        Err(DebugOffsetsError::Implausible { .. })
                    ),
                    "{:?} {slot:?}",
                    f.version
                );
            }
        }
    }

    #[test]
    fn truncated_buffers_are_errors() {
        for f in FORMATS {
            let buf = plausible(f);
            for len in 0..f.size {
                assert!(
                    parse(&buf[..len], f.version, false).is_err(),
                    "{:?} len {len}",
                    f.version
                );
            }
        }
    }

    #[test]
    fn garbage_never_panics() {
        // A fixed xorshift stream: deterministic, no extra dependency.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for f in FORMATS {
            for round in 0..2000 {
                let mut buf = plausible(f);
                // Corrupt a few words, sometimes keeping the header intact.
                for _ in 0..(round % 5 + 1) {
                    let at = (next() as usize) % (buf.len() / 8) * 8;
                    let v = if round % 3 == 0 {
                        next() % 8192
                    } else {
                        next()
                    };
                    buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
                }
                if let Ok(p) = parse(&buf, f.version, false) {
                    for t in super::super::ALL {
                        let _ = apply(t, &p);
                    }
                }
            }
        }
    }

    /// What a 3.14t build's `_Py_DebugOffsets` states, from the 3.14 headers under
    /// `Py_GIL_DISABLED` (the derivations are in `v3_14t.rs`): the runtime's and
    /// interpreter's offsets are arbitrary here (the table takes them from the target).
    fn block_3_14t() -> Vec<u8> {
        let mut buf = plausible(&V3_14);
        buf[FREE_THREADED_AT] = 1;
        let values: &[(Slot, u64)] = &[
            (RuntimeSize, 1 << 20),
            (RuntimeInterpretersHead, 808),
            (InterpSize, 1 << 16),
            (InterpId, 7280),
            (InterpNext, 7272),
            (InterpThreadsHead, 7344),
            (InterpImportsModules, 7688),
            (InterpCevalGil, 16),
            (InterpGilRuntimeState, 9000),
            (InterpGilEnabled, 0),
            (InterpGilHolder, 9016),
            (InterpGilLocked, 9024),
            (TstateSize, 4096),
            (TstateNext, 8),
            (TstateInterp, 16),
            (TstateCurrentFrame, 72),
            (TstateThreadId, 152),
            (TstateNativeThreadId, 160),
            (TstateDatastackChunk, 232),
            // `_PyInterpreterFrame`: localsplus[1] ends at 88
            (FrameSize, 88),
            (FramePrevious, 8),
            (FrameExecutable, 0),
            (FrameInstrPtr, 56),
            (FrameLocalsplus, 80),
            (FrameOwner, 78),
            (FrameTlbcIndex, 72),
            (CodeSize, 240),
            (CodeFilename, 128),
            (CodeName, 136),
            (CodeQualname, 144),
            (CodeLinetable, 152),
            (CodeFirstlineno, 84),
            (CodeArgcount, 68),
            (CodeLocalsplusnames, 112),
            (CodeLocalspluskinds, 120),
            (CodeAdaptive, 232),
            (CodeTlbc, 224),
            // `PyObject` under `Py_GIL_DISABLED`: 32 bytes, `ob_type` at 24
            (ObjectSize, 32),
            (ObjectObType, 24),
            (TypeSize, 4096),
            (TypeTpName, 40),
            (TypeTpFlags, 184),
            // `PyTupleObject`: ob_size 32, ob_hash 40, ob_item[1] 48
            (TupleSize, 56),
            (TupleObItem, 48),
            // `PyListObject`: ob_item 40, allocated 48
            (ListSize, 56),
            (ListObItem, 40),
            // `PySetObject`: fill 32, used 40, mask 48, table 56, ..., smalltable, weakreflist
            (SetSize, 216),
            (SetUsed, 40),
            (SetTable, 56),
            (SetMask, 48),
            // `PyDictObject`: ma_used 32, _ma_watcher_tag 40, ma_keys 48, ma_values 56
            (DictSize, 64),
            (DictMaKeys, 48),
            (DictMaValues, 56),
            (FloatSize, 40),
            (FloatObFval, 32),
            (LongSize, 48),
            (LongLvTag, 32),
            (LongObDigit, 40),
            (BytesSize, 56),
            (BytesObSize, 32),
            (BytesObSval, 48),
            (UnicodeSize, 88),
            (UnicodeState, 48),
            (UnicodeLength, 32),
            (UnicodeAsciiSize, 56),
        ];
        for &(slot, v) in values {
            let at = V3_14
                .slots
                .iter()
                .find(|s| s.0 == slot)
                .expect("3.14 slot")
                .1;
            buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
        }
        buf
    }

    #[test]
    fn a_3_14t_block_confirms_the_headers_table_or_refuses_it() {
        let t = super::super::for_build(3, 14, true).expect("3.14t table");
        let buf = block_3_14t();
        let p = parse(&buf, (3, 14), true).expect("a 3.14t block parses");
        assert_eq!(unconfirmed(t, &p), Vec::<String>::new());
        // the interpreter's offsets come from the target
        let (out, _) = apply(t, &p);
        assert_eq!(
            (out.runtime.interpreters_head, out.interp.threads_head),
            (808, 7344)
        );
        assert_eq!(
            out.interp.gil.map(|g| (g.last_holder, g.locked)),
            Some((16, 24))
        );
        assert!(out.interp.gil.is_some_and(|g| g.switch_number == Some(32)));
        // a GIL build's block is not read as a free-threaded one
        assert!(parse(&plausible(&V3_14), (3, 14), true).is_err());
        assert!(parse(&buf, (3, 14), false).is_err());
        // any value the table derives and the target states otherwise refuses it
        for (slot, v, what) in [
            (ObjectObType, 8, "object.ob_type"),
            (UnicodeState, 32, "unicode.state"),
            (FrameOwner, 74, "frame.owner"),
            (FrameTlbcIndex, 0, "frame.tlbc.frame_index"),
            (CodeAdaptive, 224, "code.code_adaptive"),
            (DictMaKeys, 32, "obj::DICT_KEYS"),
            (TstateDatastackChunk, 240, "tstate.datastack.chunk"),
            (InterpGilHolder, 9008, "interp.gil.last_holder"),
        ] {
            let mut b = buf.clone();
            let at = V3_14.slots.iter().find(|s| s.0 == slot).unwrap().1;
            b[at..at + 8].copy_from_slice(&u64::to_le_bytes(v));
            let p = parse(&b, (3, 14), true).expect("parses");
            let wrong = unconfirmed(t, &p);
            assert!(
                wrong.iter().any(|d| d.starts_with(what)),
                "{what}: {wrong:?}"
            );
        }
    }

    #[test]
    fn apply_reports_each_difference() {
        let table = super::super::for_version(3, 14).expect("3.14 table");
        let buf = plausible(&V3_14);
        let p = parse(&buf, (3, 14), false).unwrap();
        let (out, diffs) = apply(table, &p);
        assert_eq!(out.interp.next, 16);
        assert_eq!(out.type_tp_name, 16);
        assert!(diffs
            .iter()
            .any(|d| d.starts_with("interp.next: table 7272, target 16")));
        // Applying the result to itself finds nothing more to change.
        let (_, again) = apply(&out, &p);
        assert!(again.is_empty(), "{again:?}");
    }
}
