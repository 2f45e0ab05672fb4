"""Non-ASCII module name and identifiers; odd levels of the cross-file recursion."""

import os

from groundtruth import BLOCK_R, READY_W

import target_lib


def función_ñ(n):
    return target_lib.descend(n - 1)


def último_nivel():
    return os.write(READY_W, b".") and os.read(BLOCK_R, 1)


class Clase_ñ:
    def método_ñ(self):
        return os.write(READY_W, b".") and os.read(BLOCK_R, 1)
