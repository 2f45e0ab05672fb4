//! Python 3.11 (checked against pyenv 3.11.7's DWARF).
//! Offsets from `ptype /o` of each named struct; see `tests/layout_dwarf.rs`.
use super::*;
pub const LAYOUT: Layout = Layout {
    version: (3, 11),
    // `struct pyruntimestate` (Include/internal/pycore_runtime.h)
    runtime: RuntimeLayout {
        interpreters_head: 40,
        // gilstate.tstate_current
        gilstate_tstate_current: Some(576),
        // `ceval.gil`
        gil: Some(360),
    },
    // `struct _is` (Include/internal/pycore_interp.h)
    interp: InterpLayout {
        next: 0,
        // `threads.head`
        threads_head: 16,
        // `modules` (sys.modules)
        modules: 888,
        id: 48,
        gil: None,
    },
    // `struct _ts` (Include/cpython/pystate.h)
    tstate: ThreadStateLayout {
        next: 8,
        interp: 16,
        // `cframe` -> `_PyCFrame.current_frame` (_PyCFrame in Include/cpython/pystate.h)
        current_frame: CurrentFrame::ViaCFrame {
            cframe: 56,
            current_frame: 8,
        },
        thread_id: 152,
        native_thread_id: Some(160),
        tracing: None,
        // `_xxsubinterpreters.run_string` runs the interpreter's head state on any thread
        lent_states: true,
        cframe: Some(CFrameFields {
            cframe: 56,
            root: 336,
        }),
        // `datastack_chunk`, `datastack_top`, `datastack_limit`
        datastack: Some(DataStackLayout {
            chunk: 296,
            top: 304,
            limit: 312,
        }),
    },
    // `struct _PyInterpreterFrame` (Include/internal/pycore_frame.h)
    frame: FrameLayout::Interpreter(InterpreterFrameLayout {
        previous: 48,
        // `f_code`
        code: 32,
        code_tag_mask: 0,
        // `prev_instr`
        instr: 56,
        instr_is_prev: true,
        owner: 69,
        is_entry: Some(68),
        // `stacktop` is left as it was when the frame resumes: no mark
        running_stacktop: None,
        // `CALL` (`CALL_ADAPTIVE`, `CALL_PY_EXACT_ARGS`, `CALL_PY_WITH_DEFAULTS`) and
        // `BINARY_SUBSCR` (`BINARY_SUBSCR_GETITEM` and the rest of its family)
        call_sites: Some(CallSites {
            back_units: 4,
            opcodes: &[17, 18, 19, 20, 21, 22, 23, 24, 25, 171],
        }),
        // owners: THREAD=0, GENERATOR=1, FRAME_OBJECT=2; the frame a C call entered
        // the interpreter with is marked by `is_entry` instead
        first_non_python_owner: None,
        // `enum _frameowner`: FRAME_OWNED_BY_GENERATOR
        generator_owner: 1,
        tlbc: None,
        size: 72,
    }),
    // `PyCodeObject` (Include/cpython/code.h)
    code: CodeLayout {
        filename: 112,
        name: 120,
        qualname: Some(128),
        firstlineno: 72,
        // `co_linetable`
        linetable: 136,
        linetable_format: LineTableFormat::Locations,
        code_adaptive: Some(184),
        // `_co_firsttraceable`
        first_traceable: Some(168),
        // `co_nlocalsplus`, `co_stacksize`, FRAME_SPECIALS_SIZE ((sizeof(_PyInterpreterFrame) - 1) / 8)
        frame_words: Some(FrameWords::Sum {
            nlocalsplus: 76,
            stacksize: 68,
            specials: 9,
        }),
        size: 184,
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
        // `localsplus`
        frame_localsplus: 72,
        localsplus_tag_mask: 0,
        // `PyHeapTypeObject.ht_cached_keys` (Include/cpython/object.h)
        cached_keys: 872,
        // where an instance keeps its attributes (`threading` names read `Thread._name`)
        str_hash: StrHash::SipHash13,
        instance_dict: InstanceDict::Managed {
            // `Py_TPFLAGS_MANAGED_DICT`; `_PyObject_ManagedDictPointer` (obj - 3 words),
            // `_PyObject_ValuesPointer` (obj - 4 words), Include/internal/pycore_object.h
            flag: 1 << 4,
            dict: -24,
            values: -32,
        },
        // `PyCodeObject`: co_argcount, co_kwonlyargcount, co_flags, co_localsplusnames,
        // co_localspluskinds
        code: CodeLocalsLayout::Kinds {
            argcount: 56,
            kwonlyargcount: 64,
            flags: 48,
            names: 96,
            kinds: 104,
        },
        tuple_items: 24,
        // `PyLongObject.ob_digit` (`ob_size` is the signed digit count)
        long: LongLayout::SignedSize { digits: 24 },
        // `PyDictKeysObject`: dk_log2_size, dk_log2_index_bytes, dk_kind, dk_nentries,
        // dk_indices
        dict: DictLayout::Log2 {
            log2_size: 8,
            log2_index_bytes: 9,
            kind: 10,
            nentries: 24,
            indices: 32,
            values: SplitValues::OrderBefore,
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
