"""Thread-name target: threads named through `threading`, and one that has no such name.

usage: names_target.py OUT.json

Starts, besides MainThread:
  * threading.Thread(name=...) workers with ASCII, Latin-1, BMP and astral names, and one
    longer than the OS's 15-byte thread names;
  * a threading.Thread without a name (threading names it "Thread-N ..." itself);
  * a thread named "before-rename", renamed to "renamed" by the main thread after it started;
  * a thread started with _thread.start_new_thread: no threading.Thread, no entry in
    threading._active (it never calls threading.current_thread(), which would register
    one), so the only name it has is the OS's.
Every thread reports its ident and native id, then blocks in os.read. The main thread then
writes {"pid", "version", "target", "threads": [{ident, native_id, name, os_name,
threading, frames: []}]}: `name` is the name pystackd must show (the threading name, or
the OS's for the _thread thread), `os_name` the OS's (/proc/self/task/TID/comm, read after
the rename), prints READY and blocks reading stdin until it is closed, doing what each
line read says: `rename NAME` renames the renamed thread again, `start NAME` starts one
more threading.Thread named NAME.
"""

import sys

sys.dont_write_bytecode = True  # keep the source tree clean

import _thread  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import threading  # noqa: E402

import groundtruth  # noqa: E402

OUT = sys.argv[1]
BLOCK_R, BLOCK_W = os.pipe()  # never written: os.read(BLOCK_R, 1) blocks forever

lock = threading.Lock()
reported = []  # (ident, native_id, threading name or None)
all_reported = threading.Event()
NAMED = [
    "worker-1",
    "worker-2",
    "wörker-ü",  # Latin-1 (1-byte kind, not ASCII)
    "作業者-3",  # BMP (2-byte kind)
    "worker-\U0001F600",  # astral (4-byte kind)
    "a-thread-name-longer-than-the-os-allows-x",
]
# named, unnamed, before-rename, raw
EXPECTED = 1 + len(NAMED) + 1 + 1 + 1


def report(name):
    with lock:
        reported.append((_thread.get_ident(), threading.get_native_id(), name))
        if len(reported) == EXPECTED:
            all_reported.set()


def worker():
    report(threading.current_thread().name)
    os.read(BLOCK_R, 1)


def raw_worker():
    # no threading.current_thread() here: it would register a _DummyThread
    report(None)
    os.read(BLOCK_R, 1)


def main():
    report(threading.current_thread().name)
    threads = [threading.Thread(name=n, target=worker, daemon=True) for n in NAMED]
    threads.append(threading.Thread(target=worker, daemon=True))
    renamed = threading.Thread(name="before-rename", target=worker, daemon=True)
    threads.append(renamed)
    for t in threads:
        t.start()
    _thread.start_new_thread(raw_worker, ())
    if not all_reported.wait(30):
        raise RuntimeError("only %d of %d threads reported" % (len(reported), EXPECTED))
    renamed.name = "renamed"
    out = []
    for ident, native_id, name in reported:
        if ident == renamed.ident:
            name = renamed.name
        os_name = groundtruth.os_thread_name(native_id)
        out.append({
            "ident": ident,
            "native_id": native_id,
            "name": name if name is not None else os_name,
            "os_name": os_name,
            "threading": name is not None,
            "frames": [],
        })
    out.sort(key=lambda t: t["native_id"])
    groundtruth.write_atomically(OUT, {
        "pid": os.getpid(),
        "version": platform.python_version(),
        "target": "names_target",
        "threads": out,
    })
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    pending = b""
    chunk = os.read(0, 65536)
    while chunk:  # until stdin is closed
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            command, _, arg = line.decode("utf-8").partition(" ")
            if command == "rename":
                renamed.name = arg
            elif command == "start":
                threading.Thread(name=arg, target=worker, daemon=True).start()
        chunk = os.read(0, 65536)


main()
