"""Blocking test target for `pystackd stack --locals`: a worker thread stops in a function
whose arguments and locals cover every type pystackd shows, and records its own repr() of
each, cut by the rule of docs/json.md "Locals" (bounded_repr below), in the ground truth
under "locals": [{"function", "name", "kind", "type", "repr", "truncated"}].

usage: locals_target.py OUT.json
"""

import sys

sys.dont_write_bytecode = True

import groundtruth  # noqa: E402

# the limits of crates/pyframe-reader/src/values.rs
MAX_DEPTH = 3
MAX_ITEMS = 10
MAX_CHARS = 100
MAX_INT_DIGITS = 100  # 30-bit digits

LOCALS = []


def bounded_repr(v, depth=0, active=()):
    """repr(v) under pystackd's limits; returns (text, truncated)."""
    t = type(v)
    if t is str:
        if len(v) > MAX_CHARS:
            r = repr(v[:MAX_CHARS])
            return r[:-1] + "\u2026" + r[-1], True
        return repr(v), False
    if t is bytes:
        if len(v) > MAX_CHARS:
            r = repr(v[:MAX_CHARS])
            return r[:-1] + "\u2026" + r[-1], True
        return repr(v), False
    if t is int:
        if (abs(v).bit_length() + 29) // 30 > MAX_INT_DIGITS:
            return "<int of %d bits>" % abs(v).bit_length(), True
        return repr(v), False
    if t in (bool, float, complex, type(None)):
        return repr(v), False
    if t in (list, tuple, dict, set, frozenset):
        if id(v) in active:
            return {list: "[...]", tuple: "(...)", dict: "{...}", set: "set(...)",
                    frozenset: "frozenset(...)"}[t], False
        opn, cls = {list: ("[", "]"), tuple: ("(", ")"), dict: ("{", "}"), set: ("{", "}"),
                    frozenset: ("frozenset({", "})")}[t]
        if len(v) == 0:
            return {list: "[]", tuple: "()", dict: "{}", set: "set()",
                    frozenset: "frozenset()"}[t], False
        if depth >= MAX_DEPTH:
            return opn + "\u2026" + cls, True
        parts = []
        trunc = False
        for i, x in enumerate(v):
            if i == MAX_ITEMS:
                break
            r, tr = bounded_repr(x, depth + 1, active + (id(v),))
            trunc |= tr
            if t is dict:
                r2, tr2 = bounded_repr(v[x], depth + 1, active + (id(v),))
                trunc |= tr2
                r = r + ": " + r2
            parts.append(r)
        s = ", ".join(parts)
        if len(v) > MAX_ITEMS:
            s += ", \u2026"
            trunc = True
        elif t is tuple and len(v) == 1:
            s += ","
        return opn + s + cls, trunc
    mod = getattr(t, "__module__", "builtins")
    name = t.__name__ if mod == "builtins" else "%s.%s" % (mod, t.__name__)
    return "<%s object at %#x>" % (name, id(v)), False


def record(function, frame_locals, kinds):
    for name, value in frame_locals.items():
        text, trunc = bounded_repr(value)
        LOCALS.append({
            "function": function,
            "name": name,
            "kind": kinds.get(name, "local"),
            "type": type(value).__name__,
            "repr": text,
            "truncated": trunc,
        })


class Point:
    def __init__(self, x, y):
        self.x = x
        self.y = y


class Empty:
    pass


def values_frame(count, name, *rest, flag=True, **options):
    big = 10 ** 100
    negative_big = -(2 ** 200) + 7
    huge = 2 ** 3500
    small = -5
    zero = 0
    floats = [0.1, 1e16, 1e-7, float("inf"), float("-inf"), 1.5, 1e15, 0.0001, 123456.789]
    nan = float("nan")
    negzero = -0.0
    c = complex(1.5, -2)
    cj = 2j
    yes, no, nothing = True, False, None
    cjk = "\u6f22\u5b57\u304b\u306a" * 125
    astral = "emoji \U0001F600 and \U00020000 \U0001D11E"
    empty = ""
    quotes = "it's \"quoted\"\t\\ \n\x00\x7f\x85\u00e9"
    raw = b"\x00\x01'\"\\ \x7f\xff bytes\n"
    long_bytes = bytes(range(256))
    tup = (1, "two", 3.0, None)
    single = (1,)
    nested = [1, [2, [3, [4, [5]]]], {"k": (6, 7)}]
    many = list(range(25))
    d = {"a": 1, 2: "b", (3, 4): [5], None: {}}
    inst = Point(1, "y")
    inst_dict = inst.__dict__
    s = {1, 2, 3}
    fs = frozenset({"x"})
    empty_set, empty_dict, empty_list, empty_tuple = set(), {}, [], ()
    obj = Empty()
    cyc = [1]
    cyc.append(cyc)
    dcyc = {"self": None}
    dcyc["self"] = dcyc
    captured = "seen by the closure"

    def closure():
        return captured, count

    fn_result = closure()[0]
    kinds = {"count": "arg", "name": "arg", "rest": "arg", "flag": "arg", "options": "arg",
             "captured": "cell"}
    # `count` is captured too: an argument, shown as one
    record("values_frame", dict(locals()), kinds)
    inner_closure(closure)
    return fn_result, big, negative_big, huge, small, zero, floats, nan, negzero, c, cj, \
        yes, no, nothing, cjk, astral, empty, quotes, raw, long_bytes, tup, single, nested, \
        many, d, inst_dict, s, fs, empty_set, empty_dict, empty_list, empty_tuple, obj, \
        rest, flag, options, name


def inner_closure(closure):
    outer_value = 42

    def leaf():
        here = "leaf local"
        seen = outer_value
        record("leaf", {"here": here, "seen": seen, "outer_value": outer_value},
               {"outer_value": "free"})
        return groundtruth.os.write(groundtruth.READY_W, b".") and groundtruth.os.read(groundtruth.BLOCK_R, 1)  # noqa: E501
    return leaf()


def main():
    out = sys.argv[1]
    groundtruth.start_thread(
        "values", lambda: values_frame(7, "name-arg", "r1", 2.5, flag=False, opt1=[1, 2]))
    groundtruth.block_main(out, 1, {"target": "locals_target", "locals": LOCALS})


if __name__ == "__main__":
    main()
