//! `pystackd`: readable Python stacks in native stack traces of CPython processes.

mod annotate;
mod cli;
mod client;
mod daemon;
mod exit;
// The daemon's OS layer (peer credentials, default paths).
#[allow(dead_code, unused_imports)]
mod platform;
mod stack;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::run()
}
