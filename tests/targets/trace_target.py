"""Trace test target: one worker thread runs CPU-bound Python all the time; two Python
call paths, each the only caller of one C function of a small test library (called on
one pass in 32: a few hundred times a second, a rate a tracer's output keeps up with; every
pass, thousands a second on fast builds, most records would be lost).

usage: trace_target.py OUT.json LIB.so

LIB.so (built by the test from marker.c) exports marker_a() and marker_b(). marker_a is
called only by a_inner (path worker > a_outer > a_mid > a_inner), marker_b only by b_inner
(path worker > b_outer > b_inner): a uprobe on either must always see exactly that Python
path. Everything else the worker runs is `spin`, called from the functions listed in
"callees", so every Python stack of the worker is a path through "callees" starting at
"worker". The worker is started with _thread (no threading frames); the main thread blocks
reading stdin and exits when it closes. Writes {"pid", "version", "target", "files",
"callees", "worker_native_id"} to OUT.json, then prints READY.
"""

import sys

sys.dont_write_bytecode = True

import _thread  # noqa: E402
import ctypes  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

LIB = ctypes.CDLL(sys.argv[2])
# bound once: CDLL.__getattr__ is Python code, the bound function is not
MARKER_A = LIB.marker_a
MARKER_B = LIB.marker_b


def spin(n):
    total = 0
    for i in range(n):
        total += i * i
    return total


def a_inner(x):
    spin(500)
    if x & 31:
        return x
    return MARKER_A(x)


def a_mid(x):
    spin(800)
    return a_inner(x) + 1


def a_outer(x):
    return a_mid(x) + spin(300)


def b_inner(x):
    spin(800)
    if x & 31:
        return x
    return MARKER_B(x)


def b_outer(x):
    spin(500)
    return b_inner(x)


CALLEES = {
    "worker": ["a_outer", "b_outer"],
    "a_outer": ["a_mid", "spin"],
    "a_mid": ["a_inner", "spin"],
    "a_inner": ["spin"],
    "b_outer": ["b_inner", "spin"],
    "b_inner": ["spin"],
    "spin": [],
}

started = []


def worker():
    started.append(_thread.get_native_id() if hasattr(_thread, "get_native_id") else 0)
    x = 0
    while True:
        x = (x + 1) & 0xFFFF
        a_outer(x)
        b_outer(x)


def main():
    _thread.start_new_thread(worker, ())
    while not started:
        time.sleep(0.001)
    with open(sys.argv[1], "w") as f:
        json.dump(
            {
                "pid": os.getpid(),
                "version": platform.python_version(),
                "target": "trace_target",
                "files": [os.path.abspath(__file__)],
                "callees": CALLEES,
                "worker_native_id": started[0],
            },
            f,
        )
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    sys.stdin.read()
    os._exit(0)


main()
