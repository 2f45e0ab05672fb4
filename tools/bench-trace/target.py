"""Benchmark target for tools/bench-trace/run: a thread at a fixed Python depth doing
CPU-bound work, reporting its progress so that a tracer's cost shows as lost throughput.

usage: target.py MODE DEPTH LIB.so
  MODE spin:   the innermost frame runs a pure-Python loop; "count" is loop iterations
  MODE marker: the innermost frame calls LIB.marker_a() through ctypes as fast as it can;
               "count" is calls (each one a uprobe firing when traced)
DEPTH is the number of Python frames on the stack where the work happens (<module>
included). Prints "READY" once the work runs, then "T CPU COUNT" (monotonic seconds, the
working thread's CPU seconds from /proc/self/task/TID/schedstat, cumulative count) every
0.1 s on stdout; exits when stdin closes.
"""

import ctypes
import os
import sys
import threading
import time

MODE, DEPTH, LIB = sys.argv[1], int(sys.argv[2]), sys.argv[3]
MARKER = ctypes.CDLL(LIB).marker_a
count = [0]


def spin_forever():
    c = count
    while True:
        x = 0
        for i in range(1000):
            x += i
        c[0] += 1000


def marker_forever():
    c, m = count, MARKER
    while True:
        for _ in range(100):
            m(1)
        c[0] += 100


def down(n):
    # <module>, main, and the loop function are 3 frames; down() adds the rest
    if n > 0:
        return down(n - 1)
    return spin_forever() if MODE == "spin" else marker_forever()


def report(tid):
    print("READY", flush=True)
    path = "/proc/self/task/%d/schedstat" % tid
    while True:
        time.sleep(0.1)
        with open(path) as f:
            cpu = int(f.read().split()[0]) / 1e9
        print("%.6f %.6f %d" % (time.monotonic(), cpu, count[0]), flush=True)


def watch_stdin():
    sys.stdin.read()
    os._exit(0)


def main():
    threading.Thread(target=report, args=(threading.get_native_id(),), daemon=True).start()
    threading.Thread(target=watch_stdin, daemon=True).start()
    down(DEPTH - 4)


main()
