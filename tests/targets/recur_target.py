"""Moving test target: worker threads recurse recur_a <-> recur_b to a depth that changes
all the time (50..950 by default), never blocking.

usage: recur_target.py OUT.json [--threads N] [--min-depth N] [--max-depth N]

Every Python frame of a worker is one of: run (outermost), recur_a, recur_b (alternating,
recur_a directly inside run), and innermost possibly step or leaf. Each frame that is not the
innermost stands on the line that makes its call, marked `# CALL` below. The target finds those
lines in its own source and writes them to OUT.json ("call_lines": function -> the lines it
may call from), with "functions", "files", "min_depth", "max_depth", then prints READY. The
main thread blocks reading stdin in wait_for_stdin_eof (called from main, called from
<module>) and exits when stdin closes.

So a stack read from this process is possible only if it follows that grammar: a torn read
(a chain cut short, a frame reused for another call, recur_b inside recur_b) is not.
"""

import sys

sys.dont_write_bytecode = True

import _thread  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402


def step(x):
    return (x * 1103515245 + 12345) & 0x7FFFFFFF


def leaf(x):
    total = 0
    for i in range(x & 31):
        total += i * i
    return total


def recur_a(n, x):
    if n <= 0:
        return leaf(x)  # CALL
    return recur_b(n - 1, step(x)) + 1  # CALL


def recur_b(n, x):
    if n <= 0:
        return leaf(x)  # CALL
    return recur_a(n - 1, step(x)) + 1  # CALL


def run(seed, lo, hi):
    x = seed
    while True:
        x = step(x)  # CALL
        recur_a(lo + x % (hi - lo + 1), x)  # CALL


def call_lines(path):
    """Function name -> lines marked `# CALL` inside it (from this file's own text)."""
    out = {}
    current = None
    with open(path, encoding="utf-8") as fh:
        for number, text in enumerate(fh, 1):
            if text.startswith("def "):
                current = text[4:text.index("(")]
            if text.rstrip().endswith("# CALL"):
                out.setdefault(current, []).append(number)
    return out


def option(argv, name, default):
    flag = "--" + name
    for i, a in enumerate(argv):
        if a == flag and i + 1 < len(argv):
            return int(argv[i + 1])
    return default


def write_atomically(path, obj):
    data = json.dumps(obj, ensure_ascii=False, indent=1).encode("utf-8", "surrogateescape")
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def wait_for_stdin_eof():
    while os.read(0, 65536):  # CALL
        pass


def main():
    out = sys.argv[1]
    nthreads = option(sys.argv[2:], "threads", 2)
    lo = option(sys.argv[2:], "min-depth", 50)
    hi = option(sys.argv[2:], "max-depth", 950)
    sys.setrecursionlimit(hi * 2 + 1000)
    # deep recursion needs more than the default thread stack on some builds
    _thread.stack_size(64 * 1024 * 1024)
    for k in range(nthreads):
        _thread.start_new_thread(run, (k * 7919 + 1, lo, hi))
    deadline = time.monotonic() + 30
    while len(sys._current_frames()) < nthreads + 1:
        if time.monotonic() > deadline:
            sys.stderr.write("recur_target: workers did not start\n")
            sys.exit(3)
        time.sleep(0.001)
    lines = call_lines(__file__)
    lines["<module>"] = [n for n, t in enumerate(open(__file__, encoding="utf-8"), 1)
                         if t.startswith("    main()")]
    write_atomically(out, {
        "pid": os.getpid(),
        "version": platform.python_version(),
        "target": "recur_target",
        "worker_threads": nthreads,
        "functions": ["<module>", "main", "wait_for_stdin_eof", "run", "recur_a", "recur_b", "step", "leaf"],
        "files": [__file__],
        "call_lines": lines,
        # who may call whom: the program's structure, read off the functions above
        "callees": {
            "<module>": ["main"], "main": ["wait_for_stdin_eof"], "wait_for_stdin_eof": [],
            "run": ["step", "recur_a"], "recur_a": ["recur_b", "step", "leaf"],
            "recur_b": ["recur_a", "step", "leaf"], "step": [], "leaf": [],
        },
        "min_depth": lo,
        "max_depth": hi,
    })
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    wait_for_stdin_eof()  # CALL


if __name__ == "__main__":
    main()
