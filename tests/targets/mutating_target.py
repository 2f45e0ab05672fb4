"""Test target for torn reads of `stack --locals`: the main thread blocks with a list `lst`
and a dict `dct` as locals while a worker replaces their contents continuously. By
construction `lst` is always `[k] * n` and `dct` always `{0: k, 1: k, ..., m-1: k}` for some
k, n, m, so any value shown is checkable.

usage: mutating_target.py OUT.json
"""

import json
import os
import platform
import sys
import threading


def mutate(lst, dct):
    k = 0
    while True:
        k = (k + 1) % 1000
        n = k % 23
        lst[:] = [k] * n
        dct.clear()
        for i in range(k % 17):
            dct[i] = k


def holder(out):
    lst = []
    dct = {}
    t = threading.Thread(target=mutate, args=(lst, dct), name="mutator", daemon=True)
    t.start()
    # not groundtruth.publish(): the mutator's stack never holds still for its agreement check
    # the mutator's ids: the thread a half-updated value must be marked with
    mutator = {"ident": t.ident, "native_id": t.native_id, "name": t.name, "frames": []}
    with open(out + ".tmp", "w") as f:
        json.dump({"pid": os.getpid(), "version": platform.python_version(),
                   "target": "mutating_target", "threads": [mutator]}, f)
    os.rename(out + ".tmp", out)
    print("READY", flush=True)
    os.read(0, 1)


if __name__ == "__main__":
    holder(sys.argv[1])
