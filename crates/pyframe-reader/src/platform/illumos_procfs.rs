//! Byte-level readers of illumos `/proc` structures (`prmap_t`, `psinfo_t`)
//! and writers of `ctl` messages.
//!
//! Pure functions on byte slices, compiled on every OS so that their unit tests run on
//! the Linux CI too; `platform/illumos.rs` does the file I/O. Layouts are the LP64 ones of
//! illumos `usr/src/uts/common/sys/procfs.h` (64-bit processes; pystackd is 64-bit and
//! so is every `/proc` file it reads). illumos runs little-endian on the platforms we
//! build for (x86_64; aarch64 is little-endian too).

use std::path::PathBuf;

use super::Mapping;
use crate::memory::{i32_at, u32_at, u64_at};

/// `sizeof (prmap_t)` on LP64: vaddr 8, size 8, mapname[64], offset 8, mflags, pagesize,
/// shmid, filler[1] (4 each).
pub const PRMAP_SIZE: usize = 104;
/// `PRMAPSZ`: length of `pr_mapname`.
pub const PRMAPSZ: usize = 64;

// Offsets inside `prmap_t`.
const PRMAP_VADDR: usize = 0;
const PRMAP_SIZE_FIELD: usize = 8;
const PRMAP_MAPNAME: usize = 16;
const PRMAP_OFFSET: usize = 80;
const PRMAP_MFLAGS: usize = 88;
const PRMAP_PAGESIZE: usize = 92;
const PRMAP_SHMID: usize = 96;

// `pr_mflags` bits.
pub const MA_EXEC: i32 = 0x01;
pub const MA_WRITE: i32 = 0x02;
pub const MA_READ: i32 = 0x04;
pub const MA_SHARED: i32 = 0x08;
pub const MA_ANON: i32 = 0x40;

/// One `prmap_t` record of `/proc/PID/map`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrMap {
    pub vaddr: u64,
    pub size: u64,
    /// Name of the mapped object in `/proc/PID/object/` and `/proc/PID/path/`
    /// (`a.out` for the executable); empty for anonymous memory.
    pub mapname: String,
    pub offset: u64,
    pub mflags: i32,
    pub pagesize: i32,
    pub shmid: i32,
}

/// A NUL-terminated C string inside a fixed-size field.
fn c_string(field: &[u8]) -> String {
    let end = memchr::memchr(0, field).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// Parse the contents of `/proc/PID/map`: an array of `prmap_t`. A trailing partial
/// record (truncated read) is ignored.
pub fn parse_prmaps(bytes: &[u8]) -> Vec<PrMap> {
    bytes
        .chunks_exact(PRMAP_SIZE)
        .map(|r| PrMap {
            vaddr: u64_at(r, PRMAP_VADDR),
            size: u64_at(r, PRMAP_SIZE_FIELD),
            mapname: c_string(&r[PRMAP_MAPNAME..PRMAP_MAPNAME + PRMAPSZ]),
            offset: u64_at(r, PRMAP_OFFSET),
            mflags: i32_at(r, PRMAP_MFLAGS),
            pagesize: i32_at(r, PRMAP_PAGESIZE),
            shmid: i32_at(r, PRMAP_SHMID),
        })
        .collect()
}

/// Turn `prmap_t` records into [`Mapping`]s. `resolve` maps an object name to the path
/// the target sees (the target of the `/proc/PID/path/<name>` link); when it cannot be
/// resolved (a deleted file, a path the kernel no longer knows) `path` stays `None` and
/// `open_path` falls back to `/proc/PID/object/<name>`, which always opens the object.
pub fn mappings_from_prmaps(
    pid: u32,
    maps: &[PrMap],
    mut resolve: impl FnMut(&str) -> Option<String>,
) -> Vec<Mapping> {
    maps.iter()
        .filter(|m| m.size > 0)
        .map(|m| {
            // a name without a slash is a directory entry; anything else is garbage
            let name = Some(m.mapname.as_str())
                .filter(|n| !n.is_empty() && !n.contains('/') && *n != "." && *n != "..");
            let (path, open_path) = match name {
                None => (None, None),
                Some(n) => match resolve(n) {
                    Some(p) => (
                        Some(p),
                        Some(PathBuf::from(format!("/proc/{pid}/path/{n}"))),
                    ),
                    None => (None, Some(PathBuf::from(format!("/proc/{pid}/object/{n}")))),
                },
            };
            Mapping {
                start: m.vaddr,
                end: m.vaddr.saturating_add(m.size),
                offset: m.offset,
                read: m.mflags & MA_READ != 0,
                write: m.mflags & MA_WRITE != 0,
                exec: m.mflags & MA_EXEC != 0,
                path,
                open_path,
                // /proc/PID/path and /proc/PID/object open the mapped object itself
                mapped: None,
            }
        })
        .collect()
}

// Offsets inside LP64 `psinfo_t`: eleven 4-byte ids, pr_addr/size/rssize/pad1/ttydev
// (8 each from 40), pr_pctcpu/pctmem (2 each at 80), then pr_start (a `timestruc_t`,
// 8-aligned at 88), pr_time, pr_ctime, pr_fname[16] at 136, pr_psargs[80] at 152,
// pr_wstat, pr_argc, pr_argv, pr_envp, pr_dmodel at 256, pr_taskid ... pr_contract at
// 280, pr_filler[1], and the representative lwp's `lwpsinfo_t` at 288 (416 in all).
const PSINFO_NLWP: usize = 4;
const PSINFO_PID: usize = 8;
const PSINFO_PPID: usize = 12;
const PSINFO_UID: usize = 24;
const PSINFO_EUID: usize = 28;
const PSINFO_GID: usize = 32;
const PSINFO_EGID: usize = 36;
const PSINFO_START: usize = 88;
const PSINFO_FNAME: usize = 136;
const PRFNSZ: usize = 16;
const PSINFO_PSARGS: usize = 152;
const PRARGSZ: usize = 80;
const PSINFO_DMODEL: usize = 256;
const PSINFO_ZONEID: usize = 276;
/// Bytes of `psinfo_t` up to the end of the fields read here (`pr_lwp` is not read).
pub const PSINFO_MIN_SIZE: usize = 288;
/// `sizeof (psinfo_t)` on LP64.
pub const PSINFO_SIZE: usize = 416;

/// `pr_dmodel` values.
pub const PR_MODEL_ILP32: u8 = 1;
pub const PR_MODEL_LP64: u8 = 2;

/// The fields of `psinfo_t` pystackd uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PsInfo {
    pub nlwp: i32,
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub euid: u32,
    pub gid: u32,
    pub egid: u32,
    /// `pr_start`: process start time since the epoch.
    pub start_sec: i64,
    pub start_nsec: i64,
    pub fname: String,
    pub psargs: String,
    pub dmodel: u8,
    pub zoneid: i32,
}

impl PsInfo {
    /// Start time in nanoseconds since the epoch: with the pid it names one process
    /// across pid reuse (the Linux module returns clock ticks since boot instead; both
    /// are opaque identifiers to callers).
    pub fn start_time_ns(&self) -> u64 {
        let s = u64::try_from(self.start_sec).unwrap_or(0);
        let ns = u64::try_from(self.start_nsec).unwrap_or(0).min(999_999_999);
        s.saturating_mul(1_000_000_000).saturating_add(ns)
    }
}

/// Parse `/proc/PID/psinfo`; `None` if the buffer is too short.
pub fn parse_psinfo(b: &[u8]) -> Option<PsInfo> {
    if b.len() < PSINFO_MIN_SIZE {
        return None;
    }
    Some(PsInfo {
        nlwp: i32_at(b, PSINFO_NLWP),
        pid: u32_at(b, PSINFO_PID),
        ppid: u32_at(b, PSINFO_PPID),
        uid: u32_at(b, PSINFO_UID),
        euid: u32_at(b, PSINFO_EUID),
        gid: u32_at(b, PSINFO_GID),
        egid: u32_at(b, PSINFO_EGID),
        start_sec: u64_at(b, PSINFO_START) as i64,
        start_nsec: u64_at(b, PSINFO_START + 8) as i64,
        fname: c_string(&b[PSINFO_FNAME..PSINFO_FNAME + PRFNSZ]),
        psargs: c_string(&b[PSINFO_PSARGS..PSINFO_PSARGS + PRARGSZ]),
        dmodel: b[PSINFO_DMODEL],
        zoneid: i32_at(b, PSINFO_ZONEID),
    })
}

/// `ctl` message codes (each a `long`).
pub const PCSTOP: i64 = 1;
pub const PCRUN: i64 = 5;
pub const PCSET: i64 = 16;
pub const PCUNSET: i64 = 17;
/// `PCSET` flag: run-on-last-close. If pystackd dies while the target is stopped, the
/// kernel sets the target running when the last writable `/proc` descriptor closes.
pub const PR_RLC: i64 = 0x0020_0000;

/// Encode a `ctl` write: a sequence of `long`s (command, then its operand if any).
pub fn ctl_message(longs: &[i64]) -> Vec<u8> {
    longs.iter().flat_map(|l| l.to_le_bytes()).collect()
}

/// The name in `/proc/PID/lwp/N/lwpname` (up to `THREAD_NAME_MAX` bytes, NUL-padded);
/// `None` when the thread has no name.
pub fn parse_lwpname(b: &[u8]) -> Option<String> {
    let s = c_string(b);
    let s = s.trim_end_matches('\n');
    (!s.is_empty()).then(|| s.to_string())
}

/// `lwpstatus_t.pr_flags` bits: the LWP is stopped; asleep in an interruptible system call.
pub const PR_STOPPED: i32 = 0x01;
pub const PR_ASLEEP: i32 = 0x10;

/// What `/proc/PID/lwp/N/lwpstatus` says about the system call an LWP is in. LP64
/// `lwpstatus_t`: `pr_flags` 0, `pr_lwpid` 4, `pr_why`/`pr_what`/`pr_cursig`/`pr_pad1`
/// (shorts) 8, `pr_info` (`siginfo_t`, 256) 16, `pr_lwppend`, `pr_lwphold` (`sigset_t`,
/// 16 each) 272, 288, `pr_action` (`struct sigaction`, 32) 304, `pr_altstack`
/// (`stack_t`, 24) 336, `pr_oldcontext` 360, `pr_syscall` (short) 368, `pr_nsysarg` 370,
/// `pr_errno` 372, `pr_sysarg[]` (longs) 376.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LwpStatus {
    pub flags: i32,
    /// `pr_syscall`: the system call number while in one, else 0.
    pub syscall: i16,
    /// `pr_sysarg[0]`.
    pub arg0: u64,
}

const LWPSTATUS_SYSCALL: usize = 368;
const LWPSTATUS_SYSARG: usize = 376;

pub fn parse_lwpstatus(b: &[u8]) -> Option<LwpStatus> {
    if b.len() < LWPSTATUS_SYSARG + 8 {
        return None;
    }
    Some(LwpStatus {
        flags: i32_at(b, 0),
        syscall: i16::from_le_bytes([b[LWPSTATUS_SYSCALL], b[LWPSTATUS_SYSCALL + 1]]),
        arg0: u64_at(b, LWPSTATUS_SYSARG),
    })
}

/// The names of the illumos system calls a Python thread blocks in (`SYS_*` of
/// `usr/src/uts/common/sys/syscall.h`, a stable ABI); others are shown by number.
pub fn syscall_name(nr: i64) -> Option<&'static str> {
    Some(match nr {
        3 => "read",
        4 => "write",
        77 => "lwp_park",
        107 => "waitsys",
        170 => "lwp_cond_wait",
        173 => "pread",
        183 => "pollsys",
        199 => "nanosleep",
        201 => "door",
        210 => "lwp_mutex_timedlock",
        211 => "lwp_sema_timedwait",
        234 => "accept",
        237 => "recv",
        238 => "recvfrom",
        239 => "recvmsg",
        _ => return None,
    })
}

/// `pr_sname` of LP64 `lwpsinfo_t` (after `pr_flag`, `pr_lwpid`, `pr_addr`, `pr_wchan`,
/// `pr_stype`, `pr_state`): `O` on a CPU, `R` runnable, `S` sleeping, `T` stopped, `Z`.
pub const LWPSINFO_SNAME: usize = 26;

#[cfg(test)]
mod tests {
    use super::*;

    fn put(buf: &mut [u8], off: usize, bytes: &[u8]) {
        buf[off..off + bytes.len()].copy_from_slice(bytes);
    }

    #[test]
    fn lwpstatus_syscall() {
        let mut b = vec![0u8; 800];
        put(&mut b, 0, &(PR_ASLEEP | 0x4000).to_le_bytes());
        put(&mut b, 368, &65i16.to_le_bytes());
        put(&mut b, 376, &0xfeed_f00du64.to_le_bytes());
        let s = parse_lwpstatus(&b).unwrap();
        assert_eq!(
            (s.flags & PR_ASLEEP, s.syscall, s.arg0),
            (PR_ASLEEP, 65, 0xfeed_f00d)
        );
        assert_eq!(parse_lwpstatus(&b[..300]), None);
        assert_eq!(syscall_name(77), Some("lwp_park"));
        assert_eq!(syscall_name(65), None);
    }

    fn prmap(vaddr: u64, size: u64, name: &str, offset: u64, mflags: i32) -> Vec<u8> {
        let mut r = vec![0u8; PRMAP_SIZE];
        put(&mut r, 0, &vaddr.to_le_bytes());
        put(&mut r, 8, &size.to_le_bytes());
        put(&mut r, 16, name.as_bytes());
        put(&mut r, 80, &offset.to_le_bytes());
        put(&mut r, 88, &mflags.to_le_bytes());
        put(&mut r, 92, &4096i32.to_le_bytes());
        put(&mut r, 96, &(-1i32).to_le_bytes());
        r
    }

    #[test]
    fn parses_prmap_records() {
        let mut bytes = prmap(0x400000, 0x2000, "a.out", 0, MA_READ | MA_EXEC);
        bytes.extend(prmap(
            0x7fff0000,
            0x1000,
            "",
            0,
            MA_READ | MA_WRITE | MA_ANON,
        ));
        let long = "zfs.65594.65538.2114";
        bytes.extend(prmap(0xfeed0000, 0x3000, long, 0x1000, MA_READ | MA_WRITE));
        bytes.extend_from_slice(&[0xff; 50]); // truncated trailing record
        let maps = parse_prmaps(&bytes);
        assert_eq!(maps.len(), 3);
        assert_eq!(maps[0].vaddr, 0x400000);
        assert_eq!(maps[0].size, 0x2000);
        assert_eq!(maps[0].mapname, "a.out");
        assert_eq!(maps[0].pagesize, 4096);
        assert_eq!(maps[0].shmid, -1);
        assert_eq!(maps[1].mapname, "");
        assert_eq!(maps[2].mapname, long);
        assert_eq!(maps[2].offset, 0x1000);

        let m = mappings_from_prmaps(7, &maps, |n| match n {
            "a.out" => Some("/usr/bin/python3.10".to_string()),
            _ => None,
        });
        assert_eq!(m.len(), 3);
        assert_eq!((m[0].start, m[0].end), (0x400000, 0x402000));
        assert!(m[0].read && !m[0].write && m[0].exec);
        assert_eq!(m[0].path.as_deref(), Some("/usr/bin/python3.10"));
        assert_eq!(m[0].open_path, Some(PathBuf::from("/proc/7/path/a.out")));
        assert_eq!(m[0].basename(), Some("python3.10"));
        assert_eq!((m[1].path.clone(), m[1].open_path.clone()), (None, None));
        assert!(m[1].write && !m[1].exec);
        assert_eq!(m[2].path, None);
        assert_eq!(
            m[2].open_path,
            Some(PathBuf::from(format!("/proc/7/object/{long}")))
        );
        assert_eq!(m[2].offset, 0x1000);
    }

    #[test]
    fn mapname_filling_the_field_has_no_terminator() {
        let name = "x".repeat(PRMAPSZ);
        let maps = parse_prmaps(&prmap(0x1000, 0x1000, &name, 0, MA_READ));
        assert_eq!(maps[0].mapname, name);
    }

    #[test]
    fn garbage_mapnames_are_not_paths() {
        let mut bytes = prmap(0x1000, 0x1000, "../../etc/passwd", 0, MA_READ);
        bytes.extend(prmap(0x3000, 0, "a.out", 0, MA_READ)); // empty mapping dropped
        let maps = parse_prmaps(&bytes);
        let m = mappings_from_prmaps(1, &maps, |_| panic!("must not resolve"));
        assert_eq!(m.len(), 1);
        assert_eq!((m[0].path.clone(), m[0].open_path.clone()), (None, None));
        // an address range that would overflow saturates
        let huge = parse_prmaps(&prmap(u64::MAX - 10, 100, "", 0, 0));
        assert_eq!(mappings_from_prmaps(1, &huge, |_| None)[0].end, u64::MAX);
    }

    fn psinfo_bytes() -> Vec<u8> {
        let mut b = vec![0u8; PSINFO_SIZE];
        put(&mut b, 4, &3i32.to_le_bytes()); // pr_nlwp
        put(&mut b, 8, &4242u32.to_le_bytes()); // pr_pid
        put(&mut b, 12, &1u32.to_le_bytes()); // pr_ppid
        put(&mut b, 24, &101u32.to_le_bytes()); // pr_uid
        put(&mut b, 28, &102u32.to_le_bytes()); // pr_euid
        put(&mut b, 32, &10u32.to_le_bytes()); // pr_gid
        put(&mut b, 36, &11u32.to_le_bytes()); // pr_egid
        put(&mut b, 80, &0x1234u16.to_le_bytes()); // pr_pctcpu (must not be read as time)
        put(&mut b, 88, &1_700_000_000i64.to_le_bytes()); // pr_start.tv_sec
        put(&mut b, 96, &123_456_789i64.to_le_bytes()); // pr_start.tv_nsec
        put(&mut b, 104, &55i64.to_le_bytes()); // pr_time.tv_sec
        put(&mut b, 136, b"python3.10\0");
        put(
            &mut b,
            152,
            b"/usr/bin/python3.10 /usr/bin/pkg image-create /tmp/x\0",
        );
        put(&mut b, 256, &[PR_MODEL_LP64]);
        put(&mut b, 276, &5i32.to_le_bytes()); // pr_zoneid
        b
    }

    #[test]
    fn parses_psinfo_fields() {
        let p = parse_psinfo(&psinfo_bytes()).unwrap();
        assert_eq!(p.nlwp, 3);
        assert_eq!((p.pid, p.ppid), (4242, 1));
        assert_eq!((p.uid, p.euid, p.gid, p.egid), (101, 102, 10, 11));
        assert_eq!((p.start_sec, p.start_nsec), (1_700_000_000, 123_456_789));
        assert_eq!(p.start_time_ns(), 1_700_000_000_123_456_789);
        assert_eq!(p.fname, "python3.10");
        assert!(p.psargs.starts_with("/usr/bin/python3.10 /usr/bin/pkg"));
        assert_eq!(p.dmodel, PR_MODEL_LP64);
        assert_eq!(p.zoneid, 5);
    }

    #[test]
    fn short_or_garbage_psinfo() {
        let b = psinfo_bytes();
        assert!(parse_psinfo(&b[..PSINFO_MIN_SIZE - 1]).is_none());
        assert!(parse_psinfo(&b[..PSINFO_MIN_SIZE]).is_some());
        let mut g = vec![0xffu8; PSINFO_SIZE];
        let p = parse_psinfo(&g).unwrap();
        assert_eq!(p.start_time_ns(), 0); // negative times are not start times
        g[88..96].copy_from_slice(&i64::MAX.to_le_bytes());
        g[96..104].copy_from_slice(&0i64.to_le_bytes());
        assert_eq!(parse_psinfo(&g).unwrap().start_time_ns(), u64::MAX);
    }

    #[test]
    fn ctl_messages_are_longs() {
        assert_eq!(ctl_message(&[PCSTOP]), vec![1, 0, 0, 0, 0, 0, 0, 0]);
        let run = ctl_message(&[PCRUN, 0]);
        assert_eq!(run.len(), 16);
        assert_eq!(&run[..8], &5i64.to_le_bytes());
        let set = ctl_message(&[PCSET, PR_RLC]);
        assert_eq!(&set[8..], &0x0020_0000i64.to_le_bytes());
    }

    #[test]
    fn lwpnames() {
        let mut b = [0u8; 32];
        b[..6].copy_from_slice(b"worker");
        assert_eq!(parse_lwpname(&b).as_deref(), Some("worker"));
        assert_eq!(parse_lwpname(&[0u8; 32]), None);
        assert_eq!(parse_lwpname(b""), None);
        assert_eq!(parse_lwpname(b"main\n").as_deref(), Some("main"));
    }
}
