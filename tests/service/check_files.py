#!/usr/bin/env python3
"""Static checks of the service files: the SMF manifest (structure and the values the
method script and the package rely on), the IPS .p5m (action syntax, required
attributes per action type, cross-references) and the systemd units' key settings.
Prints one line per check and a closing 'N passed, N failed' line."""

import re
import shlex
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
results = []


def check(name, cond, detail=""):
    results.append(bool(cond))
    print(("ok: " if cond else "FAILED: ") + name + ("" if cond else f" ({detail})"))


# ---------------------------------------------------------------- SMF manifest
MANIFEST = REPO / "smf/pystackd.xml"
METHOD_INSTALLED = "/lib/svc/method/svc-pystackd"


def smf_checks():
    try:
        root = ET.parse(MANIFEST).getroot()
    except ET.ParseError as e:
        check("smf/pystackd.xml is well-formed XML", False, str(e))
        return
    check("smf/pystackd.xml is well-formed XML", True)
    check("root is service_bundle type=manifest",
          root.tag == "service_bundle" and root.get("type") == "manifest" and root.get("name"))
    services = root.findall("service")
    check("one service application/pystackd",
          len(services) == 1 and services[0].get("name") == "application/pystackd"
          and services[0].get("type") == "service" and services[0].get("version"))
    if not services:
        return
    svc = services[0]
    order = ["create_default_instance", "single_instance", "restarter", "dependency",
             "dependent", "method_context", "exec_method", "property_group", "instance",
             "stability", "template"]
    idx = [order.index(c.tag) if c.tag in order else -1 for c in svc]
    check("service children are DTD elements in DTD order",
          -1 not in idx and idx == sorted(idx), [c.tag for c in svc])
    insts = svc.findall("instance")
    check("default instance", any(i.get("name") == "default" and i.get("enabled") in ("true", "false")
                                  for i in insts) or svc.find("create_default_instance") is not None)
    deps = {d.findall("service_fmri")[0].get("value") if d.findall("service_fmri") else None: d
            for d in svc.findall("dependency")}
    for fmri in ("svc:/system/filesystem/local", "svc:/milestone/multi-user"):
        d = deps.get(fmri)
        check(f"dependency on {fmri}",
              d is not None and d.get("grouping") == "require_all" and d.get("type") == "service"
              and d.get("restart_on") in ("error", "restart", "refresh", "none") and d.get("name"))
    methods = {m.get("name"): m for m in svc.findall("exec_method")}
    for name in ("start", "stop", "refresh"):
        m = methods.get(name)
        check(f"exec_method {name} with exec and timeout_seconds",
              m is not None and m.get("type") == "method" and m.get("exec")
              and re.fullmatch(r"-?\d+", m.get("timeout_seconds") or ""))
    start = methods.get("start")
    check("start runs the method script",
          start is not None and start.get("exec", "").split()[0] == METHOD_INSTALLED)
    cred = svc.find("method_context/method_credential")
    privs = set((cred.get("privileges") or "").split(",")) if cred is not None else set()
    limit = set((cred.get("limit_privileges") or "").split(",")) if cred is not None else set()
    check("method_credential has a user", cred is not None and cred.get("user"))
    check("privileges are basic,proc_owner,proc_setid (least privilege: not all, not zone)",
          {"basic", "proc_owner", "proc_setid"} <= privs and not privs & {"all", "zone"}, privs)
    check("limit_privileges caps the daemon to its privileges", limit and privs <= limit
          and not limit & {"all", "zone"}, limit)
    pgs = {pg.get("name"): pg for pg in svc.findall("property_group")}
    cfg = pgs.get("config")
    props = {p.get("name"): p for p in cfg.findall("propval")} if cfg is not None else {}
    check("config property group (application)",
          cfg is not None and cfg.get("type") == "application")
    sock = props.get("socket_path")
    check("config/socket_path is /var/run/pystackd/pystackd.sock",
          sock is not None and sock.get("type") == "astring"
          and sock.get("value") == "/var/run/pystackd/pystackd.sock")
    lvl = props.get("log_level")
    check("config/log_level", lvl is not None and lvl.get("type") == "astring" and lvl.get("value"))
    startd = {p.get("name"): p.get("value") for p in pgs["startd"].findall("propval")} \
        if "startd" in pgs else {}
    check("startd/duration is contract (or unset: the default)",
          startd.get("duration", "contract") == "contract")
    for pv in svc.iter("propval"):
        if not (pv.get("name") and pv.get("type") and pv.get("value") is not None):
            check("every propval has name, type and value", False, pv.attrib)
            break
    tmpl = svc.find("template")
    check("template has a common_name", tmpl is not None and tmpl.find("common_name/loctext") is not None)


# ---------------------------------------------------------------- method script
def method_checks():
    text = (REPO / "smf/method/svc-pystackd").read_text()
    check("method script reads config/socket_path and config/log_level with svcprop",
          "svcprop" in text and "config/socket_path" in text and "config/log_level" in text)
    check("method script starts `pystackd serve --socket` in the background",
          re.search(r'"\$PYSTACKD" serve --socket "\$SOCKET".*&\s*$', text, re.M))


# ---------------------------------------------------------------- IPS manifest
P5M = REPO / "packaging/pystackd.p5m"
ACTIONS = {
    # action: required attributes
    "set": {"name", "value"},
    "dir": {"path", "owner", "group", "mode"},
    "file": {"path", "owner", "group", "mode"},
    "link": {"path", "target"},
    "hardlink": {"path", "target"},
    "depend": {"fmri", "type"},
    "license": {"license"},
    "legacy": {"category", "desc", "hotline", "name", "pkg", "vendor", "version"},
    "group": {"groupname"},
    "user": {"username"},
    "driver": {"name"},
    "signature": {"algorithm"},
}
DEPEND_TYPES = {"require", "optional", "exclude", "incorporate", "group", "require-any",
                "conditional", "origin", "parent", "group-any"}


def p5m_lines(text):
    """Logical lines: comments and blanks dropped, backslash continuations joined."""
    out, cur, start = [], "", None
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        if not cur and (not line.strip() or line.lstrip().startswith("#")):
            continue
        start = start or n
        if line.endswith("\\"):
            cur += line[:-1] + " "
            continue
        out.append((start, cur + line))
        cur, start = "", None
    if cur:
        out.append((start, cur))
    return out


def p5m_checks():
    text = P5M.read_text()
    actions = []
    ok = True
    for n, line in p5m_lines(text):
        try:
            words = shlex.split(line)
        except ValueError as e:
            check(f"p5m line {n} tokenizes", False, e)
            ok = False
            continue
        name, rest = words[0], words[1:]
        if name not in ACTIONS:
            check(f"p5m line {n}: known action", False, name)
            ok = False
            continue
        payload = None
        if name in ("file", "license") and rest and "=" not in rest[0]:
            payload, rest = rest[0], rest[1:]
        attrs = {}
        for w in rest:
            k, sep, v = w.partition("=")
            if not sep or not k or not re.fullmatch(r"[A-Za-z][\w.\-]*", k):
                check(f"p5m line {n}: key=value attribute", False, w)
                ok = False
                continue
            attrs.setdefault(k, []).append(v)
        missing = ACTIONS[name] - attrs.keys()
        if missing:
            check(f"p5m line {n}: {name} has its required attributes", False, missing)
            ok = False
        actions.append((n, name, payload, attrs))
    check("p5m: every line is an action with key=value attributes and its required ones", ok)

    def sets(key):
        return [a[3]["value"] for a in actions if a[1] == "set" and a[3].get("name") == [key]]

    fmri = sets("pkg.fmri")
    check("p5m: one pkg.fmri with a version",
          len(fmri) == 1 and re.fullmatch(r"pkg:/(/[\w.\-]+/)?[\w/\-.]+@[\d.]+(,[\d.]+)?(-[\d.]+)?",
                                          fmri[0][0]), fmri)
    for key in ("pkg.summary", "pkg.description", "info.classification", "variant.arch"):
        check(f"p5m: set {key}", len(sets(key)) == 1 and all(sets(key)[0]))
    check("p5m: info.classification uses the 2008 scheme",
          all(v.startswith("org.opensolaris.category.2008:") for v in sum(sets("info.classification"), [])))
    paths = {}
    for n, name, payload, attrs in actions:
        for p in attrs.get("path", []):
            if p.startswith("/"):
                check(f"p5m line {n}: path is relative to the image root", False, p)
            paths[p] = (name, payload, attrs)
        if "mode" in attrs and not re.fullmatch(r"0?[0-7]{3,4}", attrs["mode"][0]):
            check(f"p5m line {n}: octal mode", False, attrs["mode"])
        if name == "depend":
            check(f"p5m line {n}: depend type {attrs['type'][0]}", attrs["type"][0] in DEPEND_TYPES)
    # every file's parent directories are delivered too
    dirs = {p for p, (k, _, _) in paths.items() if k == "dir"}
    for p, (k, _, _) in paths.items():
        parents = [str(Path(p).parents[i]) for i in range(len(Path(p).parents) - 1)]
        if k != "dir" and not set(parents) <= dirs:
            check(f"p5m: parent directories of {p} delivered", False, set(parents) - dirs)
    exe = paths.get("usr/bin/pystackd")
    check("p5m: delivers usr/bin/pystackd", exe and exe[0] == "file")
    man = paths.get("lib/svc/manifest/application/pystackd.xml")
    check("p5m: SMF manifest with restart_fmri=svc:/system/manifest-import:default",
          man and man[2].get("restart_fmri") == ["svc:/system/manifest-import:default"])
    check("p5m: manifest payload is smf/pystackd.xml", man and man[1] == "smf/pystackd.xml")
    # illumos and OmniOS deliver SMF manifests root:sys 0444
    check("p5m: SMF manifest owner=root group=sys mode=0444",
          man and man[2].get("owner") == ["root"] and man[2].get("group") == ["sys"]
          and man[2].get("mode") == ["0444"])
    lic = {a[2]: a[3].get("license", [None])[0] for a in actions if a[1] == "license"}
    check("p5m: license actions for LICENSE-MIT and LICENSE-APACHE (the workspace's MIT OR Apache-2.0)",
          lic == {"LICENSE-MIT": "MIT", "LICENSE-APACHE": "Apache-2.0"}, lic)
    meth = paths.get(METHOD_INSTALLED.lstrip("/"))
    check("p5m: method script delivered executable where the manifest runs it",
          meth and meth[1] == "smf/method/svc-pystackd" and int(meth[2]["mode"][0], 8) & 0o111)
    for n, name, payload, attrs in actions:
        if payload and not payload.startswith("target/"):
            check(f"p5m line {n}: payload {payload} exists", (REPO / payload).is_file())


# ---------------------------------------------------------------- systemd
def unit(path):
    sections, cur = {}, None
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            cur = sections.setdefault(line.strip("[]"), {})
            continue
        k, _, v = line.partition("=")
        cur.setdefault(k.strip(), []).append(v.strip())
    return sections


def systemd_checks():
    sock = unit(REPO / "systemd/pystackd.socket")
    svc = unit(REPO / "systemd/pystackd.service")
    check("socket listens on /run/pystackd/pystackd.sock",
          sock.get("Socket", {}).get("ListenStream") == ["/run/pystackd/pystackd.sock"])
    s = svc.get("Service", {})
    want = {
        "ExecStart": "/usr/local/bin/pystackd serve",
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "ProtectSystem": "strict",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "RuntimeDirectory": "pystackd",
        "PrivateMounts": "yes",
        "IPAddressDeny": "any",
        "DeviceAllow": "",
    }
    for k, v in want.items():
        check(f"service {k}={v}", s.get(k) == [v], s.get(k))
    caps = set(" ".join(s.get("CapabilityBoundingSet", [])).split())
    check("capabilities: CAP_SYS_PTRACE (+ CAP_DAC_READ_SEARCH, CAP_SETUID/SETGID for the access checker) only",
          {"CAP_SYS_PTRACE", "CAP_SETUID", "CAP_SETGID"} <= caps
          and caps <= {"CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH", "CAP_SETUID", "CAP_SETGID"}, caps)
    check("ambient capabilities within the bounding set",
          set(" ".join(s.get("AmbientCapabilities", [])).split()) <= caps)
    # The filter lines as systemd merges them are run for real by tests/service/check
    # (unit_seccomp.py); here: the lines keep what reading targets and the access checker need.
    filt = s.get("SystemCallFilter", [])
    check("SystemCallFilter starts with the @system-service allow list plus ptrace and "
          "process_vm_readv",
          bool(filt) and set(filt[0].split()) >= {"@system-service", "ptrace", "process_vm_readv"},
          filt)
    removed = {n for line in filt[1:] if line.startswith("~") for n in line[1:].split()}
    check("SystemCallFilter removes @privileged and @resources",
          {"@privileged", "@resources"} <= removed, filt)
    # later lines edit the list in order: the calls must come back after the removal
    drop = [i for i, line in enumerate(filt) if line.startswith("~") and "@privileged" in line]
    back = [i for i, line in enumerate(filt) if not line.startswith("~")
            and {"setresuid", "setgroups"} <= set(line.split())]
    check("SystemCallFilter gives back setresuid and setgroups after removing @privileged",
          bool(drop) and bool(back) and back[-1] > drop[-1], filt)
    check("the service can still see all processes",
          s.get("ProtectProc", ["default"]) == ["default"] and s.get("ProcSubset", ["all"]) == ["all"])


smf_checks()
method_checks()
p5m_checks()
systemd_checks()
passed, failed = results.count(True), results.count(False)
print(f"check_files: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
