"""Blocking test target: the main thread blocks at the end of a chain made of every kind of
call that CPython 3.11+ makes inline (a Python frame pushed by the eval loop itself, no C
call between), each call site warmed up first so that its instruction is specialised:

    <module> -> run -> Box(0)          CALL -> __init__ (CALL_ALLOC_AND_ENTER_INIT, 3.13+)
    __init__ -> self[0]                BINARY_SUBSCR_GETITEM / BINARY_OP_SUBSCR_GETITEM
    __getitem__ -> self.prop           LOAD_ATTR_PROPERTY
    prop -> kw(n=1)                    CALL_KW
    kw -> star(*ARGS)                  CALL_FUNCTION_EX
    star -> for x in outer()           FOR_ITER_GEN
    outer -> yield from inner()        SEND_GEN
    inner -> leaf()                    CALL_PY_EXACT_ARGS
    leaf                               blocks reading stdin

(Older versions make some of these through C, with an entry frame between: the stack is the
same.) A reader that checks where a caller stands must read this stack as it is, in both
read modes. Writes {"pid", "version", "threads", "files"} to OUT.json, prints READY, exits
when stdin closes.

With --monitor (3.12+), a sys.monitoring tool watches every line and call of the final
run, so its instructions are the instrumented forms (INSTRUMENTED_LINE, INSTRUMENTED_CALL).

usage: inline_calls.py OUT.json [--monitor]
"""

import sys

sys.dont_write_bytecode = True

import os  # noqa: E402

import groundtruth  # noqa: E402

OUT = sys.argv[1]
EXTRA = {
    "target": "inline_calls",
    "files": groundtruth.program_files([sys.modules[__name__], groundtruth]),
}
BLOCK = False
ARGS = [1]


def leaf():
    if not BLOCK:
        return 1
    chunk = groundtruth.publish(OUT, 0, EXTRA) or os.read(0, 65536)
    while chunk:  # until stdin is closed
        chunk = os.read(0, 65536)
    return 1


def inner():
    yield leaf()


def outer():
    yield from inner()


def star(a):
    for x in outer():
        return x


def kw(n=0):
    return star(*ARGS)


class Box:
    def __init__(self, n):
        self.v = self[n]

    def __getitem__(self, k):
        return self.prop

    @property
    def prop(self):
        return kw(n=1)


def run():
    return Box(0).v


def monitor():
    m = sys.monitoring
    tool = m.DEBUGGER_ID
    m.use_tool_id(tool, "inline_calls")
    events = m.events.LINE | m.events.CALL | m.events.PY_START
    for event in (m.events.LINE, m.events.CALL, m.events.PY_START):
        m.register_callback(tool, event, lambda *args: None)
    m.set_events(tool, events)


for _ in range(200):  # past every version's specialisation warm-up
    run()
if "--monitor" in sys.argv[2:]:
    monitor()
BLOCK = True
run()
