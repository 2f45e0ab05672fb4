//! The line-table decoder against real interpreters: every code unit of every captured
//! code object must map to the line the interpreter itself reports (`PyCode_Addr2Line`,
//! `co_lines`/`co_positions`, `dis.findlinestarts`; see `tests/linetable/capture.py`).
//! Committed fixtures are always checked; interpreters present at run time are also
//! captured live, with a few standard-library modules on top.

use std::path::{Path, PathBuf};
use std::process::Command;

use pyframe_reader::layout::{self, LineTableFormat};
use pyframe_reader::linetable::LineTable;
use serde::Deserialize;

#[derive(Deserialize)]
struct Capture {
    version: String,
    table_field: String,
    code_unit_bytes: u32,
    code_objects: Vec<CodeCapture>,
}

#[derive(Deserialize)]
struct CodeCapture {
    origin: String,
    name: String,
    first_line: u32,
    table_hex: String,
    code_bytes: u32,
    lines: Vec<Option<u32>>,
    agreeing_sources: Vec<String>,
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/linetable")
}

fn hex_decode(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn minor_version(version: &str) -> (u8, u8) {
    let mut parts = version
        .split('.')
        .map(|p| p.parse::<u8>().expect("version"));
    (parts.next().unwrap(), parts.next().unwrap())
}

/// The format follows from which field was captured, and for `co_linetable` from the
/// version (3.10 PEP 626, 3.11+ locations). Cross-checked with the layout table when
/// that version has one.
fn format_of(capture: &Capture) -> LineTableFormat {
    let (major, minor) = minor_version(&capture.version);
    let format = match (capture.table_field.as_str(), (major, minor)) {
        ("co_lnotab", _) => LineTableFormat::Lnotab,
        ("co_linetable", (3, 10)) => LineTableFormat::Pep626,
        ("co_linetable", _) => LineTableFormat::Locations,
        (other, _) => panic!("unknown table field {other}"),
    };
    if let Some(l) = layout::for_version(major, minor) {
        assert_eq!(
            l.code.linetable_format, format,
            "layout table of {major}.{minor} names another line-table format"
        );
    }
    format
}

/// Check every code unit of every code object; returns (code objects, offsets checked).
fn check_capture(capture: &Capture, label: &str) -> (usize, usize) {
    assert_eq!(capture.code_unit_bytes, 2);
    assert!(
        !capture.code_objects.is_empty(),
        "{label}: capture has no code objects"
    );
    let format = format_of(capture);
    let mut failures = Vec::new();
    let mut offsets = 0;
    for code in &capture.code_objects {
        assert!(
            code.agreeing_sources.len() >= 2,
            "{label}: {} {} has a single source of truth",
            code.origin,
            code.name
        );
        assert_eq!(
            code.lines.len() as u32 * capture.code_unit_bytes,
            code.code_bytes
        );
        let table = LineTable::decode(format, &hex_decode(&code.table_hex), code.first_line);
        for (unit, expected) in code.lines.iter().enumerate() {
            let offset = unit as u32 * capture.code_unit_bytes;
            let got = table.line_for_offset(offset);
            offsets += 1;
            if got != *expected {
                failures.push(format!(
                    "{} {} (first line {}) offset {offset}: expected {expected:?}, decoded {got:?}",
                    code.origin, code.name, code.first_line
                ));
            }
        }
        // A frame that has not started (f_lasti -1, prev_instr one before the code).
        assert_eq!(table.line_for_lasti(-2), Some(code.first_line));
    }
    assert!(
        failures.is_empty(),
        "{label} ({}): {} mismatches, first ones:\n{}",
        capture.version,
        failures.len(),
        failures[..failures.len().min(20)].join("\n")
    );
    (capture.code_objects.len(), offsets)
}

#[test]
fn fixtures_match_interpreters() {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(fixture_dir())
        .expect("fixture dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    entries.sort();
    let mut minors = std::collections::BTreeSet::new();
    for path in &entries {
        let text = std::fs::read_to_string(path).expect("read fixture");
        let capture: Capture = serde_json::from_str(&text).expect("parse fixture");
        let label = path.file_name().unwrap().to_string_lossy().into_owned();
        let (objects, offsets) = check_capture(&capture, &label);
        println!(
            "fixture {label}: CPython {}: {objects} code objects, {offsets} offsets OK",
            capture.version
        );
        minors.insert(minor_version(&capture.version));
    }
    // Every supported minor version must have committed ground truth.
    for minor in 8..=15 {
        assert!(minors.contains(&(3, minor)), "no fixture for 3.{minor}");
    }
}

/// Every build of tests/pythons/list once (a Debian build's `-direct` twin left out).
fn candidate_interpreters() -> Result<Vec<PathBuf>, testkit::Skip> {
    Ok(testkit::pythons::distinct_builds()?
        .into_iter()
        .map(|i| i.command)
        .collect())
}

#[test]
fn live_interpreters_match() {
    let script = testkit::workspace_root().join("tests/linetable/capture.py");
    assert!(script.exists(), "missing {}", script.display());
    let tmp = std::env::temp_dir().join(format!("pystackd-linetable-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("temp dir");
    let mut ran = 0;
    for (i, python) in testkit::require!(candidate_interpreters())
        .iter()
        .enumerate()
    {
        let out = tmp.join(format!("capture-{i}.json"));
        let status = Command::new(python)
            .arg(&script)
            .arg("--stdlib")
            .arg("--out")
            .arg(&out)
            .status()
            .expect("run interpreter");
        assert!(
            status.success(),
            "{} capture.py failed: {status}",
            python.display()
        );
        let text = std::fs::read_to_string(&out).expect("read capture");
        let capture: Capture = serde_json::from_str(&text).expect("parse capture");
        let label = python.display().to_string();
        let (objects, offsets) = check_capture(&capture, &label);
        println!(
            "live {label}: CPython {}: {objects} code objects, {offsets} offsets OK",
            capture.version
        );
        ran += 1;
    }
    let _ = std::fs::remove_dir_all(&tmp);
    assert!(ran > 0);
}

#[derive(Deserialize)]
struct FrameCapture {
    version: String,
    frames: Vec<FrameState>,
}

#[derive(Deserialize)]
struct FrameState {
    label: String,
    first_line: u32,
    table_hex: String,
    byte_offset: i64,
    f_lineno: i64,
    offset_matches_f_lasti: bool,
}

/// The walker contract in the `linetable` module docs, against live frames: the byte
/// offset computed from the raw frame field (as the walker will) must give the line
/// the interpreter reports for that frame.
#[test]
fn live_frame_offsets_give_frame_lines() {
    let script = testkit::workspace_root().join("tests/linetable/frame_offsets.py");
    let mut ran = 0;
    for python in testkit::require!(candidate_interpreters()) {
        let output = Command::new(&python)
            .arg(&script)
            .output()
            .expect("run interpreter");
        assert!(
            output.status.success(),
            "{} frame_offsets.py failed: {}",
            python.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        let capture: FrameCapture = serde_json::from_slice(&output.stdout).expect("parse");
        let (major, minor) = minor_version(&capture.version);
        let field = if (major, minor) < (3, 10) {
            "co_lnotab"
        } else {
            "co_linetable"
        };
        let format = format_of(&Capture {
            version: capture.version.clone(),
            table_field: field.to_string(),
            code_unit_bytes: 2,
            code_objects: Vec::new(),
        });
        assert!(capture.frames.len() >= 4, "too few frames captured");
        for frame in &capture.frames {
            assert!(
                frame.offset_matches_f_lasti,
                "{} {}: raw frame field disagrees with frame.f_lasti",
                capture.version, frame.label
            );
            let table = LineTable::decode(format, &hex_decode(&frame.table_hex), frame.first_line);
            let got = table.line_for_lasti(frame.byte_offset);
            assert_eq!(
                got.map(i64::from),
                Some(frame.f_lineno),
                "{} {} at byte offset {}",
                capture.version,
                frame.label,
                frame.byte_offset
            );
        }
        println!(
            "live frames {}: CPython {}: {} frames OK",
            python.display(),
            capture.version,
            capture.frames.len()
        );
        ran += 1;
    }
    assert!(ran > 0);
}
