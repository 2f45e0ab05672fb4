//! Python 3.14t, free-threaded (`--disable-gil`). NOT checked against a running 3.14t nor
//! its DWARF: no 3.14t build is at hand. Derived from the 3.14 headers (named at each
//! field), from the 3.14 GIL table (`v3_14.rs`, checked against Debian 3.14's DWARF) plus
//! what `Py_GIL_DISABLED` changes, and from 3.13t (`v3_13t.rs`, checked against its
//! build's DWARF) where the same `#ifdef` does the same thing.
//!
//! The attach refuses this table unless the target's own `_Py_DebugOffsets` is read and
//! agrees with it (`layout::headers_only`, process.rs): every value the target states that
//! this table derives (object header, tuple/list/set/dict/float/int, frame, code, thread
//! state, type, str, bytes) is compared, and a single difference refuses the target rather
//! than misread it. The runtime's and interpreter's own offsets (`_PyRuntimeState`,
//! `PyInterpreterState`: thousands of bytes of `#ifdef`ed members) are not derived here:
//! they are taken from the target's `_Py_DebugOffsets` (the zeros below are never used).
//!
//! What differs from 3.14 (all from `Py_GIL_DISABLED`):
//! - Include/object.h: the object header is `ob_tid`, `_padding`, `ob_mutex`,
//!   `ob_gc_bits`, `ob_ref_local`, `ob_ref_shared`, then `ob_type` at 24 (GIL: 8): every
//!   object's own fields are 16 bytes further in ([`ObjectHeader::FREE_THREADED`]).
//! - Include/internal/pycore_interpframe_structs.h: `_PyInterpreterFrame` gains
//!   `int32_t tlbc_index` after `stackpointer` (64): tlbc_index 72, `return_offset`
//!   (uint16_t) 76, `owner` (char) 78 (GIL: 74), `visited` 79, `localsplus` 80 (unchanged).
//! - Include/cpython/code.h: `_PyCode_DEF` ends with `_PyCodeArray *co_tlbc` (thread-local
//!   bytecode) after `co_extra`, before `co_code_adaptive`: with the 16-byte header every
//!   field is +16, and `co_code_adaptive` +24 (GIL 208: 232); `co_tlbc` 224.
//! - Include/cpython/unicodeobject.h: `state.interned` is an `unsigned char` (atomic
//!   access), not a 2-bit field: `kind:3` starts at bit 8, `compact` 11, `ascii` 12.
//! - Include/internal/pycore_gil.h: `struct _gil_runtime_state` starts with `int enabled`
//!   (as on 3.13t): interval 8, last_holder 16, locked 24, switch_number 32, cond 40.
//! - Include/internal/pycore_object.h: `MANAGED_DICT_OFFSET` is -1 word (no `PyGC_Head`
//!   before the pre-header), as on 3.13t.
//! - Include/internal/pycore_dict.h: `PyDictKeysObject` gains `PyMutex dk_mutex` (1 byte)
//!   after `dk_kind` (10), before `uint32_t dk_version` (12): no offset moves.
//! - `PyThreadState` (Include/cpython/pystate.h) has no `Py_GIL_DISABLED` member (the
//!   free-threaded state is in `_PyThreadStateImpl` after it): 3.14's offsets.
use super::*;
pub const LAYOUT: Layout = Layout {
    version: (3, 14),
    runtime: RuntimeLayout {
        // `_Py_DebugOffsets.runtime_state.interpreters_head` of the target
        interpreters_head: 0,
        gilstate_tstate_current: None,
        gil: None,
    },
    interp: InterpLayout {
        // `_Py_DebugOffsets.interpreter_state` {next, threads_head, imports_modules, id} of
        // the target
        next: 0,
        threads_head: 0,
        modules: 0,
        id: 0,
        gil: Some(GilLayout {
            // `interpreter_state.ceval_gil` of the target
            pointer: 0,
            // `struct _gil_runtime_state` after `int enabled`, `unsigned long interval`
            // (pycore_gil.h); the target's `gil_runtime_state_holder`/`_locked` minus
            // `gil_runtime_state` must say the same
            last_holder: 16,
            locked: 24,
            switch_number: Some(32),
        }),
    },
    // `struct _ts` (Include/cpython/pystate.h): as 3.14
    tstate: ThreadStateLayout {
        next: 8,
        interp: 16,
        current_frame: CurrentFrame::Direct(72),
        thread_id: 152,
        native_thread_id: Some(160),
        tracing: None,
        // `_interpreters.exec` binds a state of its own to the calling thread
        lent_states: false,
        cframe: None,
        datastack: Some(DataStackLayout {
            chunk: 232,
            top: 240,
            limit: 248,
        }),
    },
    // `struct _PyInterpreterFrame` (Include/internal/pycore_interpframe_structs.h):
    // f_executable 0, previous 8, f_funcobj 16, f_globals 24, f_builtins 32, f_locals 40,
    // frame_obj 48, instr_ptr 56, stackpointer 64, tlbc_index 72, return_offset 76,
    // owner 78, visited 79, localsplus 80
    frame: FrameLayout::Interpreter(InterpreterFrameLayout {
        previous: 8,
        // `f_executable` is a `_PyStackRef`: `Py_TAG_BITS` is 1 here (3 with the GIL);
        // objects are 8-aligned, so clearing 2 bits is safe either way
        code: 0,
        code_tag_mask: 3,
        instr: 56,
        instr_is_prev: false,
        owner: 78,
        is_entry: None,
        // no field marks a running frame (see `running_stacktop`)
        running_stacktop: None,
        // 3.14's opcodes, unchecked here (no 3.14t interpreter to check them against)
        call_sites: None,
        // `enum _frameowner` (pycore_interpframe_structs.h): as 3.14
        first_non_python_owner: Some(3),
        generator_owner: 1,
        tlbc: Some(ThreadLocalBytecode {
            frame_index: 72,
            code_array: 224,
        }),
        size: 80,
    }),
    // `PyCodeObject` (`_PyCode_DEF`, Include/cpython/code.h): PyObject_VAR_HEAD 40,
    // co_consts 40, co_names 48, co_exceptiontable 56, co_flags 64, co_argcount 68,
    // co_posonlyargcount 72, co_kwonlyargcount 76, co_stacksize 80, co_firstlineno 84,
    // co_nlocalsplus 88, co_framesize 92, co_nlocals 96, co_ncellvars 100,
    // co_nfreevars 104, co_version 108, co_localsplusnames 112, co_localspluskinds 120,
    // co_filename 128, co_name 136, co_qualname 144, co_linetable 152, co_weakreflist
    // 160, co_executors 168, _co_cached 176, _co_instrumentation_version 184,
    // _co_monitoring 192, _co_unique_id 200, _co_firsttraceable 208, co_extra 216,
    // co_tlbc 224, co_code_adaptive 232 (3.14's table + 16, + 8 from co_tlbc)
    code: CodeLayout {
        filename: 128,
        name: 136,
        qualname: Some(144),
        firstlineno: 84,
        linetable: 152,
        linetable_format: LineTableFormat::Locations,
        code_adaptive: Some(232),
        first_traceable: Some(208),
        // not run here: no frame tiling check (as 3.14)
        frame_words: None,
        size: 232,
    },
    // `PyASCIIObject`: header 32, length 32, hash 40, state 48 (`_Py_ALIGN_AS(4)`),
    // sizeof 56; `PyCompactUnicodeObject` adds utf8_length, utf8: 72 (as 3.13t)
    unicode: UnicodeLayout {
        length: 32,
        state: 48,
        ascii_data: 56,
        compact_data: 72,
        // `unsigned char interned;` then `unsigned int kind:3, compact:1, ascii:1`
        kind_shift: 8,
        compact_bit: 11,
        ascii_bit: 12,
    },
    // `PyBytesObject`: ob_base.ob_size 32, ob_shash 40, ob_sval 48
    bytes: BytesLayout { size: 32, data: 48 },
    // `PyTypeObject.tp_name`: 3.14's 24 + 16
    type_tp_name: 40,
    free_threaded: true,
    object: ObjectHeader::FREE_THREADED,
    values: ValuesLayout {
        // `localsplus` (`_PyStackRef`s)
        frame_localsplus: 80,
        localsplus_tag_mask: 3,
        // `PyHeapTypeObject.ht_cached_keys`: 3.14's 880 + 16 (its `unique_id` under
        // `Py_GIL_DISABLED` comes after it); not stated by `_Py_DebugOffsets`
        cached_keys: 896,
        str_hash: StrHash::SipHash13,
        instance_dict: InstanceDict::Inline {
            // `Py_TPFLAGS_MANAGED_DICT`, `Py_TPFLAGS_INLINE_VALUES` (Include/object.h);
            // `MANAGED_DICT_OFFSET` -1 word under `Py_GIL_DISABLED` (pycore_object.h),
            // `PyDictValues.valid` (pycore_dict.h)
            flag: 1 << 4,
            inline_flag: 1 << 2,
            dict: -8,
            valid: 3,
        },
        // co_argcount, co_kwonlyargcount, co_flags, co_localsplusnames, co_localspluskinds
        code: CodeLocalsLayout::Kinds {
            argcount: 68,
            kwonlyargcount: 76,
            flags: 64,
            names: 112,
            kinds: 120,
        },
        // `PyTupleObject`: ob_size 32, ob_hash 40, ob_item 48
        tuple_items: 48,
        // `PyLongObject.long_value.lv_tag`, `.ob_digit`
        long: LongLayout::Tagged {
            tag: 32,
            digits: 40,
        },
        // `PyDictKeysObject` (pycore_dict.h): dk_refcnt 0, dk_log2_size 8,
        // dk_log2_index_bytes 9, dk_kind 10, dk_mutex 11, dk_version 12, dk_usable 16,
        // dk_nentries 24, dk_indices 32
        dict: DictLayout::Log2 {
            log2_size: 8,
            log2_index_bytes: 9,
            kind: 10,
            nentries: 24,
            indices: 32,
            values: SplitValues::Header {
                capacity: 0,
                size: 1,
                values: 8,
            },
        },
    },
    // `struct _gil_runtime_state` (pycore_gil.h): as 3.13t
    gil_fields: GilFields {
        locked: 24,
        waits: Some((40, 216)),
        tstate_holds_gil: None,
        enabled: Some(0),
    },
};
