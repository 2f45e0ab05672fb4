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
}

const SLOT_COUNT: usize = Slot::UnicodeCompactSize as usize + 1;

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
        }
    }

    /// The slot holding the size of the struct this slot's offset points into (`None`
    /// for the sizes themselves).
    fn section_size(self) -> Option<Slot> {
        use Slot::*;
        match self {
            RuntimeSize | InterpSize | TstateSize | FrameSize | CodeSize | TypeSize | BytesSize
            | UnicodeSize => None,
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
            if d.iter().any(|x| x.starts_with("interp.gil")) {
                gil.switch_number = None;
            }
        }
        none => {
            d.push(format!("interp.gil: table None, target {target:?}"));
            *none = Some(target);
        }
    }
    // the rest of the table's GIL struct is not trusted where the target's disagrees
    if d.iter().any(|x| x.starts_with("interp.gil")) {
        out.gil_fields.waits = None;
        out.gil_fields.locked = target.locked;
    }
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
            let absent = usize::from(f.version < (3, 15)) + usize::from(f.version < (3, 14));
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
