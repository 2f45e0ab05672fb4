//! Each thread's state at the moment of a read (docs/json.md "Thread state"): what the OS
//! says it is doing (`platform::thread_state`), whether it holds the GIL (the GIL's
//! `locked` and `last_holder`, read twice around the OS reads, and on 3.13 the thread's
//! own `_status.holds_gil`), and whether a thread asleep in the kernel sleeps on the GIL
//! itself (a futex inside the GIL's mutexes and condition variables: waiting for it).
//! Never a guess: a fact that moved between its reads is unknown, with the reason.

use std::collections::HashMap;

use protocol::{MidUpdate, RunState, ThreadStack, ThreadState};

use crate::layout::{Layout, GIL_LAST_HOLDER, GIL_SWITCH_NUMBER};
use crate::memory::{i32_at, u64_at, MemResult, Memory, MemoryExt};
use crate::platform::{self, OsThreadState};

/// One GIL as read at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GilRead {
    pub holder: u64,
    pub locked: bool,
    /// `switch_number`, where the table knows its place.
    pub switches: Option<u64>,
    /// False only on a free-threaded build running without its GIL (`enabled` 0).
    pub enabled: bool,
}

/// The GIL at `base`: one copy of its first fields (they share a cache line).
pub fn read_gil(mem: &dyn Memory, layout: &Layout, base: u64) -> MemResult<GilRead> {
    let (holder, switch, locked) = match layout.interp.gil {
        // 3.12+: as the target's `_Py_DebugOffsets` confirmed or corrected them
        Some(g) if layout.runtime.gil.is_none() => (g.last_holder, g.switch_number, g.locked),
        _ => (
            GIL_LAST_HOLDER,
            Some(GIL_SWITCH_NUMBER),
            layout.gil_fields.locked,
        ),
    };
    let enabled = layout.gil_fields.enabled;
    let end = [
        holder + 8,
        locked + 4,
        switch.map_or(0, |s| s + 8),
        enabled.map_or(0, |e| e + 4),
    ]
    .into_iter()
    .max()
    .unwrap_or(0);
    let b = mem.read_vec(base, end as usize, 256)?;
    Ok(GilRead {
        holder: u64_at(&b, holder as usize),
        // -1 before the GIL is created: nobody holds it
        locked: i32_at(&b, locked as usize) == 1,
        switches: switch.map(|s| u64_at(&b, s as usize)),
        enabled: enabled.is_none_or(|e| i32_at(&b, e as usize) != 0),
    })
}

/// Every GIL in `bases`, read now.
pub fn read_gils(
    mem: &dyn Memory,
    layout: &Layout,
    bases: &[u64],
) -> HashMap<u64, Result<GilRead, String>> {
    bases
        .iter()
        .map(|&b| {
            (
                b,
                read_gil(mem, layout, b).map_err(|e| format!("the GIL could not be read: {e}")),
            )
        })
        .collect()
}

/// `gil_unknown` of every thread of a free-threaded build running without its GIL.
pub const NO_GIL: &str = "free-threaded: no GIL";

/// What the reader knows of one thread besides its `ThreadStack`.
#[derive(Debug, Clone, Copy)]
pub struct ThreadGil {
    pub tstate: u64,
    /// Its GIL's address.
    pub gil: Option<u64>,
    /// 3.13: its own `_status.holds_gil`, as the walk read it.
    pub own: Option<bool>,
}

/// The GIL reads around one read: `before` the values (`--locals`), then `first` and
/// `last` around the OS thread states.
pub struct GilReads {
    pub before: HashMap<u64, Result<GilRead, String>>,
    pub first: HashMap<u64, Result<GilRead, String>>,
    pub last: HashMap<u64, Result<GilRead, String>>,
}

/// Fill in each thread's `state` and `holds_gil` from its OS state and the GIL reads.
/// `os` is in the order of `threads`.
pub fn classify(
    layout: &Layout,
    threads: &mut [ThreadStack],
    extra: &[ThreadGil],
    os: Vec<OsThreadState>,
    gils: &GilReads,
) {
    for ((t, x), o) in threads.iter_mut().zip(extra).zip(os) {
        let (holds, why) = holds_gil(x, gils);
        let holder = holds == Some(true);
        t.holds_gil = holds;
        let mut st = ThreadState {
            gil_unknown: why,
            ..ThreadState::default()
        };
        let (run, syscall, wchan) = match o {
            OsThreadState::Running => (RunState::Running, None, None),
            OsThreadState::Runnable => (RunState::Runnable, None, None),
            OsThreadState::Blocked { syscall, wchan } => {
                // (the holder itself may sleep on the GIL's switch mutex while handing
                // over: blocked, not waiting for what it has)
                let on_gil = match (&syscall, x.gil, layout.gil_fields.waits) {
                    (Some(c), Some(base), Some((from, to))) => {
                        !holder
                            && c.is_futex_wait()
                            && (base.wrapping_add(from)..base.wrapping_add(to)).contains(&c.arg0)
                    }
                    _ => false,
                };
                let run = if on_gil {
                    RunState::WaitingForGil
                } else {
                    RunState::Blocked
                };
                (run, syscall, wchan)
            }
            OsThreadState::Stopped { syscall } => (RunState::Stopped, syscall, None),
            OsThreadState::Unknown(why) => {
                st.state_unknown = Some(why);
                (RunState::Unknown, None, None)
            }
        };
        st.state = Some(run);
        st.syscall = syscall.map(|c| c.display());
        st.wchan = wchan;
        t.state = st;
    }
}

/// Whether the thread holds its GIL: both reads around the OS states agree (and, 3.13,
/// the thread's own flag), else unknown with the reason.
fn holds_gil(x: &ThreadGil, gils: &GilReads) -> (Option<bool>, Option<String>) {
    let Some(base) = x.gil else {
        return (None, Some("its interpreter has no GIL yet".into()));
    };
    let (first, last) = match (gils.first.get(&base), gils.last.get(&base)) {
        (Some(Ok(a)), Some(Ok(b))) => (a, b),
        (Some(Err(e)), _) | (_, Some(Err(e))) => return (None, Some(e.clone())),
        _ => return (None, Some("the GIL was not read".into())),
    };
    // a free-threaded build without its GIL: threads run Python in parallel, nobody holds
    // one (`holds_gil` stays null and says so)
    if !first.enabled && !last.enabled {
        return (None, Some(NO_GIL.into()));
    }
    if first.enabled != last.enabled {
        return (None, Some("the GIL was turned on during the read".into()));
    }
    if first != last {
        return (
            None,
            Some("the GIL was taken or released during the read".into()),
        );
    }
    let holds = first.locked && first.holder == x.tstate;
    match x.own {
        Some(own) if own != holds => (
            None,
            Some(format!(
                "the GIL names {} holder than the thread's own flag does (it was changing \
                 hands)",
                if holds { "it as its" } else { "another" }
            )),
        ),
        _ => (Some(holds), None),
    }
}

/// Whether values read during this read may be half updated by a thread inside one
/// C-level update (which holds the GIL from start to end):
/// - a GIL was locked at one of its reads (before the values, around the OS states): its
///   holder may be mid-update, asleep in the kernel or not (an update can make a system
///   call midway: a list grown through `realloc`);
/// - a GIL could not be read, or changed between the reads (`switch_number` counts every
///   take by a thread other than the last holder);
/// - free at every read, but its last holder (which retakes it without a count) ran in
///   between: not asleep at the OS read, or its context switches (`switches`, by OS tid,
///   counted before the values and after the OS reads) moved or were not counted.
///
/// `None` only when every GIL was free throughout and its last holder asleep and still
/// (the usual hung process): no thread held a GIL while the values were read.
pub fn mid_update(
    threads: &[ThreadStack],
    extra: &[ThreadGil],
    gils: &GilReads,
    switches: (&HashMap<u64, u64>, &HashMap<u64, u64>),
) -> Option<MidUpdate> {
    let by_tstate: HashMap<u64, &ThreadStack> = extra
        .iter()
        .zip(threads)
        .map(|(x, t)| (x.tstate, t))
        .collect();
    let mark = |h: u64, what: &str| {
        let tid = by_tstate.get(&h).and_then(|t| t.os_tid);
        MidUpdate {
            thread: tid,
            reason: match tid {
                Some(n) => format!("read while thread {n} {what}"),
                None => format!("read while a thread not listed {what}"),
            },
        }
    };
    let mut bases: Vec<u64> = gils
        .before
        .keys()
        .chain(gils.last.keys())
        .copied()
        .collect();
    bases.sort_unstable();
    bases.dedup();
    for base in bases {
        let reads = [
            gils.before.get(&base),
            gils.first.get(&base),
            gils.last.get(&base),
        ];
        let mut ok = Vec::new();
        for r in reads {
            match r {
                Some(Ok(g)) => ok.push(*g),
                Some(Err(e)) => {
                    return Some(MidUpdate {
                        thread: None,
                        reason: format!("read while {e}"),
                    })
                }
                None => {
                    return Some(MidUpdate {
                        thread: None,
                        reason: "read while the GIL was not read".into(),
                    })
                }
            }
        }
        if let Some(g) = ok.iter().find(|g| g.locked) {
            return Some(mark(g.holder, "held the GIL"));
        }
        if ok.windows(2).any(|w| w[0] != w[1]) || ok.iter().any(|g| g.switches.is_none()) {
            return Some(MidUpdate {
                thread: None,
                reason: "read while the GIL changed hands".into(),
            });
        }
        // free throughout; a holder no thread state lists has ended: it takes nothing back
        let Some(last) = ok.last().and_then(|g| by_tstate.get(&g.holder)) else {
            continue;
        };
        let asleep = matches!(
            last.state.state,
            Some(RunState::Blocked | RunState::WaitingForGil | RunState::Stopped)
        );
        let still = last.os_tid.is_some_and(|tid| {
            matches!((switches.0.get(&tid), switches.1.get(&tid)), (Some(a), Some(b)) if a == b)
        });
        if !(asleep && still) {
            return Some(mark(ok[0].holder, "ran and could take the GIL back"));
        }
    }
    None
}

/// The OS state of each thread (by its `os_tid`), in order, and its OS name where the
/// same read gave it.
pub fn os_states(
    pid: u32,
    threads: &[ThreadStack],
    paused: bool,
) -> Vec<(OsThreadState, Option<String>)> {
    threads
        .iter()
        .map(|t| match t.os_tid {
            Some(tid) => platform::thread_state_named(pid, tid, paused),
            None => (
                OsThreadState::Unknown("its OS thread id is not known".into()),
                None,
            ),
        })
        .collect()
}
