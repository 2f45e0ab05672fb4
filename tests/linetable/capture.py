"""Capture ground truth for pystackd's line-table decoder from a real interpreter.

Run by any CPython 3.8+: compiles a set of source snippets (and, with --stdlib, a few
standard-library modules), walks every nested code object, and writes JSON with the raw
line table (co_lnotab up to 3.9, co_linetable from 3.10) and the line the interpreter
itself gives for every code unit of the bytecode.

The expected line of each code unit is taken from the interpreter's own APIs and they
must all agree, otherwise this script fails:
  - PyCode_Addr2Line through ctypes (what frames use for their line), every version;
  - 3.8/3.9: dis.findlinestarts() propagated forward to the following offsets;
  - 3.10+: code.co_lines(); 3.11+: also code.co_positions().

Usage: capture.py [--stdlib] [--out FILE]   (default: stdout)
"""

import ctypes
import dis
import json
import platform
import sys
import types

VERSION = sys.version_info[:2]
CODE_UNIT = 2  # wordcode since 3.6

MANY_BLANKS = "\n" * 400
SOME_BLANKS = "\n" * 150


def long_call_line(n):
    """One statement on one line with many calls: > 254 bytes of bytecode on one line."""
    return "    v = [" + ", ".join("g(%d, k%d)" % (i, i) for i in range(n)) + "]\n"


def wide_line():
    """A line wider than 255 columns, with expressions starting past column 127."""
    pad = " + ".join("value_%d" % i for i in range(20))
    return "    w = (%s) + obj.attr.method(arg).other[idx] + fn(x, y)\n" % pad


SNIPPETS = [
    (
        "large_deltas",
        (3, 8),
        "def far():\n"
        "    a = 1\n" + MANY_BLANKS + "    b = 2\n" + SOME_BLANKS + "    c = 3\n"
        "    return a + b + c\n",
    ),
    (
        "negative_deltas",
        (3, 8),
        "def back(f, arg, items):\n"
        "    x = f(\n" + SOME_BLANKS + "        arg,\n" + MANY_BLANKS + "    )\n"
        "    for i in items:\n" + SOME_BLANKS + "        x = x + i\n"
        "    while x > 0:\n" + MANY_BLANKS + "        x -= 1\n"
        "    return (\n        x\n        +\n        arg\n    )\n",
    ),
    (
        "decorators",
        (3, 8),
        "def deco(f):\n    return f\n\n"
        "@deco\n@deco\ndef decorated(x):\n    return x\n\n"
        "class K:\n"
        "    @property\n    def p(self):\n        return 1\n"
        "    @staticmethod\n    def s():\n        pass\n"
        "    @classmethod\n    def c(cls, a,\n          b):\n        return cls\n",
    ),
    (
        "comprehensions",
        (3, 8),
        "def comp(xs):\n"
        "    a = [x * 2 for x in xs if x]\n"
        "    b = {x: y for x, y in zip(xs,\n                               xs)}\n"
        "    c = {x for x in xs}\n"
        "    d = list(x for x in xs)\n"
        "    e = [[y for y in range(x)]\n         for x in xs\n         if x > 1]\n"
        "    return a, b, c, d, e\n",
    ),
    (
        "lambdas",
        (3, 8),
        "f = lambda x: (x, lambda y: y + x)\n"
        "g = (lambda a,\n          b:\n     a +\n     b)\n"
        "h = sorted([3, 1], key=lambda v: -v)\n",
    ),
    (
        "exceptions",
        (3, 8),
        "def exc(f):\n"
        "    try:\n        f()\n"
        "    except ValueError as e:\n        print(e)\n"
        "    except (TypeError, KeyError):\n        pass\n"
        "    else:\n        f()\n"
        "    finally:\n        f()\n"
        "    try:\n        return f()\n    finally:\n        print('x')\n"
        "\n"
        "def nested(f):\n"
        "    with open(f) as a, open(f) as b:\n"
        "        try:\n            with a:\n                return b.read()\n"
        "        except Exception:\n            raise\n",
    ),
    (
        "loops",
        (3, 8),
        "def loops(n):\n"
        "    total = 0\n"
        "    for i in range(n):\n"
        "        if i % 2:\n            continue\n"
        "        if i > 10:\n            break\n"
        "        total += i\n"
        "    else:\n        total = -1\n"
        "    while n:\n        n -= 1\n    else:\n        total += 1\n"
        "    return total\n",
    ),
    (
        "generators_async",
        (3, 8),
        "def gen(xs):\n    yield 1\n    yield from xs\n    return 2\n\n"
        "async def co(x):\n"
        "    async with x as y:\n        await y\n"
        "    async for z in x:\n        await z\n"
        "    return [w async for w in x]\n",
    ),
    (
        "no_line_paths",
        (3, 8),
        "def nl(a, b):\n"
        "    if a:\n        x = 1\n    elif b:\n        x = 2\n    else:\n        x = 3\n"
        "    with a:\n        pass\n"
        "    try:\n        pass\n    except:\n        pass\n"
        "    while a:\n        if b:\n            break\n",
    ),
    (
        "long_function",
        (3, 8),
        "def long_body(g, k):\n"
        + "".join("    x%d = g(%d) + x%d\n" % (i, i, i - 1) for i in range(1, 200))
        + long_call_line(120)
        + "    return v\n",
    ),
    ("wide_lines", (3, 8), "def wide(obj, arg, idx, fn, x, y):\n" + wide_line() + "    return w\n"),
    (
        "large_first_line",
        (3, 8),
        "\n" * 70000 + "def late(a):\n    return a\n",
    ),
    (
        "module_level",
        (3, 8),
        "import sys\n"
        "X = 1\n"
        "if X:\n    Y = [i for i in range(3)]\n"
        "class Outer:\n"
        "    attr = 1\n"
        "    class Inner:\n        def m(self):\n            return self\n"
        "def closure():\n    v = 1\n    def inner():\n        nonlocal v\n        v += 1\n        return v\n    return inner\n",
    ),
    (
        "match_statement",
        (3, 10),
        "def m(cmd):\n"
        "    match cmd:\n"
        "        case [x, y, *rest]:\n            return x\n"
        "        case {'k': v}:\n            return v\n"
        "        case str() | bytes():\n            return 0\n"
        "        case _:\n            return None\n",
    ),
    (
        "except_star",
        (3, 11),
        "def es(f):\n"
        "    try:\n        f()\n"
        "    except* ValueError as e:\n        print(e)\n"
        "    except* TypeError:\n        pass\n",
    ),
    (
        "type_params",
        (3, 12),
        "def first[T](xs: list[T]) -> T:\n    return xs[0]\n"
        "class Box[T]:\n    def get(self) -> T:\n        return self.v\n"
        "type Alias[T] = list[T]\n",
    ),
]

STDLIB_MODULES = ["argparse", "dis", "json.decoder", "email.message", "string", "textwrap"]


def addr2line_fn():
    try:
        fn = ctypes.pythonapi.PyCode_Addr2Line
    except (AttributeError, OSError):
        return None
    fn.argtypes = [ctypes.py_object, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


ADDR2LINE = addr2line_fn()


def table_bytes(code):
    return code.co_lnotab if VERSION < (3, 10) else code.co_linetable


def lines_from_findlinestarts(code, units):
    starts = dict(dis.findlinestarts(code))
    lines, current = [], None
    for u in range(units):
        current = starts.get(u * CODE_UNIT, current)
        lines.append(current)
    return lines


def lines_from_co_lines(code, units):
    lines = [None] * units
    for start, end, line in code.co_lines():
        for off in range(start, end, CODE_UNIT):
            if off // CODE_UNIT < units:
                lines[off // CODE_UNIT] = line
    return lines


def lines_from_positions(code, units):
    lines = [pos[0] for pos in code.co_positions()]
    assert len(lines) == units, (code, len(lines), units)
    return lines


def lines_from_addr2line(code, units):
    out = []
    for u in range(units):
        line = ADDR2LINE(code, u * CODE_UNIT)
        # 3.10+ report "no line" as -1; 3.8/3.9 have no such value.
        out.append(None if (line == -1 and VERSION >= (3, 10)) else line)
    return out


def walk(code):
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from walk(const)


def capture_code(code, origin):
    units = len(code.co_code) // CODE_UNIT
    sources = {}
    if VERSION < (3, 10):
        sources["findlinestarts"] = lines_from_findlinestarts(code, units)
    else:
        sources["co_lines"] = lines_from_co_lines(code, units)
    if VERSION >= (3, 11):
        sources["co_positions"] = lines_from_positions(code, units)
    if ADDR2LINE is not None:
        sources["PyCode_Addr2Line"] = lines_from_addr2line(code, units)
    names = sorted(sources)
    reference = sources[names[0]]
    for name in names[1:]:
        if sources[name] != reference:
            diff = [
                (u * CODE_UNIT, reference[u], sources[name][u])
                for u in range(units)
                if reference[u] != sources[name][u]
            ]
            raise SystemExit(
                "%s %s: %s and %s disagree (offset, %s, %s): %r"
                % (origin, code.co_name, names[0], name, names[0], name, diff[:10])
            )
    return {
        "origin": origin,
        "name": code.co_name,
        "first_line": code.co_firstlineno,
        "table_hex": table_bytes(code).hex(),
        "code_bytes": len(code.co_code),
        "lines": reference,
        "agreeing_sources": names,
    }


def sources_to_compile(with_stdlib):
    for name, min_version, source in SNIPPETS:
        if VERSION >= min_version:
            yield "snippet:" + name, source
    if with_stdlib:
        import importlib

        for modname in STDLIB_MODULES:
            path = importlib.import_module(modname).__file__
            with open(path, encoding="utf-8") as f:
                yield "stdlib:" + modname, f.read()


def main(argv):
    with_stdlib = "--stdlib" in argv
    out = argv[argv.index("--out") + 1] if "--out" in argv else None
    code_objects = []
    for origin, source in sources_to_compile(with_stdlib):
        top = compile(source, "<%s>" % origin, "exec")
        code_objects.extend(capture_code(c, origin) for c in walk(top))
    doc = {
        "version": platform.python_version(),
        "hexversion": sys.hexversion,
        "executable": sys.executable,
        "table_field": "co_lnotab" if VERSION < (3, 10) else "co_linetable",
        "code_unit_bytes": CODE_UNIT,
        "code_objects": code_objects,
    }
    text = json.dumps(doc, separators=(",", ":"))
    if out is None:
        sys.stdout.write(text)
    else:
        with open(out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main(sys.argv[1:])
