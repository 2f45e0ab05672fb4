"""record --gil test target: two threads on the CPU at once, one in Python (holding the GIL),
one hashing a large buffer in C with the GIL released (hashlib releases it for data over
2 KiB). Prints READY, then runs until killed.
"""

import hashlib
import threading

DATA = b"x" * (8 << 20)


def hash_loop():
    while True:
        hashlib.sha256(DATA).digest()


def py_loop():
    total = 0
    while True:
        for i in range(10000):
            total += i


threading.Thread(target=hash_loop, name="hasher", daemon=True).start()
print("READY", flush=True)
py_loop()
