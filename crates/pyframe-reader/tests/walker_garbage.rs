//! The walker on hostile memory: random bytes, pointer cycles, huge lengths. It must
//! return an error (or a bounded result), never panic, hang or allocate without bound.

use proptest::prelude::*;
use pyframe_reader::code::CodeCache;
use pyframe_reader::layout::{self, CurrentFrame};
use pyframe_reader::objects::Types;
use pyframe_reader::walker::Walker;
use pyframe_reader::Snapshot;

const RUNTIME: u64 = 0x10_0000;

fn walk(mem: &Snapshot, l: &layout::Layout) -> Result<usize, String> {
    let mut types = Types::default();
    let mut codes = CodeCache::default();
    let mut w = Walker::new(mem, l, &mut types, &mut codes);
    w.walk(RUNTIME).map(|t| t.len()).map_err(|e| e.to_string())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Random bytes at the runtime and at a handful of addresses the pointers in it may hit.
    #[test]
    fn random_memory_never_panics(seed in proptest::collection::vec(any::<u8>(), 4096..8192), bias in 0u64..64) {
        let mut mem = Snapshot::new();
        // make some pointers land inside the snapshot: rewrite every 8th word to point into it
        let mut bytes = seed.clone();
        for (i, chunk) in bytes.chunks_mut(8).enumerate() {
            if chunk.len() == 8 && i % 3 == 0 {
                let target = RUNTIME + ((u64::from(chunk[0]) * 8 + bias * 8) % seed.len() as u64);
                chunk.copy_from_slice(&target.to_le_bytes());
            } else if chunk.len() == 8 && i % 7 == 1 {
                // pointers at the very top of the address space: offsets added to them
                // must not overflow
                let top = u64::MAX - u64::from(chunk[0]) * 16;
                chunk.copy_from_slice(&top.to_le_bytes());
            }
        }
        mem.insert(RUNTIME, bytes);
        for l in layout::ALL {
            let _ = walk(&mem, l);
        }
    }
}

/// interpreter → thread → a frame whose `previous`/`f_back` points to itself.
#[test]
fn frame_cycle_is_an_error() {
    for l in layout::ALL {
        let mut mem = Snapshot::new();
        let interp = 0x20_0000u64;
        let tstate = 0x30_0000u64;
        let frame = 0x40_0000u64;
        let cframe = 0x50_0000u64;
        let mut rt = vec![0u8; 4096];
        rt[l.runtime.interpreters_head as usize..][..8].copy_from_slice(&interp.to_le_bytes());
        mem.insert(RUNTIME, rt);
        let mut ip = vec![0u8; 16384];
        ip[l.interp.threads_head as usize..][..8].copy_from_slice(&tstate.to_le_bytes());
        mem.insert(interp, ip);
        let mut ts = vec![0u8; 4096];
        ts[l.tstate.interp as usize..][..8].copy_from_slice(&interp.to_le_bytes());
        match l.tstate.current_frame {
            CurrentFrame::Direct(o) => ts[o as usize..][..8].copy_from_slice(&frame.to_le_bytes()),
            CurrentFrame::ViaCFrame {
                cframe: o,
                current_frame,
            } => {
                ts[o as usize..][..8].copy_from_slice(&cframe.to_le_bytes());
                let mut cf = vec![0u8; 64];
                cf[current_frame as usize..][..8].copy_from_slice(&frame.to_le_bytes());
                mem.insert(cframe, cf);
            }
        }
        mem.insert(tstate, ts);
        // a frame that is its own predecessor, owned by the C stack where that is a
        // thing (so no code object is needed to keep walking)
        let mut fr = vec![0u8; 4096];
        match l.frame {
            layout::FrameLayout::Object(f) => {
                fr[f.back as usize..][..8].copy_from_slice(&frame.to_le_bytes())
            }
            layout::FrameLayout::Interpreter(f) => {
                fr[f.previous as usize..][..8].copy_from_slice(&frame.to_le_bytes());
                fr[f.owner as usize] = f.first_non_python_owner.unwrap_or(0);
            }
        }
        mem.insert(frame, fr);
        let r = walk(&mem, l);
        assert!(r.is_err(), "{:?}: {r:?}", l.version);
    }
}

#[test]
fn unmapped_runtime_is_an_error() {
    let mem = Snapshot::new();
    for l in layout::ALL {
        assert!(walk(&mem, l).is_err());
    }
}

/// Pointers at the top of the address space: adding a field offset must not overflow
/// (a debug build would panic), the read just fails.
#[test]
fn pointers_near_the_top_are_errors_not_overflows() {
    use pyframe_reader::objects::{read_bytes, read_str, Kind};
    let mut mem = Snapshot::new();
    // an object whose type pointer is near u64::MAX
    let obj = 0x60_0000u64;
    let mut o = vec![0u8; 256];
    o[8..16].copy_from_slice(&(u64::MAX - 4).to_le_bytes());
    o[16..24].copy_from_slice(&4u64.to_le_bytes());
    mem.insert(obj, o);
    for l in layout::ALL {
        let mut types = Types::default();
        for kind in [Kind::Code, Kind::Frame, Kind::Str, Kind::Bytes] {
            assert!(!types.check(&mem, l, kind, u64::MAX - 4));
        }
        assert!(read_str(&mem, l, &mut types, obj).is_err());
        assert!(read_str(&mem, l, &mut types, u64::MAX - 8).is_err());
        assert!(read_bytes(&mem, l, &mut types, u64::MAX - 8).is_err());
        let mut codes = CodeCache::default();
        let mut w = Walker::new(&mem, l, &mut types, &mut codes);
        assert!(w.walk(u64::MAX - 8).is_err());
    }
}
