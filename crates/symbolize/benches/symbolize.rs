//! Symbolizing 1,000,000 addresses from a warm cache: a process-like address space
//! with pyenv's newest libpython (symbols + DWARF) and the host's libc mapped at
//! PIE-style bases, addresses drawn inside their functions. Also: the same with
//! DWARF lines and inlined frames (10,000 addresses), and a cold start (open, parse).
//!
//! `cargo bench -p pystackd-symbolize --bench symbolize`; the library comes from
//! PYSTACKD_BENCH_LIB, else pyenv's newest libpython3.*.so.1.0.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use symbolize::{Config, ProcessMaps, Region, Symbolizer};

fn libs() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(p) = std::env::var_os("PYSTACKD_BENCH_LIB") {
        v.push(PathBuf::from(p));
    } else if let Some(home) = std::env::var_os("HOME") {
        let versions = Path::new(&home).join(".pyenv/versions");
        let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(versions)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let minor: u32 = name.strip_prefix("3.")?.split('.').next()?.parse().ok()?;
                let lib = e.path().join(format!("lib/libpython3.{minor}.so.1.0"));
                lib.is_file().then_some((minor, lib))
            })
            .collect();
        found.sort();
        v.extend(found.pop().map(|f| f.1));
    }
    for libc in ["/usr/lib/x86_64-linux-gnu/libc.so.6", "/lib64/libc.so.6"] {
        if Path::new(libc).is_file() {
            v.push(PathBuf::from(libc));
            break;
        }
    }
    if v.is_empty() {
        v.push(std::env::current_exe().unwrap());
    }
    v
}

struct Setup {
    maps: ProcessMaps,
    addrs: Vec<u64>,
}

fn setup(sym: &Symbolizer, n: usize) -> Setup {
    let mut regions = Vec::new();
    let mut ranges = Vec::new();
    for (i, lib) in libs().iter().enumerate() {
        let m = sym.module(lib, None).expect("module");
        let text = *m.elf().segments.iter().find(|s| s.exec).expect("text");
        let base = 0x7f00_0000_0000u64 + (i as u64) * 0x1000_0000;
        let page_off = text.offset & !0xfff;
        regions.push(Region {
            start: base,
            end: base + text.offset + text.filesz - page_off,
            offset: page_off,
            exec: true,
            path: Some(lib.display().to_string()),
            open_path: None,
        });
        for s in m.symbols().symbols() {
            if s.addr >= text.vaddr && s.addr + s.size <= text.vaddr + text.filesz {
                let start = base + (s.addr - text.vaddr + text.offset - page_off);
                ranges.push((start, s.size));
            }
        }
    }
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let addrs = (0..n)
        .map(|_| {
            let (start, size) = ranges[(next() % ranges.len() as u64) as usize];
            start + next() % size
        })
        .collect();
    Setup {
        maps: ProcessMaps::from_regions(regions),
        addrs,
    }
}

fn bench(c: &mut Criterion) {
    let sym = Symbolizer::new(Config::local(vec!["/usr/lib/debug".into()]));
    let s = setup(&sym, 1_000_000);
    // warm: modules, debug files, symbol tables
    let named = s
        .addrs
        .iter()
        .filter(|&&a| {
            sym.symbolize(&s.maps, a, false)
                .is_ok_and(|r| r.symbol.is_some())
        })
        .count();
    eprintln!(
        "symbolize: {} modules ({:?}), {} of {} addresses named",
        s.maps.regions().len(),
        libs(),
        named,
        s.addrs.len()
    );
    // one plain timed pass too, for the docs (criterion's estimate is the reference)
    let t = Instant::now();
    let mut hits = 0usize;
    for &a in &s.addrs {
        hits += sym
            .symbolize(&s.maps, a, false)
            .map(|r| r.symbol.is_some() as usize)
            .unwrap_or(0);
    }
    let el = t.elapsed();
    eprintln!(
        "symbolize: 1,000,000 warm addresses in {:.1} ms = {:.2} M addresses/s ({hits} named)",
        el.as_secs_f64() * 1e3,
        s.addrs.len() as f64 / el.as_secs_f64() / 1e6
    );

    let mut g = c.benchmark_group("symbolize");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Elements(s.addrs.len() as u64));
    g.bench_function("1M_addresses_warm_symbols", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for &a in &s.addrs {
                if let Ok(r) = sym.symbolize(&s.maps, a, false) {
                    n += r.symbol.is_some() as usize;
                }
            }
            n
        })
    });
    let few = &s.addrs[..10_000];
    for &a in few {
        let _ = sym.symbolize(&s.maps, a, true);
    }
    g.throughput(Throughput::Elements(few.len() as u64));
    g.bench_function("10k_addresses_warm_lines_and_inlines", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for &a in few {
                if let Ok(r) = sym.symbolize(&s.maps, a, true) {
                    n += r.frames.len();
                }
            }
            n
        })
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("cold_open_and_first_symbol", |b| {
        b.iter(|| {
            let cold = Symbolizer::new(Config::local(vec!["/usr/lib/debug".into()]));
            let lib = &libs()[0];
            let m = cold.module(lib, None).unwrap();
            let first = m.symbols().symbols()[0].addr;
            m.symbol(first).is_some()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
