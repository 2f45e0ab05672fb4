//! Python 3.8 (checked against pyenv 3.8.18's DWARF).
//! Offsets from `ptype /o` of each named struct; see `tests/layout_dwarf.rs`.
use super::*;
pub const LAYOUT: Layout = Layout {
    version: (3, 8),
    // `struct pyruntimestate` (Include/internal/pycore_pystate.h)
    runtime: RuntimeLayout {
        interpreters_head: 32,
        // gilstate.tstate_current
        gilstate_tstate_current: Some(1368),
        // `ceval.gil`
        gil: Some(1152),
    },
    // `struct _is` (Include/internal/pycore_interp.h)
    interp: InterpLayout {
        next: 0,
        // `tstate_head`
        threads_head: 8,
        // `modules` (sys.modules)
        modules: 56,
        id: 16,
        gil: None,
    },
    // `struct _ts` (Include/cpython/pystate.h)
    tstate: ThreadStateLayout {
        next: 8,
        interp: 16,
        // `frame`
        current_frame: CurrentFrame::Direct(24),
        thread_id: 176,
        native_thread_id: None,
        // `tracing`
        tracing: Some(44),
        // `_xxsubinterpreters.run_string` runs the interpreter's head state on any thread
        lent_states: true,
        cframe: None,
        datastack: None,
    },
    // `struct _frame` (Include/frameobject.h)
    frame: FrameLayout::Object(FrameObjectLayout {
        back: 24,
        code: 32,
        lasti: 104,
        lasti_unit: 1,
        // `f_executing`
        live: FrameLive::Executing(116),
        size: 117,
    }),
    // `PyCodeObject` (Include/code.h)
    code: CodeLayout {
        filename: 104,
        name: 112,
        qualname: None,
        firstlineno: 40,
        // `co_lnotab`
        linetable: 120,
        linetable_format: LineTableFormat::Lnotab,
        code_adaptive: None,
        first_traceable: None,
        frame_words: None,
        size: 128,
    },
    // `PyASCIIObject` / `PyCompactUnicodeObject` (Include/cpython/unicodeobject.h),
    // still with the `wstr` / `wstr_length` fields;
    // `state` bitfield: interned:2, kind:3, compact:1, ascii:1, ...
    unicode: UnicodeLayout {
        length: 16,
        state: 32,
        ascii_data: 48,
        compact_data: 72,
        kind_shift: 2,
        compact_bit: 5,
        ascii_bit: 6,
    },
    // `PyBytesObject` (Include/cpython/bytesobject.h): ob_base.ob_size, ob_sval
    bytes: BytesLayout { size: 16, data: 32 },
    // `PyTypeObject.tp_name` (Include/cpython/object.h)
    type_tp_name: 24,
    free_threaded: false,
    object: ObjectHeader::GIL,
    // fast locals, local names, built-in objects (`stack --locals`)
    values: ValuesLayout {
        // `f_localsplus`
        frame_localsplus: 360,
        localsplus_tag_mask: 0,
        // `PyHeapTypeObject.ht_cached_keys` (Include/cpython/object.h)
        cached_keys: 872,
        // where an instance keeps its attributes (`threading` names read `Thread._name`)
        str_hash: StrHash::SipHash24,
        instance_dict: InstanceDict::DictOffset,
        // `PyCodeObject`: co_argcount, co_kwonlyargcount, co_flags, co_varnames,
        // co_cellvars, co_freevars
        code: CodeLocalsLayout::Varnames {
            argcount: 16,
            kwonlyargcount: 24,
            flags: 36,
            varnames: 72,
            cellvars: 88,
            freevars: 80,
        },
        tuple_items: 24,
        // `PyLongObject.ob_digit` (`ob_size` is the signed digit count)
        long: LongLayout::SignedSize { digits: 24 },
        // `PyDictKeysObject`: dk_size, dk_nentries, dk_indices
        dict: DictLayout::Sized {
            size: 8,
            nentries: 32,
            indices: 40,
        },
    },
    // `struct _gil_runtime_state`: locked, [cond, sizeof) (Include/internal/pycore_gil.h)
    gil_fields: GilFields {
        locked: 16,
        waits: Some((32, 208)),
        // no `_status.holds_gil` before 3.13
        tstate_holds_gil: None,
        enabled: None,
    },
};
