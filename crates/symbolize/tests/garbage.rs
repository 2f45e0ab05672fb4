//! Bad input: truncated and corrupted ELF and DWARF, compressed sections that claim
//! absurd sizes. Every case is an error or a partial answer, never a panic, and memory
//! stays bounded.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use object::{Object, ObjectSection};
use symbolize::{Config, Error, Symbolizer};

fn fixture(tmp: &Path, variant: u32, cflags: &[&str]) -> Option<Fixture> {
    let f = build_fixture(tmp, variant, cflags);
    if f.is_none() {
        skip("no gcc/objcopy to build the fixture");
    }
    f
}

fn probe_all(path: &Path, addrs: &[u64]) -> (usize, usize) {
    // a fresh symbolizer: nothing cached from an earlier, different file
    let sym = Symbolizer::new(Config::local(vec![]));
    let (mut ok, mut err) = (0, 0);
    for &a in addrs {
        match sym.symbolize_file(path, a, true) {
            Ok(s) => {
                ok += 1;
                let _ = s.to_string();
            }
            Err(_) => err += 1,
        }
    }
    (ok, err)
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn symbol_addrs(full: &Path) -> Vec<u64> {
    let mut v: Vec<u64> = nm_text_symbols(full, false)
        .iter()
        .flat_map(|s| [s.addr, s.addr + s.size / 2])
        .collect();
    v.push(0);
    v.push(u64::MAX);
    v
}

#[test]
fn truncated_files_are_refused_or_partial_never_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(f) = fixture(tmp.path(), 5, &[]) else {
        return;
    };
    let data = std::fs::read(&f.full).unwrap();
    let addrs = symbol_addrs(&f.full);
    let cut = tmp.path().join("cut");
    let (mut refused, mut answered) = (0, 0);
    let mut len = 0;
    while len < data.len() {
        std::fs::write(&cut, &data[..len]).unwrap();
        match Symbolizer::new(Config::local(vec![])).module(&cut, None) {
            Err(Error::BadElf { .. }) | Err(Error::Io { .. }) => refused += 1,
            Err(e) => panic!("{len}: unexpected {e:?}"),
            Ok(_) => {
                answered += 1;
                probe_all(&cut, &addrs);
            }
        }
        len += if len < 512 { 1 } else { 61 };
    }
    eprintln!("truncated fixture: {refused} prefixes refused, {answered} parsed (and probed)");
    assert!(refused > 0);
}

#[test]
fn truncated_debian_debug_file_is_refused() {
    let Some((root, dbg)) = debian_dbg("3.14") else {
        return skip("no Debian 3.14 with -dbg");
    };
    let bin = root.join("usr/bin/python3.14");
    let binary = symbolize::ElfFile::open(&bin).unwrap();
    let id = binary.build_id.clone().unwrap().hex();
    let debug =
        std::fs::read(dbg.join(format!(".build-id/{}/{}.debug", &id[..2], &id[2..]))).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(".build-id").join(&id[..2]);
    std::fs::create_dir_all(&dir).unwrap();
    let place = dir.join(format!("{}.debug", &id[2..]));
    for frac in [1, 2, 5, 10, 30, 50, 70, 90, 99] {
        let len = debug.len() * frac / 100;
        std::fs::write(&place, &debug[..len]).unwrap();
        let sym = Symbolizer::new(Config::local(vec![tmp.path().to_path_buf()]));
        let m = sym.module(&bin, None).unwrap();
        // refused at open (section headers are at the end): binary symbols only
        assert!(m.debug_file().is_none(), "{frac}%");
        assert!(m
            .debug_search()
            .refused
            .iter()
            .all(|e| matches!(e, Error::BadElf { .. })));
        let s = sym.symbolize_file(&bin, 0x4389bc, true).unwrap();
        assert!(s.frames.is_empty());
    }
}

fn debug_section_ranges(path: &Path) -> Vec<(usize, usize)> {
    let data = std::fs::read(path).unwrap();
    let obj = object::File::parse(&*data).unwrap();
    obj.sections()
        .filter(|s| s.name().is_ok_and(|n| n.starts_with(".debug_")))
        .filter_map(|s| s.file_range())
        .map(|(o, l)| (o as usize, l as usize))
        .filter(|(_, l)| *l > 0)
        .collect()
}

#[test]
fn corrupted_dwarf_and_elf_bytes_never_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(f) = fixture(tmp.path(), 6, &[]) else {
        return;
    };
    let data = std::fs::read(&f.full).unwrap();
    let ranges = debug_section_ranges(&f.full);
    assert!(!ranges.is_empty());
    let addrs = symbol_addrs(&f.full);
    let mut rng = Rng(0xbad_d0f);
    let bad = tmp.path().join("bad");
    let (mut ok, mut err) = (0, 0);
    let rounds = 400;
    for round in 0..rounds {
        let mut d = data.clone();
        for _ in 0..1 + rng.below(24) {
            let pos = if round % 4 == 0 {
                // anywhere, headers included
                rng.below(d.len() as u64) as usize
            } else {
                let (o, l) = ranges[rng.below(ranges.len() as u64) as usize];
                o + rng.below(l as u64) as usize
            };
            d[pos] = match rng.below(3) {
                0 => 0xff,
                1 => 0,
                _ => rng.next() as u8,
            };
        }
        std::fs::write(&bad, &d).unwrap();
        let (o, e) = probe_all(&bad, &addrs);
        ok += o;
        err += e;
    }
    let rss = peak_rss_kib();
    eprintln!(
        "{rounds} corrupted copies: {ok} answers, {err} errors, peak RSS {} MiB",
        rss / 1024
    );
    assert!(rss < 2 << 20, "peak RSS {rss} KiB");
}

/// Offset of `name`'s section in the file and whether it is SHF_COMPRESSED.
fn section_offset(path: &Path, name: &str) -> Option<u64> {
    let data = std::fs::read(path).ok()?;
    let obj = object::File::parse(&*data).ok()?;
    let s = obj.section_by_name(name)?;
    let r = s.compressed_file_range().ok()?;
    (r.format != object::CompressionFormat::None).then_some(r.offset)
}

#[test]
fn compressed_sections_claiming_huge_sizes_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(f) = fixture(tmp.path(), 7, &["-gz=zlib"]) else {
        return;
    };
    let Some(off) = section_offset(&f.full, ".debug_info") else {
        return skip("gcc -gz=zlib did not compress .debug_info");
    };
    let helper = nm_addr(&f.full, "helper_static").unwrap();
    // untouched: inflated and read
    let sym = Symbolizer::new(Config::local(vec![]));
    let s = sym.symbolize_file(&f.full, helper, true).unwrap();
    assert_eq!(
        s.frames.last().and_then(|f| f.function.as_deref()),
        Some("helper_static")
    );

    // Elf64_Chdr { ch_type: u32, ch_reserved: u32, ch_size: u64, ch_addralign: u64 }
    // precedes the compressed stream, whose offset `object` gives
    let mut d = std::fs::read(&f.full).unwrap();
    let o = off as usize - 24 + 8;
    d[o..o + 8].copy_from_slice(&(1u64 << 50).to_le_bytes());
    let bad: PathBuf = tmp.path().join("huge");
    std::fs::write(&bad, &d).unwrap();
    let sym = Symbolizer::new(Config::local(vec![]));
    let s = sym.symbolize_file(&bad, helper, true).unwrap();
    assert_eq!(
        s.symbol.as_ref().map(|h| &*h.name),
        Some("helper_static"),
        "symbols still work"
    );
    assert!(s.frames.is_empty());
    let e = s.frames_error.expect("DWARF refused");
    assert!(e.contains("over the limit"), "{e}");

    // a small configured limit refuses the real section too
    let mut c = Config::local(vec![]);
    c.section_limit = 16;
    let s = Symbolizer::new(c)
        .symbolize_file(&f.full, helper, true)
        .unwrap();
    assert!(s.frames_error.is_some_and(|e| e.contains("over the limit")));
}

#[test]
fn addresses_outside_any_mapping_or_segment_are_typed_errors() {
    let maps = symbolize::ProcessMaps::from_regions(vec![
        symbolize::Region {
            start: 0x1000,
            end: 0x2000,
            offset: 0,
            exec: true,
            path: None,
            open_path: None,
        },
        symbolize::Region {
            start: 0x3000,
            end: 0x4000,
            offset: 0,
            exec: true,
            path: Some("/nonexistent/lib.so".into()),
            open_path: None,
        },
        symbolize::Region {
            start: 0x5000,
            end: 0x6000,
            offset: 0,
            exec: true,
            path: Some("/etc/hostname".into()),
            open_path: None,
        },
    ]);
    let sym = Symbolizer::new(Config::local(vec![]));
    assert!(matches!(
        sym.symbolize(&maps, 0x10, false),
        Err(Error::NoMapping { .. })
    ));
    assert!(matches!(
        sym.symbolize(&maps, 0x1800, false),
        Err(Error::AnonymousMapping { .. })
    ));
    assert!(matches!(
        sym.symbolize(&maps, 0x3800, false),
        Err(Error::Io { .. })
    ));
    assert!(matches!(
        sym.symbolize(&maps, 0x5800, false),
        Err(Error::BadElf { .. })
    ));
}
