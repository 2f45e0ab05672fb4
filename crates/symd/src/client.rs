//! Talking to the daemon: a small blocking JSON-RPC client with timeouts (a stopped
//! or wedged daemon must never hang a client), and the `attach`, `detach`, `list`
//! and `status` subcommands.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use protocol::rpc::{
    methods, AttachParams, AttachResult, DetachParams, DetachResult, ListResult, Request, Response,
    RpcError, StackParams, StatusResult,
};
use protocol::{ErrorKind, ProcessStack};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::exit;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Long enough for a paused read of a big process; a daemon silent for longer is
/// wedged. `PYSTACKD_CLIENT_TIMEOUT` (seconds) overrides it.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

fn reply_timeout() -> Duration {
    std::env::var("PYSTACKD_CLIENT_TIMEOUT")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(Duration::from_secs_f64)
        .unwrap_or(REPLY_TIMEOUT)
}
/// Largest reply accepted (a stack of every thread of a big process is a few MiB).
const MAX_REPLY_BYTES: u64 = 256 << 20;

/// `--socket`, else `$PYSTACKD_SOCKET`, else the platform default.
pub fn socket_path(opt: Option<&Path>) -> PathBuf {
    opt.map(Path::to_path_buf)
        .or_else(|| std::env::var_os("PYSTACKD_SOCKET").map(PathBuf::from))
        .unwrap_or_else(crate::platform::default_socket_path)
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the pystackd daemon is not running (cannot connect to {}: {source})", path.display())]
    NotRunning {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the pystackd daemon at {} did not answer within {} s (is it stopped or overloaded?)", path.display(), secs)]
    Timeout { path: PathBuf, secs: f64 },
    #[error("the pystackd daemon closed the connection (did it stop?)")]
    Closed,
    #[error("talking to the daemon: {0}")]
    Io(io::Error),
    #[error("bad answer from the daemon: {0}")]
    Protocol(String),
    #[error("{}", .0.message)]
    Rpc(RpcError),
}

impl ClientError {
    /// The exit status for this failure: the reader's statuses for the errors the
    /// daemon passes on from the reader, `DAEMON` for the rest.
    pub fn exit_status(&self) -> u8 {
        match self.kind() {
            // the daemon's own internal failure is a daemon error to the caller
            Some(ErrorKind::Internal | ErrorKind::BadBinary) | None => exit::DAEMON,
            Some(k) => k.exit_code(),
        }
    }

    /// The kind of an error the daemon answered with (`None`: no answer at all).
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            ClientError::Rpc(e) => Some(ErrorKind::from_rpc_code(e.code)),
            _ => None,
        }
    }

    /// What the user can do about it: the error kind's hint for the daemon's answers.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            ClientError::NotRunning { .. } => Some(
                "start it with `pystackd serve` (or its systemd/SMF service), or pass --socket PATH",
            ),
            ClientError::Rpc(_) => self.kind().and_then(ErrorKind::hint),
            _ => None,
        }
    }

    /// True when no daemon listens there at all (as opposed to one misbehaving).
    pub fn is_not_running(&self) -> bool {
        matches!(self, ClientError::NotRunning { .. })
    }
}

pub struct Client {
    path: PathBuf,
    timeout: Duration,
    rd: BufReader<UnixStream>,
    wr: UnixStream,
    next_id: u64,
}

impl Client {
    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        // connect(2) on a Unix socket blocks when the daemon's backlog is full (a
        // stopped daemon): do it on a thread and give up after a while.
        let (tx, rx) = mpsc::channel();
        let p = path.to_path_buf();
        std::thread::spawn(move || {
            let _ = tx.send(UnixStream::connect(&p));
        });
        let timeout = reply_timeout();
        let stream = match rx.recv_timeout(CONNECT_TIMEOUT.min(timeout)) {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => {
                return Err(ClientError::NotRunning {
                    path: path.to_path_buf(),
                    source,
                })
            }
            Err(_) => {
                return Err(ClientError::Timeout {
                    path: path.to_path_buf(),
                    secs: CONNECT_TIMEOUT.min(timeout).as_secs_f64(),
                })
            }
        };
        let io = ClientError::Io;
        stream.set_read_timeout(Some(timeout)).map_err(io)?;
        stream.set_write_timeout(Some(timeout)).map_err(io)?;
        let wr = stream.try_clone().map_err(io)?;
        Ok(Client {
            path: path.to_path_buf(),
            timeout,
            rd: BufReader::new(stream),
            wr,
            next_id: 1,
        })
    }

    /// One call: send the request, wait for its reply.
    pub fn call<P: Serialize, R: DeserializeOwned>(
        &mut self,
        method: &str,
        params: Option<P>,
    ) -> Result<R, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let params = params
            .map(serde_json::to_value)
            .transpose()
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let mut line = serde_json::to_vec(&Request::new(id, method, params))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        line.push(b'\n');
        self.wr.write_all(&line).map_err(|e| self.io_error(e))?;
        let mut buf = Vec::new();
        let n = (&mut self.rd)
            .take(MAX_REPLY_BYTES)
            .read_until(b'\n', &mut buf)
            .map_err(|e| self.io_error(e))?;
        if n == 0 {
            return Err(ClientError::Closed);
        }
        if buf.last() != Some(&b'\n') {
            return Err(ClientError::Protocol(if n as u64 >= MAX_REPLY_BYTES {
                "reply too large".into()
            } else {
                "truncated reply".into()
            }));
        }
        let resp: Response = serde_json::from_slice(&buf)
            .map_err(|e| ClientError::Protocol(format!("invalid reply: {e}")))?;
        if resp.id != id {
            return Err(ClientError::Protocol(format!(
                "reply to request {} while waiting for {id}",
                resp.id
            )));
        }
        match (resp.result, resp.error) {
            (_, Some(e)) => Err(ClientError::Rpc(e)),
            (Some(v), None) => serde_json::from_value(v)
                .map_err(|e| ClientError::Protocol(format!("unexpected result: {e}"))),
            (None, None) => Err(ClientError::Protocol("reply without result".into())),
        }
    }

    fn io_error(&self, e: io::Error) -> ClientError {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ClientError::Timeout {
                path: self.path.clone(),
                secs: self.timeout.as_secs_f64(),
            },
            io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::UnexpectedEof => ClientError::Closed,
            _ => ClientError::Io(e),
        }
    }
}

/// `pystackd stack` through the daemon.
pub fn stack(
    socket: &Path,
    pid: u32,
    tid: Option<u64>,
    pause: bool,
    locals: bool,
) -> Result<ProcessStack, ClientError> {
    Client::connect(socket)?.call(
        methods::STACK,
        Some(StackParams {
            pid,
            tid,
            pause,
            locals,
            ..StackParams::default()
        }),
    )
}

fn fail(e: &ClientError) -> ExitCode {
    eprintln!("pystackd: {e}");
    if let Some(hint) = e.hint() {
        eprintln!("hint: {hint}");
    }
    ExitCode::from(e.exit_status())
}

fn print_json(v: &impl Serialize) -> io::Result<()> {
    let mut out = io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)
}

fn finish(r: io::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::from(exit::OK),
        Err(e) => {
            eprintln!("pystackd: writing output: {e}");
            ExitCode::from(exit::FAILURE)
        }
    }
}

fn call<P: Serialize, R: DeserializeOwned>(
    socket: &Path,
    method: &str,
    params: Option<P>,
) -> Result<R, ClientError> {
    Client::connect(socket)?.call(method, params)
}

pub fn run_attach(socket: &Path, pid: u32, json: bool) -> ExitCode {
    match call::<_, AttachResult>(socket, methods::ATTACH, Some(AttachParams { pid })) {
        Err(e) => fail(&e),
        Ok(r) if json => finish(print_json(&r)),
        Ok(r) => finish(print_attach(&r)),
    }
}

fn print_attach(r: &AttachResult) -> io::Result<()> {
    let p = &r.process;
    let what = if r.newly_attached {
        "Attached"
    } else {
        "Already attached:"
    };
    writeln!(
        io::stdout(),
        "{what} process {}: Python {} ({}), {} OS threads",
        p.pid,
        p.python_version,
        p.python_binary,
        r.os_threads
    )
}

pub fn run_detach(socket: &Path, pid: u32, json: bool) -> ExitCode {
    match call::<_, DetachResult>(socket, methods::DETACH, Some(DetachParams { pid })) {
        Err(e) => fail(&e),
        Ok(r) if json => finish(print_json(&r)),
        Ok(r) => finish(if r.detached {
            writeln!(io::stdout(), "Detached process {}", r.pid)
        } else {
            writeln!(io::stdout(), "Process {} was not attached", r.pid)
        }),
    }
}

pub fn run_list(socket: &Path, json: bool) -> ExitCode {
    match call::<(), ListResult>(socket, methods::LIST, None) {
        Err(e) => fail(&e),
        Ok(r) if json => finish(print_json(&r)),
        Ok(r) => finish(print_list(&r)),
    }
}

fn print_list(r: &ListResult) -> io::Result<()> {
    let mut out = io::stdout().lock();
    if r.processes.is_empty() {
        return writeln!(out, "No processes attached");
    }
    writeln!(
        out,
        "{:>8}  {:<8}  {:>9}  {:>7}  BINARY",
        "PID", "PYTHON", "ATTACHED", "STACKS"
    )?;
    for p in &r.processes {
        writeln!(
            out,
            "{:>8}  {:<8}  {:>8}s  {:>7}  {}",
            p.pid, p.python_version, p.attached_seconds, p.stacks_read, p.python_binary
        )?;
    }
    Ok(())
}

pub fn run_status(socket: &Path, json: bool) -> ExitCode {
    match call::<(), StatusResult>(socket, methods::STATUS, None) {
        Err(e) => fail(&e),
        Ok(r) if json => finish(print_json(&r)),
        Ok(r) => finish(print_status(socket, &r)),
    }
}

fn print_status(socket: &Path, r: &StatusResult) -> io::Result<()> {
    let mut out = io::stdout().lock();
    let (v, pid, sock) = (&r.version, r.pid, socket.display());
    writeln!(out, "pystackd {v} (pid {pid}) on {sock}")?;
    writeln!(out, "uptime:     {} s", r.uptime_seconds)?;
    if let Some(uid) = r.uid {
        // a non-root client is shown its own share only
        writeln!(out, "numbers below: uid {uid}'s own")?;
    }
    writeln!(out, "attached:   {} (max {})", r.attached, r.max_attached)?;
    let (n, e, d) = (r.requests, r.errors, r.denied);
    writeln!(out, "requests:   {n} ({e} errors, {d} denied)")?;
    writeln!(out, "clients:    {}", r.connections)?;
    let (c, b) = (r.cache.code_objects, r.cache.bytes);
    writeln!(out, "cache:      {c} code objects, {b} bytes")?;
    if let Some(n) = r.access_checkers {
        writeln!(out, "checkers:   {n} access checkers running")?;
    }
    Ok(())
}

/// Options every subcommand shares.
#[derive(Debug)]
pub struct Global {
    pub no_daemon: bool,
    pub socket: PathBuf,
}
