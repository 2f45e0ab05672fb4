//! The call-site opcode tables (`layout::CallSites`) agree with each interpreter's own
//! `opcode` metadata: every provisioned interpreter whose version's table has one is run,
//! and the opcodes of the instruction families the table claims (with all their specialised
//! forms, read from the interpreter itself) must be exactly the table's.

use std::process::Command;

use pyframe_reader::layout::{self, FrameLayout};
use testkit::{require, Want};

/// Prints the sorted opcode numbers of the families that push a frame inline, as the
/// running interpreter numbers them (the same families `layout::CallSites` names).
const FAMILIES: &str = r#"
import sys, opcode
v = sys.version_info[:2]
if v == (3, 11):
    import dis
    allmap = dis._all_opmap
    fams = ["CALL", "BINARY_SUBSCR"]
    spec = {f: [n for n in allmap if n.startswith(f + "_") and n != "CALL_FUNCTION_EX"] for f in fams}
    extra = []
else:
    import _opcode_metadata as m
    allmap = dict(opcode.opmap)
    allmap.update(m._specialized_opmap)
    spec = m._specializations
    fams = ["CALL", "CALL_KW", "CALL_FUNCTION_EX", "BINARY_OP", "LOAD_ATTR", "FOR_ITER", "SEND"]
    extra = ["INSTRUMENTED_CALL", "INSTRUMENTED_CALL_KW", "INSTRUMENTED_CALL_FUNCTION_EX",
             "INSTRUMENTED_FOR_ITER", "INSTRUMENTED_LINE", "INSTRUMENTED_INSTRUCTION",
             "ENTER_EXECUTOR"]
names = set(extra)
for f in fams:
    names.add(f)
    names.update(spec.get(f, []))
print(" ".join(str(allmap[n]) for n in sorted(names, key=lambda n: allmap[n])))
"#;

#[test]
fn call_site_tables_match_the_interpreters_opcodes() {
    let all = require!(testkit::pythons::pythons(&Want::at_least("3.11")));
    let mut checked = Vec::new();
    for py in &all {
        let Some(table) = layout::for_version(py.version.0, py.version.1) else {
            continue;
        };
        let FrameLayout::Interpreter(fl) = table.frame else {
            continue;
        };
        let Some(sites) = fl.call_sites else {
            continue;
        };
        let out = Command::new(&py.command)
            .args(["-E", "-s", "-c", FAMILIES])
            .output()
            .unwrap_or_else(|e| panic!("[{}] {e}", py.label));
        assert!(
            out.status.success(),
            "[{}] {}",
            py.label,
            String::from_utf8_lossy(&out.stderr)
        );
        let theirs: Vec<u8> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(|n| n.parse().expect("an opcode number"))
            .collect();
        assert_eq!(
            sites.opcodes,
            &theirs[..],
            "[{}] the table's call-site opcodes differ from the interpreter's",
            py.label
        );
        checked.push(py.label.clone());
    }
    eprintln!("call-site tables agree with: {}", checked.join(", "));
    if checked.is_empty() {
        testkit::Skip::new("no 3.11, 3.14 or 3.15 interpreter in tests/pythons/list").report();
    }
}
