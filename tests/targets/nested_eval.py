"""Blocking test target for `pystackd annotate`: C code calls back into Python several times, so
one native stack holds several eval-loop frames (on 3.11+ each C->Python call re-enters
_PyEval_EvalFrameDefault; up to 3.10 every Python frame has its own).

usage: nested_eval.py OUT.json [--threads N]   (env PYSTACKD_TARGET_THREADS; default 2)

Threads: callbacks-K (sorted(key=) -> list(map()) -> functools.reduce() -> blocking os.read),
sleeper (getattr() -> property -> min(key=) -> time.sleep inside the innermost function).
The main thread blocks reading stdin. Same ground truth format as main_target.py (see
groundtruth.py).
"""

import sys

sys.dont_write_bytecode = True

import functools  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402

import groundtruth  # noqa: E402
from groundtruth import BLOCK_R, READY_W  # noqa: E402


def reduce_step(acc, item):
    # third Python level, called by functools.reduce (C)
    return os.write(READY_W, b".") and os.read(BLOCK_R, 1)


def map_callback(x):
    # second Python level, called by map (C) while list() consumes it
    return functools.reduce(reduce_step, [x, x + 1], 0)


def sort_key(x):
    # first Python level, called by sorted (C)
    return list(map(map_callback, [x, x + 1]))


def callbacks(k):
    return sorted([k, k + 1, k + 2], key=sort_key)


def sleep_key(x):
    return os.write(READY_W, b".") and time.sleep(1e6)


class Holder:
    @property
    def smallest(self):
        # called by getattr (C); calls min (C) which calls back sleep_key
        return min([1, 2], key=sleep_key)


def sleeper():
    return getattr(Holder(), "smallest")


def main():
    out = sys.argv[1]
    n = groundtruth.option(sys.argv[2:], "threads", "PYSTACKD_TARGET_THREADS", 2)
    workers = [("callbacks-%d" % k, callbacks, k) for k in range(n)]
    workers.append(("sleeper", sleeper))
    for w in workers:
        groundtruth.start_thread(*w)
    mods = [sys.modules[__name__], groundtruth]
    groundtruth.block_main(out, len(workers), {
        "target": "nested_eval",
        "files": groundtruth.program_files(mods),
        "exec_filenames": [],
    })


if __name__ == "__main__":
    main()
