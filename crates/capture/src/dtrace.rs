//! The plan as D clauses (illumos). D has no loops, so the walk is unrolled: one clause per
//! thread state looked at and one per frame step, each guarded by a predicate, all for the
//! same probe description, sharing `this->` variables (clause-local variables live for the
//! whole firing across the clauses of one probe, in order). Reads are `copyin`, which faults
//! on a bad address: every clause's predicate first checks the pointer it reads through.
//!
//! The last clause prints the frames as `pyframes=` / `pyframes+=` lines (see
//! [`crate::frames`]); the slot variables `this->py_cK`, `this->py_oK`, `this->py_iK` stay
//! set for an aggregation in a clause of the script's own after the capture, such as
//! `@[jstack(), this->py_c0, this->py_o0, this->py_i0, ...] = count();`.
//!
//! Untested here: no DTrace runs on Linux. What makes it trustworthy is that it translates
//! the same steps as `interpret::run`, which is checked against the reader's walker.

use std::fmt::Write as _;

use pyframe_reader::layout::CurrentFrame;

use crate::plan::{FrameSteps, Plan};

/// Frames per `printf` line, as in the bpftrace rendering.
pub const GROUP: u32 = 8;

fn rd(ty: &str, addr: &str) -> String {
    let size = match ty {
        "uint64_t" => 8,
        "int32_t" => 4,
        _ => 1,
    };
    format!("*({ty} *)copyin({addr}, {size})")
}

fn plus(base: &str, off: u64) -> String {
    if off == 0 {
        base.to_string()
    } else {
        format!("{base} + {off}")
    }
}

fn clause(s: &mut String, probe: &str, pred: Option<&str>, body: &[String]) {
    let _ = writeln!(s, "{probe}");
    if let Some(p) = pred {
        let _ = writeln!(s, "/{p}/");
    }
    let _ = writeln!(s, "{{");
    for l in body {
        let _ = writeln!(s, "\t{l}");
    }
    let _ = writeln!(s, "}}\n");
}

/// The capture as D clauses for `probe` (a probe description such as
/// `pid$target::malloc:entry`; an existing predicate of the script goes in its own clauses).
/// The capture runs only where `pid == pid_expr` (`$target`, or a number): its addresses
/// mean nothing in another process. With `print`, the last clause prints the `pyframes=`
/// lines.
pub fn render(plan: &Plan, probe: &str, pid_expr: &str, print: bool) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "/* pystackd capture: CPython {}.{}, _PyRuntime at {:#x}, depth {} (untested: generated) */\n",
        plan.version.0, plan.version.1, plan.runtime, plan.depth
    );
    let key = "tid";
    // start: the main interpreter's first thread state
    let mut body = vec![
        format!(
            "this->py_in = pid == {pid_expr} ? {} : 0;",
            rd(
                "uint64_t",
                &format!("{:#x} + {}", plan.runtime, plan.interpreters_head)
            )
        ),
        "this->py_ts = 0;".to_string(),
        "this->py_found = 0;".to_string(),
        "this->py_f = 0;".to_string(),
        "this->py_more = 0;".to_string(),
    ];
    for k in 0..plan.depth {
        body.push(format!(
            "this->py_c{k} = 0; this->py_o{k} = 0; this->py_i{k} = 0;"
        ));
    }
    clause(&mut s, probe, None, &body);
    clause(
        &mut s,
        probe,
        Some("this->py_in != 0"),
        &[format!(
            "this->py_ts = {};",
            rd("uint64_t", &plus("this->py_in", plan.threads_head))
        )],
    );
    // the thread list, unrolled
    for _ in 0..plan.max_threads {
        clause(
            &mut s,
            probe,
            Some("this->py_ts != 0 && !this->py_found"),
            &[
                format!(
                    "this->py_found = {} == {key};",
                    rd("uint64_t", &plus("this->py_ts", plan.thread_match.offset()))
                ),
                format!(
                    "this->py_ts = this->py_found ? this->py_ts : {};",
                    rd("uint64_t", &plus("this->py_ts", plan.tstate_next))
                ),
            ],
        );
    }
    // the innermost frame
    match plan.current_frame {
        CurrentFrame::Direct(o) => clause(
            &mut s,
            probe,
            Some("this->py_found"),
            &[format!(
                "this->py_f = {};",
                rd("uint64_t", &plus("this->py_ts", o))
            )],
        ),
        CurrentFrame::ViaCFrame {
            cframe,
            current_frame,
        } => {
            clause(
                &mut s,
                probe,
                Some("this->py_found"),
                &[format!(
                    "this->py_cf = {};",
                    rd("uint64_t", &plus("this->py_ts", cframe))
                )],
            );
            clause(
                &mut s,
                probe,
                Some("this->py_found && this->py_cf != 0"),
                &[format!(
                    "this->py_f = {};",
                    rd("uint64_t", &plus("this->py_cf", current_frame))
                )],
            );
        }
    }
    // the steps, unrolled: slot k is step k
    for k in 0..plan.depth {
        step(&mut s, plan, probe, k);
    }
    if print {
        let mut body = vec!["this->py_more = this->py_f != 0;".to_string()];
        let groups = plan.depth.div_ceil(GROUP);
        for g in 0..groups {
            let ks: Vec<u32> = (g * GROUP..((g + 1) * GROUP).min(plan.depth)).collect();
            let fmt: Vec<&str> = ks.iter().map(|_| "%x:%d:%x").collect();
            let args: Vec<String> = ks
                .iter()
                .flat_map(|k| {
                    [
                        format!("this->py_c{k}"),
                        format!("this->py_o{k}"),
                        format!("this->py_i{k}"),
                    ]
                })
                .collect();
            let tag = if g == 0 { "pyframes=" } else { "pyframes+=" };
            body.push(format!(
                "printf(\"{tag}{}\\n\", {});",
                fmt.join(","),
                args.join(", ")
            ));
        }
        clause(&mut s, probe, Some("this->py_found"), &body);
        clause(
            &mut s,
            probe,
            Some("this->py_found && this->py_more"),
            &["printf(\"pyframes+=...\\n\");".to_string()],
        );
        clause(
            &mut s,
            probe,
            Some(&format!("pid == {pid_expr} && !this->py_found")),
            &["printf(\"pyframes=!nothread\\n\");".to_string()],
        );
    }
    s
}

/// Step `k` (mirrors `interpret::step`): reads the frame at `this->py_f` into slot `k` and
/// moves to the next.
fn step(s: &mut String, plan: &Plan, probe: &str, k: u32) {
    let pred = "this->py_found && this->py_f != 0";
    let ident = format!(
        "this->py_i{k} = {} ^ ((uint64_t)(uint32_t){} << 48);",
        rd(
            "uint64_t",
            &plus(&format!("this->py_c{k}"), plan.ident.name)
        ),
        rd(
            "int32_t",
            &plus(&format!("this->py_c{k}"), plan.ident.firstlineno)
        )
    );
    match plan.frames {
        FrameSteps::Object {
            back,
            code,
            lasti,
            lasti_unit,
        } => clause(
            s,
            probe,
            Some(pred),
            &[
                format!(
                    "this->py_c{k} = {};",
                    rd("uint64_t", &plus("this->py_f", code))
                ),
                format!(
                    "this->py_o{k} = (int64_t){} * {lasti_unit};",
                    rd("int32_t", &plus("this->py_f", lasti))
                ),
                ident,
                format!(
                    "this->py_f = {};",
                    rd("uint64_t", &plus("this->py_f", back))
                ),
            ],
        ),
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
            is_entry,
        } => {
            let mut body = vec![
                format!(
                    "this->py_own = {};",
                    rd("uint8_t", &plus("this->py_f", owner))
                ),
                format!(
                    "this->py_nf = {};",
                    rd("uint64_t", &plus("this->py_f", previous))
                ),
            ];
            let python = match first_non_python_owner {
                Some(mark) => {
                    // a C-stack shim: an eval-call boundary, printed as 0:1:0
                    body.push(format!("this->py_py = this->py_own < {mark};"));
                    body.push(format!("this->py_o{k} = this->py_py ? 0 : 1;"));
                    "this->py_py"
                }
                None => {
                    body.push("this->py_py = 1;".to_string());
                    "this->py_py"
                }
            };
            clause(s, probe, Some(pred), &body);
            let mask = if code_tag_mask != 0 {
                format!(" & ~(uint64_t){code_tag_mask}")
            } else {
                String::new()
            };
            let mut body = vec![
                format!(
                    "this->py_code = {}{mask};",
                    rd("uint64_t", &plus("this->py_f", code))
                ),
                format!(
                    "this->py_off = (int64_t)({} - this->py_code - {code_adaptive});",
                    rd("uint64_t", &plus("this->py_f", instr))
                ),
            ];
            match first_traceable {
                Some(ft) => body.push(format!(
                    "this->py_keep = this->py_own == {generator_owner} || this->py_off >= 2 * (int64_t){};",
                    rd("int32_t", &plus("this->py_code", ft))
                )),
                None => body.push("this->py_keep = 1;".to_string()),
            }
            clause(s, probe, Some(&format!("{pred} && {python}")), &body);
            clause(
                s,
                probe,
                Some(&format!("{pred} && {python} && this->py_keep")),
                &[
                    format!("this->py_c{k} = this->py_code;"),
                    // 3.11: an entry frame's offset carries the flag in its low bit
                    match is_entry {
                        Some(o) => format!(
                            "this->py_o{k} = this->py_off | (int64_t){};",
                            rd("uint8_t", &plus("this->py_f", o))
                        ),
                        None => format!("this->py_o{k} = this->py_off;"),
                    },
                    ident,
                ],
            );
            if let Some(o) = is_entry {
                // a skipped entry frame still ends its eval call's group: 0:1:0
                clause(
                    s,
                    probe,
                    Some(&format!("{pred} && {python} && !this->py_keep")),
                    &[format!(
                        "this->py_o{k} = (int64_t){};",
                        rd("uint8_t", &plus("this->py_f", o))
                    )],
                );
            }
            clause(
                s,
                probe,
                Some(pred),
                &["this->py_f = this->py_nf;".to_string()],
            );
        }
    }
}
