//! Command line: subcommands and their help.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::annotate::AnnotateArgs;
use crate::client::Global;
use crate::probe::ProbeArgs;
use crate::stack::StackArgs;

#[derive(Parser, Debug)]
#[command(
    name = "pystackd",
    version,
    about = "Readable Python stacks for native stack traces of CPython processes"
)]
pub struct Cli {
    /// stack, annotate, record: read processes directly even when the daemon is running.
    #[arg(long)]
    pub no_daemon: bool,
    /// The daemon's socket [default: $PYSTACKD_SOCKET, else /run/pystackd/pystackd.sock
    /// (/var/run/pystackd/pystackd.sock on illumos)].
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

fn stack_help() -> String {
    STACK_HELP.replace("{versions}", &pyframe_reader::layout::supported())
}

const STACK_HELP: &str = "\
The target keeps running while it is read (no ptrace stop, nothing injected). Everything the
read followed (each frame's link, code and position, 3.8-3.10 frames' running flags, 3.11+ data-
stack tops) is read again after it and must be unchanged, so a stack that moved under the read
is retried (for up to 20 ms) and, if it never holds still, reported (exit 8) rather than printed
wrong (docs/consistency.md). --pause stops every thread for the read and always resumes it,
also on errors and Ctrl-C.

Threads are listed with their OS thread id (what top, perf, gdb and DTrace call the tid/LWP),
the OS thread name and whether they hold the GIL; frames innermost first, as
`function (file:line)` (qualified names on 3.11+).

--locals adds each frame's arguments and local variables under it, `name = repr` (`(arg)`,
`(cell)`, `(free)` mark the kind), read from memory without running code in the target: int,
float, complex, bool, None, str, bytes, tuple, list, dict, set and frozenset as Python's repr()
shows them (3 levels deep, 10 items, 100 characters, then `…`), anything else as
`<module.Class object at 0x…>`. A container that changed while read is retried, then shown as
`<changed while read>` (docs/json.md \"Locals\").

--native prints every thread's native (C) stack, unwound from its registers with the
binaries' call frame information, with the Python frames under the eval-loop frames that
run them, in DTrace's jstack() layout; it stops the process while it reads (as --pause),
through the daemon when one runs; --native-lines adds each native frame's source lines and
inlined functions (docs/native.md).

Examples:
  pystackd stack 4242                 every thread of process 4242
  pystackd stack --native 4242        native and Python frames together
  pystackd stack --tid 4250 4242      one thread
  pystackd stack --json 4242 | jq .   machine-readable (schema: docs/json.md)
  sudo pystackd stack --pause 4242    consistent snapshot of a busy process
  pystackd stack --locals 4242        with every frame's arguments and locals

Exit status: 0 ok, 3 no such process, 16 no such Python thread (--tid), 4 not a CPython
process, 5 permission denied (needs ptrace rights: the process owner with
kernel.yama.ptrace_scope <= 1, or root/CAP_SYS_PTRACE), 6 unsupported version ({versions}
are known), 7 the process exited while being read, 8 no consistent read (retry, or use
--pause), 10 daemon error.";

// Deferred: a subcommand's arguments and help are built only when it is the one run (or
// its help is asked for); building all of them cost every `pystackd` start ~0.1 ms.
#[derive(Subcommand, Debug)]
#[command(defer = true)]
pub enum Command {
    /// Print every thread's Python stack of a running process.
    #[command(after_help = stack_help())]
    Stack(StackArgs),
    /// Run the daemon: a JSON-RPC service on a Unix socket (see docs/service.md).
    Serve(ServeArgs),
    /// Sample a running process's Python stacks into a flame graph, speedscope or folded
    /// profile.
    #[command(after_help = crate::record::RECORD_HELP)]
    Record(crate::record::RecordArgs),
    /// A live view of a running process's Python functions by share of samples (own and
    /// total %), like top; plain tables when stdout is not a terminal.
    #[command(after_help = crate::top::TOP_HELP)]
    Top(crate::top::TopArgs),
    /// Ask the daemon to attach a process and keep it ready for fast reads.
    #[command(after_help = CLIENT_HELP)]
    Attach(PidArgs),
    /// Ask the daemon to drop an attached process.
    #[command(after_help = CLIENT_HELP)]
    Detach(PidArgs),
    /// List the processes the daemon holds attached (those you may inspect).
    #[command(after_help = CLIENT_HELP)]
    List(OutputArgs),
    /// Show the daemon's counters (yours only, unless you are privileged).
    #[command(after_help = CLIENT_HELP)]
    Status(OutputArgs),
    /// Add Python frames to native stack traces (DTrace, bpftrace, perf, gdb) read from
    /// stdin or files.
    #[command(after_help = ANNOTATE_HELP)]
    Annotate(AnnotateArgs),
    /// Print the probe-time capture of a process's Python frames as a fragment for a
    /// bpftrace or D script (exact frames at the moment a probe fires).
    #[command(after_help = PROBE_HELP)]
    Probe(ProbeArgs),
    /// Trace a process (pystackd's own BPF programs, or bpftrace): native stacks with the
    /// Python frames read at the moment each probe fired.
    #[command(after_help = crate::trace::HELP)]
    Trace(crate::trace::TraceArgs),
    /// Internal: the daemon's access checker for one uid (docs/service.md).
    #[command(name = "__access-check", hide = true)]
    AccessCheck {
        uid: u32,
        gid: u32,
        /// Started inside a client's user namespace, keeping these capabilities.
        #[arg(long, value_name = "EFF:PRM")]
        userns: Option<String>,
    },
}

const CLIENT_HELP: &str = "\
Talks to the daemon (pystackd serve) on its socket: --socket PATH, else $PYSTACKD_SOCKET,
else the default. The daemon serves only processes you could read yourself.

Exit status: 0 ok, 3 no such process, 4 not a CPython process, 5 permission denied, 6
unsupported version, 7 the process exited, 8 no consistent read, 10 the daemon is not running,
did not answer, or refused the request.";

const ANNOTATE_HELP: &str = "\
Under every native frame of CPython's eval loop (_PyEval_EvalFrameDefault and friends),
annotate adds the Python frames that frame runs, innermost first:
      libpython3.12.so.1.0`_PyEval_EvalFrameDefault+0x1b3c
        [ /srv/app/jobs.py:42 (handle) ]
Everything else passes through unchanged.

Naming the process (first match wins):
  --pid PID        every stack comes from this process
  pid=N / tid=N    tokens printed by the probe before each stack; tid picks the thread:
                     printf(\"pid=%d tid=%d\\n\", pid, tid);
  headers          bpftrace/perf sample headers and gdb's `Thread N (... (LWP tid))`
                   (the process of a tid is looked up; Linux only)
  --keys pid,tid   a DTrace aggregation keyed by integers and a stack, such as
                   @[pid, tid, ustack()] = count(): DTrace prints the integer keys on one
                   line right before each stack; --keys names them in the script's order
                   (pid, tid, or _ for any other integer: --keys _,pid for @[cpu, pid, ...]).
                   Without --keys such stacks stay unannotated: the order is the script's.
A record whose lines name two different processes or threads (pid= lines of probes on
several CPUs interleaved, or a key disagreeing with a pid= line) is left unannotated, and
counted in the summary: a wrong process is worse than none.

Exact or read later: a plain [ file:line (func) ] line says \"these were the Python frames
when the probe fired\". annotate reads them from the live process when the stack arrives, so
it prints a plain line only where it can show the thread was held still from the probe to
the end of that read; every other line is printed
        [~ /srv/app/jobs.py:42 (handle) ]
(\"read later: the thread may have run since the probe\"), is counted in the summary, and
the exit status is 11 (JSON status \"read_later\", folded frames ~file:func:line). Perf
samples and DTrace aggregations printed at exit are always read later. Exact lines come from:
  --stopped   the probe stopped the target; annotate sees the thread stopped before and
              after the read, then resumes the process (SIGCONT on Linux, PCRUN on illumos):
    dtrace -w -n 'pid$target::PyObject_GetAttr:entry { printf(\"pid=%d tid=%d\\n\", pid, tid);
        ustack(); stop(); exit(0); }' -p PID | pystackd annotate --stopped
    bpftrace --unsafe -e 'uprobe:/path/libpython3.12.so:PyObject_GetAttr /pid == PID/ {
        printf(\"pid=%d tid=%d\\n\", pid, tid); print(ustack(perf)); signal(\"SIGSTOP\"); exit(); }'
        | pystackd annotate --stopped
  gdb's own pipe command: gdb holds the target while annotate reads it (Linux):
    gdb -batch -p PID -ex 'pipe thread apply all bt | pystackd annotate'
  capture at the probe: pystackd trace (docs/trace.md).

Examples:
  dtrace -n 'profile-97 /pid == $target/ { printf(\"pid=%d tid=%d\\n\", pid, tid); ustack(); }' \\
      -p PID | pystackd annotate
  bpftrace -e 'profile:hz:99 /pid == PID/ { printf(\"pid=%d tid=%d\\n\", pid, tid);
      print(ustack(perf)); }' | pystackd annotate
  perf record --call-graph dwarf -p PID -- sleep 5; perf script | pystackd annotate
      (read later: [~ ...]; DWARF unwinding, as -g's frame pointers stop after a frame or
      two in interpreters built without them)
  gdb -batch -p PID -ex 'pipe thread apply all bt | pystackd annotate'   (exact)
  pystackd annotate --pid PID --output folded trace.txt > stacks.folded

Output: text (the input plus annotation lines), json (one object per stack and line), folded
(`frame;frame;... count`, for flame graphs). Problems are summarized on stderr at the end.
Exit status: 0 every stack with eval frames annotated exactly, 11 all annotated but some
only read later ([~ ...]), 9 some stacks stayed unannotated. The daemon is used when it
runs (unless --no-daemon).";

const PROBE_HELP: &str = "\
The fragment makes the tracer itself read the firing thread's Python frames in probe context
(code object, instruction offset and an identity per frame), printed as a line
  pyframes=<code>:<offset>:<ident>,...        (innermost first)
that `pystackd annotate` resolves to file, line and function afterwards, checking each code
object's identity (a code object freed and reused since is reported, never guessed). Unlike
reading the stack when the text arrives, this is exact for running threads too.

The fragment embeds this process's addresses: regenerate it for every new process.

bpftrace: two parts, struct definitions for the top of the script and a block for the body
of each probe (filtered on the pid). dtrace: clauses for one probe description (--probe);
clauses of your own for the same probe placed after them see the frames in this->py_c0,
this->py_o0, this->py_i0, ... (for example as aggregation keys next to jstack()).

Examples:
  pystackd probe --pid 4242 --emit bpftrace > capture.txt
  pystackd probe --pid 4242 --emit dtrace --probe 'pid$target::PyObject_Malloc:entry'
  pystackd probe --pid 4242 --emit bpftrace --depth 64

docs/trace.md shows whole scripts built around the fragment, with real output.

Exit status: 0 ok, 3 no such process, 4 not a CPython process, 5 permission denied,
6 unsupported version, 7 the process exited.";

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

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let global = Global {
        no_daemon: cli.no_daemon,
        socket: crate::client::socket_path(cli.socket.as_deref()),
    };
    let socket = global.socket.as_path();
    if global.no_daemon
        && !matches!(
            cli.command,
            Command::Stack(_) | Command::Annotate(_) | Command::Record(_) | Command::Top(_)
        )
    {
        eprintln!(
            "pystackd: --no-daemon applies to stack, annotate, record and top only: this \
             subcommand talks to the daemon (or is the daemon)"
        );
        return ExitCode::from(crate::exit::USAGE);
    }
    match cli.command {
        Command::Stack(args) => {
            let global = Global {
                no_daemon: global.no_daemon || args.no_daemon,
                ..global
            };
            crate::stack::run(&args, &global)
        }
        Command::Record(args) => {
            let global = Global {
                no_daemon: global.no_daemon || args.no_daemon,
                ..global
            };
            crate::record::run(&args, &global)
        }
        Command::Top(args) => crate::top::run(&args),
        Command::Serve(args) => {
            crate::daemon::run(socket, args.config.as_deref(), args.log_level.as_deref())
        }
        Command::Attach(a) => crate::client::run_attach(socket, a.pid, a.json),
        Command::Detach(a) => crate::client::run_detach(socket, a.pid, a.json),
        Command::List(a) => crate::client::run_list(socket, a.json),
        Command::Status(a) => crate::client::run_status(socket, a.json),
        Command::Annotate(a) => {
            let global = Global {
                no_daemon: global.no_daemon || a.no_daemon,
                ..global
            };
            crate::annotate::run(&a, &global)
        }
        Command::Probe(a) => crate::probe::run(&a),
        Command::Trace(a) => {
            crate::probe::refuse_free_threaded_trace(a.pid).unwrap_or_else(|| crate::trace::run(&a))
        }
        Command::AccessCheck { uid, gid, userns } => {
            crate::daemon::checker::child_main(uid, gid, userns.as_deref())
        }
    }
}
