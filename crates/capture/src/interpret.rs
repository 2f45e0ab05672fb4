//! The plan run in Rust against any [`Memory`] (a live process, a [`Snapshot`]): the
//! reference semantics of the rendered tracer programs, step for step. Tests check it
//! against the reader's walker on real interpreters, which is what makes a rendering that
//! cannot run here (D on Linux) trustworthy: renderers only translate these steps.
//!
//! [`Snapshot`]: pyframe_reader::Snapshot

use pyframe_reader::layout::CurrentFrame;
use pyframe_reader::memory::MemResult;
use pyframe_reader::{Memory, MemoryExt};

use crate::frames::{ident_of, Capture, CapturedFrame};
use crate::plan::{FrameSteps, Plan};

/// Run `plan` for the thread whose [`ThreadMatch`](crate::plan::ThreadMatch) field equals
/// `thread_key` (its kernel tid from 3.11 on Linux, its FS base before; its LWP id on
/// illumos). A failed read is an error (a tracer's failed read yields zeros instead and
/// the capture is cut short there; the Rust side prefers to say so).
pub fn run(plan: &Plan, mem: &dyn Memory, thread_key: u64) -> MemResult<Capture> {
    let mut out = Capture::default();
    let Some(ts) = find_thread(plan, mem, thread_key)? else {
        out.no_thread = true;
        return Ok(out);
    };
    let mut f = match plan.current_frame {
        CurrentFrame::Direct(o) => mem.read_u64(ts.wrapping_add(o))?,
        CurrentFrame::ViaCFrame {
            cframe,
            current_frame,
        } => {
            let cf = mem.read_u64(ts.wrapping_add(cframe))?;
            if cf == 0 {
                0
            } else {
                mem.read_u64(cf.wrapping_add(current_frame))?
            }
        }
    };
    for _ in 0..plan.depth {
        if f == 0 {
            break;
        }
        let (frame, next) = step(plan, mem, f)?;
        match frame {
            Step::Frame(fr) => out.frames.push(fr),
            Step::Boundary => {
                if let Some(last) = out.frames.last_mut() {
                    last.entry = true;
                }
            }
            Step::Skip => {}
        }
        f = next;
    }
    out.truncated = f != 0;
    Ok(out)
}

/// The thread state of the thread, walking at most `max_threads` of the main
/// interpreter's list.
pub fn find_thread(plan: &Plan, mem: &dyn Memory, thread_key: u64) -> MemResult<Option<u64>> {
    let interp = mem.read_u64(plan.runtime.wrapping_add(plan.interpreters_head))?;
    if interp == 0 {
        return Ok(None);
    }
    let mut ts = mem.read_u64(interp.wrapping_add(plan.threads_head))?;
    for _ in 0..plan.max_threads {
        if ts == 0 {
            return Ok(None);
        }
        if mem.read_u64(ts.wrapping_add(plan.thread_match.offset()))? == thread_key {
            return Ok(Some(ts));
        }
        ts = mem.read_u64(ts.wrapping_add(plan.tstate_next))?;
    }
    Ok(None)
}

/// What one step along the chain records.
enum Step {
    Frame(CapturedFrame),
    /// A C-stack shim frame: the frame recorded before it began its eval call.
    Boundary,
    /// Nothing (an incomplete frame).
    Skip,
}

/// One step along the chain: what the frame at `f` records, and the next frame.
fn step(plan: &Plan, mem: &dyn Memory, f: u64) -> MemResult<(Step, u64)> {
    let (code, offset, next, entry) = match plan.frames {
        FrameSteps::Object {
            back,
            code,
            lasti,
            lasti_unit,
        } => {
            let next = mem.read_u64(f.wrapping_add(back))?;
            let code = mem.read_u64(f.wrapping_add(code))?;
            let lasti = mem.read_i32(f.wrapping_add(lasti))? as i64;
            (code, lasti * i64::from(lasti_unit), next, false)
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
            is_entry,
        } => {
            let next = mem.read_u64(f.wrapping_add(previous))?;
            let owner = mem.read_u8(f.wrapping_add(owner))?;
            if first_non_python_owner.is_some_and(|mark| owner >= mark) {
                return Ok((Step::Boundary, next));
            }
            let entry = match is_entry {
                Some(o) => mem.read_u8(f.wrapping_add(o))? != 0,
                None => false,
            };
            let code = mem.read_u64(f.wrapping_add(code))? & !code_tag_mask;
            let instr = mem.read_u64(f.wrapping_add(instr))?;
            let offset = instr.wrapping_sub(code).wrapping_sub(code_adaptive) as i64;
            if let Some(ft) = first_traceable {
                if owner != generator_owner {
                    let ft = mem.read_i32(code.wrapping_add(ft))? as i64;
                    if offset < 2 * ft {
                        // 3.11: a skipped entry frame still ends its eval call's group
                        let step = if entry { Step::Boundary } else { Step::Skip };
                        return Ok((step, next));
                    }
                }
            }
            (code, offset, next, entry)
        }
    };
    let name = mem.read_u64(code.wrapping_add(plan.ident.name))?;
    let first = mem.read_i32(code.wrapping_add(plan.ident.firstlineno))?;
    Ok((
        Step::Frame(CapturedFrame {
            code,
            offset,
            ident: ident_of(name, first),
            entry,
        }),
        next,
    ))
}
