"""Check, inside a real interpreter, how a memory reader must compute the byte offset it
passes to pystackd's line table (see the module docs of `linetable.rs`).

For frames in several states it reads the raw instruction field out of the frame's memory
(3.8/3.9 and 3.10 `PyFrameObject.f_lasti`; 3.11/3.12 `_PyInterpreterFrame.prev_instr`,
3.13+ `instr_ptr`), turns it into a byte offset the way the walker is told to, and
records it next to the frame's own `f_lineno` (`PyFrame_GetLineNumber`) and the code's
raw table. It also checks that offset against the interpreter's `frame.f_lasti`, which
validates the struct offsets used here. Output: JSON on stdout.

The struct offsets below are for 64-bit GIL builds and come from the headers of each
version (`cpython/frameobject.h` up to 3.10, `internal/pycore_frame.h` /
`pycore_interpframe_structs.h` after).
"""

import ctypes
import json
import platform
import sys

VERSION = sys.version_info[:2]

if VERSION < (3, 10):
    # PyObject_VAR_HEAD, f_back, f_code, f_builtins, f_globals, f_locals, f_valuestack,
    # f_stacktop, f_trace, 2 chars (padded), f_gen, then int f_lasti.
    F_LASTI = 104
    UNIT_SCALE = 1  # f_lasti counts bytes
elif VERSION == (3, 10):
    # ... f_valuestack, f_trace, int f_stackdepth + 2 chars, f_gen, then int f_lasti.
    F_LASTI = 96
    UNIT_SCALE = 2  # f_lasti counts code units
else:
    F_FRAME = 24  # PyFrameObject: PyObject_HEAD, f_back, f_frame
    INSTR = 56  # 8th pointer of _PyInterpreterFrame: prev_instr (3.11/3.12), instr_ptr


def raw_byte_offset(frame):
    if VERSION <= (3, 10):
        lasti = ctypes.c_int.from_address(id(frame) + F_LASTI).value
        return lasti * UNIT_SCALE if lasti >= 0 else lasti
    iframe = ctypes.c_void_p.from_address(id(frame) + F_FRAME).value
    instr = ctypes.c_void_p.from_address(iframe + INSTR).value
    # tp_basicsize of code objects is offsetof(PyCodeObject, co_code_adaptive).
    code_adaptive = id(frame.f_code) + type(frame.f_code).__basicsize__
    return instr - code_adaptive


def table(code):
    return code.co_lnotab if VERSION < (3, 10) else code.co_linetable


RESULTS = []


def record(label, frame):
    code = frame.f_code
    offset = raw_byte_offset(frame)
    # frame.f_lasti is the interpreter's own view in bytes (-1 when not started).
    python_lasti = frame.f_lasti
    RESULTS.append(
        {
            "label": label,
            "name": code.co_name,
            "first_line": code.co_firstlineno,
            "table_hex": table(code).hex(),
            "byte_offset": offset,
            "f_lasti": python_lasti,
            "f_lineno": frame.f_lineno,
            "offset_matches_f_lasti": offset == python_lasti
            or (offset < 0 and python_lasti == -1),
        }
    )


def callee(depth):
    me = sys._getframe()
    record("running frame", me)
    record("caller frame (in a call)", me.f_back)
    return depth


def caller():
    return callee(
        1
    )


def gen():
    yield sys._getframe()
    yield 2


def wide_call(*args):
    record("caller frame (call with EXTENDED_ARG)", sys._getframe().f_back)


def main():
    caller()
    g = gen()
    if getattr(g, "gi_frame", None) is not None:
        record("generator not started", g.gi_frame)
    next(g)
    record("generator suspended", g.gi_frame)
    # 300 positional arguments: the call's oparg needs an EXTENDED_ARG prefix.
    exec(compile("wide_call(" + ", ".join(str(i) for i in range(300)) + ")", "<wide>", "exec"))
    json.dump({"version": platform.python_version(), "frames": RESULTS}, sys.stdout)


main()
