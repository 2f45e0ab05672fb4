//! Checks every offset of the per-version layout tables against the DWARF of real
//! interpreters, as printed by `gdb ptype /o`: every pyenv build of tests/pythons/list
//! (shared libpython with debug info) and Debian's 3.14+ builds with their `-dbg` debug
//! files (`WITH_DBG=1 tests/pythons/get-pythons ~/.cache/pystackd/pydbg 3.14 3.15`, as
//! tests/run does; or `PYSTACKD_DBG_ROOT=dir`). Absent builds, debug files or gdb are
//! skipped with a printed reason (failures under PYSTACKD_STRICT=1).

use pyframe_reader::layout::{self, debug_offsets, CurrentFrame, FrameLayout, Layout};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use testkit::{require, Want};

/// One struct as gdb prints it: dotted member path -> (byte offset, bit offset);
/// `@size` is the struct's total size.
type Members = HashMap<String, (u64, u32)>;
/// (path, byte offset, bit offset) while parsing.
type Member = (String, u64, u32);

/// Parses `ptype /o` output of one type, flattening nested structs and unions into
/// dotted paths (`interpreters.head`, `ceval.gil`, `state.kind`).
fn parse_ptype(text: &str) -> Option<Members> {
    // Each open level: (members collected so far, offset where it opened).
    let mut stack: Vec<(Vec<Member>, u64)> = Vec::new();
    let mut started = false;
    for raw in text.lines() {
        let (off, bit, rest) = split_offset_comment(raw);
        let rest = rest.trim();
        if !started {
            if rest.starts_with("type = ") && rest.ends_with('{') {
                started = true;
                stack.push((Vec::new(), 0));
            }
            continue;
        }
        if let Some(total) = rest.strip_prefix("/* total size (bytes):") {
            let n = total.trim_end_matches("*/").trim().parse().ok()?;
            stack.last_mut()?.0.push(("@size".into(), n, 0));
            continue;
        }
        if rest.ends_with('{') {
            // A nested struct/union; union members print no offset: they sit at the
            // union's own offset.
            let at = off.unwrap_or(stack.last()?.1);
            stack.push((Vec::new(), at));
            continue;
        }
        if let Some(after) = rest.strip_prefix('}') {
            let (members, at) = stack.pop()?;
            let name: String = after
                .trim()
                .trim_end_matches(';')
                .split('[')
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            match stack.last_mut() {
                None => return Some(members.into_iter().map(|(n, o, b)| (n, (o, b))).collect()),
                Some(parent) => {
                    if !name.is_empty() {
                        parent.0.push((name.clone(), at, 0));
                    }
                    for (n, o, b) in members {
                        let path = if name.is_empty() {
                            n
                        } else {
                            format!("{name}.{n}")
                        };
                        parent.0.push((path, o, b));
                    }
                }
            }
            continue;
        }
        if !rest.ends_with(';') || rest.starts_with("/*") {
            continue;
        }
        let Some(name) = member_name(&rest[..rest.len() - 1]) else {
            continue;
        };
        let at = match off {
            Some(o) => o,
            None => stack.last()?.1,
        };
        stack.last_mut()?.0.push((name, at, bit.unwrap_or(0)));
    }
    None
}

/// Splits `/*  32: 2   |  4 */ rest` into (Some(32), Some(2), rest); lines without an
/// offset (`/*   16 */`, union members) give (None, None, rest).
fn split_offset_comment(line: &str) -> (Option<u64>, Option<u32>, &str) {
    let t = line.trim_start();
    if !t.starts_with("/*") {
        return (None, None, line);
    }
    let Some(end) = t.find("*/") else {
        return (None, None, line);
    };
    let inner = &t[2..end];
    if inner.contains("total size") || inner.contains("XXX") || inner.contains("offset") {
        // `/* offset | size */ type = ...` header: keep what follows.
        if inner.contains("offset") {
            return (None, None, &t[end + 2..]);
        }
        return (None, None, line);
    }
    let rest = &t[end + 2..];
    let Some((left, _size)) = inner.split_once('|') else {
        return (None, None, rest);
    };
    let mut parts = left.split(':');
    let off = parts.next().and_then(|s| s.trim().parse().ok());
    let bit = parts.next().and_then(|s| s.trim().parse().ok());
    (off, bit, rest)
}

/// The member name of a declaration: `PyObject *co_name`, `char f_trace_lines`,
/// `unsigned int kind : 3`, `freefunc co_extra_freefuncs[255]`, `void (*func)(void)`.
fn member_name(decl: &str) -> Option<String> {
    if let Some(i) = decl.find("(*") {
        let tail = &decl[i + 2..];
        let end = tail.find(')')?;
        return Some(tail[..end].trim().to_string());
    }
    let decl = decl.split(" : ").next()?;
    let decl = decl.split('[').next()?;
    let name = decl
        .rsplit(|c: char| !(c.is_alphanumeric() || c == '_'))
        .next()?;
    (!name.is_empty()).then(|| name.to_string())
}

/// Runs gdb once on `binary`, one `ptype` per requested type, and splits the output.
fn gdb_types(
    binary: &Path,
    debug_dir: Option<&Path>,
    types: &[(&str, &str)],
) -> HashMap<String, String> {
    let mut cmd = Command::new("gdb");
    cmd.arg("-nx").arg("-batch");
    if let Some(d) = debug_dir {
        cmd.arg("-iex")
            .arg(format!("set debug-file-directory {}", d.display()));
    }
    cmd.arg("-ex").arg("set max-value-size unlimited");
    cmd.arg("-ex").arg("set width 0");
    for (key, ptype) in types {
        cmd.arg("-ex").arg(format!("echo @@@ {key}\\n"));
        cmd.arg("-ex").arg(ptype);
    }
    cmd.arg(binary);
    let out = cmd.output().expect("run gdb");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let mut sections = HashMap::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines() {
        if let Some(key) = line.strip_prefix("@@@ ") {
            if let Some((k, v)) = current.take() {
                sections.insert(k, v);
            }
            current = Some((key.trim().to_string(), String::new()));
        } else if let Some((_, v)) = current.as_mut() {
            v.push_str(line);
            v.push('\n');
        }
    }
    if let Some((k, v)) = current {
        sections.insert(k, v);
    }
    sections
}

/// One build to check: where its DWARF is.
struct Build {
    minor: u8,
    binary: PathBuf,
    debug_dir: Option<PathBuf>,
    label: String,
    free_threaded: bool,
}

fn builds() -> Result<Vec<Build>, testkit::Skip> {
    let mut v = Vec::new();
    for i in testkit::pythons::pythons(&Want::any().pyenv())? {
        let lib = i.runtime_elf().unwrap_or_else(|e| panic!("{e}"));
        v.push(Build {
            minor: i.version.1,
            binary: lib,
            debug_dir: None,
            label: i.label.clone(),
            free_threaded: false,
        });
    }
    // the free-threaded build of tests/pythons/build-cpython ft (built with debug info)
    for i in testkit::pythons::pythons(&Want::any().free_threaded())? {
        let lib = i.runtime_elf().unwrap_or_else(|e| panic!("{e}"));
        v.push(Build {
            minor: i.version.1,
            binary: lib,
            debug_dir: None,
            label: i.label.clone(),
            free_threaded: true,
        });
    }
    // Debian's stripped 3.14+ builds, with the debug files tests/run fetches
    let dbg_root = testkit::pythons::debug_info_root();
    for i in testkit::pythons::pythons(&Want::at_least("3.14").debian().through_ldso())? {
        let minor = i.version.1;
        let tree = dbg_root.join(format!("py3.{minor}/root"));
        let binary = tree.join(format!("usr/bin/python3.{minor}"));
        let debug = tree.join("usr/lib/debug");
        if binary.exists() && debug.join(".build-id").exists() {
            v.push(Build {
                minor,
                binary,
                debug_dir: Some(debug),
                label: format!("{} + dbg", i.label),
                free_threaded: false,
            });
        } else {
            testkit::Skip::new(format!(
                "{} DWARF: no {} with debug files (fetch with WITH_DBG=1 \
                 tests/pythons/get-pythons {} 3.{minor})",
                i.label,
                binary.display(),
                dbg_root.display()
            ))
            .report();
        }
    }
    Ok(v)
}

/// Compares table values with DWARF, collecting mismatches.
struct Checker<'a> {
    label: &'a str,
    structs: HashMap<&'static str, Members>,
    failures: Vec<String>,
    checked: usize,
}

impl Checker<'_> {
    fn dwarf(&self, st: &str, path: &str) -> Option<(u64, u32)> {
        self.structs.get(st).and_then(|m| m.get(path)).copied()
    }
    fn offset(&mut self, what: &str, table: u64, st: &str, path: &str) {
        self.checked += 1;
        match self.dwarf(st, path) {
            Some((o, _)) if o == table => {}
            Some((o, _)) => self.failures.push(format!(
                "{}: {what} = {table}, DWARF {st}.{path} = {o}",
                self.label
            )),
            None => self
                .failures
                .push(format!("{}: {what}: no {st}.{path} in DWARF", self.label)),
        }
    }
    fn bit(&mut self, what: &str, table: u32, st: &str, path: &str) {
        self.checked += 1;
        match self.dwarf(st, path) {
            Some((_, b)) if b == table => {}
            other => self
                .failures
                .push(format!("{}: {what} = {table}, DWARF {other:?}", self.label)),
        }
    }
    fn absent(&mut self, what: &str, st: &str, path: &str) {
        self.checked += 1;
        if let Some(o) = self.dwarf(st, path) {
            self.failures.push(format!(
                "{}: {what} is None but DWARF has {st}.{path} at {o:?}",
                self.label
            ));
        }
    }
    /// `size` covers `[field, field + width)` and does not exceed the struct.
    fn covers(&mut self, what: &str, size: u64, st: &str, ends: &[u64]) {
        self.checked += 1;
        let need = ends.iter().copied().max().unwrap_or(0);
        let total = self.dwarf(st, "@size").map(|s| s.0).unwrap_or(0);
        if size < need || size > total {
            self.failures.push(format!(
                "{}: {what} = {size}, fields end at {need}, sizeof({st}) = {total}",
                self.label
            ));
        }
    }
}

const RUNTIME: &str = "struct pyruntimestate";
const INTERP: &str = "struct _is";
const TSTATE: &str = "struct _ts";
const CFRAME: &str = "struct _PyCFrame";
const FRAME_OBJ: &str = "struct _frame";
const IFRAME: &str = "struct _PyInterpreterFrame";
const GIL: &str = "struct _gil_runtime_state";
const CODE: &str = "PyCodeObject";
const ASCII: &str = "PyASCIIObject";
const COMPACT: &str = "PyCompactUnicodeObject";
const BYTES: &str = "PyBytesObject";
const VAROBJ: &str = "PyVarObject";
const TYPE: &str = "PyTypeObject";
const DEBUG_OFFSETS: &str = "struct _Py_DebugOffsets";

fn check_layout(c: &mut Checker, t: &Layout) {
    c.offset(
        "runtime.interpreters_head",
        t.runtime.interpreters_head,
        RUNTIME,
        "interpreters.head",
    );
    match t.runtime.gilstate_tstate_current {
        Some(o) => c.offset(
            "runtime.gilstate_tstate_current",
            o,
            RUNTIME,
            "gilstate.tstate_current",
        ),
        None => c.absent(
            "runtime.gilstate_tstate_current",
            RUNTIME,
            "gilstate.tstate_current",
        ),
    }
    c.offset("interp.next", t.interp.next, INTERP, "next");
    let heads = if t.version.1 <= 10 {
        "tstate_head"
    } else {
        "threads.head"
    };
    c.offset("interp.threads_head", t.interp.threads_head, INTERP, heads);
    c.offset("interp.id", t.interp.id, INTERP, "id");
    let modules = if t.version.1 <= 11 {
        "modules"
    } else {
        "imports.modules"
    };
    c.offset("interp.modules", t.interp.modules, INTERP, modules);
    match t.interp.gil {
        Some(g) => {
            c.offset("interp.gil.pointer", g.pointer, INTERP, "ceval.gil");
            c.offset("interp.gil.last_holder", g.last_holder, GIL, "last_holder");
            c.offset("interp.gil.locked", g.locked, GIL, "locked");
            if let Some(o) = g.switch_number {
                c.offset("interp.gil.switch_number", o, GIL, "switch_number");
            }
        }
        None => c.absent("interp.gil", INTERP, "ceval.gil"),
    }
    let g = &t.gil_fields;
    c.offset("gil_fields.locked", g.locked, GIL, "locked");
    if let Some((cond, size)) = g.waits {
        c.offset("gil_fields.waits.0", cond, GIL, "cond");
        c.offset("gil_fields.waits.1", size, GIL, "@size");
        // nothing but the four locks after `cond`
        let last = if c.dwarf(GIL, "switch_mutex").is_some() {
            "switch_mutex"
        } else {
            "mutex"
        };
        c.checked += 1;
        if c.dwarf(GIL, last).map(|(o, _)| o) <= Some(cond) {
            c.failures.push(format!(
                "{}: gil_fields.waits: no {last} after cond",
                c.label
            ));
        }
    }
    match g.tstate_holds_gil {
        Some((at, bit)) => {
            c.offset(
                "gil_fields.tstate_holds_gil",
                at,
                TSTATE,
                "_status.holds_gil",
            );
            c.bit(
                "gil_fields.tstate_holds_gil bit",
                bit,
                TSTATE,
                "_status.holds_gil",
            );
        }
        None => c.absent("gil_fields.tstate_holds_gil", TSTATE, "_status.holds_gil"),
    }
    c.offset("tstate.next", t.tstate.next, TSTATE, "next");
    c.offset("tstate.interp", t.tstate.interp, TSTATE, "interp");
    match t.tstate.current_frame {
        CurrentFrame::Direct(o) => {
            let f = if t.version.1 <= 10 {
                "frame"
            } else {
                "current_frame"
            };
            c.offset("tstate.current_frame", o, TSTATE, f);
        }
        CurrentFrame::ViaCFrame {
            cframe,
            current_frame,
        } => {
            c.offset("tstate.cframe", cframe, TSTATE, "cframe");
            c.offset(
                "_PyCFrame.current_frame",
                current_frame,
                CFRAME,
                "current_frame",
            );
        }
    }
    c.offset("tstate.thread_id", t.tstate.thread_id, TSTATE, "thread_id");
    match t.tstate.native_thread_id {
        Some(o) => c.offset("tstate.native_thread_id", o, TSTATE, "native_thread_id"),
        None => c.absent("tstate.native_thread_id", TSTATE, "native_thread_id"),
    }
    // `tracing` exists in every version; the walker needs it only up to 3.10
    if let Some(o) = t.tstate.tracing {
        c.offset("tstate.tracing", o, TSTATE, "tracing");
    }
    match t.tstate.cframe {
        Some(cf) => {
            c.offset("tstate.cframe.cframe", cf.cframe, TSTATE, "cframe");
            c.offset("tstate.cframe.root", cf.root, TSTATE, "root_cframe");
        }
        // (3.8/3.9 have neither; 3.13+ lend no states)
        None if t.version <= (3, 9) => c.absent("tstate.cframe", TSTATE, "cframe"),
        None => {}
    }
    match t.tstate.datastack {
        Some(d) => {
            c.offset("tstate.datastack.chunk", d.chunk, TSTATE, "datastack_chunk");
            c.offset("tstate.datastack.top", d.top, TSTATE, "datastack_top");
            c.offset("tstate.datastack.limit", d.limit, TSTATE, "datastack_limit");
        }
        None => c.absent("tstate.datastack", TSTATE, "datastack_top"),
    }
    match t.frame {
        FrameLayout::Object(f) => {
            c.offset("frame.back", f.back, FRAME_OBJ, "f_back");
            c.offset("frame.code", f.code, FRAME_OBJ, "f_code");
            c.offset("frame.lasti", f.lasti, FRAME_OBJ, "f_lasti");
            let live = match f.live {
                layout::FrameLive::Executing(_) => "f_executing",
                layout::FrameLive::State(_) => "f_state",
            };
            c.offset("frame.live", f.live.offset(), FRAME_OBJ, live);
            c.covers(
                "frame.size",
                f.size,
                FRAME_OBJ,
                &[f.back + 8, f.code + 8, f.lasti + 4, f.live.offset() + 1],
            );
        }
        FrameLayout::Interpreter(f) => {
            c.offset("frame.previous", f.previous, IFRAME, "previous");
            let code = if t.version.1 <= 12 {
                "f_code"
            } else {
                "f_executable"
            };
            c.offset("frame.code", f.code, IFRAME, code);
            let instr = if f.instr_is_prev {
                "prev_instr"
            } else {
                "instr_ptr"
            };
            c.offset("frame.instr", f.instr, IFRAME, instr);
            c.offset("frame.owner", f.owner, IFRAME, "owner");
            match f.is_entry {
                Some(o) => c.offset("frame.is_entry", o, IFRAME, "is_entry"),
                None => c.absent("frame.is_entry", IFRAME, "is_entry"),
            }
            // the running mark is claimed only where `stacktop` is an int (3.12/3.13;
            // 3.11's is one too but is not cleared, which DWARF cannot show)
            if let Some(o) = f.running_stacktop {
                c.offset("frame.running_stacktop", o, IFRAME, "stacktop");
            }
            let mut ends = vec![f.previous + 8, f.code + 8, f.instr + 8, f.owner + 1];
            ends.extend(f.is_entry.map(|e| e + 1));
            ends.extend(f.running_stacktop.map(|e| e + 4));
            c.covers("frame.size", f.size, IFRAME, &ends);
        }
    }
    let k = &t.code;
    c.offset("code.filename", k.filename, CODE, "co_filename");
    c.offset("code.name", k.name, CODE, "co_name");
    match k.qualname {
        Some(o) => c.offset("code.qualname", o, CODE, "co_qualname"),
        None => c.absent("code.qualname", CODE, "co_qualname"),
    }
    c.offset("code.firstlineno", k.firstlineno, CODE, "co_firstlineno");
    let lt = match k.linetable_format {
        layout::LineTableFormat::Lnotab => "co_lnotab",
        _ => "co_linetable",
    };
    c.offset("code.linetable", k.linetable, CODE, lt);
    match k.code_adaptive {
        Some(o) => c.offset("code.code_adaptive", o, CODE, "co_code_adaptive"),
        None => c.absent("code.code_adaptive", CODE, "co_code_adaptive"),
    }
    match k.first_traceable {
        Some(o) => c.offset("code.first_traceable", o, CODE, "_co_firsttraceable"),
        None => c.absent("code.first_traceable", CODE, "_co_firsttraceable"),
    }
    let mut ends = vec![
        k.filename + 8,
        k.name + 8,
        k.firstlineno + 4,
        k.linetable + 8,
    ];
    ends.extend(k.qualname.map(|q| q + 8));
    c.covers("code.size", k.size, CODE, &ends);
    let u = &t.unicode;
    c.offset("unicode.length", u.length, ASCII, "length");
    c.offset("unicode.state", u.state, ASCII, "state");
    c.offset("unicode.ascii_data", u.ascii_data, ASCII, "@size");
    c.offset("unicode.compact_data", u.compact_data, COMPACT, "@size");
    c.bit("unicode.kind_shift", u.kind_shift, ASCII, "state.kind");
    c.bit("unicode.compact_bit", u.compact_bit, ASCII, "state.compact");
    c.bit("unicode.ascii_bit", u.ascii_bit, ASCII, "state.ascii");
    c.offset("bytes.size", t.bytes.size, VAROBJ, "ob_size");
    c.offset("bytes.data", t.bytes.data, BYTES, "ob_sval");
    c.offset("object.ob_size", t.object.ob_size, VAROBJ, "ob_size");
    c.offset("object.ob_type", t.object.ob_type, "PyObject", "ob_type");
    // the per-object lock `--locals` reads on a free-threaded build (none with a GIL)
    match t.object.mutex {
        Some(m) => c.offset("object.mutex", m, "PyObject", "ob_mutex"),
        None => c.absent("object.mutex", "PyObject", "ob_mutex"),
    }
    if !t.free_threaded {
        c.offset("OB_SIZE", layout::OB_SIZE, VAROBJ, "ob_size");
        c.offset("OB_TYPE", layout::OB_TYPE, "PyObject", "ob_type");
    }
    c.offset("type_tp_name", t.type_tp_name, TYPE, "tp_name");
    match t.code.frame_words {
        Some(layout::FrameWords::Field(o)) => c.offset("code.frame_words", o, CODE, "co_framesize"),
        Some(layout::FrameWords::Sum {
            nlocalsplus,
            stacksize,
            ..
        }) => {
            c.offset(
                "code.frame_words.nlocalsplus",
                nlocalsplus,
                CODE,
                "co_nlocalsplus",
            );
            c.offset(
                "code.frame_words.stacksize",
                stacksize,
                CODE,
                "co_stacksize",
            );
        }
        None => {}
    }
    check_values(c, t);
}

/// `--locals`: fast locals, local names, built-in objects (`layout::ValuesLayout`, `obj`).
fn check_values(c: &mut Checker, t: &Layout) {
    use layout::{obj, CodeLocalsLayout, DictLayout, LongLayout, SplitValues};
    let v = &t.values;
    match t.frame {
        FrameLayout::Object(_) => c.offset(
            "values.frame_localsplus",
            v.frame_localsplus,
            FRAME_OBJ,
            "f_localsplus",
        ),
        FrameLayout::Interpreter(_) => c.offset(
            "values.frame_localsplus",
            v.frame_localsplus,
            IFRAME,
            "localsplus",
        ),
    }
    match v.code {
        CodeLocalsLayout::Varnames {
            argcount,
            kwonlyargcount,
            flags,
            varnames,
            cellvars,
            freevars,
        } => {
            c.offset("values.code.argcount", argcount, CODE, "co_argcount");
            c.offset(
                "values.code.kwonly",
                kwonlyargcount,
                CODE,
                "co_kwonlyargcount",
            );
            c.offset("values.code.flags", flags, CODE, "co_flags");
            c.offset("values.code.varnames", varnames, CODE, "co_varnames");
            c.offset("values.code.cellvars", cellvars, CODE, "co_cellvars");
            c.offset("values.code.freevars", freevars, CODE, "co_freevars");
        }
        CodeLocalsLayout::Kinds {
            argcount,
            kwonlyargcount,
            flags,
            names,
            kinds,
        } => {
            c.offset("values.code.argcount", argcount, CODE, "co_argcount");
            c.offset(
                "values.code.kwonly",
                kwonlyargcount,
                CODE,
                "co_kwonlyargcount",
            );
            c.offset("values.code.flags", flags, CODE, "co_flags");
            c.offset("values.code.names", names, CODE, "co_localsplusnames");
            c.offset("values.code.kinds", kinds, CODE, "co_localspluskinds");
        }
    }
    c.offset(
        "values.tuple_items",
        v.tuple_items,
        "PyTupleObject",
        "ob_item",
    );
    match v.long {
        LongLayout::SignedSize { digits } => {
            c.offset("values.long.digits", digits, "PyLongObject", "ob_digit")
        }
        LongLayout::Tagged { tag, digits } => {
            // gdb does not expand the typedef'd `_PyLongValue`: `lv_tag` is its first
            // member, the digits follow that one word
            c.offset("values.long.tag", tag, "PyLongObject", "long_value");
            c.offset(
                "values.long.digits - 8",
                digits - 8,
                "PyLongObject",
                "long_value",
            );
        }
    }
    const KEYS: &str = "PyDictKeysObject";
    match v.dict {
        DictLayout::Sized {
            size,
            nentries,
            indices,
        } => {
            c.offset("values.dict.size", size, KEYS, "dk_size");
            c.offset("values.dict.nentries", nentries, KEYS, "dk_nentries");
            c.offset("values.dict.indices", indices, KEYS, "dk_indices");
        }
        DictLayout::Log2 {
            log2_size,
            log2_index_bytes,
            kind,
            nentries,
            indices,
            values,
        } => {
            c.offset("values.dict.log2_size", log2_size, KEYS, "dk_log2_size");
            c.offset(
                "values.dict.log2_index_bytes",
                log2_index_bytes,
                KEYS,
                "dk_log2_index_bytes",
            );
            c.offset("values.dict.kind", kind, KEYS, "dk_kind");
            c.offset("values.dict.nentries", nentries, KEYS, "dk_nentries");
            c.offset("values.dict.indices", indices, KEYS, "dk_indices");
            match values {
                SplitValues::OrderBefore => c.offset(
                    "values.dict.values (plain array)",
                    0,
                    "PyDictValues",
                    "values",
                ),
                SplitValues::Header {
                    capacity,
                    size,
                    values,
                } => {
                    c.offset(
                        "values.dict.values.capacity",
                        capacity,
                        "PyDictValues",
                        "capacity",
                    );
                    c.offset("values.dict.values.size", size, "PyDictValues", "size");
                    c.offset(
                        "values.dict.values.values",
                        values,
                        "PyDictValues",
                        "values",
                    );
                }
            }
        }
    }
    // the `obj` constants are the GIL builds' (values.rs reads only those): a free-threaded
    // build has every one of these fields its larger object header further in
    let hs = t.object.ob_type - layout::OB_TYPE;
    c.offset(
        "obj::FLOAT_VALUE",
        obj::FLOAT_VALUE + hs,
        "PyFloatObject",
        "ob_fval",
    );
    // `Py_complex` is `{double real; double imag;}` (a typedef gdb does not expand)
    c.offset(
        "obj::COMPLEX_REAL",
        obj::COMPLEX_REAL + hs,
        "PyComplexObject",
        "cval",
    );
    c.offset(
        "obj::COMPLEX_IMAG - 8",
        obj::COMPLEX_IMAG - 8 + hs,
        "PyComplexObject",
        "cval",
    );
    c.offset(
        "obj::LIST_ITEMS",
        obj::LIST_ITEMS + hs,
        "PyListObject",
        "ob_item",
    );
    c.offset(
        "obj::DICT_USED",
        obj::DICT_USED + hs,
        "PyDictObject",
        "ma_used",
    );
    c.offset(
        "obj::DICT_KEYS",
        obj::DICT_KEYS + hs,
        "PyDictObject",
        "ma_keys",
    );
    c.offset(
        "obj::DICT_VALUES",
        obj::DICT_VALUES + hs,
        "PyDictObject",
        "ma_values",
    );
    c.offset("obj::SET_USED", obj::SET_USED + hs, "PySetObject", "used");
    c.offset("obj::SET_MASK", obj::SET_MASK + hs, "PySetObject", "mask");
    c.offset(
        "obj::SET_TABLE",
        obj::SET_TABLE + hs,
        "PySetObject",
        "table",
    );
    c.offset(
        "obj::CELL_REF",
        obj::CELL_REF + hs,
        "PyCellObject",
        "ob_ref",
    );
    c.offset("obj::TYPE_FLAGS", obj::TYPE_FLAGS + hs, TYPE, "tp_flags");
    c.offset("obj::TYPE_DICT", obj::TYPE_DICT + hs, TYPE, "tp_dict");
    // thread names: a module's dict, a class's instance attributes
    c.offset(
        "obj::TYPE_BASICSIZE",
        obj::TYPE_BASICSIZE + hs,
        TYPE,
        "tp_basicsize",
    );
    c.offset(
        "obj::TYPE_DICTOFFSET",
        obj::TYPE_DICTOFFSET + hs,
        TYPE,
        "tp_dictoffset",
    );
    c.offset(
        "obj::MODULE_DICT",
        obj::MODULE_DICT + hs,
        "PyModuleObject",
        "md_dict",
    );
    c.offset(
        "values.cached_keys",
        v.cached_keys,
        "PyHeapTypeObject",
        "ht_cached_keys",
    );
    match v.instance_dict {
        layout::InstanceDict::Inline { valid, .. } => {
            c.offset("values.instance_dict.valid", valid, "PyDictValues", "valid")
        }
        // the pre-header words and the flag bits are macros, not in DWARF: the
        // thread_names test reads instance attributes on every version
        _ => c.absent("values.instance_dict.valid", "PyDictValues", "valid"),
    }
}

/// `enum _frameowner {FRAME_OWNED_BY_THREAD, ...}`: the first value that is not a
/// Python frame owner (thread, generator, frame object).
fn first_non_python_owner(enum_text: &str) -> Option<Option<u8>> {
    let line = enum_text.lines().find(|l| l.contains("enum _frameowner"))?;
    let body = &line[line.find('{')? + 1..line.rfind('}')?];
    let mut value: i64 = -1;
    for item in body.split(',') {
        let item = item.trim();
        let (name, v) = match item.split_once('=') {
            Some((n, v)) => (n.trim(), v.trim().parse().ok()?),
            None => (item, value + 1),
        };
        value = v;
        if !matches!(
            name,
            "FRAME_OWNED_BY_THREAD" | "FRAME_OWNED_BY_GENERATOR" | "FRAME_OWNED_BY_FRAME_OBJECT"
        ) {
            return Some(Some(u8::try_from(v).ok()?));
        }
    }
    Some(None)
}

#[test]
fn tables_match_dwarf() {
    require!(testkit::tool("gdb"));
    let builds = require!(builds());
    let mut failures = Vec::new();
    for b in &builds {
        let table = layout::for_build(3, b.minor, b.free_threaded)
            .expect("a table for every checked version");
        let mut types: Vec<(&str, String)> = [
            RUNTIME,
            INTERP,
            TSTATE,
            CFRAME,
            FRAME_OBJ,
            IFRAME,
            GIL,
            CODE,
            ASCII,
            COMPACT,
            BYTES,
            VAROBJ,
            TYPE,
            "PyObject",
            DEBUG_OFFSETS,
            "PyTupleObject",
            "PyLongObject",
            "PyDictKeysObject",
            "PyDictValues",
            "PyFloatObject",
            "PyComplexObject",
            "PyListObject",
            "PyDictObject",
            "PySetObject",
            "PyCellObject",
            "PyModuleObject",
            "PyHeapTypeObject",
        ]
        .iter()
        .map(|t| (*t, format!("ptype /o {t}")))
        .collect();
        types.push(("owner", "ptype enum _frameowner".into()));
        let refs: Vec<(&str, &str)> = types.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let out = gdb_types(&b.binary, b.debug_dir.as_deref(), &refs);
        let mut structs = HashMap::new();
        for (key, _) in &types {
            if let Some(m) = out.get(*key).and_then(|t| parse_ptype(t)) {
                structs.insert(*key, m);
            }
        }
        if !structs.contains_key(TSTATE) || !structs.contains_key(CODE) {
            failures.push(format!(
                "{}: gdb printed no DWARF types for {}",
                b.label,
                b.binary.display()
            ));
            continue;
        }
        let mut c = Checker {
            label: &b.label,
            structs,
            failures: Vec::new(),
            checked: 0,
        };
        check_layout(&mut c, table);
        // Frame owners that mark non-Python frames.
        if let FrameLayout::Interpreter(f) = table.frame {
            c.checked += 1;
            match out.get("owner").and_then(|t| first_non_python_owner(t)) {
                Some(dwarf) if dwarf == f.first_non_python_owner => {}
                other => c.failures.push(format!(
                    "{}: first_non_python_owner = {:?}, DWARF enum gives {other:?}",
                    b.label, f.first_non_python_owner
                )),
            }
        }
        // Where each value sits in `_Py_DebugOffsets`.
        if let Some(format) = debug_offsets::format_for(3, b.minor) {
            c.offset(
                "sizeof(_Py_DebugOffsets)",
                format.size as u64,
                DEBUG_OFFSETS,
                "@size",
            );
            for &(slot, at) in format.slots {
                c.offset(
                    &format!("{slot:?}"),
                    at as u64,
                    DEBUG_OFFSETS,
                    slot.dwarf_path(),
                );
            }
        }
        eprintln!(
            "{}: {} values checked against DWARF, {} mismatches",
            b.label,
            c.checked,
            c.failures.len()
        );
        failures.extend(c.failures);
    }
    assert!(
        failures.is_empty(),
        "layout tables disagree with DWARF:\n{}",
        failures.join("\n")
    );
}

#[test]
fn ptype_parser_handles_nesting_unions_and_bitfields() {
    // Shaped like real `ptype /o` output (3.8 PyASCIIObject and a union from 3.12's
    // runtime state).
    let text = "\
/* offset      |    size */  type = struct {
/*      0      |      16 */    PyObject ob_base;
/*     16      |       8 */    Py_ssize_t length;
/*     32      |       4 */    struct {
/*     32: 0   |       4 */        unsigned int interned : 2;
/*     32: 2   |       4 */        unsigned int kind : 3;
/* XXX  3-byte padding   */

                                   /* total size (bytes):    4 */
                               } state;
/*     40      |      24 */    union {
/*                    16 */        struct {
/*     40      |       8 */            void *x;
/*     48      |       8 */            void *y;

                                       /* total size (bytes):   16 */
                                   } a;
/*                     8 */        PyObject *z;

                                   /* total size (bytes):   24 */
                               } u;
/*     64      |       8 */    void (*func)(void);
/*     72      |      16 */    freefunc extra[2];

                               /* total size (bytes):   88 */
                             }
";
    let m = parse_ptype(text).expect("parses");
    assert_eq!(m["length"], (16, 0));
    assert_eq!(m["state.kind"], (32, 2));
    assert_eq!(m["u.a.y"], (48, 0));
    assert_eq!(m["u.z"], (40, 0));
    assert_eq!(m["func"], (64, 0));
    assert_eq!(m["extra"], (72, 0));
    assert_eq!(m["@size"], (88, 0));
    assert_eq!(m["state.@size"], (4, 0));
}
