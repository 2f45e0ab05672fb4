#!/usr/bin/python3
"""Runs a command under the system call filter a systemd unit declares, as systemd builds it,
for machines where systemd is not PID 1 (no systemd-run): tests/service/check uses it to run
`pystackd serve` with the unit's filter.

    unit_seccomp.py UNIT [--without a,b] [--print] -- COMMAND...

How systemd reads SystemCallFilter= (systemd.exec(5), load-fragment.c): the first line
decides the mode; a first line without `~` makes an allow list that starts from @default;
each later line adds its calls (no `~`) or removes them (`~`), in order. @groups are expanded
with `systemd-analyze syscall-filter`. Calls not allowed fail with SystemCallErrorNumber=
(EPERM here) like systemd's filter. --without removes calls afterwards (negative controls);
--print lists the allowed calls instead of running anything. Needs Debian's python3-seccomp
(libseccomp bindings) and systemd-analyze.
"""

import errno
import os
import subprocess
import sys


def expand(name, cache):
    if not name.startswith("@"):
        return {name}
    if name not in cache:
        out = subprocess.run(["systemd-analyze", "syscall-filter", "--no-pager", name],
                             capture_output=True, text=True, check=True).stdout
        calls = set()
        for line in out.splitlines()[1:]:
            t = line.strip()
            if not t or t.startswith("#"):
                continue
            calls |= expand(t, cache)
        cache[name] = calls
    return cache[name]


def unit_filter(path):
    """The allowed calls and the errno name, from the unit's [Service] lines."""
    lines, errname = [], "EPERM"
    section = None
    with open(path) as f:
        for raw in f:
            line = raw.strip()
            if line.startswith("["):
                section = line
            elif section == "[Service]" and "=" in line and not line.startswith("#"):
                key, value = line.split("=", 1)
                if key == "SystemCallFilter":
                    lines.append(value.strip())
                elif key == "SystemCallErrorNumber":
                    errname = value.strip()
    if not lines or lines[0].startswith("~"):
        sys.exit(f"{path}: no SystemCallFilter= allow list")
    cache = {}
    allowed = set(expand("@default", cache))
    for value in lines:
        remove = value.startswith("~")
        for name in value.lstrip("~").split():
            calls = expand(name, cache)
            allowed = allowed - calls if remove else allowed | calls
    return allowed, errname


def main():
    args = sys.argv[1:]
    if "--" not in args and "--print" not in args:
        sys.exit(__doc__)
    cmd = args[args.index("--") + 1:] if "--" in args else []
    opts = args[: args.index("--")] if "--" in args else args
    unit = opts[0]
    allowed, errname = unit_filter(unit)
    if "--without" in opts:
        allowed -= set(opts[opts.index("--without") + 1].split(","))
    if "--print" in opts:
        print("\n".join(sorted(allowed)))
        return
    import seccomp  # python3-seccomp

    f = seccomp.SyscallFilter(defaction=seccomp.ERRNO(getattr(errno, errname)))
    for name in sorted(allowed):
        try:
            f.add_rule(seccomp.ALLOW, name)
        except (RuntimeError, ValueError, OSError):
            pass  # not a call of this architecture (systemd skips those too)
    f.load()  # sets no_new_privs, as NoNewPrivileges=yes does
    os.execvp(cmd[0], cmd)


if __name__ == "__main__":
    main()
