//! Command line: subcommands and their help.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "pystackd",
    version,
    about = "Readable Python stacks for native stack traces of CPython processes"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print every thread's Python stack of a running process.
    Stack(StackArgs),
}

#[derive(clap::Args, Debug)]
pub struct StackArgs {
    /// Process id of the CPython process.
    pub pid: u32,
    /// Print JSON (the `protocol` crate's ProcessStack; see docs/json.md).
    #[arg(long)]
    pub json: bool,
    /// Stop the target while reading, for a consistent snapshot (needs ptrace rights).
    #[arg(long)]
    pub pause: bool,
    /// Only the thread with this OS thread id (LWP).
    #[arg(long)]
    pub tid: Option<u64>,
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Stack(args) => crate::stack::run(&args),
    }
}
