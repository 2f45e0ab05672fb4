"""Busy test target: threads never block; their Python stacks change all the time.

usage: busy_target.py OUT.json [--threads N] [--self-check N]
  (env PYSTACKD_TARGET_THREADS, default 3; --self-check N: before READY, sample the workers'
  stacks N times with sys._current_frames() and exit 3 if a frame is outside the lists)

Worker threads are started with _thread (not threading) so that, once READY is printed, every
Python frame of the process is in this file: the workers run only the functions below and the
main thread blocks reading stdin. Writes {"pid", "version", "functions": every co_name of the
code objects this interpreter compiles from this file, "files": [this file]} to OUT.json,
prints READY, exits when stdin closes. A stack read from this process must never hold a
function or file outside those lists.
"""

import sys

sys.dont_write_bytecode = True

import _thread  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402


def step(x):
    # cheap pseudo-random numbers: pure arithmetic, no library calls
    return (x * 1103515245 + 12345) & 0x7FFFFFFF


def recurse(n, x):
    if n <= 0:
        return leaf(x)
    if x & 1:
        return recurse(n - 1, step(x))
    return other_file_like(n - 1, step(x))


def other_file_like(n, x):
    return recurse(n, x) + 1


def leaf(x):
    total = 0
    for i in range(x & 15):
        total += i * i
    return total


def numbers(n, x):
    for _ in range(n):
        x = step(x)
        yield x & 255


class Shape:
    def __init__(self, x):
        self.x = x

    @classmethod
    def make(cls, x):
        return cls(x)

    @staticmethod
    def scale(v):
        return v * 3

    def area(self):
        def inner(k):
            return Shape.scale(k) + self.x

        return inner(self.x & 7)


def raises(x):
    if x & 3 == 0:
        raise ValueError(x)
    return x


def work(seed):
    x = seed
    while True:
        x = step(x)
        kind = x % 6
        if kind == 0:
            recurse(x % 30, x)
        elif kind == 1:
            sum(v for v in numbers(x % 20, x))
        elif kind == 2:
            Shape.make(x).area()
        elif kind == 3:
            f = lambda v: leaf(v) + 1  # noqa: E731
            [f(v) for v in range(x % 5)]
        elif kind == 4:
            try:
                raises(x)
            except ValueError:
                pass
        else:
            sorted(range(x % 9), key=lambda v: step(v) & 7)


def code_objects(code):
    yield code
    for c in code.co_consts:
        if hasattr(c, "co_code"):
            yield from code_objects(c)


def functions_of(path):
    with open(path, "rb") as fh:
        code = compile(fh.read(), path, "exec")
    return sorted({c.co_name for c in code_objects(code)})


def write_atomically(path, obj):
    data = json.dumps(obj, ensure_ascii=False, indent=1).encode("utf-8", "surrogateescape")
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def option(argv, name, env, default):
    flag = "--" + name
    for i, a in enumerate(argv):
        if a == flag and i + 1 < len(argv):
            return int(argv[i + 1])
        if a.startswith(flag + "="):
            return int(a[len(flag) + 1:])
    return int(os.environ.get(env, default))


def self_check(samples, functions, files):
    me = _thread.get_ident()
    seen = set()
    for _ in range(samples):
        for tid, f in sys._current_frames().items():
            if tid == me:
                continue
            while f is not None:
                code = f.f_code
                if code.co_name not in functions or code.co_filename not in files:
                    sys.stderr.write("busy_target: foreign frame %s %s\n" % (code.co_filename, code.co_name))
                    sys.exit(3)
                seen.add(code.co_name)
                f = f.f_back
        time.sleep(0.0005)  # lets the workers run (and move) between samples
    return sorted(seen)


def wait_running(nthreads, timeout=30.0):
    # READY promises busy workers: wait until each has a Python frame
    deadline = time.monotonic() + timeout
    while len(sys._current_frames()) < nthreads + 1:
        if time.monotonic() > deadline:
            sys.stderr.write("busy_target: workers did not start\n")
            sys.exit(3)
        time.sleep(0.001)


def wait_for_stdin_eof():
    while os.read(0, 65536):
        pass


def main():
    out = sys.argv[1]
    nthreads = option(sys.argv[2:], "threads", "PYSTACKD_TARGET_THREADS", 3)
    checks = option(sys.argv[2:], "self-check", "PYSTACKD_TARGET_SELF_CHECK", 0)
    me = __file__
    functions = functions_of(me)
    for k in range(nthreads):
        _thread.start_new_thread(work, (k * 7919 + 1,))
    wait_running(nthreads)
    seen = self_check(checks, functions, [me])
    write_atomically(out, {
        "pid": os.getpid(),
        "version": platform.python_version(),
        "target": "busy_target",
        "worker_threads": nthreads,
        "functions": functions,
        "files": [me],
        "self_check": {"samples": checks, "functions_seen": seen},
    })
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    wait_for_stdin_eof()


if __name__ == "__main__":
    main()
