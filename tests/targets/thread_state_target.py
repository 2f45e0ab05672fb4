"""Thread-state target: threads each doing one known thing, named after it.

usage: thread_state_target.py OUT.json [SPINNERS]

Starts, besides MainThread (which ends up blocked in os.read of stdin):
  * "sleep": time.sleep(3600);
  * "lock": acquire() of a threading.Lock the main thread holds;
  * "read": os.read of a pipe nobody writes;
  * SPINNERS (default 0) threads "spin-N" adding 1 to a local forever: CPU-bound Python
    code, which needs the GIL (with more than one they take turns holding it).
Every thread reports its ident and native id before its call. The main thread then waits
until the kernel (/proc/self/task/TID/stat) shows the sleep, lock and read threads asleep,
writes {"pid", "version", "target", "threads": [{ident, native_id, name, os_name,
frames: []}]} (the name says what the thread does), prints READY and blocks reading stdin
until it is closed.
"""

import sys

sys.dont_write_bytecode = True  # keep the source tree clean

import _thread  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import groundtruth  # noqa: E402

OUT = sys.argv[1]
SPINNERS = int(sys.argv[2]) if len(sys.argv) > 2 else 0
BLOCK_R, BLOCK_W = os.pipe()  # never written: os.read(BLOCK_R, 1) blocks forever
held = threading.Lock()
held.acquire()

mutex = threading.Lock()
reported = {}  # name -> (ident, native_id)
all_reported = threading.Event()
BLOCKING = ["sleep", "lock", "read"]
EXPECTED = len(BLOCKING) + SPINNERS


def report():
    me = threading.current_thread()
    with mutex:
        reported[me.name] = (_thread.get_ident(), threading.get_native_id())
        if len(reported) == EXPECTED:
            all_reported.set()


def sleep():
    report()
    time.sleep(3600)


def lock():
    report()
    held.acquire()


def read():
    report()
    os.read(BLOCK_R, 1)


def spin():
    report()
    x = 0
    while True:
        x += 1


def asleep(native_id):
    # the kernel's word: S (interruptible sleep) or D
    with open("/proc/self/task/%d/stat" % native_id, "rb") as fh:
        stat = fh.read()
    return stat[stat.rindex(b")") + 2:][:1] in (b"S", b"D")


def main():
    threads = [threading.Thread(name=n, target=globals()[n], daemon=True) for n in BLOCKING]
    threads += [threading.Thread(name="spin-%d" % i, target=spin, daemon=True)
                for i in range(SPINNERS)]
    for t in threads:
        t.start()
    if not all_reported.wait(30):
        raise RuntimeError("only %d of %d threads reported" % (len(reported), EXPECTED))
    deadline = time.monotonic() + 30
    while not all(asleep(reported[n][1]) for n in BLOCKING):
        if time.monotonic() > deadline:
            raise RuntimeError("the blocking threads did not fall asleep")
        time.sleep(0.01)
    out = [{
        "ident": threading.main_thread().ident,
        "native_id": threading.get_native_id(),
        "name": "MainThread",
        "os_name": groundtruth.os_thread_name(threading.get_native_id()),
        "frames": [],
    }]
    for name, (ident, native_id) in reported.items():
        out.append({
            "ident": ident,
            "native_id": native_id,
            "name": name,
            "os_name": groundtruth.os_thread_name(native_id),
            "frames": [],
        })
    out.sort(key=lambda t: t["native_id"])
    groundtruth.write_atomically(OUT, {
        "pid": os.getpid(),
        "version": platform.python_version(),
        "target": "thread_state_target",
        "threads": out,
    })
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    while os.read(0, 65536):  # until stdin is closed
        pass


main()
