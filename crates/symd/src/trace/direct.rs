//! `pystackd trace --engine direct`: pystackd loads the capture itself (`capture::ebpf`'s
//! bytecode, the `bpf` crate's loader) instead of running bpftrace. One read per frame,
//! one ring-buffer record per firing, no bpftrace process formatting text: the capture's
//! cost at 40 frames is a fraction of bpftrace's (docs/benchmarks.md), and nothing but
//! the kernel sits between a firing and pystackd.
//!
//! Probes it takes (others need `--engine bpftrace`): `profile:hz:N`,
//! `uprobe:/path:FUNCTION[+OFFSET]` / `uretprobe:...` (also `u:`/`ur:`, a path, no
//! wildcards), `tracepoint:CATEGORY:NAME` (`t:`).

use std::time::{Duration, Instant};

use capture::ebpf;
use capture::Plan;

use super::{fail, Done, Failure, NativeFrame};
use crate::breakpoints::{self, Breakpoints};
use crate::exit;

/// Ring buffer size: at 2 KB a record, about 8,000 firings queued before any is lost.
const RING_BYTES: u32 = 16 << 20;
/// How often the ring is read.
const DRAIN_EVERY: Duration = Duration::from_millis(20);

/// A probe the direct engine can attach, with the name firings carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectProbe {
    pub name: String,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Profile {
        hz: u64,
    },
    /// `hz` per second of CPU time of each thread of the process (`record --engine kernel`;
    /// not a probe name trace takes).
    ThreadClock {
        hz: u64,
    },
    Uprobe {
        path: String,
        file_offset: u64,
        ret: bool,
    },
    Tracepoint {
        category: String,
        name: String,
    },
}

/// The probes as the direct engine takes them, or why one cannot be (the caller then
/// uses bpftrace).
pub fn parse_probes(probes: &[String]) -> Result<Vec<DirectProbe>, String> {
    probes.iter().map(|p| parse_probe(p)).collect()
}

fn parse_probe(p: &str) -> Result<DirectProbe, String> {
    if p.contains(['*', '?', '{', '[', ',']) {
        return Err(format!("{p}: wildcards and lists need bpftrace"));
    }
    if let Some(hz) = p.strip_prefix("profile:hz:") {
        let hz: u64 = hz
            .parse()
            .ok()
            .filter(|h| (1..=100_000).contains(h))
            .ok_or_else(|| format!("{p}: a rate from 1 to 100000 Hz"))?;
        return Ok(DirectProbe {
            name: format!("profile:hz:{hz}"),
            kind: Kind::Profile { hz },
        });
    }
    for (prefix, canonical) in [("tracepoint:", "tracepoint:"), ("t:", "tracepoint:")] {
        if let Some(rest) = p.strip_prefix(prefix) {
            let (cat, name) = rest
                .split_once(':')
                .filter(|(c, n)| !c.is_empty() && !n.is_empty() && !n.contains(':'))
                .ok_or_else(|| format!("{p}: tracepoint:CATEGORY:NAME"))?;
            return Ok(DirectProbe {
                name: format!("{canonical}{rest}"),
                kind: Kind::Tracepoint {
                    category: cat.to_string(),
                    name: name.to_string(),
                },
            });
        }
    }
    for (prefix, canonical, ret) in [
        ("uprobe:", "uprobe:", false),
        ("u:", "uprobe:", false),
        ("uretprobe:", "uretprobe:", true),
        ("ur:", "uretprobe:", true),
    ] {
        if let Some(rest) = p.strip_prefix(prefix) {
            return match breakpoints::file_offset(p) {
                Some(Ok((path, file_offset))) => Ok(DirectProbe {
                    name: format!("{canonical}{rest}"),
                    kind: Kind::Uprobe {
                        path,
                        file_offset,
                        ret,
                    },
                }),
                Some(Err(why)) => Err(format!("{p}: {why}")),
                None => Err(format!("{p}: not a uprobe")),
            };
        }
    }
    Err(format!("{p}: this kind of probe needs bpftrace"))
}

/// The kernel's `task_struct` offset of `thread.fsbase`, for plans that need it.
pub fn fsbase_offset(plan: &Plan) -> Result<Option<u32>, String> {
    match plan.thread_match {
        capture::plan::ThreadMatch::ThreadIdIsFsBase { .. } => {
            let btf = bpf::btf::Btf::kernel()
                .map_err(|e| format!("the kernel's BTF (/sys/kernel/btf/vmlinux): {e}"))?;
            btf.offset_of("task_struct", "thread.fsbase")
                .map(Some)
                .ok_or_else(|| "the kernel's BTF has no task_struct.thread.fsbase".to_string())
        }
        _ => Ok(None),
    }
}

/// What a direct trace did, for the summary.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Firings of the target's threads, per probe (counted in the kernel).
    pub fired: Vec<u64>,
    /// Records the ring buffer had no room for, per probe.
    pub lost: Vec<u64>,
    pub delivered: u64,
    pub elapsed: Duration,
    pub exited: bool,
    pub interrupted: bool,
    pub breakpoints: Breakpoints,
    /// The programs' own run time in the kernel and their runs, `(ns, runs)`, when the
    /// kernel counts it (`kernel.bpf_stats_enabled=1`).
    pub in_kernel: Option<(u64, u64)>,
}

/// `(run_time_ns, run_cnt)` summed over `programs` (`/proc/self/fdinfo`), when the kernel
/// keeps BPF run statistics.
fn run_stats(programs: &[bpf::Program]) -> Option<(u64, u64)> {
    let on = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").ok()?;
    if on.trim() == "0" {
        return None;
    }
    let (mut ns, mut runs) = (0u64, 0u64);
    for p in programs {
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", p.fd())).ok()?;
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        ns += field("run_time_ns:")?;
        runs += field("run_cnt:")?;
    }
    Some((ns, runs))
}

/// Everything loaded and attached, not yet enabled.
pub struct Loaded {
    probes: Vec<DirectProbe>,
    depth: u32,
    user_stack: bool,
    // kept alive while the events run: dropping them detaches
    programs: Vec<bpf::Program>,
    events: Vec<bpf::PerfEvent>,
    counters: bpf::Map,
    _scratch: bpf::Map,
    ring_map: bpf::Map,
}

fn kernel_fail(e: bpf::Error) -> Failure {
    let status = match e.errno() {
        Some(libc::EPERM) | Some(libc::EACCES) => exit::TRACER_REFUSED,
        _ => exit::TRACER_REFUSED,
    };
    fail(
        status,
        format!("the kernel refused the capture: {e}"),
        Some("pystackd trace needs root (CAP_BPF and CAP_PERFMON); --engine bpftrace runs bpftrace instead"),
    )
}

/// Create the maps, render and load one program per probe (`fsbase`: [`fsbase_offset`], for
/// plans that match threads on it), open and attach its events. `user_stack`: each firing
/// also copies the thread's native stack (the kernel's frame-pointer walk).
pub fn load(
    plan: &Plan,
    pid: u32,
    probes: Vec<DirectProbe>,
    fsbase: Option<u32>,
    user_stack: bool,
) -> Result<Loaded, Failure> {
    let record = ebpf::record_size(plan, user_stack);
    let scratch = bpf::Map::create(
        bpf::MapKind::PerCpuArray,
        4,
        record as u32,
        1,
        "pystackd_rec",
    )
    .map_err(kernel_fail)?;
    let counters = bpf::Map::create(
        bpf::MapKind::PerCpuArray,
        4,
        ebpf::COUNTERS_VALUE as u32,
        probes.len() as u32,
        "pystackd_count",
    )
    .map_err(kernel_fail)?;
    let ring_map = bpf::Map::create(bpf::MapKind::RingBuf, 0, 0, RING_BYTES, "pystackd_ring")
        .map_err(kernel_fail)?;
    let maps = ebpf::Maps {
        scratch: scratch.fd(),
        ring: ring_map.fd(),
        counters: counters.fd(),
    };
    let mut programs = Vec::new();
    let mut events = Vec::new();
    for (i, p) in probes.iter().enumerate() {
        let program = ebpf::render(
            plan,
            &maps,
            &ebpf::Options {
                pid,
                probe: i as u32,
                user_stack,
                fsbase_offset: fsbase,
            },
        )
        .map_err(|e| fail(exit::FAILURE, e.to_string(), None))?;
        let (prog_kind, probe) = match &p.kind {
            Kind::Profile { hz } => (bpf::ProgKind::PerfEvent, bpf::Probe::Profile { hz: *hz }),
            Kind::ThreadClock { hz } => {
                let tids = pyframe_reader::platform::threads(pid).map_err(|e| {
                    fail(
                        exit::FAILURE,
                        format!("threads of process {pid}: {e}"),
                        None,
                    )
                })?;
                (
                    bpf::ProgKind::PerfEvent,
                    bpf::Probe::ThreadClock {
                        hz: *hz,
                        tids: tids.into_iter().map(|t| t as u32).collect(),
                    },
                )
            }
            Kind::Uprobe {
                path,
                file_offset,
                ret,
            } => (
                bpf::ProgKind::Kprobe,
                bpf::Probe::Uprobe {
                    path: path.into(),
                    offset: *file_offset,
                    ret: *ret,
                    pid,
                },
            ),
            Kind::Tracepoint { category, name } => {
                let id = tracepoint_id(category, name)?;
                (bpf::ProgKind::Tracepoint, bpf::Probe::Tracepoint { id })
            }
        };
        let loaded =
            bpf::Program::load(prog_kind, &program.bytes(), "pystackd").map_err(kernel_fail)?;
        for ev in bpf::PerfEvent::open_probe(&probe).map_err(|e| {
            fail(
                exit::TRACER_REFUSED,
                format!("{}: {e}", p.name),
                Some("check the probe (the function exists in that file? the tracepoint in /sys/kernel/tracing/events?)"),
            )
        })? {
            ev.attach(&loaded).map_err(kernel_fail)?;
            events.push(ev);
        }
        programs.push(loaded);
    }
    Ok(Loaded {
        probes,
        depth: plan.depth,
        user_stack,
        programs,
        events,
        counters,
        _scratch: scratch,
        ring_map,
    })
}

fn tracepoint_id(category: &str, name: &str) -> Result<u64, Failure> {
    let path = format!("/sys/kernel/tracing/events/{category}/{name}/id");
    std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| {
            fail(
                exit::TRACER_REFUSED,
                format!("no tracepoint {category}:{name} ({path} cannot be read)"),
                Some("list them with: ls /sys/kernel/tracing/events/"),
            )
        })
}

/// One firing as the ring buffer delivered it.
pub struct Delivered {
    pub done: Done,
    /// A read failed in the probe: the capture stops there.
    pub read_failed: bool,
    /// `CLOCK_MONOTONIC` time of the firing, ns.
    pub time_ns: u64,
}

/// Run the trace: enable the events, hand the records to `on_batch` as they come (each
/// read of the ring, every 20 ms, in order), stop after `duration` (or when the process
/// exits, or on Ctrl-C), then read what is queued.
pub fn run(
    loaded: Loaded,
    pid: u32,
    duration: Duration,
    mut breakpoints: Breakpoints,
    on_batch: &mut dyn FnMut(Vec<Delivered>),
) -> Result<Outcome, Failure> {
    let mut ring = bpf::RingBuffer::new(&loaded.ring_map).map_err(kernel_fail)?;
    let memory = pyframe_reader::platform::open_memory(pid).ok();
    let _sigint = crate::sample::catch_sigint();
    for ev in &loaded.events {
        ev.enable().map_err(kernel_fail)?;
    }
    let start = Instant::now();
    let mut out = Outcome::default();
    let mut next_look = Instant::now();
    let depth = loaded.depth;
    let user_stack = loaded.user_stack;
    let probes = &loaded.probes;
    let handle = |bytes: &[u8], batch: &mut Vec<Delivered>| {
        let Some(r) = ebpf::decode(bytes, depth, user_stack) else {
            return;
        };
        let native = match &r.user_stack {
            // a 0 ends a frame-pointer walk that ran into garbage: not a frame
            Ok(addrs) => addrs
                .iter()
                .take_while(|&&a| a != 0)
                .map(|&address| NativeFrame {
                    address,
                    symbol: None,
                    offset: None,
                    module: None,
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        let probe = probes
            .get(r.probe as usize)
            .map(|p| p.name.clone())
            .unwrap_or_default();
        batch.push(Delivered {
            done: (u64::from(r.tid), probe, r.capture, native),
            read_failed: r.read_failed,
            time_ns: r.time_ns,
        });
    };
    let mut drain = |ring: &mut bpf::RingBuffer, delivered: &mut u64| {
        let mut batch = Vec::new();
        ring.drain(|b| handle(b, &mut batch));
        *delivered += batch.len() as u64;
        if !batch.is_empty() {
            on_batch(batch);
        }
    };
    loop {
        // records come without wakeups (cheaper per firing): read on a timer; 16 MB hold
        // 20 ms of firings at 300,000 a second
        std::thread::sleep(DRAIN_EVERY);
        drain(&mut ring, &mut out.delivered);
        let gone =
            !pyframe_reader::platform::exists(pid) || pyframe_reader::platform::has_exited(pid);
        if gone {
            out.exited = true;
        }
        if crate::sample::interrupted() {
            out.interrupted = true;
        }
        if let Some(mem) = &memory {
            if !gone && !breakpoints.is_empty() && Instant::now() >= next_look {
                breakpoints.check(mem, start.elapsed());
                next_look = Instant::now() + Duration::from_millis(100);
            }
        }
        if gone || out.interrupted || start.elapsed() >= duration {
            break;
        }
    }
    for ev in &loaded.events {
        let _ = ev.disable();
    }
    out.in_kernel = run_stats(&loaded.programs);
    out.elapsed = start.elapsed().min(duration);
    // what the probes queued before they were disabled (a ring read returns what was
    // there when it began)
    while ring_has_more(&mut ring, &mut drain, &mut out.delivered) {}
    let cpus = bpf::possible_cpus().unwrap_or(1);
    for i in 0..loaded.probes.len() {
        let (mut fired, mut lost) = (0u64, 0u64);
        if let Ok(values) = loaded.counters.lookup_percpu(i as u32, cpus) {
            for v in values {
                fired += u64::from_le_bytes(v[0..8].try_into().unwrap());
                lost += u64::from_le_bytes(v[8..16].try_into().unwrap());
            }
        }
        out.fired.push(fired);
        out.lost.push(lost);
    }
    out.breakpoints = breakpoints;
    Ok(out)
}

/// Read the ring once; whether it gave anything.
fn ring_has_more(
    ring: &mut bpf::RingBuffer,
    drain: &mut dyn FnMut(&mut bpf::RingBuffer, &mut u64),
    delivered: &mut u64,
) -> bool {
    let before = *delivered;
    drain(ring, delivered);
    *delivered > before
}

/// `--print-program`: each probe's bytecode, as it would be loaded (map descriptors are
/// given at load time; the listing shows placeholders 1001-1003).
pub fn listing(plan: &Plan, pid: u32, probes: &[DirectProbe], fsbase: Option<u32>) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let maps = ebpf::Maps {
        scratch: 1001,
        ring: 1002,
        counters: 1003,
    };
    for (i, p) in probes.iter().enumerate() {
        let _ = writeln!(
            s,
            "; pystackd trace --engine direct: probe {i} {} (pid {pid}, CPython {}.{}, depth {})",
            p.name, plan.version.0, plan.version.1, plan.depth
        );
        match ebpf::render(
            plan,
            &maps,
            &ebpf::Options {
                pid,
                probe: i as u32,
                user_stack: true,
                fsbase_offset: fsbase,
            },
        ) {
            Ok(program) => {
                let _ = writeln!(
                    s,
                    "; {} instructions, {}-byte records",
                    program.insns.len(),
                    program.record_size
                );
                s.push_str(&program.listing());
            }
            Err(e) => {
                let _ = writeln!(s, "; cannot be rendered: {e}");
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_the_direct_engine_takes() {
        let p = parse_probe("profile:hz:997").unwrap();
        assert_eq!(p.kind, Kind::Profile { hz: 997 });
        let t = parse_probe("t:syscalls:sys_enter_write").unwrap();
        assert_eq!(t.name, "tracepoint:syscalls:sys_enter_write");
        assert!(parse_probe("profile:ms:10").is_err());
        assert!(parse_probe("profile:hz:0").is_err());
        assert!(parse_probe("kprobe:do_sys_open").is_err());
        assert!(parse_probe("uprobe:/lib/*.so:f").is_err());
        assert!(parse_probe("uprobe:libc:malloc").is_err());
        assert!(parse_probe("tracepoint:syscalls:*").is_err());
    }
}
