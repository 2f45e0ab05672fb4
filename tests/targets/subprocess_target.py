"""stack --subprocesses test target: starts two Python children with multiprocessing
("fork": each the same interpreter, blocked in its own function, child_one or child_two)
and one child that is not Python (/bin/sh), then blocks reading stdin.

usage: subprocess_target.py OUT.json CHILDREN.json

Writes {"child_one": PID, "child_two": PID, "not_python": PID} to CHILDREN.json and the
usual truth (pid, version, target) to OUT.json, then prints READY. Every child ends when
the parent does (they watch their parent pid), so a killed test leaves nothing behind.
"""

import sys

sys.dont_write_bytecode = True

import json  # noqa: E402
import multiprocessing  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402


def watch_parent(parent):
    while os.getppid() == parent:
        time.sleep(0.2)


def child_one(q, parent):
    q.put(("child_one", os.getpid()))
    watch_parent(parent)


def child_two(q, parent):
    q.put(("child_two", os.getpid()))
    watch_parent(parent)


def main():
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    me = os.getpid()
    procs = [
        ctx.Process(target=f, args=(q, me), daemon=True) for f in (child_one, child_two)
    ]
    for p in procs:
        p.start()
    children = dict(q.get(timeout=60) for _ in procs)
    sh = subprocess.Popen(
        ["/bin/sh", "-c", f"while kill -0 {me} 2>/dev/null; do sleep 0.2; done"]
    )
    children["not_python"] = sh.pid
    with open(sys.argv[2], "w") as f:
        json.dump(children, f)
    with open(sys.argv[1], "w") as f:
        json.dump(
            {"pid": me, "version": platform.python_version(), "target": "subprocess_target"},
            f,
        )
    print("READY", flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
