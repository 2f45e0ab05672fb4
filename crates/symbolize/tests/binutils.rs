//! Ground truth from binutils: every sized function symbol of pyenv's libpythons named
//! as `nm` names it, and random addresses inside functions resolved to the same
//! function, file, line and inlined frames as `addr2line -f -i`.

mod common;

use std::path::Path;

use common::*;
use symbolize::{Config, Symbolizer};

fn local() -> Symbolizer {
    // no debug root: the pyenv libraries carry their own symbols and DWARF
    Symbolizer::new(Config::local(vec![]))
}

#[test]
fn every_symbol_start_named_as_nm_names_it() {
    let libs = pyenv_libpythons();
    if libs.is_empty() || !have("nm") {
        return skip("no pyenv libpython or no nm");
    }
    let sym = local();
    let (mut total, mut agree) = (0usize, 0usize);
    for lib in &libs {
        let nm = nm_text_symbols(lib, false);
        let names = names_by_addr(&nm);
        let (mut t, mut a) = (0, 0);
        for (addr, aliases) in &names {
            for probe in [
                *addr,
                addr + nm
                    .iter()
                    .find(|s| s.addr == *addr)
                    .map_or(0, |s| s.size - 1),
            ] {
                t += 1;
                let s = sym.symbolize_file(lib, probe, false).expect("symbolize");
                match &s.symbol {
                    Some(h) if aliases.iter().any(|n| **n == *h.name) && h.addr == *addr => a += 1,
                    other => eprintln!(
                        "{}: {probe:#x}: nm {:?}, we {:?}",
                        lib.display(),
                        aliases,
                        other
                    ),
                }
            }
        }
        eprintln!(
            "{}: {a}/{t} symbol starts and ends agree with nm",
            lib.display()
        );
        total += t;
        agree += a;
    }
    eprintln!(
        "nm: {agree}/{total} agree ({:.3}%)",
        100.0 * agree as f64 / total as f64
    );
    assert_eq!(agree, total);
}

fn compare_with_addr2line(lib: &Path, n: usize, seed: u64) -> (usize, usize, usize, usize) {
    let nm = nm_text_symbols(lib, false);
    let mut rng = Rng(seed);
    let addrs: Vec<u64> = (0..n)
        .map(|_| {
            let s = &nm[rng.below(nm.len() as u64) as usize];
            s.addr + rng.below(s.size)
        })
        .collect();
    let truth = addr2line(lib, &addrs);
    assert_eq!(truth.len(), addrs.len(), "addr2line answered every address");
    let sym = local();
    let (mut func_ok, mut all_ok, mut frames_total, mut frames_ok) = (0, 0, 0, 0);
    let mut disagree: Vec<(u64, (String, u32))> = Vec::new();
    for (addr, want) in addrs.iter().zip(&truth) {
        let s = sym.symbolize_file(lib, *addr, true).expect("symbolize");
        assert!(s.frames_error.is_none(), "{:?}", s.frames_error);
        let got: Vec<(String, String, u32)> = s
            .frames
            .iter()
            .map(|f| {
                (
                    f.function.clone().unwrap_or_else(|| "??".into()),
                    f.file.clone().unwrap_or_else(|| "??".into()),
                    f.line.unwrap_or(0),
                )
            })
            .collect();
        // the outermost function (the one holding the code)
        if got.last().map(|f| &f.0) == want.last().map(|f| &f.0) {
            func_ok += 1;
        }
        frames_total += want.len();
        frames_ok += want.iter().zip(&got).filter(|(w, g)| w == g).count();
        if got == *want {
            all_ok += 1;
        } else {
            eprintln!("{addr:#x}: addr2line {want:?}\n           we {got:?}");
            if let Some(inner) = got.first() {
                disagree.push((*addr, (inner.1.clone(), inner.2)));
            }
        }
    }
    // binutils 2.40 names the compilation unit's file for some rows of code from
    // headers (DWARF 5 file index 0); gdb, reading the same line table, arbitrates
    let gdb_ok = if disagree.is_empty() || !have("gdb") {
        0
    } else {
        let addrs: Vec<u64> = disagree.iter().map(|d| d.0).collect();
        let g = gdb_info_line(lib, &addrs);
        let mut ok = 0;
        for ((addr, (file, line)), gdb) in disagree.iter().zip(&g) {
            match gdb {
                Some((gf, gl)) if file.ends_with(gf.as_str()) && gl == line => ok += 1,
                _ => eprintln!("{addr:#x}: gdb {gdb:?}, we {file}:{line}"),
            }
        }
        eprintln!(
            "{}: of {} disagreements with addr2line, gdb's line table row agrees with us on {ok}",
            lib.display(),
            disagree.len()
        );
        ok
    };
    (func_ok, all_ok + gdb_ok, frames_ok, frames_total)
}

#[test]
fn random_addresses_agree_with_addr2line() {
    let libs = pyenv_libpythons();
    if libs.is_empty() || !have("addr2line") {
        return skip("no pyenv libpython or no addr2line");
    }
    // the newest two: DWARF 4 and 5 producers differ across them
    let n: usize = std::env::var("SYMBOLIZE_A2L_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500);
    let (mut tot, mut func, mut all, mut fr_ok, mut fr_tot) = (0, 0, 0, 0, 0);
    for lib in libs.iter().take(2) {
        let (f, a, fo, ft) = compare_with_addr2line(lib, n, 0x5eed ^ lib.as_os_str().len() as u64);
        eprintln!(
            "{}: {n} addresses: function {f}/{n}, every frame (function, file, line, inlines) {a}/{n} (with gdb arbitrating), frames {fo}/{ft}",
            lib.display()
        );
        tot += n;
        func += f;
        all += a;
        fr_ok += fo;
        fr_tot += ft;
    }
    eprintln!(
        "addr2line: {tot} addresses, function {:.2}%, all frames exact (addr2line, or gdb where they differ) {:.2}%, frames {:.2}%",
        100.0 * func as f64 / tot as f64,
        100.0 * all as f64 / tot as f64,
        100.0 * fr_ok as f64 / fr_tot as f64
    );
    assert!(func * 1000 >= tot * 999, "functions: {func}/{tot}");
    assert!(all * 1000 >= tot * 998, "all frames: {all}/{tot}");
}

/// `objdump -d`'s `<name@plt>` labels of `.plt`/`.plt.sec`: (address, name).
fn objdump_plt(path: &Path) -> Vec<(u64, String)> {
    let out = std::process::Command::new("objdump")
        .args(["-d", "-j", ".plt", "-j", ".plt.sec"])
        .arg(path)
        .output()
        .expect("objdump runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (addr, rest) = l.split_once(" <")?;
            let name = rest.strip_suffix(">:")?;
            name.ends_with("@plt")
                .then(|| Some((u64::from_str_radix(addr.trim(), 16).ok()?, name.to_string())))?
        })
        .collect()
}

#[test]
fn plt_stubs_named_as_objdump_names_them() {
    if !have("objdump") {
        return skip("no objdump");
    }
    let mut files = pyenv_libpythons().into_iter().take(1).collect::<Vec<_>>();
    for f in ["/usr/bin/python3.11", "/usr/lib/x86_64-linux-gnu/libc.so.6"] {
        if Path::new(f).is_file() {
            files.push(f.into());
        }
    }
    let sym = Symbolizer::new(Config::local(vec![]));
    let (mut total, mut ok) = (0, 0);
    for f in &files {
        let want = objdump_plt(f);
        for (addr, name) in &want {
            for probe in [*addr, addr + 15] {
                total += 1;
                let s = sym.symbolize_file(f, probe, false).unwrap();
                if s.symbol.as_ref().map(|h| (&*h.name, h.addr)) == Some((name.as_str(), *addr)) {
                    ok += 1;
                } else {
                    eprintln!(
                        "{}: {probe:#x}: objdump {name}, we {:?}",
                        f.display(),
                        s.symbol
                    );
                }
            }
        }
        eprintln!("{}: {} PLT stubs", f.display(), want.len());
    }
    eprintln!("PLT: {ok}/{total} stub starts and ends named as objdump names them");
    assert!(total > 0);
    assert_eq!(ok, total);
}
