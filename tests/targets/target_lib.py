"""Helpers of main_target.py: the other half of the cross-file recursion, classes with class
and static methods, closures, lambdas and a decorator wrapper. Every innermost function blocks
with the groundtruth protocol line (os.write READY_W, then os.read BLOCK_R)."""

import functools
import os

from groundtruth import BLOCK_R, READY_W

import módulo_ñ


def descend(n):
    # even levels here, odd levels in módulo_ñ.py
    if n <= 0:
        return módulo_ñ.último_nivel()
    return módulo_ñ.función_ñ(n - 1)


def traced(fn):
    @functools.wraps(fn)  # wraps changes __name__, not co_name: the frame stays "wrapper"
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)

    return wrapper


@traced
def decorated_leaf(x):
    return os.write(READY_W, b".") and os.read(BLOCK_R, 1)


class Widget:
    def __init__(self, size):
        self.size = size

    @classmethod
    def build(cls, size):
        return cls.helper(cls(size))

    @staticmethod
    def helper(widget):
        return widget.run()

    def run(self):
        def inner(k):
            pick = lambda v: decorated_leaf(v + k)  # noqa: E731
            return pick(self.size)

        return inner(1)


def identity(x):
    return x


def sort_key_that_blocks(item):
    # called back by sorted() (C) for the first item; never returns
    return os.write(READY_W, b".") and os.read(BLOCK_R, 1)
