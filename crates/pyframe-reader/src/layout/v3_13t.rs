//! Python 3.13t, free-threaded (checked against the DWARF of 3.13.0rc2 built with
//! `--disable-gil`, tests/pythons/build-cpython ft, and its `_Py_DebugOffsets`).
//! Offsets from `ptype /o` of each named struct; see `tests/layout_dwarf.rs`.
//!
//! What differs from 3.13: the object header (`ob_tid`, `_padding`, `ob_mutex`,
//! `ob_gc_bits`, `ob_ref_local`, `ob_ref_shared`, then `ob_type`) is 16 bytes longer, so
//! every field of an object is 16 bytes further in; `struct _gil_runtime_state` starts
//! with `enabled` (the GIL is off unless re-enabled at run time); `imports.modules` moved.
//! Thread states are `_PyThreadStateImpl`s, whose first member is the `PyThreadState`:
//! its offsets are 3.13's.
use super::*;
pub const LAYOUT: Layout = Layout {
    version: (3, 13),
    // `struct pyruntimestate` (Include/internal/pycore_runtime.h)
    runtime: RuntimeLayout {
        interpreters_head: 632,
        // 3.12+: gone (the current thread state is a thread-local `_Py_tss_tstate`)
        gilstate_tstate_current: None,
        // 3.12+: reached through the interpreter (`interp.gil`)
        gil: None,
    },
    // `struct _is` (Include/internal/pycore_interp.h)
    interp: InterpLayout {
        next: 7264,
        // `threads.head`
        threads_head: 7344,
        // `imports.modules` (sys.modules)
        modules: 7680,
        id: 7272,
        gil: Some(GilLayout {
            // `ceval.gil`; `struct _gil_runtime_state` is in Include/internal/pycore_gil.h
            pointer: 16,
            // after `enabled` (int) and `interval`
            last_holder: 16,
            locked: 24,
            // `switch_number`
            switch_number: Some(32),
        }),
    },
    // `struct _ts` (Include/cpython/pystate.h)
    tstate: ThreadStateLayout {
        next: 8,
        interp: 16,
        // `current_frame`
        current_frame: CurrentFrame::Direct(72),
        thread_id: 152,
        native_thread_id: Some(160),
        tracing: None,
        // `_interpreters.exec` binds a state of its own to the calling thread
        lent_states: false,
        cframe: None,
        // `datastack_chunk`, `datastack_top`, `datastack_limit`
        datastack: Some(DataStackLayout {
            chunk: 232,
            top: 240,
            limit: 248,
        }),
    },
    // `struct _PyInterpreterFrame` (Include/internal/pycore_frame.h)
    frame: FrameLayout::Interpreter(InterpreterFrameLayout {
        previous: 8,
        // `f_executable` (a PyObject*)
        code: 0,
        code_tag_mask: 0,
        // `instr_ptr`
        instr: 56,
        instr_is_prev: false,
        owner: 70,
        is_entry: None,
        // `stacktop`: -1 while the frame runs
        running_stacktop: Some(64),
        // `running_stacktop` marks a running frame
        call_sites: None,
        // `enum _frameowner`: FRAME_OWNED_BY_CSTACK = 3 marks the C-stack shim frame
        first_non_python_owner: Some(3),
        // `enum _frameowner`: FRAME_OWNED_BY_GENERATOR
        generator_owner: 1,
        tlbc: None,
        size: 72,
    }),
    // `PyCodeObject` (Include/cpython/code.h)
    code: CodeLayout {
        filename: 128,
        name: 136,
        qualname: Some(144),
        firstlineno: 84,
        // `co_linetable`
        linetable: 152,
        linetable_format: LineTableFormat::Locations,
        code_adaptive: Some(216),
        // `_co_firsttraceable`
        first_traceable: Some(200),
        // `co_framesize`
        frame_words: Some(FrameWords::Field(92)),
        size: 216,
    },
    // `PyASCIIObject` / `PyCompactUnicodeObject` (Include/cpython/unicodeobject.h),
    // without the `wstr` fields (removed in 3.12);
    // `state` bitfield: interned:2, kind:3, compact:1, ascii:1, ...
    unicode: UnicodeLayout {
        length: 32,
        state: 48,
        ascii_data: 56,
        compact_data: 72,
        kind_shift: 2,
        compact_bit: 5,
        ascii_bit: 6,
    },
    // `PyBytesObject` (Include/cpython/bytesobject.h): ob_base.ob_size, ob_sval
    bytes: BytesLayout { size: 32, data: 48 },
    // `PyTypeObject.tp_name` (Include/cpython/object.h)
    type_tp_name: 40,
    free_threaded: true,
    object: ObjectHeader::FREE_THREADED,
    // fast locals, local names, built-in objects (`stack --locals`)
    values: ValuesLayout {
        // `localsplus`
        frame_localsplus: 72,
        localsplus_tag_mask: 0,
        // `PyHeapTypeObject.ht_cached_keys` (Include/cpython/object.h)
        cached_keys: 896,
        // where an instance keeps its attributes (`threading` names read `Thread._name`)
        str_hash: StrHash::SipHash13,
        instance_dict: InstanceDict::Inline {
            // `Py_TPFLAGS_MANAGED_DICT`, `Py_TPFLAGS_INLINE_VALUES` (Include/object.h);
            // `MANAGED_DICT_OFFSET` is obj - 1 word under `Py_GIL_DISABLED` (no
            // `PyGC_Head` before the pre-header: `_PyType_PreHeaderSize` counts it only
            // with the GIL; Include/internal/pycore_object.h), `_PyObject_InlineValues`
            // (obj + tp_basicsize), `PyDictValues.valid` (pycore_dict.h)
            flag: 1 << 4,
            inline_flag: 1 << 2,
            dict: -8,
            valid: 3,
        },
        // `PyCodeObject`: co_argcount, co_kwonlyargcount, co_flags, co_localsplusnames,
        // co_localspluskinds
        code: CodeLocalsLayout::Kinds {
            argcount: 68,
            kwonlyargcount: 76,
            flags: 64,
            names: 112,
            kinds: 120,
        },
        tuple_items: 40,
        // `PyLongObject.long_value.lv_tag`, `.ob_digit`
        long: LongLayout::Tagged {
            tag: 32,
            digits: 40,
        },
        // `PyDictKeysObject`: dk_log2_size, dk_log2_index_bytes, dk_kind, dk_nentries,
        // dk_indices
        dict: DictLayout::Log2 {
            log2_size: 8,
            log2_index_bytes: 9,
            kind: 10,
            nentries: 24,
            indices: 32,
            values: SplitValues::Header {
                // `PyDictValues`: capacity, size, values
                capacity: 0,
                size: 1,
                values: 8,
            },
        },
    },
    // `struct _gil_runtime_state`: locked, [cond, sizeof) (Include/internal/pycore_gil.h)
    gil_fields: GilFields {
        locked: 24,
        waits: Some((40, 216)),
        // `PyThreadState._status.holds_gil` (Include/cpython/pystate.h)
        tstate_holds_gil: Some((32, 5)),
        // `enabled` (int): free-threaded builds only
        enabled: Some(0),
    },
};
