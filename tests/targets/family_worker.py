"""record --subprocesses test target: one worker process of a launcher.

usage: family_worker.py ROLE SECONDS LOG
  a     runs work_a() for SECONDS
  exec  runs before_exec() for SECONDS/3, then execs this interpreter again as role b
        (the same file: a reloader's os.execv(sys.executable, ...))
  b     runs work_b() for SECONDS
Each logs "ROLE PID" to LOG (one write) when it starts its work: the ground truth of which
process ran which role.
"""

import os
import sys
import time


def say(role):
    fd = os.open(sys.argv[3], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, ("%s %d\n" % (role, os.getpid())).encode())
    os.close(fd)


def spin(seconds, leaf):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        leaf(2000)


def work_a(n):
    total = 0
    for i in range(n):
        total += i
    return total


def work_b(n):
    total = 0
    for i in range(n):
        total += i * i
    return total


def before_exec(n):
    total = 0
    for i in range(n):
        total ^= i
    return total


role, seconds = sys.argv[1], float(sys.argv[2])
if role == "a":
    say("a")
    spin(seconds, work_a)
elif role == "exec":
    say("pre")
    spin(seconds / 3, before_exec)
    os.execv(sys.executable, [sys.executable, __file__, "b", str(seconds), sys.argv[3]])
else:
    say("b")
    spin(seconds, work_b)
