//! Separate debug files, found as gdb finds them, on Debian's real builds: the
//! stripped `python3.14` whose eval loop is the local `_PyEval_EvalFrameDefault.cold`
//! that only the `-dbg` package's `.symtab` names. Refusals: wrong build-id, wrong
//! `.gnu_debuglink` CRC.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use symbolize::{Config, DebugOrigin, Error, Symbolizer};

struct Debian {
    bin: PathBuf,
    dbg_root: PathBuf,
    debug_file: PathBuf,
    cold: NmSym,
}

fn debian(version: &str) -> Option<Debian> {
    let (root, dbg_root) = debian_dbg(version)?;
    let bin = root.join(format!("usr/bin/python{version}"));
    let id = build_id_hex(&bin)?;
    let debug_file = dbg_root.join(format!(".build-id/{}/{}.debug", &id[..2], &id[2..]));
    // ground truth: binutils' nm of the debug file
    let cold = nm_text_symbols(&debug_file, false)
        .into_iter()
        .find(|s| s.name == "_PyEval_EvalFrameDefault.cold")?;
    Some(Debian {
        bin,
        dbg_root,
        debug_file,
        cold,
    })
}

/// The build-id as binutils' readelf prints it.
fn build_id_hex(path: &Path) -> Option<String> {
    let out = std::process::Command::new("readelf")
        .arg("-n")
        .arg(path)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().find_map(|l| {
        l.trim()
            .strip_prefix("Build ID: ")
            .map(|s| s.trim().to_string())
    })
}

fn need(version: &str) -> Option<Debian> {
    let d = debian(version);
    if d.is_none() {
        skip(&format!(
            "no Debian {version} with -dbg: run WITH_DBG=1 tests/pythons/get-pythons ~/.cache/pystackd/pydbg {version}"
        ));
    }
    d
}

#[test]
fn debian_eval_loop_cold_part_named_from_the_build_id_debug_file() {
    for version in ["3.14", "3.15"] {
        let Some(d) = need(version) else { continue };
        let sym = Symbolizer::new(Config::local(vec![d.dbg_root.clone()]));
        for off in [0, 1, d.cold.size / 2, d.cold.size - 1] {
            let s = sym.symbolize_file(&d.bin, d.cold.addr + off, true).unwrap();
            let hit = s.symbol.as_ref().expect("named");
            assert_eq!(&*hit.name, "_PyEval_EvalFrameDefault.cold");
            assert_eq!(hit.offset, off);
            // DWARF (compressed in Debian's debug files) says which function it is
            assert_eq!(
                s.frames.last().and_then(|f| f.function.as_deref()),
                Some("_PyEval_EvalFrameDefault"),
                "{:?}",
                s.frames
            );
        }
        let m = sym.module(&d.bin, None).unwrap();
        assert_eq!(m.debug_file().map(|x| x.1), Some(DebugOrigin::BuildIdDir));
        eprintln!(
            "{version}: {} named from {}",
            d.cold.name,
            d.debug_file.display()
        );

        // without the debug file: the stripped binary cannot name it
        let bare = Symbolizer::new(Config::local(vec![]));
        let s = bare.symbolize_file(&d.bin, d.cold.addr + 1, false).unwrap();
        assert!(
            s.symbol
                .as_ref()
                .is_none_or(|h| &*h.name != "_PyEval_EvalFrameDefault.cold"),
            "{:?}",
            s.symbol
        );
    }
}

#[test]
fn debian_stripped_binary_with_debug_file_agrees_with_addr2line_on_the_debug_file() {
    let Some(d) = need("3.14") else { return };
    // addr2line on the debug file itself is binutils' answer for the stripped binary
    let nm = nm_text_symbols(&d.debug_file, false);
    let mut rng = Rng(0x3140);
    let addrs: Vec<u64> = (0..800)
        .map(|_| {
            let s = &nm[rng.below(nm.len() as u64) as usize];
            s.addr + rng.below(s.size)
        })
        .collect();
    let truth = addr2line(&d.debug_file, &addrs);
    let sym = Symbolizer::new(Config::local(vec![d.dbg_root.clone()]));
    let (mut func, mut syms) = (0, 0);
    for (a, want) in addrs.iter().zip(&truth) {
        let s = sym.symbolize_file(&d.bin, *a, true).unwrap();
        let got = s
            .frames
            .last()
            .and_then(|f| f.function.clone())
            .unwrap_or_else(|| "??".into());
        if want.last().map(|w| &w.0) == Some(&got) {
            func += 1;
        } else {
            eprintln!(
                "{a:#x}: addr2line {:?} we {:?}",
                want.last(),
                s.frames.last()
            );
        }
        let names: Vec<&str> = nm
            .iter()
            .filter(|n| *a >= n.addr && *a - n.addr < n.size)
            .map(|n| n.name.as_str())
            .collect();
        if s.symbol.as_ref().is_some_and(|h| names.contains(&&*h.name)) {
            syms += 1;
        }
    }
    eprintln!("Debian 3.14 stripped + debug file: functions {func}/{} agree with addr2line, symbols {syms}/{} with nm", addrs.len(), addrs.len());
    assert_eq!(syms, addrs.len());
    assert!(func * 100 >= addrs.len() * 99, "{func}/{}", addrs.len());
}

#[test]
fn gnu_debuglink_found_next_to_the_binary_and_crc_checked() {
    let Some(d) = need("3.14") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("python3.14");
    std::fs::copy(&d.bin, &bin).unwrap();
    let link_name = "cda-link.debug";
    // the binary's own .gnu_debuglink names the file: read it, don't guess
    let f = symbolize::ElfFile::open(&bin).unwrap();
    let (name, _crc) = f
        .debuglink
        .clone()
        .expect("Debian binaries have a .gnu_debuglink");
    assert_ne!(name, link_name);
    std::fs::create_dir(tmp.path().join(".debug")).unwrap();
    let dbg = tmp.path().join(".debug").join(&name);
    std::fs::copy(&d.debug_file, &dbg).unwrap();

    let sym = Symbolizer::new(Config::local(vec![]));
    let m = sym.module(&bin, None).unwrap();
    assert_eq!(
        m.debug_file().map(|x| (x.0.to_path_buf(), x.1)),
        Some((dbg.clone(), DebugOrigin::DebugLink))
    );
    assert_eq!(
        &*m.symbol(d.cold.addr + 3).unwrap().name,
        "_PyEval_EvalFrameDefault.cold"
    );

    // same build-id, different bytes: the CRC refuses it
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&dbg)
        .unwrap()
        .write_all(b"x")
        .unwrap();
    let sym = Symbolizer::new(Config::local(vec![]));
    let m = sym.module(&bin, None).unwrap();
    assert!(m.debug_file().is_none());
    assert!(
        m.debug_search()
            .refused
            .iter()
            .any(|e| matches!(e, Error::CrcMismatch { .. })),
        "{:?}",
        m.debug_search().refused
    );
    assert!(m
        .symbol(d.cold.addr + 3)
        .is_none_or(|h| &*h.name != "_PyEval_EvalFrameDefault.cold"));
}

#[test]
fn debug_file_with_another_build_id_is_refused_never_used() {
    let (Some(d14), Some(d15)) = (need("3.14"), need("3.15")) else {
        return;
    };
    let id = build_id_hex(&d14.bin).unwrap();
    let root = tempfile::tempdir().unwrap();
    // 3.15's debug file where 3.14's belongs, in every place looked at
    let bid = root.path().join(".build-id").join(&id[..2]);
    std::fs::create_dir_all(&bid).unwrap();
    std::os::unix::fs::symlink(&d15.debug_file, bid.join(format!("{}.debug", &id[2..]))).unwrap();
    let by_path = root.path().join("usr/bin");
    std::fs::create_dir_all(&by_path).unwrap();
    std::os::unix::fs::symlink(&d15.debug_file, by_path.join("python3.14.debug")).unwrap();

    let sym = Symbolizer::new(Config::local(vec![root.path().to_path_buf()]));
    let m = sym
        .module(&d14.bin, Some(Path::new("/usr/bin/python3.14")))
        .unwrap();
    assert!(m.debug_file().is_none(), "{:?}", m.debug_file());
    let refused = &m.debug_search().refused;
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(
        refused
            .iter()
            .all(|e| matches!(e, Error::BuildIdMismatch { .. })),
        "{refused:?}"
    );
    let s = sym
        .symbolize_file(&d14.bin, d14.cold.addr + 1, true)
        .unwrap();
    assert!(s
        .symbol
        .as_ref()
        .is_none_or(|h| &*h.name != "_PyEval_EvalFrameDefault.cold"));
    assert!(
        s.frames.is_empty(),
        "no DWARF from a refused file: {:?}",
        s.frames
    );
}

#[test]
fn debug_root_path_lookup() {
    let Some(d) = need("3.14") else { return };
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("usr/bin");
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(&d.debug_file, dir.join("python3.14.debug")).unwrap();
    let sym = Symbolizer::new(Config::local(vec![root.path().to_path_buf()]));
    let m = sym
        .module(&d.bin, Some(Path::new("/usr/bin/python3.14")))
        .unwrap();
    assert_eq!(
        m.debug_file().map(|x| x.1),
        Some(DebugOrigin::DebugRootPath)
    );
    assert_eq!(
        &*m.symbol(d.cold.addr).unwrap().name,
        "_PyEval_EvalFrameDefault.cold"
    );
}

#[test]
fn stripped_host_python_named_from_dynsym_as_nm_d_names_it() {
    let bin = Path::new("/usr/bin/python3.11");
    if !bin.is_file() {
        return skip("no /usr/bin/python3.11");
    }
    let nm = nm_text_symbols(bin, true);
    let names = names_by_addr(&nm);
    // the host's real debug root: whatever /usr/lib/debug holds (if anything) is used
    // only when its build-id matches
    let sym = Symbolizer::new(Config::default());
    let mut ok = 0;
    for (addr, aliases) in &names {
        let s = sym.symbolize_file(bin, *addr, false).unwrap();
        if s.symbol
            .as_ref()
            .is_some_and(|h| aliases.iter().any(|a| **a == *h.name))
        {
            ok += 1;
        } else {
            eprintln!("{addr:#x}: nm -D {aliases:?} we {:?}", s.symbol);
        }
    }
    eprintln!(
        "/usr/bin/python3.11: {ok}/{} .dynsym function starts as nm -D",
        names.len()
    );
    assert_eq!(ok, names.len());
}
