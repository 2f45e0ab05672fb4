//! `pystackd`: readable Python stacks in native stack traces of CPython processes.

mod cli;
mod client;
mod daemon;
mod exit;
mod stack;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::run()
}
