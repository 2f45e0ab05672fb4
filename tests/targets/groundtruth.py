"""Ground truth for pystackd's test targets: the interpreter's own view of every thread's stack.

Protocol shared by the blocking targets (main_target.py, nested_eval.py):
  * every worker thread, in its innermost Python function, runs the single line
        os.write(READY_W, b".") and os.read(BLOCK_R, 1)
    os.write and os.read are C functions, so once the byte arrived the thread is on that line
    with no deeper Python frame, and it stays there (BLOCK_R is never written);
  * the main thread calls publish() on the same line as its own blocking read of stdin
    (see block_main()), so the stack recorded for it is the stack it has while blocked;
  * publish() waits for one byte per worker, reads sys._current_frames() until two reads
    50 ms apart agree, writes the JSON to a temp file renamed onto the target path, then
    prints READY on stdout.
Works on CPython 3.8 .. 3.15; only the standard library is used.
"""

import json
import os
import platform
import select
import sys
import threading
import time
import traceback

READY_R, READY_W = os.pipe()
BLOCK_R, BLOCK_W = os.pipe()  # never written: os.read(BLOCK_R, 1) blocks forever


def frame_record(f):
    code = f.f_code
    return {
        "filename": code.co_filename,
        "line": f.f_lineno,
        "function": code.co_name,
        "qualname": getattr(code, "co_qualname", None),  # 3.11+
        "first_line": code.co_firstlineno,
    }


def stack_of(f):
    """Frames from f outwards, innermost first; cross-checked against traceback's view."""
    frames = []
    while f is not None:
        frames.append(frame_record(f))
        f = f.f_back
    return frames


def check_against_traceback(frames, f):
    tb = list(reversed(traceback.extract_stack(f)))
    ours = [(x["filename"], x["line"], x["function"]) for x in frames]
    theirs = [(s.filename, s.lineno, s.name) for s in tb]
    if ours != theirs:
        raise RuntimeError("frame walk and traceback.extract_stack disagree:\n%r\n%r" % (ours, theirs))


def os_thread_name(native_id):
    # what the OS calls the thread (pystackd reports this one); Linux only
    try:
        with open("/proc/self/task/%d/comm" % native_id, "rb") as fh:
            return fh.read().rstrip(b"\n").decode("utf-8", "surrogateescape")
    except OSError:
        return None


def wait_ready(n, timeout):
    got = 0
    deadline = time.monotonic() + timeout
    while got < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError("only %d of %d threads reported ready" % (got, n))
        r, _, _ = select.select([READY_R], [], [], left)
        if r:
            got += len(os.read(READY_R, n - got))


def snapshot(main_frame):
    frames = sys._current_frames()
    threads = threading.enumerate()
    idents = {t.ident for t in threads}
    if set(frames) != idents:
        raise RuntimeError("threads not started by threading: %r" % (set(frames) - idents))
    out = []
    for t in threads:
        f = main_frame if t is threading.main_thread() else frames[t.ident]
        stack = stack_of(f)
        check_against_traceback(stack, f)
        out.append({
            "ident": t.ident,
            "native_id": t.native_id,
            "name": t.name,
            "os_name": os_thread_name(t.native_id),
            "frames": stack,
        })
    out.sort(key=lambda t: t["native_id"])
    return out


def write_atomically(path, obj):
    data = json.dumps(obj, ensure_ascii=False, indent=1).encode("utf-8", "surrogateescape")
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def program_files(modules):
    """Absolute paths of the program's own source files (as their code objects name them)."""
    return sorted({m.__file__ for m in modules})


def publish(path, workers, extra, timeout=30.0):
    """Record every thread's stack once `workers` threads are blocked; write it; print READY.

    The main thread's recorded stack starts at publish()'s caller, which must make its blocking
    call on the same line (block_main)."""
    wait_ready(workers, timeout)
    main_frame = sys._getframe(1)
    prev = snapshot(main_frame)
    deadline = time.monotonic() + timeout
    while True:
        time.sleep(0.05)
        cur = snapshot(main_frame)
        if cur == prev:
            break
        if time.monotonic() > deadline:
            raise RuntimeError("thread stacks did not settle")
        prev = cur
    truth = {
        "pid": os.getpid(),
        "version": platform.python_version(),
        "executable": sys.executable,
        "stdlib_dir": os.path.dirname(threading.__file__),
        "threads": cur,
    }
    truth.update(extra)
    write_atomically(path, truth)
    sys.stdout.write("READY\n")
    sys.stdout.flush()


def block_main(path, workers, extra):
    # publish() and the first blocking read share one line: the stack publish() records for the
    # main thread (this frame at this line, and its callers) is the stack it has while blocked.
    chunk = publish(path, workers, extra) or os.read(0, 65536)
    while chunk:  # until stdin is closed
        chunk = os.read(0, 65536)


def start_thread(name, target, *args):
    t = threading.Thread(name=name, target=target, args=args, daemon=True)
    t.start()
    return t


def option(argv, name, env, default):
    """--name N from argv, else $env, else default."""
    flag = "--" + name
    for i, a in enumerate(argv):
        if a == flag and i + 1 < len(argv):
            return int(argv[i + 1])
        if a.startswith(flag + "="):
            return int(a[len(flag) + 1:])
    return int(os.environ.get(env, default))
