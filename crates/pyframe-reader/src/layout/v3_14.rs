//! Python 3.14 (checked against Debian 3.14.10's DWARF (python3.14-dbg)
//! and its `_Py_DebugOffsets`).
//! Offsets from `ptype /o` of each named struct; see `tests/layout_dwarf.rs`.
use super::*;
pub const LAYOUT: Layout = Layout {
    version: (3, 14),
    // `struct pyruntimestate` (Include/internal/pycore_runtime.h)
    runtime: RuntimeLayout {
        interpreters_head: 808,
        // 3.12+: gone (the current thread state is a thread-local `_Py_tss_tstate`)
        gilstate_tstate_current: None,
        // 3.12+: reached through the interpreter (`interp.gil`)
        gil: None,
    },
    // `struct _is` (Include/internal/pycore_interp.h)
    interp: InterpLayout {
        next: 7272,
        // `threads.head`
        threads_head: 7344,
        // `imports.modules` (sys.modules)
        modules: 7688,
        id: 7280,
        gil: Some(GilLayout {
            // `ceval.gil`; `struct _gil_runtime_state` is in Include/internal/pycore_gil.h
            pointer: 16,
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
    // `struct _PyInterpreterFrame` (Include/internal/pycore_interpframe_structs.h)
    frame: FrameLayout::Interpreter(InterpreterFrameLayout {
        previous: 8,
        // `f_executable` is a `_PyStackRef` (Include/internal/pycore_stackref.h): the
        // low bits are tags (Py_TAG_BITS); objects are 8-aligned, so clearing 2 bits is safe.
        code: 0,
        code_tag_mask: 3,
        // `instr_ptr`
        instr: 56,
        instr_is_prev: false,
        owner: 74,
        is_entry: None,
        // no field marks a running frame (see `running_stacktop`)
        running_stacktop: None,
        // the `CALL`, `CALL_KW`, `CALL_FUNCTION_EX`, `BINARY_OP` (`BINARY_OP_SUBSCR_GETITEM`),
        // `LOAD_ATTR` (`_PROPERTY`, `_GETATTRIBUTE_OVERRIDDEN`), `FOR_ITER` (`_GEN`) and `SEND`
        // (`_GEN`) families; `INSTRUMENTED_CALL`, `_CALL_KW`, `_CALL_FUNCTION_EX`, `_FOR_ITER`,
        // `_LINE`, `_INSTRUCTION`; `ENTER_EXECUTOR`
        call_sites: Some(CallSites {
            back_units: 0,
            opcodes: &[
                3, 4, 44, 52, 55, 70, 80, 106, 129, 130, 131, 132, 133, 134, 135, 136, 137, 138,
                139, 140, 141, 142, 143, 144, 145, 146, 147, 148, 149, 150, 151, 152, 153, 154,
                155, 156, 157, 158, 159, 160, 161, 162, 163, 164, 165, 171, 172, 173, 174, 177,
                178, 179, 180, 181, 182, 183, 184, 185, 186, 187, 188, 189, 197, 237, 238, 250,
                251, 252, 254, 255,
            ],
        }),
        // `enum _frameowner`: FRAME_OWNED_BY_INTERPRETER = 3, FRAME_OWNED_BY_CSTACK = 4
        first_non_python_owner: Some(3),
        // `enum _frameowner`: FRAME_OWNED_BY_GENERATOR
        generator_owner: 1,
        tlbc: None,
        size: 80,
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
        code_adaptive: Some(208),
        // `_co_firsttraceable`
        first_traceable: Some(192),
        // not checked against a 3.14 interpreter here: no frame tiling check
        frame_words: None,
        size: 208,
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
        // `localsplus` (`_PyStackRef`s)
        frame_localsplus: 80,
        localsplus_tag_mask: 3,
        // `PyHeapTypeObject.ht_cached_keys` (Include/cpython/object.h)
        cached_keys: 880,
        // where an instance keeps its attributes (`threading` names read `Thread._name`)
        str_hash: StrHash::SipHash13,
        instance_dict: InstanceDict::Inline {
            // `Py_TPFLAGS_MANAGED_DICT`, `Py_TPFLAGS_INLINE_VALUES` (Include/object.h);
            // `MANAGED_DICT_OFFSET` (obj - 3 words), `_PyObject_InlineValues` (obj +
            // tp_basicsize), `PyDictValues.valid` (Include/internal/pycore_object.h,
            // pycore_dict.h)
            flag: 1 << 4,
            inline_flag: 1 << 2,
            dict: -24,
            valid: 3,
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
        // `ob_hash` comes first
        tuple_items: 32,
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
        locked: 16,
        // the same GIL-build struct as 3.13 in Include/internal/pycore_gil.h; checked
        // against DWARF where tests/layout_dwarf.rs finds this version's debug files
        waits: Some((32, 208)),
        // `_status.holds_gil` is gone again (3.13 only)
        tstate_holds_gil: None,
        enabled: None,
    },
};
