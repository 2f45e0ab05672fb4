//! Whether each uprobe's breakpoint is in the traced process's memory, checked all through
//! a trace.
//!
//! A uprobe fires only while its breakpoint instruction sits at the probed address in the
//! process's copy of the page. Linux 6.18 has been seen taking one out of a process in the
//! middle of a trace (docs/trace.md, "A uprobe's breakpoint removed"): the probe's later
//! calls are then simply not traced, and nothing bpftrace or the kernel reports says so.
//! The breakpoint replaces the first bytes of the probed instruction, so the process's
//! bytes differing from the file's is the breakpoint being there; the same bytes is its
//! absence. Only reads: nothing is written to the process.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use pyframe_reader::platform::Mapping;
use pyframe_reader::Memory;
use symbolize::{ElfFile, SymbolTable};

/// How many bytes a breakpoint replaces: x86's `int3` is one byte, arm64's `brk` four.
const BREAKPOINT_LEN: usize = if cfg!(target_arch = "x86_64") { 1 } else { 4 };

/// One uprobe whose address in the process is known.
#[derive(Debug)]
struct Watched {
    probe: String,
    /// The probed file and the offset of the probed instruction in it.
    path: String,
    file_offset: u64,
    /// The file's bytes there (what the process holds when the breakpoint is absent).
    original: Vec<u8>,
    /// Where the process maps it (None: not mapped, or not yet).
    addr: Option<u64>,
    seen_in_place: bool,
    /// When (since the probes were attached) it was first found absent.
    missing_at: Option<Duration>,
}

/// The uprobes of one trace and what was seen of their breakpoints.
#[derive(Debug, Default)]
pub struct Breakpoints {
    watched: Vec<Watched>,
    /// Probes that are not checked, and why.
    unchecked: Vec<(String, String)>,
    pid: u32,
}

/// A uprobe (or uretprobe: its breakpoint is at the function's entry too) given as
/// `uprobe:PATH:FUNCTION[+OFFSET]` or `uprobe:PATH:0xADDRESS`, as bpftrace spells them.
/// Returns (path, function or address, offset), or why it cannot be checked; `None` for
/// probes that are not uprobes.
fn parse(probe: &str) -> Option<Result<(String, Target, u64), String>> {
    let rest = ["uprobe:", "u:", "uretprobe:", "ur:"]
        .iter()
        .find_map(|p| probe.strip_prefix(p))?;
    let Some((path, func)) = rest.rsplit_once(':') else {
        return Some(Err("no function named".into()));
    };
    if path.is_empty() || func.is_empty() {
        return Some(Err("no function named".into()));
    }
    if probe.contains(['*', '?', '{', '[']) {
        return Some(Err("a wildcard".into()));
    }
    if !path.starts_with('/') {
        return Some(Err(format!(
            "{path} is a library name, not a path (give the library's path to have it checked)"
        )));
    }
    let (name, offset) = match func.split_once('+') {
        Some((n, o)) => match parse_number(o) {
            Some(o) => (n, o),
            None => return Some(Err(format!("offset {o:?} is not a number"))),
        },
        None => (func, 0),
    };
    let target = if let Some(hex) = name.strip_prefix("0x") {
        match u64::from_str_radix(hex, 16) {
            Ok(a) => Target::Address(a),
            Err(_) => return Some(Err(format!("{name:?} is not an address"))),
        }
    } else {
        Target::Symbol(name.to_string())
    };
    Some(Ok((path.to_string(), target, offset)))
}

fn parse_number(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Target {
    Symbol(String),
    /// An ELF virtual address in the file.
    Address(u64),
}

/// The file offset of the probed instruction and the file's bytes there.
fn locate_in_file(path: &str, target: &Target, offset: u64) -> Result<(u64, Vec<u8>), String> {
    let file = ElfFile::open(Path::new(path)).map_err(|e| e.to_string())?;
    let vaddr = match target {
        Target::Address(a) => *a,
        Target::Symbol(name) => {
            let table = SymbolTable::build(&[&file]).map_err(|e| e.to_string())?;
            table
                .symbols()
                .iter()
                .find(|s| &*s.name == name)
                .map(|s| s.addr)
                .ok_or_else(|| format!("{path} has no function symbol {name}"))?
        }
    }
    .checked_add(offset)
    .ok_or("address out of range")?;
    let at = file
        .offset_of_vaddr(vaddr)
        .ok_or_else(|| format!("address {vaddr:#x} is not in {path}'s file"))?;
    let original = file
        .bytes_at(at, BREAKPOINT_LEN)
        .ok_or_else(|| format!("offset {at:#x} is past the end of {path}"))?
        .to_vec();
    Ok((at, original))
}

/// Where an executable mapping of `path` (or of the same file by device and inode: the
/// process may name it through another mount namespace) holds `file_offset`.
fn address_in(
    maps: &[Mapping],
    path: &str,
    identity: Option<(u64, u64)>,
    file_offset: u64,
) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut same_file: HashMap<&str, bool> = HashMap::new();
    maps.iter()
        .filter(|m| m.exec && file_offset >= m.offset && file_offset - m.offset < m.end - m.start)
        .find(|m| {
            let Some(p) = m.path.as_deref() else {
                return false;
            };
            if p == path {
                return true;
            }
            // the file as the kernel mapped it, where the OS says (no statx)
            if let (Some(f), Some(id)) = (&m.mapped, identity) {
                return (f.dev, f.inode) == id;
            }
            *same_file.entry(p).or_insert_with(|| {
                let opened = m.open_path.as_deref().unwrap_or(Path::new(p));
                match (identity, std::fs::metadata(opened)) {
                    (Some(id), Ok(md)) => (md.dev(), md.ino()) == id,
                    _ => false,
                }
            })
        })
        .map(|m| m.start + (file_offset - m.offset))
}

/// A uprobe's file and the offset of its instruction in it (what `perf_event_open` takes),
/// or why it cannot be found; `None` for probes that are not uprobes.
#[cfg(target_os = "linux")]
pub fn file_offset(probe: &str) -> Option<Result<(String, u64), String>> {
    Some(parse(probe)?.and_then(|(path, target, offset)| {
        locate_in_file(&path, &target, offset).map(|(at, _)| (path, at))
    }))
}

impl Breakpoints {
    /// Finds each uprobe's instruction in its file; which are checked is then fixed.
    pub fn locate(pid: u32, probes: &[String]) -> Breakpoints {
        let mut b = Breakpoints {
            pid,
            ..Default::default()
        };
        for probe in probes {
            match parse(probe) {
                None => {}
                Some(Err(why)) => b.unchecked.push((probe.clone(), why)),
                Some(Ok((path, target, offset))) => match locate_in_file(&path, &target, offset) {
                    Ok((file_offset, original)) => b.watched.push(Watched {
                        probe: probe.clone(),
                        path,
                        file_offset,
                        original,
                        addr: None,
                        seen_in_place: false,
                        missing_at: None,
                    }),
                    Err(why) => b.unchecked.push((probe.clone(), why)),
                },
            }
        }
        b
    }

    pub fn is_empty(&self) -> bool {
        self.watched.is_empty()
    }

    /// Reads every breakpoint once; `at` is the time since the probes were attached.
    pub fn check(&mut self, memory: &dyn Memory, at: Duration) {
        if self.watched.iter().any(|w| w.addr.is_none()) {
            // not mapped yet (a library loaded later), or the first check
            if let Ok(maps) = pyframe_reader::platform::mappings(self.pid) {
                for w in self.watched.iter_mut().filter(|w| w.addr.is_none()) {
                    let identity = std::fs::metadata(&w.path).ok().map(|md| {
                        use std::os::unix::fs::MetadataExt;
                        (md.dev(), md.ino())
                    });
                    w.addr = address_in(&maps, &w.path, identity, w.file_offset);
                }
            }
        }
        for w in &mut self.watched {
            let Some(addr) = w.addr else { continue };
            let mut now = vec![0u8; w.original.len()];
            if memory.read(addr, &mut now).is_err() {
                // unmapped since (dlclose): look for it again next time
                w.addr = None;
                continue;
            }
            if now != w.original {
                w.seen_in_place = true;
            } else if w.missing_at.is_none() {
                w.missing_at = Some(at);
            }
        }
    }

    /// Whether a breakpoint was found missing from the process while the probes were on.
    pub fn any_missing(&self) -> bool {
        self.watched.iter().any(|w| w.missing_at.is_some())
    }

    /// What the user must be told, one line each (empty when every checked breakpoint was
    /// in place at every look).
    pub fn report(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for w in &self.watched {
            match (w.addr, w.missing_at, w.seen_in_place) {
                (_, Some(at), true) => lines.push(format!(
                    "{}: its breakpoint was gone from process {} {:.1} s into the trace \
                     (the kernel took it out): later calls were not traced",
                    w.probe,
                    self.pid,
                    at.as_secs_f64()
                )),
                (_, Some(_), false) => lines.push(format!(
                    "{}: its breakpoint was never in place in process {} (the kernel did not \
                     put it there): its calls were not traced",
                    w.probe, self.pid
                )),
                (None, None, false) => lines.push(format!(
                    "{}: {} is not mapped by process {}: the probe could not fire there",
                    w.probe, w.path, self.pid
                )),
                _ => {}
            }
        }
        if !self.unchecked.is_empty() {
            let list: Vec<String> = self
                .unchecked
                .iter()
                .map(|(p, why)| format!("{p} ({why})"))
                .collect();
            lines.push(format!(
                "breakpoints not checked for removal: {}",
                list.join("; ")
            ));
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uprobe_specs_are_parsed_as_bpftrace_spells_them() {
        assert_eq!(parse("profile:hz:99"), None);
        assert_eq!(parse("tracepoint:syscalls:sys_enter_read"), None);
        assert_eq!(
            parse("uprobe:/lib/libc.so.6:fsync"),
            Some(Ok((
                "/lib/libc.so.6".into(),
                Target::Symbol("fsync".into()),
                0
            )))
        );
        assert_eq!(
            parse("ur:/x/lib.so:f+0x10"),
            Some(Ok(("/x/lib.so".into(), Target::Symbol("f".into()), 16)))
        );
        assert_eq!(
            parse("u:/x/lib.so:0x1139"),
            Some(Ok(("/x/lib.so".into(), Target::Address(0x1139), 0)))
        );
        assert!(matches!(parse("uprobe:/x/lib.so:mark*"), Some(Err(w)) if w.contains("wildcard")));
        assert!(matches!(parse("uprobe:libc:fsync"), Some(Err(w)) if w.contains("library name")));
        assert!(matches!(parse("uprobe:/x/lib.so"), Some(Err(_))));
        assert!(matches!(parse("uprobe:/x/lib.so:f+zz"), Some(Err(_))));
    }

    #[test]
    fn a_symbol_is_found_at_its_file_offset() {
        // this test binary is an ELF file with function symbols of its own
        let exe = std::env::current_exe().unwrap();
        let path = exe.to_str().unwrap();
        let file = ElfFile::open(&exe).unwrap();
        let table = SymbolTable::build(&[&file]).unwrap();
        let sym = table
            .symbols()
            .iter()
            .find(|s| s.name.contains("main") && s.size > 0)
            .expect("a main symbol")
            .clone();
        let (at, bytes) = locate_in_file(path, &Target::Symbol(sym.name.to_string()), 0).unwrap();
        assert_eq!(file.offset_of_vaddr(sym.addr), Some(at));
        assert_eq!(bytes.len(), BREAKPOINT_LEN);
        let missing = locate_in_file(path, &Target::Symbol("no_such_function_here".into()), 0);
        assert!(missing.unwrap_err().contains("no function symbol"));
    }
}
