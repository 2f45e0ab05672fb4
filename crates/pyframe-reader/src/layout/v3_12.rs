//! Python 3.12 (checked against pyenv 3.12.1's DWARF).
//! Offsets from `ptype /o` of each named struct; see `tests/layout_dwarf.rs`.
use super::*;
pub const LAYOUT: Layout = Layout {
    version: (3, 12),
    // `struct pyruntimestate` (Include/internal/pycore_runtime.h)
    runtime: RuntimeLayout {
        interpreters_head: 40,
        // 3.12+: gone (the current thread state is a thread-local `_Py_tss_tstate`)
        gilstate_tstate_current: None,
        // 3.12+: reached through the interpreter (`interp.gil`)
        gil: None,
    },
    // `struct _is` (Include/internal/pycore_interp.h)
    interp: InterpLayout {
        next: 0,
        // `threads.head`
        threads_head: 72,
        // `imports.modules` (sys.modules)
        modules: 944,
        id: 8,
        gil: Some(GilLayout {
            // `ceval.gil`; `struct _gil_runtime_state` is in Include/internal/pycore_gil.h
            pointer: 384,
            last_holder: 8,
            locked: 16,
            // `switch_number`
            switch_number: Some(24),
        }),
    },
    // `struct _ts` (Include/cpython/pystate.h)
    tstate: ThreadStateLayout {
        next: 8,
        interp: 16,
        // `cframe` -> `_PyCFrame.current_frame` (_PyCFrame in Include/cpython/pystate.h)
        current_frame: CurrentFrame::ViaCFrame {
            cframe: 56,
            current_frame: 0,
        },
        thread_id: 136,
        native_thread_id: Some(144),
        tracing: None,
        // `_xxsubinterpreters.run_string` runs the interpreter's head state on any thread
        lent_states: true,
        cframe: Some(CFrameFields {
            cframe: 56,
            root: 272,
        }),
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
        // `f_code`
        code: 0,
        code_tag_mask: 0,
        // `prev_instr`
        instr: 56,
        instr_is_prev: true,
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
        filename: 112,
        name: 120,
        qualname: Some(128),
        firstlineno: 68,
        // `co_linetable`
        linetable: 136,
        linetable_format: LineTableFormat::Locations,
        code_adaptive: Some(192),
        // `_co_firsttraceable`
        first_traceable: Some(176),
        // `co_framesize`
        frame_words: Some(FrameWords::Field(76)),
        size: 192,
    },
    // `PyASCIIObject` / `PyCompactUnicodeObject` (Include/cpython/unicodeobject.h),
    // without the `wstr` fields (removed in 3.12);
    // `state` bitfield: interned:2, kind:3, compact:1, ascii:1, ...
    unicode: UnicodeLayout {
        length: 16,
        state: 32,
        ascii_data: 40,
        compact_data: 56,
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
        cached_keys: 880,
        // where an instance keeps its attributes (`threading` names read `Thread._name`)
        str_hash: StrHash::SipHash13,
        instance_dict: InstanceDict::Tagged {
            // `Py_TPFLAGS_MANAGED_DICT`; `_PyObject_DictOrValuesPointer` (obj - 3 words):
            // a `PyDictOrValues`, the values pointer - 1 when bit 0 is set
            // (`_PyDictOrValues_IsValues`), else the dict (Include/internal/pycore_object.h)
            flag: 1 << 4,
            at: -24,
        },
        // `PyCodeObject`: co_argcount, co_kwonlyargcount, co_flags, co_localsplusnames,
        // co_localspluskinds
        code: CodeLocalsLayout::Kinds {
            argcount: 52,
            kwonlyargcount: 60,
            flags: 48,
            names: 96,
            kinds: 104,
        },
        tuple_items: 24,
        // `PyLongObject.long_value.lv_tag`, `.ob_digit`
        long: LongLayout::Tagged {
            tag: 16,
            digits: 24,
        },
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
