//! Command line: subcommands and their help.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "pystackd",
    version,
    about = "Readable Python stacks for native stack traces of CPython processes"
)]
pub struct Cli {
    /// Read processes directly even when the daemon is running.
    #[arg(long, global = true)]
    pub no_daemon: bool,
    /// The daemon's socket [default: $PYSTACKD_SOCKET, else /run/pystackd/pystackd.sock
    /// (/var/run/pystackd/pystackd.sock on illumos)].
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print every thread's Python stack of a running process.
    Stack(StackArgs),
    /// Run the daemon: a JSON-RPC service on a Unix socket (see docs/service.md).
    Serve(ServeArgs),
    /// Ask the daemon to attach a process and keep it ready for fast reads.
    Attach(PidArgs),
    /// Ask the daemon to drop an attached process.
    Detach(PidArgs),
    /// List the processes the daemon holds attached (those you may inspect).
    List(OutputArgs),
    /// Show the daemon's counters.
    Status(OutputArgs),
}

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Configuration file (`key = value` lines; reloaded on SIGHUP).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log filter: error, warn, info, debug, trace, or a `tracing` directive such as
    /// `info,pystackd=debug`. Beats `PYSTACKD_LOG`/`RUST_LOG` and the config file's
    /// `log_level` (which SIGHUP then no longer changes). Logs go to stderr.
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct PidArgs {
    /// Process id.
    pub pid: u32,
    /// Print the daemon's JSON result.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct OutputArgs {
    /// Print the daemon's JSON result.
    #[arg(long)]
    pub json: bool,
}

/// Options every subcommand shares.
#[derive(Debug)]
pub struct Global {
    pub no_daemon: bool,
    pub socket: PathBuf,
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
    let global = Global {
        no_daemon: cli.no_daemon,
        socket: crate::client::socket_path(cli.socket.as_deref()),
    };
    let socket = global.socket.as_path();
    match cli.command {
        Command::Stack(args) => crate::stack::run(&args, &global),
        Command::Serve(args) => {
            crate::daemon::run(socket, args.config.as_deref(), args.log_level.as_deref())
        }
        Command::Attach(a) => crate::client::run_attach(socket, a.pid, a.json),
        Command::Detach(a) => crate::client::run_detach(socket, a.pid, a.json),
        Command::List(a) => crate::client::run_list(socket, a.json),
        Command::Status(a) => crate::client::run_status(socket, a.json),
    }
}
