//! The module cache: one module per build-id whatever the path, and a byte budget.

mod common;

use std::sync::Arc;

use common::*;
use symbolize::{Config, ProcessMaps, Region, Symbolizer};

#[test]
fn one_module_per_build_id_for_a_hundred_processes() {
    let Some(lib) = pyenv_libpythons().into_iter().next() else {
        return skip("no pyenv libpython");
    };
    let tmp = tempfile::tempdir().unwrap();
    // another file (another inode), same build-id: a container's copy of the library
    let copy = tmp.path().join("libpython-copy.so");
    std::fs::copy(&lib, &copy).unwrap();
    let sym = Symbolizer::new(Config::local(vec![]));
    let a = sym.module(&lib, None).unwrap();
    let b = sym.module(&copy, None).unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    let text = *a.elf().segments.iter().find(|s| s.exec).unwrap();
    // a function of the text segment, from nm (not from the module under test)
    let f = nm_text_symbols(&lib, false)
        .into_iter()
        .find(|s| s.addr >= text.vaddr + 0x1000 && s.addr < text.vaddr + text.filesz && s.size > 8)
        .unwrap();
    let mut named = 0;
    for pid in 0..100u64 {
        let base = 0x7f00_0000_0000 + pid * 0x1000_0000;
        let maps = ProcessMaps::from_regions(vec![Region {
            start: base,
            end: base + text.filesz,
            offset: text.offset & !0xfff,
            exec: true,
            path: Some(lib.display().to_string()),
            open_path: Some(if pid % 2 == 0 {
                lib.clone()
            } else {
                copy.clone()
            }),
        }]);
        let file_offset = f.addr - text.vaddr + text.offset;
        let s = sym
            .symbolize(
                &maps,
                base + file_offset - (text.offset & !0xfff) + 4,
                false,
            )
            .unwrap();
        assert!(Arc::ptr_eq(&s.module, &a));
        named += s
            .symbol
            .as_ref()
            .is_some_and(|h| h.addr == f.addr && h.offset == 4) as usize;
    }
    let st = sym.cache_stats();
    eprintln!("100 processes: {st:?}");
    assert_eq!(st.modules, 1);
    assert_eq!(st.misses, 1);
    assert_eq!(named, 100);
}

#[test]
fn byte_budget_evicts_least_recently_used() {
    let libs = pyenv_libpythons();
    if libs.len() < 3 {
        return skip("fewer than 3 pyenv libpythons");
    }
    let mut c = Config::local(vec![]);
    // room for two libpythons' mappings and their symbol tables, not three
    let sizes: Vec<u64> = libs
        .iter()
        .take(3)
        .map(|l| std::fs::metadata(l).unwrap().len())
        .collect();
    c.cache_budget = sizes[0] + sizes[1] + (8 << 20);
    assert!(sizes[2] > 8 << 20);
    let sym = Symbolizer::new(c);
    let m0 = sym.module(&libs[0], None).unwrap();
    let before = m0.approx_bytes();
    assert!(m0.symbol(m0.symbols().symbols()[10].addr).is_some());
    assert!(
        m0.approx_bytes() > before,
        "the parsed symbol table is counted"
    );
    let _ = sym.module(&libs[1], None).unwrap();
    let _ = sym.module(&libs[0], None).unwrap(); // used again: libs[1] is now the oldest
    let _ = sym.module(&libs[2], None).unwrap();
    let st = sym.cache_stats();
    eprintln!("budget {}: {st:?}", st.budget);
    assert!(st.evictions >= 1);
    assert!(st.bytes <= st.budget, "{st:?}");
    // libs[0] stayed: asking again is a hit
    let hits = st.hits;
    let again = sym.module(&libs[0], None).unwrap();
    assert!(Arc::ptr_eq(&again, &m0));
    assert_eq!(sym.cache_stats().hits, hits + 1);
}

#[test]
fn shared_between_threads_gives_the_same_answers() {
    let Some(lib) = pyenv_libpythons().into_iter().next() else {
        return skip("no pyenv libpython");
    };
    let nm = nm_text_symbols(&lib, false);
    let mut rng = Rng(0x7777);
    let addrs: Vec<u64> = (0..2000)
        .map(|_| {
            let s = &nm[rng.below(nm.len() as u64) as usize];
            s.addr + rng.below(s.size)
        })
        .collect();
    let one = Symbolizer::new(Config::local(vec![]));
    let want: Vec<String> = addrs
        .iter()
        .map(|&a| {
            let s = one.symbolize_file(&lib, a, true).unwrap();
            format!("{s} {:?}", s.frames)
        })
        .collect();
    // one symbolizer, four threads, lazily loading the same module at once
    let shared = Arc::new(Symbolizer::new(Config::local(vec![])));
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let (shared, lib, addrs) = (shared.clone(), lib.clone(), addrs.clone());
            std::thread::spawn(move || {
                let order: Vec<usize> = if t % 2 == 0 {
                    (0..addrs.len()).collect()
                } else {
                    (0..addrs.len()).rev().collect()
                };
                let mut got = vec![String::new(); addrs.len()];
                for i in order {
                    let s = shared.symbolize_file(&lib, addrs[i], true).unwrap();
                    got[i] = format!("{s} {:?}", s.frames);
                }
                got
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), want);
    }
    assert_eq!(shared.cache_stats().modules, 1);
}
