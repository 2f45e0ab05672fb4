//! The object file holding the interpreter (the python executable of a static build,
//! or `libpython3.X.so` of an `--enable-shared` build): found from the target's
//! mappings, read with the `object` crate for the symbols the reader needs.

use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol};

use crate::error::{Error, Result};
use crate::layout;
use crate::platform::Mapping;

/// Addresses in the target (load bias applied) of the symbols the reader uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Symbols {
    pub py_runtime: Option<u64>,
    /// `Py_Version` (3.11+): `unsigned long` holding `PY_VERSION_HEX`.
    pub py_version: Option<u64>,
    pub code_type: Option<u64>,
    pub frame_type: Option<u64>,
    pub unicode_type: Option<u64>,
    pub bytes_type: Option<u64>,
    /// The builtin types whose objects the reader takes apart (`PyDict_Type`, `PyLong_Type`,
    /// ...), by their Python name: an object whose type pointer is one of these is of that
    /// type without reading the type object and its name out of the target (three or more
    /// reads of a one-shot `stack`'s thread names). A type missing here is read as before.
    pub builtin_types: Vec<(&'static str, u64)>,
    /// `_Py_HashSecret`: the keys of the interpreter's `str` hash, so that a dict can be
    /// probed for a key as CPython does (a slot or two) instead of comparing every key.
    pub hash_secret: Option<u64>,
}

/// C symbol → Python name of the static builtin types in [`Symbols::builtin_types`].
const BUILTIN_TYPES: [(&str, &str); 13] = [
    ("PyLong_Type", "int"),
    ("PyBool_Type", "bool"),
    ("PyFloat_Type", "float"),
    ("PyComplex_Type", "complex"),
    ("PyUnicode_Type", "str"),
    ("PyBytes_Type", "bytes"),
    ("PyTuple_Type", "tuple"),
    ("PyList_Type", "list"),
    ("PyDict_Type", "dict"),
    ("PySet_Type", "set"),
    ("PyFrozenSet_Type", "frozenset"),
    ("_PyNone_Type", "NoneType"),
    ("PyCell_Type", "cell"),
];

/// The interpreter's object file as mapped in the target.
#[derive(Debug, Clone)]
pub struct PythonBinary {
    /// Path as the target sees it.
    pub path: String,
    /// Target address minus the file's virtual address.
    pub load_bias: u64,
    pub symbols: Symbols,
    /// `.PyRuntime` section (address in the target, size), where the build has one.
    pub pyruntime_section: Option<(u64, u64)>,
    /// `(major, minor)` from the file name (`python3.10`, `libpython3.10.so.1.0`).
    pub name_version: Option<(u8, u8)>,
    /// `PY_VERSION` strings found in the read-only data (e.g. "3.10.13").
    pub version_strings: Vec<String>,
    /// The target's writable mappings of this file (for the 3.13+ cookie scan).
    pub writable: Vec<(u64, u64)>,
    /// A free-threaded build (PEP 703, the `t` ABI flag): read only with a free-threaded
    /// table (`layout::for_build`).
    pub free_threaded: bool,
}

/// Version `(3, minor)` from names like `python3.10`, `libpython3.10.so.1.0`,
/// `libpython3.13d.so`, `python3.14t`.
pub fn version_from_name(name: &str) -> Option<(u8, u8)> {
    let base = name.rsplit('/').next().unwrap_or(name);
    let rest = base.strip_prefix("lib").unwrap_or(base);
    let rest = rest.strip_prefix("python")?;
    let rest = rest.strip_prefix('3')?.strip_prefix('.')?;
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    let after = &rest[digits.len()..];
    if !(after.is_empty()
        || after.starts_with('.')
        || after.starts_with('d')
        || after.starts_with('t')
        || after.starts_with('-')
        || after.starts_with('m'))
    {
        return None;
    }
    Some((3, digits.parse().ok()?))
}

/// Whether a name carries the free-threaded ABI flag (`python3.13t`, `libpython3.14t.so`).
fn free_threaded_name(name: &str) -> bool {
    let base = name.rsplit('/').next().unwrap_or(name);
    let rest = base.strip_prefix("lib").unwrap_or(base);
    let Some(rest) = rest.strip_prefix("python3.") else {
        return false;
    };
    let after = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    after.len() < rest.len() && (after.starts_with('t') || after.starts_with("dt"))
}

/// "2.7" for `libpython2.7.so.1.0` / `python2.7`, "3.6" for `python3.6m`: versions
/// older than pystackd reads.
fn old_python_name(base: &str) -> Option<String> {
    let rest = base
        .strip_prefix("lib")
        .unwrap_or(base)
        .strip_prefix("python")?;
    let (major, rest) = rest.split_once('.')?;
    let minor: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    let (major, minor): (u8, u8) = (major.parse().ok()?, minor.parse().ok()?);
    (major == 2 || (major == 3 && minor < 8)).then(|| format!("{major}.{minor}"))
}

/// Order in which mapped files are tried: libpython first, then anything named
/// python, then every other file (a renamed interpreter still exports `_PyRuntime`).
fn candidates(maps: &[Mapping]) -> Vec<&Mapping> {
    let mut seen = std::collections::HashSet::new();
    let mut files: Vec<&Mapping> = Vec::new();
    for m in maps {
        if m.open_path.is_none() {
            continue;
        }
        if seen.insert(m.path.clone()) {
            files.push(m);
        }
    }
    let rank = |m: &&Mapping| {
        let b = m.basename().unwrap_or("");
        if b.starts_with("libpython") {
            0
        } else if b.contains("python") {
            1
        } else if b.starts_with("ld-")
            || b.starts_with("libc.")
            || b.starts_with("libm.")
            || b.ends_with(".cpython-")
        {
            3
        } else {
            2
        }
    };
    files.sort_by_key(rank);
    files
}

/// Find the object holding `_PyRuntime` among the target's mappings.
pub fn find_python(pid: u32, maps: &[Mapping]) -> Result<PythonBinary> {
    let mut tried = Vec::new();
    for m in candidates(maps) {
        let path = m.path.clone().unwrap_or_default();
        // extension modules and unrelated libraries rarely matter; bound the work
        if tried.len() > 64 {
            break;
        }
        match inspect(m, maps) {
            Ok(Some(bin)) => return Ok(bin),
            Ok(None) => tried.push(path),
            // the interpreter we cannot open is the likely one: say so, not "not Python"
            Err(Error::PermissionDenied { detail, .. })
                if m.basename().is_some_and(|b| b.contains("python")) =>
            {
                return Err(Error::PermissionDenied { pid, detail });
            }
            // a free-threaded interpreter: say so, not "not Python"
            Err(e @ Error::UnsupportedVersion { .. }) => return Err(e),
            Err(e) => tried.push(format!("{path} ({e})")),
        }
    }
    // an old interpreter (2.x, 3.0-3.6 have no _PyRuntime): name the version
    if let Some(v) = maps
        .iter()
        .filter_map(|m| old_python_name(m.basename()?))
        .next()
    {
        return Err(Error::UnsupportedVersion { version: v });
    }
    Err(Error::NotPython {
        pid,
        reason: if tried.is_empty() {
            "it maps no files".to_string()
        } else {
            format!(
                "no mapped object defines _PyRuntime (looked at {} files: {}{})",
                tried.len(),
                tried.iter().take(4).cloned().collect::<Vec<_>>().join(", "),
                if tried.len() > 4 { ", ..." } else { "" }
            )
        },
    })
}

fn inspect(m: &Mapping, maps: &[Mapping]) -> Result<Option<PythonBinary>> {
    let path = m.path.clone().unwrap_or_default();
    let bin_err = |detail: String| Error::Binary {
        path: path.clone(),
        detail,
    };
    let (file, md) = crate::platform::open_mapping(m).map_err(|e| {
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            Error::PermissionDenied {
                pid: 0,
                detail: format!(
                    "cannot open {path}, the interpreter's object file (needs read access to \
                     it and search access to its directories; as a service: CAP_DAC_READ_SEARCH)"
                ),
            }
        } else {
            bin_err(e.to_string())
        }
    })?;
    // SAFETY: read-only private mapping of a file we only read; a concurrent truncation
    // would fault, as for any mmap reader (the interpreter itself has the file mapped).
    // (its length from the open's own fstat: no second one)
    let len = usize::try_from(md.len()).map_err(|e| bin_err(e.to_string()))?;
    let data = unsafe { memmap2::MmapOptions::new().len(len).map(&file) }
        .map_err(|e| bin_err(e.to_string()))?;
    let obj = match object::File::parse(&*data) {
        Ok(o) => o,
        Err(_) => return Ok(None), // not an object file we understand
    };
    let name_version = version_from_name(&path);
    let section = section_named(&obj, &data, ".PyRuntime");
    let mut syms = Symbols::default();
    fn fill(syms: &mut Symbols, name: &str, addr: u64) {
        if addr == 0 {
            return;
        }
        // (the guard: a symbol-table pass calls this for every symbol)
        if let Some(&(_, py)) = name
            .ends_with("_Type")
            .then(|| BUILTIN_TYPES.iter().find(|(c, _)| *c == name))
            .flatten()
        {
            if !syms.builtin_types.iter().any(|(n, _)| *n == py) {
                syms.builtin_types.push((py, addr));
            }
        }
        let slot = match name {
            "_PyRuntime" => &mut syms.py_runtime,
            "Py_Version" => &mut syms.py_version,
            "PyCode_Type" => &mut syms.code_type,
            "PyFrame_Type" => &mut syms.frame_type,
            "PyUnicode_Type" => &mut syms.unicode_type,
            "PyBytes_Type" => &mut syms.bytes_type,
            "_Py_HashSecret" => &mut syms.hash_secret,
            _ => return,
        };
        if slot.is_none() {
            *slot = Some(addr);
        }
    }
    // Biased reference counting (`_Py_brc_*`, PEP 703) exists only in free-threaded builds:
    // noted in the same passes (one pass over a symbol table costs more than the whole
    // read of a blocked process).
    const FREE_THREADED_SYMBOL: &str = "_Py_brc_merge_refcounts";
    let mut brc = false;
    let mut static_pass = false;
    let wanted: Vec<&str> = [
        "_PyRuntime",
        "Py_Version",
        "PyCode_Type",
        "PyFrame_Type",
        "_Py_HashSecret",
        FREE_THREADED_SYMBOL,
    ]
    .into_iter()
    .chain(BUILTIN_TYPES.iter().map(|(c, _)| *c))
    .collect();
    if let Some(found) = lookup_dynamic(&obj, &data, &wanted) {
        for (n, addr) in wanted.iter().zip(found) {
            let Some(addr) = addr else { continue };
            fill(&mut syms, n, addr);
            brc |= *n == FREE_THREADED_SYMBOL;
        }
    } else {
        for s in obj.dynamic_symbols() {
            if let Ok(n) = s.name() {
                fill(&mut syms, n, s.address());
                brc |= n == FREE_THREADED_SYMBOL;
            }
        }
    }
    if syms.py_runtime.is_none() || syms.code_type.is_none() {
        static_pass = true;
        for s in obj.symbols() {
            if let Ok(n) = s.name() {
                fill(&mut syms, n, s.address());
                brc |= n == FREE_THREADED_SYMBOL;
            }
        }
    }
    if syms.py_runtime.is_none() && section.is_none() && name_version.is_none() {
        return Ok(None);
    }
    if syms.py_runtime.is_none() && section.is_none() && name_version.is_none_or(|v| v < (3, 13)) {
        // a python-named file without the runtime (e.g. a launcher executable next to libpython)
        return Ok(None);
    }
    // A free-threaded build (PEP 703: `--disable-gil`, the `t` ABI flag) lays out every
    // object differently (a larger header: `ob_tid`, `ob_ref_local`, `ob_ref_shared`);
    // know it by name here, so that it is read with its own table or refused, never misread
    // as a torn read of a GIL build later. Its biased reference counting symbol catches a
    // renamed binary too: the static symbols are looked at only where the name does not
    // rule it out (no free-threaded build before 3.13).
    let free_threaded = free_threaded_name(&path)
        || brc
        || (!static_pass
            && name_version.is_none_or(|v| v >= (3, 13))
            && has_static_symbol(&obj, &data, FREE_THREADED_SYMBOL));
    if let Some((a, b)) = name_version.filter(|&v| free_threaded && !layout::has_free_threaded(v)) {
        return Err(Error::UnsupportedVersion {
            version: format!("{a}.{b}t (a free-threaded build)"),
        });
    }
    let Some(load_bias) = load_bias(&obj, m.path.as_deref(), maps) else {
        return Err(bin_err(
            "cannot match its ELF segments to the target's mappings".into(),
        ));
    };
    let rebase = |a: Option<u64>| a.map(|a| a.wrapping_add(load_bias));
    let symbols = Symbols {
        py_runtime: rebase(syms.py_runtime),
        py_version: rebase(syms.py_version),
        code_type: rebase(syms.code_type),
        frame_type: rebase(syms.frame_type),
        unicode_type: rebase(syms.unicode_type),
        bytes_type: rebase(syms.bytes_type),
        builtin_types: syms
            .builtin_types
            .iter()
            .map(|&(n, a)| (n, a.wrapping_add(load_bias)))
            .collect(),
        hash_secret: rebase(syms.hash_secret),
    };
    let mut writable: Vec<(u64, u64)> = maps
        .iter()
        .filter(|x| x.path == m.path && x.write)
        .map(|x| (x.start, x.end))
        .collect();
    // .bss continues in the anonymous mapping right after the file's last writable one
    if let Some(&(_, end)) = writable.last() {
        if let Some(bss) = maps
            .iter()
            .find(|x| x.start == end && x.path.is_none() && x.write)
        {
            writable.push((bss.start, bss.end));
        }
    }
    Ok(Some(PythonBinary {
        path,
        load_bias,
        symbols,
        pyruntime_section: section.map(|(a, s)| (a.wrapping_add(load_bias), s)),
        name_version,
        // only needed where `Py_Version` (3.11+) is missing: the scan reads all of .rodata
        version_strings: if syms.py_version.is_none() {
            version_strings(&obj)
        } else {
            Vec::new()
        },
        writable,
        free_threaded,
    }))
}

/// The addresses of the defined dynamic symbols `names`, looked up in the file's ELF hash
/// table (`.gnu.hash`, else `.hash`): a lookup each, where a pass over libpython's ~10,000
/// dynamic symbols cost a quarter of a whole `pystackd stack`. `None` when there is no
/// hash table to use (the caller walks the symbols).
fn lookup_dynamic(obj: &object::File, data: &[u8], names: &[&str]) -> Option<Vec<Option<u64>>> {
    use object::read::elf::{SectionHeader as _, Sym as _};
    let object::File::Elf64(elf) = obj else {
        return None;
    };
    let endian = elf.endian();
    let sections = elf.elf_section_table();
    let symbols = elf.elf_dynamic_symbol_table();
    if symbols.is_empty() {
        return None;
    }
    let strings = sections
        .section(symbols.string_section())
        .ok()?
        .data(endian, data)
        .ok()?;
    // a symbol of a hidden version is not the one a `dlsym` would find
    let versym = sections.gnu_versym(endian, data).ok()?.map(|(v, _)| v);
    let visible =
        |i: usize| versym.is_none_or(|v| v.get(i).is_some_and(|x| x.0.get(endian) & 0x8000 == 0));
    let found = |i: usize, n: &[u8]| -> Option<u64> {
        let sym = symbols.symbol(object::SymbolIndex(i)).ok()?;
        (name_at(strings, sym.st_name(endian) as usize, n)
            && visible(i)
            && !sym.is_undefined(endian))
        .then(|| sym.st_value(endian))
        .filter(|&a| a != 0)
    };
    let gnu = sections
        .iter()
        .find(|s| s.sh_type(endian) == object::elf::SHT_GNU_HASH)
        .and_then(|s| s.data(endian, data).ok());
    if let Some(raw) = gnu {
        // `.gnu.hash` (ELF64): nbuckets, symoffset, bloom words, bloom shift; the bloom
        // words (u64), the buckets (u32: a chain's first symbol), the chain values (u32:
        // each symbol's hash, the low bit marking a chain's end)
        use object::Endian as _;
        let word = |i: usize| -> Option<u32> {
            let b = raw.get(i * 4..i * 4 + 4)?;
            Some(endian.read_u32_bytes([b[0], b[1], b[2], b[3]]))
        };
        let (nbuckets, base, nbloom) = (word(0)? as usize, word(1)? as usize, word(2)? as usize);
        let buckets = 4usize.checked_add(nbloom.checked_mul(2)?)?;
        let chains = buckets.checked_add(nbuckets)?;
        if nbuckets == 0 || raw.len() < chains * 4 {
            return None;
        }
        return Some(
            names
                .iter()
                .map(|n| {
                    let n = n.as_bytes();
                    let hash = object::elf::gnu_hash(n);
                    let mut i = word(buckets + hash as usize % nbuckets)? as usize;
                    if i < base {
                        return None;
                    }
                    // (bounded by the table: a value past its end ends the chain)
                    while let Some(v) = word(chains + (i - base)) {
                        if v | 1 == hash | 1 {
                            if let Some(a) = found(i, n) {
                                return Some(a);
                            }
                        }
                        if v & 1 != 0 {
                            break;
                        }
                        i += 1;
                    }
                    None
                })
                .collect(),
        );
    }
    // SysV hash only (rare): object's lookup
    let versions = sections.versions(endian, data).ok()?.unwrap_or_default();
    let (h, _) = sections.hash(endian, data).ok()??;
    Some(
        names
            .iter()
            .map(|n| {
                let n = n.as_bytes();
                h.find(endian, n, object::elf::hash(n), None, symbols, &versions)
                    .filter(|(_, sym)| !sym.is_undefined(endian))
                    .map(|(_, sym)| sym.st_value(endian))
                    .filter(|&a: &u64| a != 0)
            })
            .collect(),
    )
}

/// Whether the NUL-terminated string at `off` in `table` is `name`, compared in place.
/// object's string lookups find the NUL with the memchr crate, whose first call detects
/// the CPU's features: CPUID instructions, each a trap to the hypervisor on a VM (about
/// 90 µs of a one-shot `stack`'s 1.8 ms here). Nothing else on that path calls it.
fn name_at(table: &[u8], off: usize, name: &[u8]) -> bool {
    off.checked_add(name.len())
        .is_some_and(|end| table.get(off..end) == Some(name) && table.get(end) == Some(&0))
}

/// Whether the static symbol table (`.symtab`) has a symbol named `name` (compared in
/// place: `name_at`).
fn has_static_symbol(obj: &object::File, data: &[u8], name: &str) -> bool {
    use object::read::elf::{SectionHeader as _, Sym as _};
    use object::{Object as _, ObjectSymbol as _};
    let object::File::Elf64(elf) = obj else {
        return obj.symbols().any(|s| s.name() == Ok(name));
    };
    let endian = elf.endian();
    let symtab = elf.elf_symbol_table();
    let Ok(strings) = elf
        .elf_section_table()
        .section(symtab.string_section())
        .and_then(|s| s.data(endian, data))
    else {
        return false;
    };
    symtab
        .symbols()
        .iter()
        .any(|s| name_at(strings, s.st_name(endian) as usize, name.as_bytes()))
}

/// Address and size of the section named `name` (names compared in place: `name_at`).
fn section_named(obj: &object::File, data: &[u8], name: &str) -> Option<(u64, u64)> {
    use object::read::elf::{FileHeader as _, SectionHeader as _};
    use object::{Object as _, ObjectSection as _};
    let object::File::Elf64(elf) = obj else {
        return obj.section_by_name(name).map(|s| (s.address(), s.size()));
    };
    let endian = elf.endian();
    let sections = elf.elf_section_table();
    let idx = elf.elf_header().shstrndx(endian, data).ok()?;
    let names = sections
        .section(object::SectionIndex(idx as usize))
        .ok()?
        .data(endian, data)
        .ok()?;
    sections
        .iter()
        .find(|s| name_at(names, s.sh_name(endian) as usize, name.as_bytes()))
        .map(|s| (s.sh_addr(endian), s.sh_size(endian)))
}

/// Load bias from the file's PT_LOAD segments and the target's mappings of the file:
/// the mapping at file offset O of a segment with (vaddr, offset) puts vaddr+(O-offset)
/// at the mapping's start.
fn load_bias(obj: &object::File, path: Option<&str>, maps: &[Mapping]) -> Option<u64> {
    let mine: Vec<&Mapping> = maps.iter().filter(|m| m.path.as_deref() == path).collect();
    for m in &mine {
        for seg in obj.segments() {
            let (off, size) = seg.file_range();
            let page_off = off & !0xfff;
            if m.offset >= page_off && m.offset < off + size.max(1) {
                let vaddr_at = seg.address().wrapping_sub(off).wrapping_add(m.offset);
                return Some(m.start.wrapping_sub(vaddr_at));
            }
        }
    }
    None
}

/// `PY_VERSION` literals ("3.10.13", "3.14.0rc1") in the read-only data.
fn version_strings(obj: &object::File) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for name in [".rodata", ".rodata1"] {
        let Some(sec) = obj.section_by_name(name) else {
            continue;
        };
        let Ok(data) = sec.data() else { continue };
        // look for "\03.": cheap first filter with memchr over '3'
        let mut i = 0;
        while let Some(p) = memchr::memmem::find(&data[i..], b"\x003.") {
            let start = i + p + 1;
            let end = data[start..]
                .iter()
                .position(|&b| b == 0)
                .map(|e| start + e);
            i = start;
            let Some(end) = end else { break };
            if end - start > 16 {
                continue;
            }
            let Ok(s) = std::str::from_utf8(&data[start..end]) else {
                continue;
            };
            if is_py_version(s) && !out.iter().any(|o| o == s) {
                out.push(s.to_string());
            }
        }
    }
    out
}

pub(crate) fn is_py_version(s: &str) -> bool {
    let mut parts = s.splitn(3, '.');
    let (Some(a), Some(b), Some(c)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let minor: Option<u8> = b.parse().ok();
    let micro_digits = c.chars().take_while(|c| c.is_ascii_digit()).count();
    let suffix = &c[micro_digits..];
    a == "3"
        && matches!(minor, Some(8..=20))
        && micro_digits > 0
        && micro_digits <= 2
        && (suffix.is_empty()
            || suffix == "+"
            || ["a", "b", "rc"].iter().any(|p| {
                suffix.strip_prefix(p).is_some_and(|n| {
                    let n = n.strip_suffix('+').unwrap_or(n);
                    !n.is_empty() && n.chars().all(|c| c.is_ascii_digit())
                })
            }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_compared_in_place() {
        let t = b"\0_PyRuntime\0Py_Version\0tail";
        assert!(name_at(t, 1, b"_PyRuntime"));
        assert!(name_at(t, 12, b"Py_Version"));
        // a prefix, a longer name, a string not ended by NUL, offsets past the end
        assert!(!name_at(t, 1, b"_PyRun"));
        assert!(!name_at(t, 12, b"Py_Version2"));
        assert!(!name_at(t, 23, b"tail"));
        assert!(!name_at(t, 40, b"x"));
        assert!(!name_at(t, usize::MAX, b"x"));
        assert!(name_at(t, 0, b""));
    }

    #[test]
    fn names() {
        assert_eq!(
            version_from_name("/usr/lib/libpython3.10.so.1.0"),
            Some((3, 10))
        );
        assert_eq!(version_from_name("python3.13"), Some((3, 13)));
        assert_eq!(version_from_name("/x/python3.14t"), Some((3, 14)));
        assert!(free_threaded_name("/x/python3.14t"));
        assert!(free_threaded_name("libpython3.13t.so.1.0"));
        assert!(free_threaded_name("libpython3.13dt.so"));
        assert!(!free_threaded_name("libpython3.13.so.1.0"));
        assert!(!free_threaded_name("/usr/bin/python3.12"));
        assert_eq!(version_from_name("python3"), None);
        assert_eq!(version_from_name("pythonista"), None);
        assert_eq!(version_from_name("libpython3.8d.so"), Some((3, 8)));
    }

    #[test]
    fn old_names() {
        assert_eq!(
            old_python_name("libpython2.7.so.1.0").as_deref(),
            Some("2.7")
        );
        assert_eq!(old_python_name("python3.6m").as_deref(), Some("3.6"));
        assert_eq!(old_python_name("python3.10"), None);
        assert_eq!(old_python_name("python3"), None);
    }

    #[test]
    fn version_literals() {
        for ok in ["3.10.13", "3.14.0rc1", "3.8.18", "3.12.0a7", "3.11.2+"] {
            assert!(is_py_version(ok), "{ok}");
        }
        for bad in ["3.1.2", "3.10", "1.2.13", "3.10.x", "3.10.13rc"] {
            assert!(!is_py_version(bad), "{bad}");
        }
    }
}
