"""Blocking test target with names beyond Latin-1: UCS2 (CJK, Greek) and UCS4 (a CJK
Extension B identifier, an emoji in the file name), so every compact `str` kind (1, 2 and 4
bytes per character) is read from a live process.

usage: wide_unicode.py OUT.json

The module with the wide names is written at run time next to the ground truth, under a file
name with an emoji (no such file is kept in the repository). Same ground truth format as
main_target.py (see groundtruth.py).
"""

import importlib.util
import os
import sys

sys.dont_write_bytecode = True

import groundtruth  # noqa: E402

SOURCE = '''
from groundtruth import BLOCK_R, READY_W
import os


def 関数_\U00020000(n):
    return λόγος_ωμέγα(n)


def λόγος_ωμέγα(n):
    return os.write(READY_W, b".") and os.read(BLOCK_R, 1)


class Клас_\U00020001:
    def метод(self):
        return 関数_\U00020000(1)
'''


def main():
    out = sys.argv[1]
    path = os.path.join(os.path.dirname(os.path.abspath(out)), "ユニコード_\U0001F600.py")
    with open(path, "w", encoding="utf-8") as f:
        f.write(SOURCE)
    spec = importlib.util.spec_from_file_location("wide_mod", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cls = getattr(mod, "Клас_\U00020001")
    groundtruth.start_thread("wide-ucs4", lambda: cls().метод())
    groundtruth.block_main(out, 1, {
        "target": "wide_unicode",
        "files": groundtruth.program_files([sys.modules[__name__], groundtruth]) + [path],
        "exec_filenames": [],
    })


if __name__ == "__main__":
    main()
