//! `perf_event_open(2)`: the events a program is attached to.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use perf_event_open_sys as sys;

use crate::{Error, Program, Result};

/// What fires a program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// A timer on every online CPU, `hz` times a second (bpftrace's `profile:hz:N`).
    Profile { hz: u64 },
    /// A timer of each of the threads `tids`, `hz` times per second of CPU time it uses
    /// (it runs only while the thread does); threads they start later inherit theirs.
    ThreadClock { hz: u64, tids: Vec<u32> },
    /// A breakpoint at byte `offset` of the file `path` (a uprobe; with `ret`, on the
    /// function's return), set in process `pid` only (all its threads: the kernel matches
    /// uprobe events on the address space).
    Uprobe {
        path: PathBuf,
        offset: u64,
        ret: bool,
        pid: u32,
    },
    /// A kernel tracepoint, by its id (`/sys/kernel/tracing/events/CAT/NAME/id`).
    Tracepoint { id: u64 },
}

/// An open perf event (closed, and its program detached, when dropped).
#[derive(Debug)]
pub struct PerfEvent {
    fd: OwnedFd,
}

fn online_cpus() -> std::io::Result<Vec<i32>> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online")?;
    let mut out = Vec::new();
    for part in text.trim().split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (Ok(a), Ok(b)) = (a.trim().parse::<i32>(), b.trim().parse::<i32>()) else {
            return Err(std::io::Error::other(format!(
                "cannot read online CPUs {text:?}"
            )));
        };
        out.extend(a..=b);
    }
    Ok(out)
}

fn uprobe_type() -> Result<u32> {
    let path = "/sys/bus/event_source/devices/uprobe/type";
    std::fs::read_to_string(path)
        .map_err(|e| Error {
            what: format!("reading {path} (a kernel without uprobe events?)"),
            source: e,
            log: None,
        })?
        .trim()
        .parse()
        .map_err(|_| Error {
            what: format!("reading {path}"),
            source: std::io::Error::other("not a number"),
            log: None,
        })
}

impl PerfEvent {
    fn open(
        attr: &mut sys::bindings::perf_event_attr,
        pid: i32,
        cpu: i32,
        what: &str,
    ) -> Result<PerfEvent> {
        attr.size = std::mem::size_of::<sys::bindings::perf_event_attr>() as u32;
        // SAFETY: attr is a fully initialised perf_event_attr whose pointers (a uprobe's
        // path) outlive the call
        let fd = unsafe {
            sys::perf_event_open(attr, pid, cpu, -1, sys::bindings::PERF_FLAG_FD_CLOEXEC as _)
        };
        if fd < 0 {
            return Err(Error::last_os(format!("opening the perf event of {what}")));
        }
        // SAFETY: a new descriptor the kernel just returned
        Ok(PerfEvent {
            fd: unsafe { OwnedFd::from_raw_fd(fd as RawFd) },
        })
    }

    /// The events of a probe, created disabled: one per online CPU for `Profile`, one
    /// otherwise.
    pub fn open_probe(probe: &Probe) -> Result<Vec<PerfEvent>> {
        let mut attr = sys::bindings::perf_event_attr::default();
        attr.set_disabled(1);
        match probe {
            Probe::Profile { hz } => {
                attr.type_ = sys::bindings::PERF_TYPE_SOFTWARE;
                attr.config = u64::from(sys::bindings::PERF_COUNT_SW_CPU_CLOCK);
                attr.set_freq(1);
                attr.__bindgen_anon_1.sample_freq = *hz;
                let cpus = online_cpus().map_err(|e| Error {
                    what: "listing online CPUs".into(),
                    source: e,
                    log: None,
                })?;
                cpus.into_iter()
                    .map(|cpu| {
                        Self::open(&mut attr, -1, cpu, &format!("profile:hz:{hz} on CPU {cpu}"))
                    })
                    .collect()
            }
            Probe::ThreadClock { hz, tids } => {
                attr.type_ = sys::bindings::PERF_TYPE_SOFTWARE;
                attr.config = u64::from(sys::bindings::PERF_COUNT_SW_TASK_CLOCK);
                attr.set_freq(1);
                attr.__bindgen_anon_1.sample_freq = *hz;
                attr.set_inherit(1);
                let mut events = Vec::with_capacity(tids.len());
                for &tid in tids {
                    match Self::open(
                        &mut attr,
                        tid as i32,
                        -1,
                        &format!("the clock of thread {tid}"),
                    ) {
                        Ok(e) => events.push(e),
                        // a thread that ended since it was listed
                        Err(e) if e.errno() == Some(libc::ESRCH) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(events)
            }
            Probe::Uprobe {
                path,
                offset,
                ret,
                pid,
            } => {
                attr.type_ = uprobe_type()?;
                // the PMU's `retprobe` format bit (/sys/bus/event_source/devices/uprobe/format)
                attr.config = u64::from(*ret);
                let c = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| Error {
                    what: format!("uprobe path {}", path.display()),
                    source: std::io::Error::other("contains a NUL byte"),
                    log: None,
                })?;
                attr.__bindgen_anon_3.uprobe_path = c.as_ptr() as u64;
                attr.__bindgen_anon_4.probe_offset = *offset;
                let what = format!("uprobe {}+{offset:#x}", path.display());
                Ok(vec![Self::open(&mut attr, *pid as i32, -1, &what)?])
            }
            Probe::Tracepoint { id } => {
                attr.type_ = sys::bindings::PERF_TYPE_TRACEPOINT;
                attr.config = *id;
                Ok(vec![Self::open(
                    &mut attr,
                    -1,
                    0,
                    &format!("tracepoint {id}"),
                )?])
            }
        }
    }

    /// Run `program` when the event fires.
    pub fn attach(&self, program: &Program) -> Result<()> {
        // SAFETY: an ioctl on our own perf event descriptor with a program descriptor
        if unsafe { sys::ioctls::SET_BPF(self.fd.as_raw_fd(), program.fd() as u32) } < 0 {
            return Err(Error::last_os("attaching a BPF program to a perf event"));
        }
        Ok(())
    }

    pub fn enable(&self) -> Result<()> {
        // SAFETY: an ioctl on our own perf event descriptor
        if unsafe { sys::ioctls::ENABLE(self.fd.as_raw_fd(), 0) } < 0 {
            return Err(Error::last_os("enabling a perf event"));
        }
        Ok(())
    }

    pub fn disable(&self) -> Result<()> {
        // SAFETY: an ioctl on our own perf event descriptor
        if unsafe { sys::ioctls::DISABLE(self.fd.as_raw_fd(), 0) } < 0 {
            return Err(Error::last_os("disabling a perf event"));
        }
        Ok(())
    }
}
