//! `pystackd`: readable Python stacks in native stack traces of CPython processes.

mod annotate;
mod breakpoints;
mod cli;
mod client;
mod daemon;
mod exit;
mod family;
mod held;
// The daemon's OS layer (peer credentials, privilege, access rule, default paths):
// the only module of this crate with `cfg(target_os)`.
mod native;
mod platform;
mod pprof;
mod probe;
mod profile;
mod record;
mod sample;
mod stack;
mod stack_native;
mod top;
mod trace;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::run()
}
