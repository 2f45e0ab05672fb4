//! Which process a pid names. A pid is reused after its process exits, and an exec keeps
//! the pid and the start time but replaces the image: the identity of a process is its
//! pid, its start time and the executable it runs, and, where the OS has one (Linux
//! pidfd), a handle that tells in one `poll` whether that very process has exited.
//! Everyone who keeps something about a process across time (the daemon's cache, a
//! reader's checks) asks this one type whether the pid still names it.

use crate::error::Result;
use crate::platform::{self, ProcessHandle};

#[derive(Debug)]
pub struct Identity {
    pub pid: u32,
    /// In the OS's units (Linux: clock ticks since boot; illumos: `pr_start`).
    pub start_time: u64,
    /// Device and inode of the executable (`None` where the OS gives none: illumos).
    exe: Option<(u64, u64)>,
    /// `platform::exec_token` when taken: tells a later exec of the same file apart.
    token: Option<u64>,
    handle: Option<ProcessHandle>,
}

impl Identity {
    /// The process holding `pid` now.
    pub fn of(pid: u32) -> Result<Identity> {
        let start_time = platform::start_time(pid)?;
        // The handle is on whatever holds the pid now: it is ours if the start time is
        // still the same after it was opened.
        let handle = ProcessHandle::open(pid).ok();
        let exe = platform::exe_identity(pid);
        let token = platform::exec_token(pid);
        let id = Identity {
            pid,
            start_time,
            exe,
            token,
            handle,
        };
        if !id.alive() {
            return Err(crate::Error::ProcessExited { pid });
        }
        Ok(id)
    }

    /// The process with this pid and start time, if it is the one holding the pid now.
    pub fn expect(pid: u32, start_time: u64) -> Result<Identity> {
        let id = Identity::of(pid)?;
        if id.start_time != start_time {
            return Err(crate::Error::ProcessExited { pid });
        }
        Ok(id)
    }

    /// Whether this process still runs (its pid not taken over by another one): one
    /// `poll` of the pidfd, else a read of the start time.
    pub fn alive(&self) -> bool {
        match &self.handle {
            Some(h) => !h.exited(),
            None => platform::start_time(self.pid).ok() == Some(self.start_time),
        }
    }

    /// Whether the pid still names this process running the image it had: alive, and
    /// the same executable (an exec keeps pid and start time).
    pub fn is_same(&self) -> bool {
        self.alive() && platform::exe_identity(self.pid) == self.exe
    }

    /// [`is_same`](Self::is_same), and no exec since, not even of the same file (one
    /// more small read: for those who name a program image, as `record --subprocesses`
    /// does per root; a reader finds its addresses wrong after such an exec anyway).
    pub fn is_same_image(&self) -> bool {
        self.is_same() && platform::exec_token(self.pid) == self.token
    }

    /// Whether a live handle (pidfd) answers [`alive`](Self::alive) without reading
    /// `/proc`.
    pub fn has_handle(&self) -> bool {
        self.handle.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_process_is_itself_and_a_child_ends() {
        let me = Identity::of(std::process::id()).unwrap();
        assert!(me.is_same());
        assert!(Identity::expect(me.pid, me.start_time.wrapping_add(1)).is_err());
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let id = Identity::of(child.id()).unwrap();
        assert!(id.is_same());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!id.alive());
        assert!(!id.is_same());
    }

    /// A process that execs the very file it runs is another image (a reloader's
    /// `os.execv(sys.executable, ...)`): the same pid, start time and executable.
    #[cfg(target_os = "linux")]
    #[test]
    fn an_exec_of_the_same_file_is_another_image() {
        let dir = std::env::temp_dir().join(format!("pystackd-exec-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        // the child waits for the file, then execs /bin/sh again
        let script = format!(
            "while [ ! -e {0} ]; do sleep 0.01; done; exec /bin/sh -c 'sleep 30'",
            dir.display()
        );
        let mut child = std::process::Command::new("/bin/sh")
            .args(["-c", &script])
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        let id = Identity::of(child.id()).unwrap();
        assert!(id.is_same_image(), "before the exec");
        std::fs::write(&dir, b"go").unwrap();
        let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut seen = false;
        while std::time::Instant::now() < until && !seen {
            seen = !id.is_same_image();
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = std::fs::remove_file(&dir);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(seen, "the exec of /bin/sh by /bin/sh was not told apart");
    }
}
