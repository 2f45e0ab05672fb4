"""Blocking test target: threads park in known Python stacks, then the ground truth is written.

usage: main_target.py OUT.json [--depth N] [--extra-threads N]
  (env PYSTACKD_TARGET_DEPTH, PYSTACKD_TARGET_EXTRA_THREADS; defaults 40 and 0)

Threads (names fixed): deep-recursion (target_lib <-> módulo_ñ, --depth levels), methods
(classmethod -> staticmethod -> method -> closure -> lambda -> decorator wrapper), generator-
coroutine (a coroutine driven by send() iterating a generator that blocks), asyncio (a coroutine
awaited under asyncio.run blocks the loop), sorted-key (sorted() calls back a blocking key),
exec-code (exec'd <string> code calling compile()d code named <pystackd-generated>),
big-function (calls 300+ lines apart), non-ascii-ñ (method of a class with a non-ASCII name),
extra-K (optional). The main thread blocks reading stdin. See groundtruth.py for the protocol.
Writes {"pid", "version", "threads": [{"ident", "native_id", "name", "frames": [innermost
first]}], "files", "exec_filenames", ...} to OUT.json, prints READY, exits when stdin closes.
"""

import sys

sys.dont_write_bytecode = True  # keep the source tree clean

import asyncio  # noqa: E402
import os  # noqa: E402

import big_function  # noqa: E402
import groundtruth  # noqa: E402
import módulo_ñ  # noqa: E402
import target_lib  # noqa: E402
from groundtruth import BLOCK_R, READY_W  # noqa: E402

EXEC_NAME = "<pystackd-generated>"


def deep_recursion(depth):
    target_lib.descend(depth)


def methods():
    target_lib.Widget.build(3)


def produce():
    yield 1
    yield os.write(READY_W, b".") and os.read(BLOCK_R, 1)


async def consume():
    total = 0
    for x in produce():
        total += x
    return total


def drive(coro):
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value


def generator_coroutine():
    drive(consume())


async def async_leaf():
    return os.write(READY_W, b".") and os.read(BLOCK_R, 1)


async def async_middle():
    return await async_leaf()


def run_asyncio():
    asyncio.run(async_middle())


def sorted_key():
    return sorted([3, 1, 2], key=target_lib.sort_key_that_blocks)


def exec_code():
    ns = {"os": os, "READY_W": READY_W, "BLOCK_R": BLOCK_R}
    leaf = "def generated_leaf():\n    return os.write(READY_W, b'.') and os.read(BLOCK_R, 1)\n"
    exec(compile(leaf, EXEC_NAME, "exec"), ns)
    exec("def string_middle():\n    return generated_leaf()\n\nstring_middle()\n", ns)


def big():
    big_function.far_with_statements(1)


def non_ascii():
    módulo_ñ.Clase_ñ().método_ñ()


def extra(k):
    return os.write(READY_W, b".") and os.read(BLOCK_R, 1)


def main():
    out = sys.argv[1]
    depth = groundtruth.option(sys.argv[2:], "depth", "PYSTACKD_TARGET_DEPTH", 40)
    extras = groundtruth.option(sys.argv[2:], "extra-threads", "PYSTACKD_TARGET_EXTRA_THREADS", 0)
    if depth > sys.getrecursionlimit() - 100:
        sys.setrecursionlimit(depth + 200)
    workers = [
        ("deep-recursion", deep_recursion, depth),
        ("methods", methods),
        ("generator-coroutine", generator_coroutine),
        ("asyncio", run_asyncio),
        ("sorted-key", sorted_key),
        ("exec-code", exec_code),
        ("big-function", big),
        ("non-ascii-ñ", non_ascii),
    ]
    workers += [("extra-%d" % k, extra, k) for k in range(extras)]
    for w in workers:
        groundtruth.start_thread(*w)
    mods = [sys.modules[__name__], big_function, groundtruth, módulo_ñ, target_lib]
    groundtruth.block_main(out, len(workers), {
        "target": "main_target",
        "depth": depth,
        "files": groundtruth.program_files(mods),
        "exec_filenames": ["<string>", EXEC_NAME],
    })


if __name__ == "__main__":
    main()
