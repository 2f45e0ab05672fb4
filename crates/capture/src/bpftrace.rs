//! The plan as bpftrace 0.17 statements.
//!
//! bpftrace has no macros or functions, so a capture is a block of statements pasted into
//! a probe's body ([`render_block`]) plus struct definitions for the top of the script
//! ([`render_definitions`]); [`render_program`] wraps both in a program for `pystackd
//! trace`. Design points, each forced by the tracer:
//! - every read goes through `uptr()`: the same block works in user context (uprobes) and
//!   kernel context (`profile`, tracepoints), and a failed read yields 0, which ends the walk;
//! - loops are bounded `while` loops (the verifier needs bounds): at most `max_threads`
//!   thread states, at most `depth` frames;
//! - the BPF stack is 512 bytes, so frames are printed in groups of [`GROUP`] per `printf`
//!   as they are walked (`pyframes=` then `pyframes+=` lines, see [`crate::frames`]), each
//!   group a fixed format whose unused slots print as `0:0:0`;
//! - all variables are `$py_`-prefixed so the block does not collide with the script's.

use std::fmt::Write as _;

use pyframe_reader::layout::CurrentFrame;

use crate::plan::{FrameSteps, Plan, ThreadMatch};

/// Frames per `printf` (3 arguments each). Every output record costs the probe a few µs, so
/// fewer, larger records would be cheaper, but bpftrace 0.17 builds a record on the 512-byte
/// BPF stack: 10 frames per record already exceed it in `pystackd trace`'s program
/// (measured), 8 fit.
pub const GROUP: u32 = 8;

/// What the block prints before each of its lines: a `printf` format prefix and its
/// arguments (e.g. `("@pystackd %d %lu ", "tid, $ev")` so that `pystackd trace` can group
/// the lines of one firing even when CPUs interleave).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinePrefix {
    pub format: String,
    pub args: Vec<String>,
}

fn rd(ty: &str, addr: &str) -> String {
    format!("*uptr(({ty}*)({addr}))")
}

fn plus(base: &str, off: u64) -> String {
    if off == 0 {
        base.to_string()
    } else {
        format!("{base} + {off}")
    }
}

fn printf(out: &mut String, indent: &str, prefix: &LinePrefix, body: &str, args: &[String]) {
    let mut all: Vec<String> = prefix.args.clone();
    all.extend(args.iter().cloned());
    let fmt = format!("{}{}\\n", prefix.format, body);
    if all.is_empty() {
        let _ = writeln!(out, "{indent}printf(\"{fmt}\");");
    } else {
        let _ = writeln!(out, "{indent}printf(\"{fmt}\", {});", all.join(", "));
    }
}

/// The capture as statements for a probe body (4-space indent). It ends having printed one
/// `pyframes=` line and, for deeper stacks, `pyframes+=` lines; `$py_ts` holds the thread
/// state (0: not a Python thread) and `$py_g` the number of frame lines printed (0 for
/// `!nothread`), so that a consumer can tell a firing whose lines were lost (bpftrace drops
/// output records when its reader falls behind).
pub fn render_block(plan: &Plan, prefix: &LinePrefix) -> String {
    let mut s = String::new();
    let i1 = "    ";
    let _ = writeln!(
        s,
        "{i1}// pystackd capture: CPython {}.{}, _PyRuntime at {:#x}, depth {}",
        plan.version.0, plan.version.1, plan.runtime, plan.depth
    );
    // 1-2: the main interpreter's thread list, searched for the firing thread
    let key = match plan.thread_match {
        ThreadMatch::NativeThreadId { .. } | ThreadMatch::ThreadIdIsLwp { .. } => {
            "(uint64)tid".to_string()
        }
        // glibc's pthread_t is the thread's FS base (x86_64)
        ThreadMatch::ThreadIdIsFsBase { .. } => "curtask->thread.fsbase".to_string(),
    };
    let interp = rd(
        "uint64",
        &format!("{:#x} + {}", plan.runtime, plan.interpreters_head),
    );
    let _ = writeln!(s, "{i1}$py_key = {key};");
    let _ = writeln!(s, "{i1}$py_g = 0;");
    let _ = writeln!(
        s,
        "{i1}$py_ts = {};",
        rd("uint64", &plus(&interp, plan.threads_head))
    );
    let _ = writeln!(s, "{i1}$py_t = 0;");
    let _ = writeln!(s, "{i1}while ($py_t < {}) {{", plan.max_threads);
    let _ = writeln!(s, "{i1}    if ($py_ts == 0) {{ break; }}");
    let _ = writeln!(
        s,
        "{i1}    if ({} == $py_key) {{ break; }}",
        rd("uint64", &plus("$py_ts", plan.thread_match.offset()))
    );
    let _ = writeln!(
        s,
        "{i1}    $py_ts = {};",
        rd("uint64", &plus("$py_ts", plan.tstate_next))
    );
    let _ = writeln!(s, "{i1}    $py_t++;");
    let _ = writeln!(s, "{i1}}}");
    let _ = writeln!(
        s,
        "{i1}if ($py_t == {}) {{ $py_ts = 0; }}",
        plan.max_threads
    );
    // 3: the innermost frame
    let frame = match plan.current_frame {
        CurrentFrame::Direct(o) => rd("uint64", &plus("$py_ts", o)),
        CurrentFrame::ViaCFrame {
            cframe,
            current_frame,
        } => rd(
            "uint64",
            &plus(&rd("uint64", &plus("$py_ts", cframe)), current_frame),
        ),
    };
    let _ = writeln!(s, "{i1}$py_f = (uint64)0;");
    let _ = writeln!(s, "{i1}if ($py_ts != 0) {{ $py_f = {frame}; }}");
    let _ = writeln!(s, "{i1}if ($py_ts == 0) {{");
    printf(
        &mut s,
        &format!("{i1}    "),
        prefix,
        "pyframes=!nothread",
        &[],
    );
    let _ = writeln!(s, "{i1}}} else {{");
    // 4: groups of GROUP steps, each printed as one line
    let groups = plan.depth.div_ceil(GROUP);
    let i2 = "        ";
    let i3 = "            ";
    let _ = writeln!(s, "{i2}$py_n = 0;");
    // the last code object read, its identity and first traceable unit
    let _ = writeln!(
        s,
        "{i2}$py_lc = (uint64)0; $py_li = (uint64)0; $py_lt = (int64)0;"
    );
    let _ = writeln!(s, "{i2}while ($py_g < {groups}) {{");
    for k in 0..GROUP {
        let _ = writeln!(
            s,
            "{i3}$py_c{k} = (uint64)0; $py_o{k} = (int64)0; $py_i{k} = (uint64)0;"
        );
    }
    for k in 0..GROUP {
        let _ = writeln!(s, "{i3}if ($py_f != 0 && $py_n < {}) {{", plan.depth);
        step(&mut s, plan, k, "                ");
        let _ = writeln!(s, "{i3}    $py_n++;");
        let _ = writeln!(s, "{i3}}}");
    }
    let slots: Vec<String> = (0..GROUP).map(|_| "%lx:%ld:%lx".to_string()).collect();
    let args: Vec<String> = (0..GROUP)
        .flat_map(|k| {
            [
                format!("$py_c{k}"),
                format!("$py_o{k}"),
                format!("$py_i{k}"),
            ]
        })
        .collect();
    let _ = writeln!(s, "{i3}if ($py_g == 0) {{");
    printf(
        &mut s,
        &format!("{i3}    "),
        prefix,
        &format!("pyframes={}", slots.join(",")),
        &args,
    );
    let _ = writeln!(s, "{i3}}} else {{");
    printf(
        &mut s,
        &format!("{i3}    "),
        prefix,
        &format!("pyframes+={}", slots.join(",")),
        &args,
    );
    let _ = writeln!(s, "{i3}}}");
    let _ = writeln!(s, "{i3}$py_g++;");
    let _ = writeln!(
        s,
        "{i3}if ($py_f == 0 || $py_n >= {}) {{ break; }}",
        plan.depth
    );
    let _ = writeln!(s, "{i2}}}");
    let _ = writeln!(s, "{i2}if ($py_f != 0) {{");
    printf(&mut s, &format!("{i2}    "), prefix, "pyframes+=...", &[]);
    let _ = writeln!(s, "{i2}    $py_g++;");
    let _ = writeln!(s, "{i2}}}");
    let _ = writeln!(s, "{i1}}}");
    s
}

/// C struct definitions the block reads through. bpftrace 0.17 reads a struct lazily: each
/// field access is its own `probe_read_user` (measured in its LLVM IR), so the block copies
/// every field it needs into a scalar once. They are generated from the layout table,
/// padding included, and must be at the top of the script, outside any probe.
pub fn render_definitions(plan: &Plan) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "// pystackd capture: CPython {}.{} structs (only the fields the capture reads)",
        plan.version.0, plan.version.1
    );
    let frame: Vec<(u64, &str, &str)> = match plan.frames {
        FrameSteps::Object {
            back, code, lasti, ..
        } => vec![
            (back, "unsigned long", "back"),
            (code, "unsigned long", "code"),
            (lasti, "int", "lasti"),
        ],
        FrameSteps::Interpreter {
            previous,
            code,
            instr,
            owner,
            ..
        } => vec![
            (previous, "unsigned long", "previous"),
            (code, "unsigned long", "code"),
            (instr, "unsigned long", "instr"),
            (owner, "unsigned char", "owner"),
        ],
    };
    let mut frame = frame;
    if let FrameSteps::Interpreter {
        is_entry: Some(o), ..
    } = plan.frames
    {
        frame.push((o, "unsigned char", "is_entry"));
    }
    s.push_str(&c_struct("pystackd_frame", 0, &frame));
    let mut code = vec![
        (plan.ident.name, "unsigned long", "name"),
        (plan.ident.firstlineno, "int", "firstlineno"),
    ];
    if let FrameSteps::Interpreter {
        first_traceable: Some(ft),
        ..
    } = plan.frames
    {
        code.push((ft, "int", "first_traceable"));
    }
    s.push_str(&c_struct("pystackd_code", code_base(plan), &code));
    s
}

/// Where the code-object struct starts: its lowest field, 8-aligned (only the span of the
/// fields read is copied).
fn code_base(plan: &Plan) -> u64 {
    let mut low = plan.ident.name.min(plan.ident.firstlineno);
    if let FrameSteps::Interpreter {
        first_traceable: Some(ft),
        ..
    } = plan.frames
    {
        low = low.min(ft);
    }
    low & !7
}

fn c_size(ty: &str) -> u64 {
    match ty {
        "unsigned long" => 8,
        "int" => 4,
        _ => 1,
    }
}

/// A C struct with `fields` at their offsets (relative to `base`), padded with char arrays.
fn c_struct(name: &str, base: u64, fields: &[(u64, &str, &str)]) -> String {
    let mut fields = fields.to_vec();
    fields.sort();
    let mut s = format!("struct {name} {{");
    let mut at = base;
    for (i, (off, ty, field)) in fields.iter().enumerate() {
        if *off > at {
            let _ = write!(s, " char _pad{i}[{}];", off - at);
        }
        let _ = write!(s, " {ty} {field};");
        at = off + c_size(ty);
    }
    s.push_str(" };\n");
    s
}

/// One step into slot `k`: mirrors `interpret::step`. The frame is read whole; the code
/// object's identity (and first traceable unit) is read once per distinct code object in a
/// row (recursion repeats it).
fn step(s: &mut String, plan: &Plan, k: u32, ind: &str) {
    let base = code_base(plan);
    let code_fields = |s: &mut String, ind: &str, code: &str| {
        let _ = writeln!(s, "{ind}if ({code} != $py_lc) {{");
        let _ = writeln!(
            s,
            "{ind}    $py_h = *uptr((struct pystackd_code*)({}));",
            plus(code, base)
        );
        let _ = writeln!(
            s,
            "{ind}    $py_lc = {code}; $py_li = $py_h.name ^ ((uint64)(uint32)$py_h.firstlineno << 48);"
        );
        if let FrameSteps::Interpreter {
            first_traceable: Some(_),
            ..
        } = plan.frames
        {
            let _ = writeln!(s, "{ind}    $py_lt = (int64)$py_h.first_traceable;");
        }
        let _ = writeln!(s, "{ind}}}");
    };
    let _ = writeln!(s, "{ind}$py_fr = *uptr((struct pystackd_frame*)$py_f);");
    match plan.frames {
        FrameSteps::Object { lasti_unit, .. } => {
            let _ = writeln!(s, "{ind}$py_code = $py_fr.code;");
            code_fields(s, ind, "$py_code");
            let _ = writeln!(
                s,
                "{ind}$py_c{k} = $py_code; $py_o{k} = (int64)$py_fr.lasti * {lasti_unit}; $py_i{k} = $py_li;"
            );
            let _ = writeln!(s, "{ind}$py_f = $py_fr.back;");
        }
        FrameSteps::Interpreter {
            code_tag_mask,
            code_adaptive,
            first_non_python_owner,
            generator_owner,
            first_traceable,
            is_entry,
            ..
        } => {
            let mut close = "";
            let mut ind2 = ind.to_string();
            // each field once into a scalar: bpftrace 0.17 reads a struct field per access
            if first_non_python_owner.is_some() || first_traceable.is_some() {
                let _ = writeln!(s, "{ind}$py_ow = $py_fr.owner;");
            }
            if is_entry.is_some() {
                let _ = writeln!(s, "{ind}$py_ie = (int64)$py_fr.is_entry;");
            }
            if let Some(mark) = first_non_python_owner {
                // C-stack shim: an eval-call boundary, printed as 0:1:0
                let _ = writeln!(s, "{ind}if ($py_ow >= {mark}) {{ $py_o{k} = 1; }} else {{");
                close = "}";
                ind2 = format!("{ind}    ");
            }
            if code_tag_mask != 0 {
                let _ = writeln!(
                    s,
                    "{ind2}$py_code = $py_fr.code & ~(uint64){code_tag_mask};"
                );
            } else {
                let _ = writeln!(s, "{ind2}$py_code = $py_fr.code;");
            }
            let _ = writeln!(
                s,
                "{ind2}$py_off = (int64)($py_fr.instr - $py_code - {code_adaptive});"
            );
            // 3.11: an entry frame's offset carries the flag in its low bit
            let flag = if is_entry.is_some() { " | $py_ie" } else { "" };
            code_fields(s, &ind2, "$py_code");
            match first_traceable {
                Some(_) => {
                    // incomplete frames (not started, internal cleanup) are skipped
                    let _ = writeln!(
                        s,
                        "{ind2}if ($py_ow == {generator_owner} || $py_off >= 2 * $py_lt) {{"
                    );
                    let _ = writeln!(
                        s,
                        "{ind2}    $py_c{k} = $py_code; $py_o{k} = $py_off{flag}; $py_i{k} = $py_li;"
                    );
                    if is_entry.is_some() {
                        // a skipped entry frame still ends its eval call's group: 0:1:0
                        let _ = writeln!(s, "{ind2}}} else {{ $py_o{k} = $py_ie; }}");
                    } else {
                        let _ = writeln!(s, "{ind2}}}");
                    }
                }
                None => {
                    let _ = writeln!(
                        s,
                        "{ind2}$py_c{k} = $py_code; $py_o{k} = $py_off{flag}; $py_i{k} = $py_li;"
                    );
                }
            }
            if !close.is_empty() {
                let _ = writeln!(s, "{ind}{close}");
            }
            let _ = writeln!(s, "{ind}$py_f = $py_fr.previous;");
        }
    }
}

/// A whole program for `pystackd trace`: each probe, filtered on the target's pid, gets a
/// firing id, the capture, and a closing line with the native stack.
///
/// Every line a firing prints starts with `@pystackd <tid> <id> ` (`id` is the firing's
/// `nsecs`); the last is `@pystackd <tid> <id> end <lines> <probe>` (the number of
/// `pyframes` lines printed before it, the probe's name) followed by the `ustack(perf)`
/// lines.
///
/// `BEGIN` prints `@pystackd begin` (bpftrace runs it once every probe is attached: the
/// trace's clock starts there) and notes the time; probes fire for `duration_ns` after it
/// and then stop in the kernel, so the consumer can read everything queued before bpftrace
/// is stopped. Each firing is counted in the map `@pystackd_fired[probe]`, which bpftrace
/// prints when it stops: firings it never delivered (its ring full, or still queued when
/// it was stopped) show as the difference, never silently.
pub fn render_program(plan: &Plan, pid: u32, probes: &[String], duration_ns: u64) -> String {
    let prefix = LinePrefix {
        format: "@pystackd %d %lu ".into(),
        args: vec!["tid".into(), "$py_ev".into()],
    };
    let block = render_block(plan, &prefix);
    let mut s = String::new();
    let _ = writeln!(s, "// generated by pystackd trace for pid {pid}");
    s.push_str(&render_definitions(plan));
    let _ = writeln!(
        s,
        "BEGIN {{ @pystackd_t0 = nsecs; printf(\"@pystackd begin\\n\"); }}"
    );
    for p in probes {
        let _ = writeln!(
            s,
            "{p} /pid == {pid} && @pystackd_t0 != 0 && nsecs - @pystackd_t0 < {duration_ns}/"
        );
        let _ = writeln!(s, "{{");
        let _ = writeln!(s, "    $py_ev = nsecs;");
        let _ = writeln!(s, "    @pystackd_fired[probe] = count();");
        s.push_str(&block);
        let _ = writeln!(
            s,
            "    printf(\"@pystackd %d %lu end %d %s\\n%s\\n\", tid, $py_ev, $py_g, probe, ustack(perf));"
        );
        let _ = writeln!(s, "}}");
    }
    let _ = writeln!(s, "END {{ clear(@pystackd_t0); }}");
    s
}
