"""Small blocking test target: one thread, one known chain of calls.

usage: chain_target.py OUT.json DEPTH

The main thread runs <module> -> level(DEPTH) -> ... -> level(0) -> leaf (DEPTH + 3 frames)
and blocks in leaf, reading stdin, on the line that recorded its stack (see groundtruth.py).
Writes {"pid", "version", "threads": [MainThread], "files", "depth"} to OUT.json, prints
READY, exits when stdin closes. Cheap to start many of (daemon tests, benchmarks).
"""

import sys

sys.dont_write_bytecode = True  # keep the source tree clean

import os  # noqa: E402

import groundtruth  # noqa: E402

OUT = sys.argv[1]
DEPTH = int(sys.argv[2])
EXTRA = {
    "target": "chain_target",
    "depth": DEPTH,
    "files": groundtruth.program_files([sys.modules[__name__], groundtruth]),
}


def leaf():
    chunk = groundtruth.publish(OUT, 0, EXTRA) or os.read(0, 65536)
    while chunk:  # until stdin is closed
        chunk = os.read(0, 65536)


def level(n):
    if n == 0:
        leaf()
    else:
        level(n - 1)


level(DEPTH)
