"""record -- COMMAND test target: runs busy_leaf() under phase() for SECONDS, prints
"done", and exits with status 3 (so the status pystackd prints can be checked).

usage: command_target.py SECONDS
"""

import sys
import time


def busy_leaf(n):
    total = 0
    for i in range(n):
        total += i * i
    return total


def phase(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        busy_leaf(2000)


phase(float(sys.argv[1]))
print("done", flush=True)
sys.exit(3)
