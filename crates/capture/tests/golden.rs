//! The bpftrace and D renderings of every layout version, checked in under tests/golden/:
//! a change to a renderer or a layout table shows up as a diff to review. Rendered with a
//! fixed `_PyRuntime` address, depth 8 and 8 thread states (the shapes of the real, longer
//! output). `PYSTACKD_BLESS=1 cargo test -p capture --test golden` rewrites them.

use std::path::PathBuf;

use capture::bpftrace::{self, LinePrefix};
use capture::{dtrace, Os, Plan};
use pyframe_reader::layout;

const RUNTIME: u64 = 0x7f00_1234_5000;

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn plan(l: &layout::Layout, os: Os) -> Plan {
    let mut p = Plan::from_layout(l, RUNTIME, os, 8).unwrap();
    p.max_threads = 8;
    p
}

#[test]
fn renderings_match_golden_files() {
    let bless = std::env::var("PYSTACKD_BLESS").is_ok_and(|v| v == "1");
    let mut diffs = Vec::new();
    for l in layout::ALL {
        let (a, b) = l.version;
        let bt = format!(
            "{}\n// ---- the whole program pystackd trace runs ----\n{}",
            bpftrace::render_block(&plan(l, Os::Linux), &LinePrefix::default()),
            bpftrace::render_program(
                &plan(l, Os::Linux),
                4242,
                &["profile:hz:997".to_string()],
                5_000_000_000
            )
        );
        let d = dtrace::render(
            &plan(l, Os::Illumos),
            "pid$target::malloc:entry",
            "$target",
            true,
        );
        for (name, text) in [(format!("{a}.{b}.bt"), bt), (format!("{a}.{b}.d"), d)] {
            let path = golden_dir().join(&name);
            if bless {
                std::fs::write(&path, &text).unwrap();
                continue;
            }
            match std::fs::read_to_string(&path) {
                Ok(want) if want == text => {}
                Ok(_) => diffs.push(format!("{name} differs (PYSTACKD_BLESS=1 to accept)")),
                Err(e) => diffs.push(format!("{name}: {e} (PYSTACKD_BLESS=1 to create)")),
            }
        }
    }
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

/// Offsets come from the layout tables only: every rendering of a version holds its
/// table's offsets (a spot check that nothing was written in by hand).
#[test]
fn renderings_use_the_layout_tables() {
    for l in layout::ALL {
        let p = plan(l, Os::Linux);
        let bt = bpftrace::render_block(&p, &LinePrefix::default());
        assert!(
            bt.contains(&format!("$py_ts + {}", l.tstate.next)),
            "{:?}",
            l.version
        );
        assert!(bt.contains(&format!("{RUNTIME:#x} + {}", l.runtime.interpreters_head)));
        let key = if l.tstate.native_thread_id.is_some() {
            "(uint64)tid"
        } else {
            "curtask->thread.fsbase"
        };
        assert!(bt.contains(key), "{:?}", l.version);
        let d = dtrace::render(&plan(l, Os::Illumos), "profile-997", "$target", true);
        assert!(
            d.contains(&format!("this->py_ts + {}", l.tstate.thread_id)),
            "{:?}",
            l.version
        );
        assert!(!d.contains("while"), "D has no loops");
    }
}
