//! The plan as bpftrace 0.17 statements.
//!
//! bpftrace has no macros or functions, so a capture is a block of statements pasted into
//! a probe's body ([`render_block`]); [`render_program`] wraps it in probes for `pystackd
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

/// Frames per `printf` (3 arguments each; 8 keeps a record well under the BPF stack limit).
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
    let _ = writeln!(s, "{i2}}}");
    let _ = writeln!(s, "{i1}}}");
    s
}

/// One step into slot `k`: mirrors `interpret::step`.
fn step(s: &mut String, plan: &Plan, k: u32, ind: &str) {
    let ident = |s: &mut String, ind: &str| {
        let _ = writeln!(
            s,
            "{ind}$py_i{k} = {} ^ ((uint64)(uint32){} << 48);",
            rd("uint64", &plus(&format!("$py_c{k}"), plan.ident.name)),
            rd("int32", &plus(&format!("$py_c{k}"), plan.ident.firstlineno)),
        );
    };
    match plan.frames {
        FrameSteps::Object {
            back,
            code,
            lasti,
            lasti_unit,
        } => {
            let _ = writeln!(s, "{ind}$py_c{k} = {};", rd("uint64", &plus("$py_f", code)));
            let _ = writeln!(
                s,
                "{ind}$py_o{k} = (int64){} * {lasti_unit};",
                rd("int32", &plus("$py_f", lasti))
            );
            ident(s, ind);
            let _ = writeln!(s, "{ind}$py_f = {};", rd("uint64", &plus("$py_f", back)));
        }
        FrameSteps::Interpreter {
            previous,
            code,
            code_tag_mask,
            instr,
            code_adaptive,
            owner,
            first_non_python_owner,
            generator_owner,
            first_traceable,
        } => {
            let _ = writeln!(s, "{ind}$py_own = {};", rd("uint8", &plus("$py_f", owner)));
            let mut close = "";
            let mut ind2 = ind.to_string();
            if let Some(mark) = first_non_python_owner {
                // C-stack shim: an eval-call boundary, printed as 0:1:0
                let _ = writeln!(s, "{ind}if ($py_own >= {mark}) {{ $py_o{k} = 1; }} else {{");
                close = "}";
                ind2 = format!("{ind}    ");
            }
            let code_read = rd("uint64", &plus("$py_f", code));
            if code_tag_mask != 0 {
                let _ = writeln!(
                    s,
                    "{ind2}$py_code = {code_read} & ~(uint64){code_tag_mask};"
                );
            } else {
                let _ = writeln!(s, "{ind2}$py_code = {code_read};");
            }
            let _ = writeln!(
                s,
                "{ind2}$py_off = (int64)({} - $py_code - {code_adaptive});",
                rd("uint64", &plus("$py_f", instr))
            );
            match first_traceable {
                Some(ft) => {
                    // incomplete frames (not started, internal cleanup) are skipped
                    let _ = writeln!(
                        s,
                        "{ind2}if ($py_own == {generator_owner} || $py_off >= 2 * (int64){}) {{",
                        rd("int32", &plus("$py_code", ft))
                    );
                    let _ = writeln!(s, "{ind2}    $py_c{k} = $py_code; $py_o{k} = $py_off;");
                    ident(s, &format!("{ind2}    "));
                    let _ = writeln!(s, "{ind2}}}");
                }
                None => {
                    let _ = writeln!(s, "{ind2}$py_c{k} = $py_code; $py_o{k} = $py_off;");
                    ident(s, &ind2);
                }
            }
            if !close.is_empty() {
                let _ = writeln!(s, "{ind}{close}");
            }
            let _ = writeln!(
                s,
                "{ind}$py_f = {};",
                rd("uint64", &plus("$py_f", previous))
            );
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
pub fn render_program(plan: &Plan, pid: u32, probes: &[String]) -> String {
    let prefix = LinePrefix {
        format: "@pystackd %d %lu ".into(),
        args: vec!["tid".into(), "$py_ev".into()],
    };
    let block = render_block(plan, &prefix);
    let mut s = String::new();
    let _ = writeln!(s, "// generated by pystackd trace for pid {pid}");
    for p in probes {
        let _ = writeln!(s, "{p} /pid == {pid}/");
        let _ = writeln!(s, "{{");
        let _ = writeln!(s, "    $py_ev = nsecs;");
        s.push_str(&block);
        let _ = writeln!(
            s,
            "    printf(\"@pystackd %d %lu end %d %s\\n%s\\n\", tid, $py_ev, $py_g, probe, ustack(perf));"
        );
        let _ = writeln!(s, "}}");
    }
    s
}
