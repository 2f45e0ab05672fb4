//! Whether a read shows the probe's moment: the OS's word on each thread, taken right
//! before and right after the read.
//!
//! A plain `[ file:line (func) ]` line claims "these were the Python frames when the probe
//! fired". annotate reads them later, when the text arrives, so it may print that only
//! where something held the thread still from the probe to the end of the read:
//! - `--stopped`: the probe stopped the target (DTrace `stop()`, bpftrace
//!   `signal("SIGSTOP")`), and the thread is seen stopped before and after the read;
//! - the tracer that writes the text holds it: annotate runs under gdb's `pipe` command
//!   (gdb made our standard input and waits for us), and the thread is in a tracing stop
//!   under that same gdb before and after the read.
//!
//! Anything else is "read later" (`[~ ... ]`). Timestamps cannot stand in for this: a
//! tracer's clock and the scheduler's per-thread clocks differ, and a sampled thread was
//! running when it was sampled.

use std::collections::{HashMap, HashSet};

use protocol::ThreadStack;
use stacktext::{Moment, SourceError, StackSource};

use crate::platform::{self, Hold};

/// Processes whose last proof is kept at once.
const MAX_PROCESSES: usize = 64;

/// What can show that a thread stayed where the probe left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// Nothing: every line is read later.
    None,
    /// The probe stopped the target (`--stopped`).
    Stopped,
    /// This process (gdb) made our standard input with its `pipe` command and traces the
    /// target.
    Tracer(u32),
}

impl Proof {
    /// The proof this run can use: `--stopped`, else a tracer's `pipe` feeding standard
    /// input (only when the input is standard input).
    pub fn for_run(stopped: bool, reads_stdin: bool) -> Proof {
        if stopped {
            Proof::Stopped
        } else if reads_stdin {
            platform::stdin_pipe_maker().map_or(Proof::None, Proof::Tracer)
        } else {
            Proof::None
        }
    }

    fn holds(self, h: Hold) -> bool {
        match (self, h) {
            (Proof::None, _) | (_, Hold::Free) => false,
            (Proof::Stopped, _) => true,
            (Proof::Tracer(p), Hold::Traced(t)) => p == t,
            (Proof::Tracer(_), Hold::Stopped) => false,
        }
    }
}

/// The threads of one read that were held from before it to after it.
#[derive(Debug, Default, Clone)]
struct Shown {
    held: HashSet<u64>,
    /// Every thread of the process was held.
    all: bool,
}

/// A `StackSource` that brackets every read with the OS's thread states.
pub struct Witnessed<S> {
    inner: S,
    proof: Proof,
    shown: HashMap<u32, Shown>,
}

impl<S: StackSource> Witnessed<S> {
    pub fn new(inner: S, proof: Proof) -> Self {
        Witnessed {
            inner,
            proof,
            shown: HashMap::new(),
        }
    }
}

impl<S: StackSource> StackSource for Witnessed<S> {
    fn thread_stacks(&mut self, pid: u32) -> Result<Vec<ThreadStack>, SourceError> {
        if self.proof == Proof::None {
            return self.inner.thread_stacks(pid);
        }
        let before = platform::thread_holds(pid);
        let read = self.inner.thread_stacks(pid);
        let after: HashMap<u64, Hold> = platform::thread_holds(pid).into_iter().collect();
        let mut shown = Shown {
            all: !before.is_empty(),
            ..Shown::default()
        };
        for (tid, h) in before {
            // the same hold both times: the read fell inside one stop (only someone who
            // resumed and stopped it again within the read itself would go unseen)
            if self.proof.holds(h) && after.get(&tid) == Some(&h) {
                shown.held.insert(tid);
            } else {
                shown.all = false;
            }
        }
        if self.shown.len() >= MAX_PROCESSES {
            self.shown.clear();
        }
        self.shown.insert(pid, shown);
        read
    }

    fn resume(&mut self, pid: u32) -> Result<(), SourceError> {
        // the proof is about the read already made (annotate resumes before it matches the
        // stack); the next read replaces it
        self.inner.resume(pid)
    }

    fn pid_of_tid(&mut self, tid: u64) -> Option<u32> {
        self.inner.pid_of_tid(tid)
    }

    fn captured(
        &mut self,
        pid: u32,
        tid: Option<u64>,
        tokens: &[String],
    ) -> Result<ThreadStack, SourceError> {
        self.inner.captured(pid, tid, tokens)
    }

    fn native_symbol(&mut self, pid: u32, addr: u64) -> Option<stacktext::NativeSymbol> {
        self.inner.native_symbol(pid, addr)
    }

    fn native_source(&mut self, pid: u32, addr: u64) -> Vec<protocol::NativeSource> {
        self.inner.native_source(pid, addr)
    }

    fn native_in_module(
        &mut self,
        pid: u32,
        module: &str,
        offset: u64,
    ) -> Option<stacktext::NativeSymbol> {
        self.inner.native_in_module(pid, module, offset)
    }

    fn moment(&mut self, pid: u32, tid: Option<u64>) -> Moment {
        let Some(s) = self.shown.get(&pid) else {
            return Moment::Later;
        };
        let held = match tid {
            Some(t) => s.held.contains(&t),
            None => s.all,
        };
        if held {
            Moment::Probe
        } else {
            Moment::Later
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_each_proof_accepts() {
        assert!(Proof::Stopped.holds(Hold::Stopped));
        assert!(Proof::Stopped.holds(Hold::Traced(7)));
        assert!(!Proof::Stopped.holds(Hold::Free));
        assert!(Proof::Tracer(7).holds(Hold::Traced(7)));
        assert!(!Proof::Tracer(7).holds(Hold::Traced(8)));
        assert!(!Proof::Tracer(7).holds(Hold::Stopped));
        assert!(!Proof::None.holds(Hold::Stopped));
    }

    #[test]
    fn a_running_process_is_never_shown_held() {
        // this test's own process runs: its threads are never stopped
        struct Me;
        impl StackSource for Me {
            fn thread_stacks(&mut self, _pid: u32) -> Result<Vec<ThreadStack>, SourceError> {
                Ok(Vec::new())
            }
            fn resume(&mut self, _pid: u32) -> Result<(), SourceError> {
                Ok(())
            }
        }
        let pid = std::process::id();
        let mut w = Witnessed::new(Me, Proof::Stopped);
        w.thread_stacks(pid).unwrap();
        assert_eq!(w.moment(pid, Some(u64::from(pid))), Moment::Later);
        assert_eq!(w.moment(pid, None), Moment::Later);
    }

    #[test]
    fn a_stopped_process_is_shown_held_and_stays_so_after_resume() {
        struct Any;
        impl StackSource for Any {
            fn thread_stacks(&mut self, _pid: u32) -> Result<Vec<ThreadStack>, SourceError> {
                Ok(Vec::new())
            }
            fn resume(&mut self, _pid: u32) -> Result<(), SourceError> {
                Ok(())
            }
        }
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep runs");
        let pid = child.id();
        // SAFETY: kill has no memory preconditions; the pid is our own child.
        unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while platform::thread_holds(pid) != vec![(u64::from(pid), Hold::Stopped)] {
            assert!(std::time::Instant::now() < deadline, "sleep never stopped");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let mut w = Witnessed::new(Any, Proof::Stopped);
        w.thread_stacks(pid).unwrap();
        // annotate resumes before it matches the stack: the read's proof stands
        w.resume(pid).unwrap();
        assert_eq!(w.moment(pid, Some(u64::from(pid))), Moment::Probe);
        assert_eq!(w.moment(pid, None), Moment::Probe);
        assert_eq!(w.moment(pid, Some(1)), Moment::Later);
        // the same stopped process proves nothing to a run without --stopped
        let mut none = Witnessed::new(Any, Proof::None);
        none.thread_stacks(pid).unwrap();
        assert_eq!(none.moment(pid, Some(u64::from(pid))), Moment::Later);
        // a tracer's pipe proves nothing for a job-control stop
        let mut gdb = Witnessed::new(Any, Proof::Tracer(1));
        gdb.thread_stacks(pid).unwrap();
        assert_eq!(gdb.moment(pid, Some(u64::from(pid))), Moment::Later);
        let _ = child.kill();
        let _ = child.wait();
    }
}
