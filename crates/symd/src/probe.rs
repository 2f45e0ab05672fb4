//! `pystackd probe`: print the probe-time capture for a process as a fragment of a
//! hand-written bpftrace or D script (see docs/trace.md).

use std::process::ExitCode;

use capture::{bpftrace, dtrace, Plan};
use pyframe_reader::PythonProcess;

use crate::exit;

pub fn run(args: &ProbeArgs) -> ExitCode {
    let process = match PythonProcess::attach(args.pid) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("pystackd: {e}");
            return ExitCode::from(exit::for_reader_error(&e));
        }
    };
    if let Err(e) = process.refuse_free_threaded("pystackd probe") {
        eprintln!("pystackd: {e}");
        return ExitCode::from(exit::for_reader_error(&e));
    }
    let os = match args.emit {
        EmitArg::Bpftrace => capture::Os::Linux,
        EmitArg::Dtrace => capture::Os::Illumos,
    };
    let plan = match Plan::for_process(&process, os, args.depth) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("pystackd: {e}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    let text = match args.emit {
        EmitArg::Bpftrace => bpftrace_fragment(&plan, args.pid, process.version()),
        EmitArg::Dtrace => {
            let probe = args
                .probe
                .clone()
                .unwrap_or_else(|| "pid$target::malloc:entry".to_string());
            dtrace_fragment(&plan, &probe, process.version())
        }
    };
    print!("{text}");
    ExitCode::from(exit::OK)
}

fn bpftrace_fragment(plan: &Plan, pid: u32, version: &str) -> String {
    let defs = bpftrace::render_definitions(plan);
    let block = bpftrace::render_block(plan, &bpftrace::LinePrefix::default());
    format!(
        "// pystackd probe --pid {pid} --emit bpftrace: CPython {version}.
// Two parts: the struct definitions go at the top of your script, outside any probe; the
// block between the BEGIN/END markers goes into the body of each probe that fires in
// process {pid} (filter on /pid == {pid}/: the addresses are this process's). The block
// prints the firing thread's Python frames as a `pyframes=` line (and `pyframes+=` lines
// for deep stacks); print the native stack after it if you want it, e.g.
//     uprobe:/path/lib.so:func /pid == {pid}/ {{
//         <block>
//         printf(\"%s\\n\", ustack(perf));
//     }}
// and resolve the output with `pystackd annotate --pid {pid}` (docs/trace.md). Valid only
// while this process runs: its addresses change with every start.
// ---- definitions ----
{defs}// ---- BEGIN pystackd capture ----
{block}// ---- END pystackd capture ----
"
    )
}

fn dtrace_fragment(plan: &Plan, probe: &str, version: &str) -> String {
    let clauses = dtrace::render(plan, probe, "$target", true);
    format!(
        "/*
 * pystackd probe --emit dtrace: CPython {version}, for `{probe}` (change it with --probe).
 * Put these clauses in your script before your own clauses for the same probe: clauses of
 * one probe run in order and share this-> variables, so yours see the captured frames in
 * this->py_c0 (code object), this->py_o0 (offset), this->py_i0 (identity), ... innermost
 * first. As generated, the last clauses print `pyframes=` lines; an aggregation of your own:
 *     {probe} /this->py_found/ {{
 *         @[jstack(), this->py_c0, this->py_o0, this->py_i0,
 *             this->py_c1, this->py_o1, this->py_i1] = count();
 *     }}
 * Run with `dtrace -s script.d -p PID` (the clauses test pid == $target) and pipe the
 * output to `pystackd annotate`. Generated for illumos; not run here (see docs/trace.md).
 */
{clauses}"
    )
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmitArg {
    /// bpftrace 0.17 statements for a probe body (Linux).
    Bpftrace,
    /// D clauses (illumos DTrace).
    Dtrace,
}

#[derive(clap::Args, Debug)]
pub struct ProbeArgs {
    /// The CPython process the probes fire in.
    #[arg(long)]
    pub pid: u32,
    /// The tracer language.
    #[arg(long, value_enum)]
    pub emit: EmitArg,
    /// Python frames to capture at most (deeper stacks are marked truncated).
    #[arg(long, default_value_t = capture::plan::DEFAULT_DEPTH, value_parser = clap::value_parser!(u32).range(1..=capture::plan::MAX_DEPTH as i64))]
    pub depth: u32,
    /// dtrace: the probe description the clauses are for [default: pid$target::malloc:entry].
    #[arg(long, value_name = "DESCRIPTION")]
    pub probe: Option<String>,
}

/// `pystackd trace` of a free-threaded build: refused by name before the capture starts
/// (crates/symd/src/trace reads through the capture, which knows GIL builds only). `None`
/// lets trace go on, reporting any attach error itself.
pub fn refuse_free_threaded_trace(pid: u32) -> Option<ExitCode> {
    let e = PythonProcess::attach(pid)
        .ok()?
        .refuse_free_threaded("pystackd trace")
        .err()?;
    eprintln!("pystackd: {e}");
    Some(ExitCode::from(exit::for_reader_error(&e)))
}
