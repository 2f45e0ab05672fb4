"""Benchmark target for tools/bench-record/run: one thread, DEPTH Python frames deep, runs a
pure-Python loop all the time and counts its iterations, so that a profiler's cost shows as
lost throughput.

usage: target.py DEPTH
Prints "READY" once the loop runs, then "T COUNT" (monotonic seconds, cumulative iterations)
every 0.1 s on stdout; exits when stdin closes.
"""

import sys
import threading
import time

DEPTH = int(sys.argv[1])
count = [0]


def spin():
    c = count
    while True:
        x = 0
        for i in range(1000):
            x += i
        c[0] += 1000


def descend(n):
    if n <= 1:
        spin()
    else:
        descend(n - 1)


def report():
    print("READY", flush=True)
    while True:
        time.sleep(0.1)
        print(f"{time.monotonic():.6f} {count[0]}", flush=True)


# <module>, descend x (DEPTH - 2), spin: DEPTH frames on the worker's stack with the thread's
# own bootstrap frames excluded
threading.Thread(target=descend, args=(max(DEPTH - 2, 1),), daemon=True).start()
threading.Thread(target=report, daemon=True).start()
sys.stdin.read()
