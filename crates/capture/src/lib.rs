//! Probe-time capture of CPython frames (issue 15, part 2).
//!
//! `pystackd annotate` reads a process's Python frames when the stack text arrives, which
//! for a running thread is later than the probe fired. A capture instead has the tracer
//! itself read the firing thread's frames in probe context, recording only
//! `(code object, instruction offset, identity)` per frame; pystackd turns those into file,
//! line and function afterwards, from the live process, because code objects outlive the
//! frames that run them.
//!
//! The pieces, in the order data flows:
//! - [`plan::Plan`]: what to read, derived from a live process ([`Plan::for_process`]) or a
//!   layout table ([`Plan::from_layout`]): `_PyRuntime`'s address, the thread list, how to
//!   recognise the firing thread, how to reach its innermost frame, how to step along the
//!   chain and compute the offset, which frames to skip, the depth.
//! - Renderers: [`bpftrace::render`] (Linux, bpftrace 0.17) and [`dtrace::render`] (illumos,
//!   D without loops: unrolled clauses with predicates). Both print the
//!   [`frames`] text form, `pyframes=<code>:<offset>:<ident>,...`.
//! - [`interpret::run`]: the same plan run in Rust against a [`pyframe_reader::Memory`]; the
//!   reference semantics of the renderers, tested against the reader's walker.
//! - [`frames::parse_all`] / [`frames::find_token`] / [`frames::format`]: the text form;
//!   [`frames::from_columns`]: the same from the integer key columns of a D aggregation.
//! - [`resolve::Resolver`] / [`resolve::resolve`]: captured frames → [`protocol::Frame`]s,
//!   each checked against the code object now at its address ([`resolve::Mismatch`]
//!   otherwise).
//!
//! Resolving the output of a hand-written script (what `pystackd annotate` does with the
//! `pyframes=` lines it finds):
//!
//! ```no_run
//! use capture::{frames, resolve};
//! let process = pyframe_reader::PythonProcess::attach(4242).unwrap();
//! let text = "pyframes=7f3a1c2b4c60:34:3c00007f3a1c2f1a30,0:0:0\n";
//! let mut resolver = resolve::Resolver::new(process.layout());
//! for capture in frames::parse_all(text).unwrap() {
//!     for r in resolver.resolve(process.memory(), &capture) {
//!         match r {
//!             resolve::Resolved::Frame(f) => println!("[ {}:{:?} ({}) ]", f.filename, f.line, f.function),
//!             resolve::Resolved::Mismatch(m) => println!("[ ?? {m} ]"),
//!         }
//!     }
//! }
//! ```
//!
//! [`Plan::for_process`]: plan::Plan::for_process
//! [`Plan::from_layout`]: plan::Plan::from_layout

pub mod bpftrace;
pub mod dtrace;
pub mod ebpf;
pub mod frames;
pub mod interpret;
pub mod plan;
pub mod resolve;

pub use frames::{Capture, CapturedFrame};
pub use plan::{Os, Plan, PlanError};
pub use resolve::{Mismatch, Resolved, Resolver};
