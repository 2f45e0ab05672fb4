//! Access control: a client running as an unprivileged user is refused a root-owned
//! target and served its own. Needs root (to create the user and switch to it).

use std::process::{Command, Output};

use serde_json::{json, Value};
use testkit::daemon::{main_thread_frames, Daemon, TempDir};
use testkit::{pystackd_bin, require, Interpreter, RunAs, Target, TestUser, Want};

/// An interpreter the test user may run (pyenv's builds live under /root, which is 0700).
fn user_python() -> Result<Interpreter, testkit::Skip> {
    testkit::python(&Want::any().usable_by_others())
}

fn as_user(uid: u32, gid: u32, program: &str) -> Command {
    RunAs { uid, gid }.command(program)
}

fn client(d: &Daemon, uid: u32, gid: u32, args: &[&str]) -> Output {
    as_user(uid, gid, pystackd_bin())
        .args(args)
        .arg("--socket")
        .arg(&d.socket)
        .env("PYSTACKD_CLIENT_TIMEOUT", "10")
        .output()
        .unwrap()
}

#[test]
fn unprivileged_client_is_refused_a_root_target() {
    let user = require!(TestUser::create());
    let (uid, gid) = (user.uid, user.gid);
    // not Python at all: the refusal must come before any read
    let mut root_target = Command::new("sleep").arg("1000").spawn().unwrap();
    let pid = root_target.id().to_string();
    let d = Daemon::start(None);
    for args in [
        &["stack", pid.as_str()][..],
        &["attach", pid.as_str()],
        &["detach", pid.as_str()],
    ] {
        let out = client(&d, uid, gid, args);
        assert_eq!(out.status.code(), Some(5), "{args:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("uid {uid} may not inspect process {pid}")),
            "{err}"
        );
    }
    let _ = root_target.kill();
    let _ = root_target.wait();
    let s = d.connect().ok("status", Value::Null);
    assert_eq!(s["denied"], 3, "{s}");
    assert!(d.log_text().contains("denied"), "{}", d.log_text());
    // the user can still talk to the daemon
    let out = client(&d, uid, gid, &["status"]);
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn unprivileged_client_reads_its_own_target_only() {
    let user = require!(TestUser::create());
    let (uid, gid) = (user.uid, user.gid);
    let user_py = require!(user_python());
    let own = Target::chain_as(&user.run_as(), &user_py, 2);
    let own_pid = own.pid();
    let d = Daemon::start(None);
    let out = client(&d, uid, gid, &["stack", &own_pid.to_string(), "--json"]);
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(main_thread_frames(&v, own_pid), own.main_frames());

    // a root-owned Python attached by root is not shown to, nor served to, the user
    let py = testkit::python(&Want::version("3.10")).unwrap_or(user_py);
    let root_t = Target::chain(&py, 1);
    let mut c = d.connect();
    c.ok("attach", json!({"pid": root_t.pid()}));
    assert_eq!(
        c.ok("list", Value::Null)["processes"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let out = client(&d, uid, gid, &["list", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let pids: Vec<_> = v["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pid"].clone())
        .collect();
    assert_eq!(pids, vec![json!(own_pid)]);
    let out = client(&d, uid, gid, &["stack", &root_t.pid().to_string()]);
    assert_eq!(out.status.code(), Some(5), "{out:?}");
}

/// An unprivileged uid other than the daemon's (Debian's `nobody`; numeric, so it
/// needs no passwd entry).
const OTHER_UID: u32 = 65534;

/// `pystackd` run as the test user holding exactly `caps` (e.g. `+sys_ptrace`) in
/// its inheritable, ambient and so effective sets, the way systemd's
/// `AmbientCapabilities=` starts the service.
fn daemon_as_user_with_caps(uid: u32, gid: u32, caps: &str, dir: TempDir) -> Daemon {
    use std::os::unix::fs::chown;
    chown(dir.path(), Some(uid), Some(gid)).unwrap();
    let socket = dir.path().join("run/pystackd.sock");
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--clear-groups")
        .arg(format!("--inh-caps={caps}"))
        .arg(format!("--ambient-caps={caps}"))
        .arg(pystackd_bin());
    Daemon::start_with(cmd, dir, socket, None)
}

/// Effective capability mask and effective uid of a process (its own /proc view).
fn caps_and_euid(pid: u32) -> (u64, u32) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |n: &str| s.lines().find_map(|l| l.strip_prefix(n)).unwrap().trim();
    let caps = u64::from_str_radix(field("CapEff:"), 16).unwrap();
    let euid = field("Uid:")
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    (caps, euid)
}

const CAP_DAC_READ_SEARCH: u64 = 1 << 2;
const CAP_SYS_PTRACE: u64 = 1 << 19;

/// Whether `uid` (without capabilities) may not search some directory above `path`.
fn hidden_from(path: &std::path::Path, uid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    path.ancestors()
        .skip(1)
        .any(|d| std::fs::metadata(d).is_ok_and(|m| m.uid() != uid && m.mode() & 0o001 == 0))
}

#[test]
fn daemon_as_unprivileged_user_with_cap_sys_ptrace() {
    let user = require!(TestUser::create());
    let (uid, gid) = (user.uid, user.gid);
    // the daemon's uid opens the interpreter's files
    let user_py = require!(user_python());
    let root_target = Target::chain(&user_py, 3);
    let pid = root_target.pid();
    let d = daemon_as_user_with_caps(uid, gid, "+sys_ptrace", TempDir::new("cap"));
    assert_eq!(caps_and_euid(d.child.id()), (CAP_SYS_PTRACE, uid));

    // root is served the root-owned target, read with nothing but CAP_SYS_PTRACE
    let mut c = d.connect();
    let s = c.ok("stack", json!({"pid": pid}));
    assert_eq!(
        main_thread_frames(&s, pid),
        root_target.main_frames(),
        "{s}"
    );
    // another unprivileged user is refused it, and is not shown it attached
    let out = as_user(OTHER_UID, OTHER_UID, pystackd_bin())
        .args(["stack", &pid.to_string(), "--socket"])
        .arg(&d.socket)
        .env("PYSTACKD_CLIENT_TIMEOUT", "10")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("uid {OTHER_UID} may not inspect process {pid}")),
        "{err}"
    );
    // refused because the daemon cannot run its access check as that uid (it may
    // not change uids), and it says so rather than guessing
    assert!(
        err.contains(&format!("cannot check access as uid {OTHER_UID}")),
        "{err}"
    );
    let out = client(&d, OTHER_UID, OTHER_UID, &["list", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["processes"], json!([]), "{v}");
    assert_eq!(c.ok("status", Value::Null)["denied"], 1);

    // A pyenv build under a home the daemon's uid may not search (/root is 0700):
    // its libpython cannot be opened for its symbols without CAP_DAC_READ_SEARCH.
    let py = require!(testkit::python(
        &Want::version("3.12")
            .shared()
            .symbols()
            .hidden_from_others()
    ));
    assert!(
        hidden_from(&py.command, uid),
        "{py} is searchable by uid {uid}"
    );
    let hidden = Target::chain(&py, 2);
    let v = c.call("stack", json!({"pid": hidden.pid()}));
    let msg = v["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // named as what it is: a permission problem with the interpreter's file, and the fix
    assert_eq!(
        v["error"]["code"],
        json!(protocol::rpc::codes::PERMISSION_DENIED),
        "{v}"
    );
    assert!(
        msg.contains("cannot open") && msg.contains("CAP_DAC_READ_SEARCH"),
        "{v}"
    );
    drop(c);
    drop(d);
    let d = daemon_as_user_with_caps(
        uid,
        gid,
        "+sys_ptrace,+dac_read_search",
        TempDir::new("cap2"),
    );
    assert_eq!(
        caps_and_euid(d.child.id()),
        (CAP_SYS_PTRACE | CAP_DAC_READ_SEARCH, uid)
    );
    let s = d.connect().ok("stack", json!({"pid": hidden.pid()}));
    assert_eq!(
        main_thread_frames(&s, hidden.pid()),
        hidden.main_frames(),
        "{s}"
    );
}

/// Root of a user namespace of its own is not root: `unshare -U -r` gives an
/// unprivileged client uid 0 and every capability (CAP_SYS_PTRACE included) inside
/// its namespace, but the kernel reports its outer uid to the daemon, and that is
/// all the daemon goes by.
#[test]
fn root_of_a_user_namespace_is_refused_a_root_target() {
    require!(testkit::root("to switch to another uid"));
    require!(testkit::tool("setpriv"));
    let probe = as_user(OTHER_UID, OTHER_UID, "unshare")
        .args([
            "-U",
            "-r",
            "sh",
            "-c",
            "id -u; grep CapEff /proc/self/status",
        ])
        .output();
    let inside = match probe {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        other => testkit::skip!("unshare -U -r is not permitted here: {other:?}"),
    };
    // the premise: inside, the client is uid 0 with CAP_SYS_PTRACE in CapEff
    let caps = inside
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    assert!(inside.starts_with("0\n"), "{inside}");
    assert_ne!(caps & CAP_SYS_PTRACE, 0, "{inside}");

    let mut root_target = Command::new("sleep").arg("1000").spawn().unwrap();
    let pid = root_target.id().to_string();
    let d = Daemon::start(None);
    for args in [&["stack", pid.as_str()][..], &["attach", pid.as_str()]] {
        let out = as_user(OTHER_UID, OTHER_UID, "unshare")
            .args(["-U", "-r", pystackd_bin()])
            .args(args)
            .arg("--socket")
            .arg(&d.socket)
            .env("PYSTACKD_CLIENT_TIMEOUT", "10")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(5), "{args:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("uid {OTHER_UID} may not inspect process {pid}")),
            "{err}"
        );
    }
    let _ = root_target.kill();
    let _ = root_target.wait();
    assert_eq!(d.connect().ok("status", Value::Null)["denied"], 2);
}

/// A daemon run the way systemd's `DynamicUser=` does it, as an unprivileged uid
/// with capabilities, and given `CAP_SETUID`/`CAP_SETGID` too: its access checkers
/// shed every capability (setresuid between non-zero uids keeps them) and the kernel
/// decides for its users: another user's own process is served, root's refused.
#[test]
fn capability_daemon_with_setid_serves_users_what_the_kernel_allows() {
    let user = require!(TestUser::create());
    let (uid, gid) = (user.uid, user.gid);
    let user_py = require!(user_python());
    let caps = "+sys_ptrace,+setuid,+setgid";
    let d = daemon_as_user_with_caps(uid, gid, caps, TempDir::new("capsetid"));
    let (got, euid) = caps_and_euid(d.child.id());
    assert_eq!(euid, uid);
    assert_eq!(got, CAP_SYS_PTRACE | (1 << 6) | (1 << 7), "CapEff {got:x}");
    let theirs = Target::chain_as(&RunAs::NOBODY, &user_py, 2);
    let root_target = Target::chain(&user_py, 1);
    let out = client(
        &d,
        OTHER_UID,
        OTHER_UID,
        &["stack", "--json", &theirs.pid().to_string()],
    );
    assert!(out.status.success(), "{out:?}\n{}", d.log_text());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(main_thread_frames(&v, theirs.pid()), theirs.main_frames());
    let out = client(
        &d,
        OTHER_UID,
        OTHER_UID,
        &["stack", &root_target.pid().to_string()],
    );
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the kernel does not let that user"), "{err}");
    assert!(
        d.log_text().contains("access checker started"),
        "{}",
        d.log_text()
    );
}
