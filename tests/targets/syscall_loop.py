"""Busy test target for `pystackd annotate` on `perf record` samples: every worker thread makes a
cheap system call over and over without its Python stack ever changing, so each syscall-entry
(or cpu-clock) sample of a worker is taken with the stack the ground truth recorded.

usage: syscall_loop.py OUT.json [--threads N]   (env PYSTACKD_TARGET_THREADS; default 2)

Threads: spin-K (sorted(key=) -> sort_key -> middle -> spin; on 3.11+ the C->Python call of
sorted() starts a second eval-loop call), spinning in spin() on the single line
    while True: os.getppid()
so the recorded line is that line whenever the thread runs Python code. The main thread blocks
reading stdin. Same ground truth format as main_target.py (see groundtruth.py), except that the
workers never block: publish() still waits until two snapshots 50 ms apart agree.
"""

import sys

sys.dont_write_bytecode = True

import os  # noqa: E402

import groundtruth  # noqa: E402
from groundtruth import READY_W  # noqa: E402


def spin():
    # innermost: signal once, then stay on one line forever (os.getppid is a C function that
    # makes the getppid syscall and never calls back into Python)
    os.write(READY_W, b".")
    while True: os.getppid()  # noqa: E701


def middle(x):
    return spin()


def sort_key(x):
    # called by sorted (C)
    return middle(x)


def spinner(k):
    return sorted([k], key=sort_key)


def main():
    out = sys.argv[1]
    n = groundtruth.option(sys.argv[2:], "threads", "PYSTACKD_TARGET_THREADS", 2)
    workers = [("spin-%d" % k, spinner, k) for k in range(n)]
    for w in workers:
        groundtruth.start_thread(*w)
    mods = [sys.modules[__name__], groundtruth]
    groundtruth.block_main(out, len(workers), {
        "target": "syscall_loop",
        "files": groundtruth.program_files(mods),
        "exec_filenames": [],
    })


if __name__ == "__main__":
    main()
