//! Other users: [`TestUser`] (created with `useradd` for one test, deleted on drop) and
//! [`RunAs`] (a program run as a uid/gid through `setpriv`).

use std::ffi::OsStr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::Skip;

/// A uid and gid to run programs as (no supplementary groups).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
}

impl RunAs {
    /// Debian's `nobody` (65534): numeric, so it needs no passwd entry.
    pub const NOBODY: RunAs = RunAs {
        uid: 65534,
        gid: 65534,
    };

    /// `setpriv --reuid=UID --regid=GID --clear-groups PROGRAM`; add its arguments.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .arg("--clear-groups")
            .arg(program);
        c
    }
}

/// A system user created for one test (unique name per process and call, its own group, no
/// home, no shell), deleted on drop, also when the test fails. Declare it before the
/// processes that run as it, so that they are gone when it is deleted.
#[derive(Debug)]
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// `useradd`/`userdel` exit status when /etc/passwd is locked by a concurrent one.
const PASSWD_LOCKED: i32 = 10;
/// `userdel` exit status while the user still has processes.
const USER_BUSY: i32 = 8;

impl TestUser {
    /// A fresh user, or a [`Skip`] (not root, no `useradd` or `setpriv`).
    pub fn create() -> Result<TestUser, Skip> {
        crate::root("to create users and switch to them")?;
        crate::tool("setpriv")?;
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let name = format!("pstest{}x{n}", std::process::id());
        let mut tries = 0;
        loop {
            let st = Command::new("useradd")
                .args([
                    "--system",
                    "--no-create-home",
                    "--user-group",
                    "--shell",
                    "/usr/sbin/nologin",
                    &name,
                ])
                .stderr(Stdio::piped())
                .output();
            match st {
                Ok(o) if o.status.success() => break,
                Ok(o) if o.status.code() == Some(PASSWD_LOCKED) && tries < 50 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(Skip(format!(
                        "useradd not available: {e} (apt-get install passwd)"
                    )));
                }
                other => panic!("useradd {name} failed: {other:?}"),
            }
        }
        let id = |flag: &str| -> Option<u32> {
            let o = Command::new("id").args([flag, &name]).output().ok()?;
            String::from_utf8_lossy(&o.stdout).trim().parse().ok()
        };
        let (uid, gid) = (id("-u"), id("-g"));
        let user = TestUser {
            name,
            uid: uid.unwrap_or(0),
            gid: gid.unwrap_or(0),
        };
        assert!(
            uid.is_some() && gid.is_some() && user.uid != 0,
            "useradd {} made no usable user ({uid:?}, {gid:?})",
            user.name
        );
        Ok(user)
    }

    pub fn run_as(&self) -> RunAs {
        RunAs {
            uid: self.uid,
            gid: self.gid,
        }
    }

    /// `program` run as this user (uid, gid, no supplementary groups).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        self.run_as().command(program)
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        for _ in 0..50 {
            match Command::new("userdel").arg(&self.name).output() {
                Ok(o) if matches!(o.status.code(), Some(PASSWD_LOCKED) | Some(USER_BUSY)) => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                _ => return,
            }
        }
    }
}
