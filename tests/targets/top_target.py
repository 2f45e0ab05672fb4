"""Top test target: one worker thread runs CPU-bound Python all the time, alternating between
two functions, heavy() and light(), with three times as many loop iterations in heavy() as in
light() (so about 75 % and 25 % of its time), and times them itself.

usage: top_target.py OUT.json SHARES.json

The worker (started with _thread: run, then heavy or light innermost, nothing else) adds up
the time.perf_counter() time spent in each call and in its whole loop. A reporter thread
writes those sums to SHARES.json every 0.5 s: {"heavy_s", "light_s", "wall_s", "rounds"},
cumulative since the worker started, so a test reads them before and after a profiler runs
and takes the difference. Writes {"pid", "version", "target", "files", "functions",
"worker_threads"} to OUT.json, then prints READY. The main thread blocks reading stdin in
wait_for_stdin_eof and exits when stdin closes.
"""

import sys

sys.dont_write_bytecode = True

import _thread  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

HEAVY_LOOPS = 30000
LIGHT_LOOPS = HEAVY_LOOPS // 3

# written by the worker, read by the reporter (floats: a torn pair is at most one round old)
TOTALS = {"heavy_s": 0.0, "light_s": 0.0, "wall_s": 0.0, "rounds": 0}


def heavy(n):
    total = 0
    for i in range(n):
        total += i * i
    return total


def light(n):
    total = 0
    for i in range(n):
        total += i * i
    return total


def run():
    clock = time.perf_counter
    start = clock()
    heavy_s = light_s = 0.0
    rounds = 0
    while True:
        t0 = clock()
        heavy(HEAVY_LOOPS)
        t1 = clock()
        light(LIGHT_LOOPS)
        t2 = clock()
        heavy_s += t1 - t0
        light_s += t2 - t1
        rounds += 1
        TOTALS["heavy_s"] = heavy_s
        TOTALS["light_s"] = light_s
        TOTALS["wall_s"] = t2 - start
        TOTALS["rounds"] = rounds


def write_atomically(path, obj):
    data = json.dumps(obj, ensure_ascii=False, indent=1).encode("utf-8", "surrogateescape")
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def report(path):
    while True:
        write_atomically(path, dict(TOTALS))
        time.sleep(0.5)


def wait_for_stdin_eof():
    while os.read(0, 65536):
        pass


def main():
    out, shares = sys.argv[1], sys.argv[2]
    _thread.start_new_thread(run, ())
    deadline = time.monotonic() + 30
    while TOTALS["rounds"] < 1:
        if time.monotonic() > deadline:
            sys.stderr.write("top_target: the worker did not start\n")
            sys.exit(3)
        time.sleep(0.001)
    write_atomically(shares, dict(TOTALS))
    _thread.start_new_thread(report, (shares,))
    write_atomically(out, {
        "pid": os.getpid(),
        "version": platform.python_version(),
        "target": "top_target",
        "worker_threads": 1,
        "functions": ["<module>", "main", "wait_for_stdin_eof", "run", "heavy", "light",
                      "report", "write_atomically"],
        "files": [__file__],
    })
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    wait_for_stdin_eof()


if __name__ == "__main__":
    main()
