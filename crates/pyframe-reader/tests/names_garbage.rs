//! The `threading` names reader on hostile memory: random bytes with pointers into
//! themselves, self-referencing dicts. It must give no name (or a bounded map), never
//! panic, hang or read without bound.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use pyframe_reader::layout;
use pyframe_reader::names::{ThreadNames, MAX_THREADS};
use pyframe_reader::values::TypeCache;
use pyframe_reader::Snapshot;

const BASE: u64 = 0x10_0000;

fn names(mem: &Snapshot, l: &layout::Layout, interp: u64) -> usize {
    let started = Instant::now();
    let mut t = ThreadNames::default();
    let n = t
        .names(
            mem,
            l,
            // (a hash secret inside the garbage: lookups probe the garbage's hash
            // indexes before comparing its keys)
            &mut TypeCache::default().with_hash_secret(Some(BASE)),
            interp,
            &[(1, 10), (2, 20)],
            &mut Vec::new(),
        )
        .len();
    assert!(n <= MAX_THREADS);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}: {:?}",
        l.version,
        started.elapsed()
    );
    n
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn random_memory_never_panics(seed in proptest::collection::vec(any::<u8>(), 4096..16384), bias in 0u64..64) {
        let mut bytes = seed.clone();
        for (i, chunk) in bytes.chunks_mut(8).enumerate() {
            if chunk.len() == 8 && i % 2 == 0 {
                let target = BASE + ((u64::from(chunk[0]) * 8 + bias * 8) % seed.len() as u64);
                chunk.copy_from_slice(&target.to_le_bytes());
            } else if chunk.len() == 8 && i % 7 == 1 {
                let top = u64::MAX - u64::from(chunk[0]) * 16;
                chunk.copy_from_slice(&top.to_le_bytes());
            }
        }
        let mut mem = Snapshot::new();
        mem.insert(BASE, bytes);
        for l in layout::ALL {
            // an "interpreter" whose sys.modules pointer lands in the garbage
            let interp = BASE.wrapping_sub(l.interp.modules).wrapping_add(bias * 8);
            names(&mem, l, interp);
            names(&mem, l, BASE);
        }
    }
}

/// Every word of a page points at the page itself: every object is its own type, dict,
/// keys and values. Nothing to name, and no loop.
#[test]
fn self_pointing_page_gives_no_names() {
    let mut page = Vec::with_capacity(65536);
    for _ in 0..65536 / 8 {
        page.extend_from_slice(&BASE.to_le_bytes());
    }
    let mut mem = Snapshot::new();
    mem.insert(BASE, page);
    for l in layout::ALL {
        assert_eq!(names(&mem, l, BASE), 0, "{:?}", l.version);
    }
}
