//! Reads the statically initialised `_Py_DebugOffsets` at the start of the
//! `.PyRuntime` section of real 3.13+ interpreters (every 3.13+ build of
//! tests/pythons/list: pyenv's libpython, the Debian 3.13/3.14/3.15 binaries, the
//! free-threaded 3.13t of tests/pythons/build-cpython ft), parses it,
//! and checks that our tables agree with every offset the interpreter states about itself.

use object::{Object, ObjectSection};
use pyframe_reader::layout::{self, debug_offsets};
use std::path::{Path, PathBuf};
use std::process::Command;
use testkit::{require, Want};

/// The `_Py_DebugOffsets` bytes of an ELF file.
fn debug_offsets_bytes(path: &Path) -> Result<Vec<u8>, String> {
    let data = std::fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let file = object::File::parse(&*data).map_err(|e| format!("parse {}: {e}", path.display()))?;
    let section = file
        .section_by_name(".PyRuntime")
        .ok_or_else(|| format!("{}: no .PyRuntime section", path.display()))?;
    let bytes = section
        .data()
        .map_err(|e| format!("{}: .PyRuntime: {e}", path.display()))?;
    Ok(bytes[..bytes.len().min(debug_offsets::MAX_SIZE)].to_vec())
}

/// `sys.hexversion` as the interpreter itself reports it, if it can be run.
fn hexversion(python: &Path) -> Option<u64> {
    let out = Command::new(python)
        .args(["-c", "import sys; print(sys.hexversion)"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

struct Target {
    label: String,
    minor: u8,
    /// ELF file holding `.PyRuntime`.
    elf: PathBuf,
    /// A way to run that interpreter.
    python: PathBuf,
    free_threaded: bool,
}

/// Every 3.13+ build once (a Debian build's `-direct` twin is the same file).
fn targets() -> Result<Vec<Target>, testkit::Skip> {
    let mut v = Vec::new();
    let ft = testkit::pythons::pythons(&Want::any().free_threaded())?;
    for i in testkit::pythons::pythons(&Want::at_least("3.13"))?
        .into_iter()
        .chain(ft)
    {
        if i.is_twin() {
            continue;
        }
        let elf = i.runtime_elf().unwrap_or_else(|e| panic!("{e}"));
        v.push(Target {
            label: format!("{} ({})", i.label, elf.display()),
            minor: i.version.1,
            elf,
            python: i.command.clone(),
            free_threaded: i.free_threaded(),
        });
    }
    Ok(v)
}

#[test]
fn tables_agree_with_the_interpreters_own_debug_offsets() {
    let targets = require!(targets());
    let mut failures = Vec::new();
    for t in &targets {
        let bytes = match debug_offsets_bytes(&t.elf) {
            Ok(b) => b,
            Err(e) => {
                failures.push(format!("{}: {e}", t.label));
                continue;
            }
        };
        let parsed = match debug_offsets::parse(&bytes, (3, t.minor), t.free_threaded) {
            Ok(p) => p,
            Err(e) => {
                failures.push(format!("{}: parse: {e}", t.label));
                continue;
            }
        };
        // The version it states is the one the interpreter reports when run.
        match hexversion(&t.python) {
            Some(h) if h == parsed.version_hex => {}
            Some(h) => failures.push(format!(
                "{}: _Py_DebugOffsets version {:#x}, sys.hexversion {h:#x}",
                t.label, parsed.version_hex
            )),
            None => eprintln!(
                "{}: could not run {} to compare hexversion",
                t.label,
                t.python.display()
            ),
        }
        let format = debug_offsets::format_for(3, t.minor).expect("format");
        let carried = format
            .slots
            .iter()
            .filter(|(s, _)| parsed.get(*s).is_some())
            .count();
        let table = layout::for_build(3, t.minor, t.free_threaded).expect("table");
        let (applied, diffs) = debug_offsets::apply(table, &parsed);
        eprintln!(
            "{}: version {:#x}, {carried} values carried, {} differences",
            t.label,
            parsed.version_hex,
            diffs.len()
        );
        if !diffs.is_empty() {
            failures.push(format!(
                "{}: table differs from _Py_DebugOffsets: {diffs:?}",
                t.label
            ));
        }
        // the values `apply` does not take over (built-in objects, the frame's fast locals,
        // its bytecode copy) agree too: 3.14t's table is checked by the same comparison
        let cross = debug_offsets::cross_check(table, &parsed);
        if !cross.is_empty() {
            failures.push(format!("{}: cross-check: {cross:?}", t.label));
        }
        if applied != *table {
            failures.push(format!(
                "{}: apply changed the table without reporting it",
                t.label
            ));
        }
        // A wrong expected version is rejected, not misread.
        if debug_offsets::parse(&bytes, (3, t.minor + 1), t.free_threaded).is_ok() {
            failures.push(format!("{}: parsed as 3.{}", t.label, t.minor + 1));
        }
        // So is the other kind of build (a free-threaded one read as a GIL one).
        if debug_offsets::parse(&bytes, (3, t.minor), !t.free_threaded).is_ok() {
            failures.push(format!(
                "{}: parsed with free_threaded = {}",
                t.label, !t.free_threaded
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
