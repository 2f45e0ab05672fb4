# Benchmark target: 4 threads, each blocked 40 Python frames deep.
import os, sys, threading, time

def rec(n, ev):
    if n <= 1:
        ev.set()
        time.sleep(100000)
    return rec(n - 1, ev)

depth = int(sys.argv[1]) if len(sys.argv) > 1 else 40
events = []
for i in range(3):
    ev = threading.Event()
    events.append(ev)
    threading.Thread(target=rec, args=(depth - 3, ev), name=f"bench-{i}", daemon=True).start()
for ev in events:
    ev.wait()
main_ev = threading.Event()
threading.Timer(0.2, lambda: (print("READY", flush=True))).start()
rec(depth, main_ev)
