//! The JSON-RPC methods: parameter checking, the access check and the reads, each
//! read on tokio's blocking pool (reads are syscalls that may take milliseconds).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use protocol::rpc::{
    methods, AnnotateParams, AnnotateResult, AttachParams, AttachResult, DetachParams,
    DetachResult, ListResult, NativeName, ProfileParams, ProfileResult, ProfileResultParams,
    ProfileStarted, RpcError, StackParams, StatusResult, SymbolizeParams, SymbolizeResult,
    VersionResult, MAX_SYMBOLIZE_ADDRESSES, PROTOCOL_VERSION,
};
use protocol::ErrorKind;
use pyframe_reader::{platform, Identity, PythonProcess, StackOptions};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tracing::{debug, info, warn};

use super::auth;
use super::cache::{Entry, Key, Read};
use super::peer::PeerCredentials;
use super::state::State;

type RpcResult<T> = Result<T, RpcError>;

/// Run one method for a client; the result is the `result` member of the response.
pub async fn dispatch(
    state: &Arc<State>,
    peer: PeerCredentials,
    method: &str,
    params: Option<Value>,
) -> RpcResult<Value> {
    if !matches!(method, methods::VERSION | methods::STATUS) {
        same_pid_namespace(&peer)?;
    }
    match method {
        methods::VERSION => {
            no_params(method, params)?;
            to_value(VersionResult {
                version: env!("CARGO_PKG_VERSION").into(),
                protocol: PROTOCOL_VERSION,
            })
        }
        methods::STATUS => {
            no_params(method, params)?;
            to_value(status(state, peer))
        }
        methods::LIST => {
            no_params(method, params)?;
            let st = state.clone();
            to_value(blocking(move || list(&st, peer)).await?)
        }
        methods::ATTACH => {
            let p: AttachParams = parse_params(method, params, r#"{"pid": 1234}"#)?;
            let st = state.clone();
            to_value(blocking(move || attach(&st, peer, p.pid)).await??)
        }
        methods::DETACH => {
            let p: DetachParams = parse_params(method, params, r#"{"pid": 1234}"#)?;
            let st = state.clone();
            to_value(blocking(move || detach(&st, peer, p.pid)).await??)
        }
        methods::STACK => {
            let p: StackParams = parse_params(
                method,
                params,
                r#"{"pid": 1234, "tid": 1235, "pause": false} (tid and pause optional)"#,
            )?;
            if p.native || p.native_lines {
                check_native(&p)?;
                let st = state.clone();
                return blocking(move || native_stack(&st, peer, &p)).await?;
            }
            match inline(|| stack_inline(state, peer, &p)) {
                Some(r) => to_value(r?),
                None => {
                    let st = state.clone();
                    to_value(blocking(move || stack(&st, peer, &p)).await??)
                }
            }
        }
        methods::ANNOTATE => {
            let p: AnnotateParams = parse_params(
                method,
                params,
                r#"{"text": "...", "pid": 1234, "format": "dtrace"} (pid and format optional)"#,
            )?;
            let st = state.clone();
            to_value(blocking(move || annotate(&st, peer, p)).await??)
        }
        methods::SYMBOLIZE => {
            let p: SymbolizeParams = parse_params(
                method,
                params,
                r#"{"pid": 1234, "addresses": [140737351962624]}"#,
            )?;
            let st = state.clone();
            to_value(blocking(move || symbolize(&st, peer, &p)).await??)
        }
        methods::PROFILE => {
            let p: ProfileParams = parse_params(
                method,
                params,
                r#"{"pid": 1234, "rate": 100, "duration": 10} (rate, idle, pause, threads, gil, native optional)"#,
            )?;
            super::profiles::check(&p)?;
            let st = state.clone();
            to_value(blocking(move || profile(&st, peer, &p)).await??)
        }
        methods::PROFILE_RESULT | methods::PROFILE_STOP => {
            let p: ProfileResultParams = parse_params(
                method,
                params,
                r#"{"session": 1, "format": "folded"} (format: folded, speedscope, flamegraph, pprof; optional)"#,
            )?;
            let stop = method == methods::PROFILE_STOP;
            let st = state.clone();
            to_value(blocking(move || profile_result(&st, peer, &p, stop)).await??)
        }
        _ => Err(RpcError::of(
            ErrorKind::MethodNotFound,
            format!(
                "unknown method `{method}` (methods: attach, detach, list, stack, annotate, \
                 symbolize, profile, profile_result, profile_stop, status, version)"
            ),
        )),
    }
}

/// Pids are numbers of one PID namespace: a client in another one (`unshare -p`, a
/// container) means a different process by the same number (its pid 1 is the daemon's
/// init), and the pids and tids of an answer would be the daemon's. Refused rather than
/// read: the wrong process, or a stack under numbers the client cannot use. A peer
/// whose pid the kernel could not give in the daemon's namespace (pid 0: the client is
/// in a namespace above or beside the daemon's) is refused alike.
fn same_pid_namespace(peer: &PeerCredentials) -> RpcResult<()> {
    let foreign = match peer.pid {
        Some(p) => pyframe_reader::platform::pid_namespace(p).is_some(),
        None => cfg!(target_os = "linux"),
    };
    if !foreign {
        return Ok(());
    }
    Err(RpcError::of(
        ErrorKind::InvalidRequest,
        "the client is in another PID namespace than the daemon, where its pids name other \
         processes: run pystackd with `--no-daemon` there, or ask from the daemon's namespace \
         (the host's pid of the process)"
            .to_string(),
    ))
}

fn to_value(v: impl Serialize) -> RpcResult<Value> {
    serde_json::to_value(v)
        .map_err(|e| RpcError::of(ErrorKind::Internal, format!("encoding result: {e}")))
}

fn no_params(method: &str, params: Option<Value>) -> RpcResult<()> {
    match params {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Object(o)) if o.is_empty() => Ok(()),
        Some(_) => Err(RpcError::of(
            ErrorKind::InvalidParams,
            format!("method `{method}` takes no params"),
        )),
    }
}

fn parse_params<T: DeserializeOwned>(
    method: &str,
    params: Option<Value>,
    example: &str,
) -> RpcResult<T> {
    let Some(params) = params else {
        return Err(RpcError::of(
            ErrorKind::InvalidParams,
            format!("method `{method}` needs params, e.g. {example}"),
        ));
    };
    serde_json::from_value(params).map_err(|e| {
        RpcError::of(
            ErrorKind::InvalidParams,
            format!("invalid params for `{method}`: {e}; expected e.g. {example}"),
        )
    })
}

/// Run a blocking read on the blocking pool. A panic in the reader becomes an
/// internal error for this request; the daemon goes on.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> RpcResult<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        let what = if e.is_panic() {
            let p = e.into_panic();
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".into());
            format!("the reader failed unexpectedly: {msg}")
        } else {
            "the request was cancelled".into()
        };
        warn!("internal error: {what}");
        RpcError::of(ErrorKind::Internal, format!("internal error: {what}"))
    })
}

/// Run a short read on the calling (async worker) thread, a panic becoming an internal
/// error as in [`blocking`]. `f` returns `None` when the read must go to the pool.
fn inline<T>(f: impl FnOnce() -> Option<RpcResult<T>>) -> Option<RpcResult<T>> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        warn!("internal error: the reader failed unexpectedly");
        Some(Err(RpcError::of(
            ErrorKind::Internal,
            "internal error: the reader failed unexpectedly",
        )))
    })
}

/// The JSON-RPC error for a reader error.
pub fn reader_error(e: &pyframe_reader::Error) -> RpcError {
    RpcError::new(e.kind().rpc_code(), e.to_string())
}

fn exited(pid: u32) -> RpcError {
    RpcError::of(
        ErrorKind::ProcessExited,
        format!("process {pid} exited while being read"),
    )
}

/// `profile`: the access check of `stack`, then a session sampling in its own thread.
fn profile(state: &State, peer: PeerCredentials, p: &ProfileParams) -> RpcResult<ProfileStarted> {
    let key = authorize(state, peer, p.pid)?;
    state.profiles.start(peer.uid, p, key.start_time)
}

/// `profile_result` / `profile_stop` (which ends the session first, then answers as
/// `profile_result` does).
fn profile_result(
    state: &State,
    peer: PeerCredentials,
    p: &ProfileResultParams,
    stop: bool,
) -> RpcResult<ProfileResult> {
    let session = state.profiles.get(p.session, peer.uid, peer.privileged)?;
    if stop {
        session.stop();
        session.wait_ended(std::time::Duration::from_secs(5));
    }
    session.result(p.format)
}

/// Identify process `pid` and check that `peer` may inspect it.
fn authorize(state: &State, peer: PeerCredentials, pid: u32) -> RpcResult<Key> {
    let start_time = identify(state, pid)?;
    if !peer.privileged {
        let max = state.config().max_access_checkers;
        let outcome = auth::check(&state.checkers, max, &peer, pid, start_time);
        apply(state, peer, pid, outcome)?;
        // The answer is about the process identified by `start_time` only if it is
        // still the one holding the pid.
        if platform::start_time(pid).ok() != Some(start_time) {
            return Err(exited(pid));
        }
        state.records.grant(Key { pid, start_time }, &peer);
    }
    Ok(Key { pid, start_time })
}

/// [`authorize`] without asking a checker: `None` when no fresh answer is cached.
fn authorize_cached(state: &State, peer: PeerCredentials, pid: u32) -> Option<RpcResult<Key>> {
    let start_time = match identify(state, pid) {
        Ok(t) => t,
        Err(e) => return Some(Err(e)),
    };
    let outcome = auth::check_cached(&state.checkers, &peer, pid, start_time)?;
    let key = Key { pid, start_time };
    let allowed = apply(state, peer, pid, outcome).map(|()| key);
    if allowed.is_ok() {
        state.records.grant(key, &peer);
    }
    Some(allowed)
}

/// The start time of the process holding `pid` now.
fn identify(state: &State, pid: u32) -> RpcResult<u64> {
    if pid == 0 {
        return Err(RpcError::of(
            ErrorKind::InvalidParams,
            "pid 0 is not a process",
        ));
    }
    platform::start_time(pid).map_err(|e| {
        // gone: forget whatever was cached under this pid
        state.cache.remove_pid(pid);
        reader_error(&e)
    })
}

/// The access decision as the request's result.
fn apply(state: &State, peer: PeerCredentials, pid: u32, outcome: auth::Outcome) -> RpcResult<()> {
    match outcome {
        auth::Outcome::Allowed => Ok(()),
        auth::Outcome::Denied(d) => {
            state.count_denied(peer.uid);
            warn!(
                client_uid = peer.uid,
                client_pid = peer.pid,
                target = pid,
                "denied: {}",
                d.reason
            );
            Err(RpcError::of(ErrorKind::PermissionDenied, d.to_string()))
        }
        // what the client's own read would say (hidepid hides it from that user)
        auth::Outcome::NoSuchProcess => {
            Err(reader_error(&pyframe_reader::Error::NoSuchProcess { pid }))
        }
        auth::Outcome::Failed(e) => Err(RpcError::of(ErrorKind::Internal, e.to_string())),
    }
}

/// Whether the process of `key` still holds its pid.
enum Attached {
    Cached(Arc<Entry>, bool),
    /// The cache is full: usable for this request only.
    Uncached(Box<Entry>),
}

fn get_or_attach(state: &State, peer: PeerCredentials, key: Key) -> RpcResult<Attached> {
    if let Some(e) = state.cache.get(key) {
        return Ok(Attached::Cached(e, false));
    }
    let process = PythonProcess::attach(key.pid).map_err(|e| reader_error(&e))?;
    // the process attached must be the one authorized: same pid and start time
    let identity = Identity::expect(key.pid, key.start_time).map_err(|_| exited(key.pid))?;
    let mut entry = Entry::new(key, process, crate::platform::executable(key.pid), identity);
    entry.owner_uid = peer.uid;
    let config = state.config();
    if config.posthumous_secs > 0 {
        state
            .records
            .observe(&state.symbolizer, key, &peer, config.max_records);
    }
    match state
        .cache
        .insert(entry, config.max_attached, config.max_attached_per_uid)
    {
        Ok((e, new)) => {
            if new {
                info!(
                    pid = key.pid,
                    version = %e.python_version,
                    binary = %e.python_binary,
                    "attached"
                );
            }
            Ok(Attached::Cached(e, new))
        }
        Err(entry) => Ok(Attached::Uncached(entry)),
    }
}

fn attach(state: &State, peer: PeerCredentials, pid: u32) -> RpcResult<AttachResult> {
    let key = authorize(state, peer, pid)?;
    let (entry, newly_attached) = match get_or_attach(state, peer, key)? {
        Attached::Cached(e, new) => (e, new),
        Attached::Uncached(_) => {
            return Err(RpcError::of(
                ErrorKind::LimitReached,
                format!(
                    "uid {} has {} processes attached (max_attached_per_uid); detach some first",
                    peer.uid,
                    state.cache.count_owned_by(peer.uid)
                ),
            ))
        }
    };
    Ok(AttachResult {
        process: entry.describe(),
        newly_attached,
        os_threads: platform::threads(pid).map(|t| t.len()).unwrap_or(0),
    })
}

fn detach(state: &State, peer: PeerCredentials, pid: u32) -> RpcResult<DetachResult> {
    let detached = match authorize(state, peer, pid) {
        Ok(key) => state.cache.remove(key),
        // Gone for the daemon too (not merely hidden from this client by hidepid):
        // whatever is cached under the pid is stale anyway.
        Err(e)
            if (e.kind() == ErrorKind::NoSuchProcess || e.kind() == ErrorKind::ProcessExited)
                && platform::start_time(pid).is_err() =>
        {
            state.cache.remove_pid(pid)
        }
        Err(e) => return Err(e),
    };
    if detached {
        info!(pid, "detached");
    }
    Ok(DetachResult { pid, detached })
}

fn list(state: &State, peer: PeerCredentials) -> ListResult {
    let processes = state
        .cache
        .entries()
        .into_iter()
        // an entry whose process is gone (or whose pid is now another's) is stale
        .filter(|e| e.identity.alive())
        .filter(|e| {
            let max = state.config().max_access_checkers;
            auth::check(&state.checkers, max, &peer, e.key.pid, e.key.start_time)
                == auth::Outcome::Allowed
        })
        .map(|e| e.describe())
        .collect();
    ListResult { processes }
}

fn stack(
    state: &State,
    peer: PeerCredentials,
    p: &StackParams,
) -> RpcResult<protocol::ProcessStack> {
    let key = authorize(state, peer, p.pid)?;
    let (result, cached) = attach_and_read(state, peer, key, p)?;
    match result {
        // the cached state was dropped as stale (reads turned inconsistent, as after an
        // exec of the same binary): one more try with a fresh attach
        Err(e)
            if cached && e.kind() == ErrorKind::Inconsistent && !state.cache.contains_key(key) =>
        {
            attach_and_read(state, peer, key, p)?.0
        }
        other => other,
    }
}

/// Attach (or take the cached process) and read its stack; also says whether the read
/// used a cached process.
fn attach_and_read(
    state: &State,
    peer: PeerCredentials,
    key: Key,
    p: &StackParams,
) -> RpcResult<(RpcResult<protocol::ProcessStack>, bool)> {
    let attached = get_or_attach(state, peer, key)?;
    let (entry, cached) = match &attached {
        Attached::Cached(e, _) => (&**e, true),
        Attached::Uncached(e) => (&**e, false),
    };
    let Some(process) = entry.lock() else {
        // An earlier read panicked halfway: forget this state, the next request
        // attaches afresh.
        state.cache.remove(key);
        return Err(RpcError::of(
            ErrorKind::Internal,
            "internal error: the reader state of this process was lost; retry",
        ));
    };
    Ok((read_stack(state, key, entry, cached, process, p), cached))
}

/// `stack` of an already attached process, read on the async worker: with the
/// process's layouts and code objects cached a read is a few `process_vm_readv` calls
/// (tens of microseconds), less than handing it to the blocking pool and back costs.
/// `None` sends the request to the pool: not attached yet (attaching parses ELF
/// files), `pause` (stopping a process can take long), or another request is reading
/// the process (waiting for it would block this worker).
fn stack_inline(
    state: &State,
    peer: PeerCredentials,
    p: &StackParams,
) -> Option<RpcResult<protocol::ProcessStack>> {
    if p.pause || !state.cache.contains_pid(p.pid) {
        return None;
    }
    // A privileged client may read any process: all that matters is which process
    // holds the pid, which a live handle tells without reading /proc.
    let live = peer
        .privileged
        .then(|| state.cache.live_by_handle(p.pid))
        .flatten();
    let entry = match live {
        Some(e) => e,
        None => {
            // (asking a checker may take a spawn: that is the blocking pool's job)
            let key = match authorize_cached(state, peer, p.pid)? {
                Ok(k) => k,
                Err(e) => return Some(Err(e)),
            };
            state.cache.get(key)?
        }
    };
    let key = entry.key;
    let process = entry.process.try_lock().ok()?;
    match read_stack(state, key, &entry, true, process, p) {
        // dropped as stale: the blocking path attaches afresh and retries
        Err(e) if e.kind() == ErrorKind::Inconsistent && !state.cache.contains_key(key) => None,
        other => Some(other),
    }
}

/// The parameters `native` does not combine with.
fn check_native(p: &StackParams) -> RpcResult<()> {
    let bad = |m: &str| Err(RpcError::of(ErrorKind::InvalidParams, m.to_string()));
    if !p.native {
        return bad("native_lines needs \"native\": true");
    }
    if p.locals {
        return bad("locals is not supported with native yet");
    }
    Ok(())
}

/// `stack` with `native`: the merged native and Python stacks (`pystackd stack --native
/// --json`), read by the daemon under a ptrace stop of every thread. The access check is
/// `stack`'s: in the kernel's ATTACH mode (or READ plus ancestry at Yama scope 1), the
/// rights a client needs to stop and unwind the process itself.
fn native_stack(state: &State, peer: PeerCredentials, p: &StackParams) -> RpcResult<Value> {
    let key = authorize(state, peer, p.pid)?;
    let attached = get_or_attach(state, peer, key)?;
    let entry = match &attached {
        Attached::Cached(e, _) => &**e,
        Attached::Uncached(e) => &**e,
    };
    let Some(mut process) = entry.lock() else {
        state.cache.remove(key);
        return Err(RpcError::of(
            ErrorKind::Internal,
            "internal error: the reader state of this process was lost; retry",
        ));
    };
    let read = crate::stack_native::read_process(
        &mut process,
        &state.symbolizer,
        p.pid,
        p.tid,
        p.native_lines,
    );
    drop(process);
    // what was read is this process's only if the pid still names it
    if !entry.identity.is_same() {
        state.cache.remove(key);
        return Err(exited(p.pid));
    }
    let stack = read.map_err(|e| {
        if matches!(
            e.kind(),
            ErrorKind::NoSuchProcess | ErrorKind::ProcessExited | ErrorKind::Inconsistent
        ) {
            state.cache.remove(key);
        }
        reader_error(&e)
    })?;
    if let Some(tid) = p.tid {
        if !stack.threads.iter().any(|t| t.os_tid == tid) {
            return Err(RpcError::of(
                ErrorKind::NoSuchThread,
                format!("process {} has no thread {tid}", p.pid),
            ));
        }
    }
    entry.count_stack();
    to_value(stack)
}

fn read_stack(
    state: &State,
    key: Key,
    entry: &Entry,
    cached: bool,
    process: std::sync::MutexGuard<'_, PythonProcess>,
    p: &StackParams,
) -> RpcResult<protocol::ProcessStack> {
    let opts = StackOptions {
        pause: p.pause,
        tid: p.tid,
        locals: p.locals,
        skip_tids: Vec::new(),
    };
    match entry.read(process, &opts) {
        Read::Stack(s) => match p.tid.and_then(|t| crate::stack::missing_thread(&s, t)) {
            Some(why) => Err(RpcError::of(ErrorKind::NoSuchThread, why)),
            None => Ok(s),
        },
        Read::Gone => {
            if cached {
                state.cache.remove(key);
            }
            Err(exited(p.pid))
        }
        Read::Failed { e, stale } => {
            if stale && cached && state.cache.remove(key) {
                debug!(pid = p.pid, error = %e, "dropped: process gone or reads no longer consistent");
            }
            Err(reader_error(&e))
        }
    }
}

/// The daemon's own cache as the engine's source of Python stacks, for one request:
/// every pid the text names goes through [`stack`], so through [`authorize`] with the
/// client's credentials (a client learns no stack of a process it could not read).
struct CacheSource<'a> {
    state: &'a State,
    peer: PeerCredentials,
    /// Each pid's failure, so a refused or dead pid costs one check per request.
    failed: std::collections::HashMap<u32, stacktext::SourceError>,
    /// Each pid's mappings for naming native frames (`None`: none the client may use).
    maps: std::collections::HashMap<u32, Option<(Arc<symbolize::ProcessMaps>, bool)>>,
}

impl stacktext::StackSource for CacheSource<'_> {
    fn thread_stacks(
        &mut self,
        pid: u32,
    ) -> Result<Vec<protocol::ThreadStack>, stacktext::SourceError> {
        use stacktext::SourceError as S;
        if let Some(e) = self.failed.get(&pid) {
            return Err(e.clone());
        }
        let p = StackParams {
            pid,
            ..StackParams::default()
        };
        stack(self.state, self.peer, &p)
            .map(|s| s.threads)
            .map_err(|e| {
                let kind = e.kind();
                let se = S::new(kind, e.message);
                if kind != protocol::ErrorKind::Inconsistent && self.failed.len() < 4096 {
                    self.failed.insert(pid, se.clone());
                }
                se
            })
    }

    fn resume(&mut self, pid: u32) -> Result<(), stacktext::SourceError> {
        // Not offered: continuing a stopped process is the client's business.
        Err(stacktext::SourceError::new(
            protocol::ErrorKind::InvalidRequest,
            format!("the daemon does not resume processes ({pid})"),
        ))
    }

    fn pid_of_tid(&mut self, tid: u64) -> Option<u32> {
        crate::platform::pid_of_tid(tid)
    }

    fn native_symbol(&mut self, pid: u32, addr: u64) -> Option<stacktext::NativeSymbol> {
        self.name_at(pid, |_, _| Some(addr))
    }

    fn native_in_module(
        &mut self,
        pid: u32,
        module: &str,
        offset: u64,
    ) -> Option<stacktext::NativeSymbol> {
        self.name_at(pid, |state, maps| {
            crate::native::module_address(&state.symbolizer, maps, module, offset)
        })
    }

    fn native_source(&mut self, pid: u32, addr: u64) -> Vec<protocol::NativeSource> {
        if !self.maps.contains_key(&pid) && self.maps.len() >= 4096 {
            self.maps.clear();
        }
        let Some((maps, _)) = self
            .maps
            .entry(pid)
            .or_insert_with(|| native_maps(self.state, self.peer, pid).ok())
            .clone()
        else {
            return Vec::new();
        };
        source_of(self.state, &maps, addr)
    }
}

/// The source frames (DWARF) of `addr` of the process whose mappings are `maps`.
fn source_of(
    state: &State,
    maps: &symbolize::ProcessMaps,
    addr: u64,
) -> Vec<protocol::NativeSource> {
    match state.symbolizer.symbolize(maps, addr, true) {
        Ok(s) => s
            .frames
            .into_iter()
            .map(crate::stack_native::native_source)
            .collect(),
        Err(_) => Vec::new(),
    }
}

impl CacheSource<'_> {
    /// The name of the address `at` gives in `pid`'s mappings (live or recorded).
    fn name_at(
        &mut self,
        pid: u32,
        at: impl FnOnce(&State, &symbolize::ProcessMaps) -> Option<u64>,
    ) -> Option<stacktext::NativeSymbol> {
        if !self.maps.contains_key(&pid) && self.maps.len() >= 4096 {
            self.maps.clear();
        }
        let (maps, posthumous) = self
            .maps
            .entry(pid)
            .or_insert_with(|| native_maps(self.state, self.peer, pid).ok())
            .clone()?;
        let addr = at(self.state, &maps)?;
        let n = name_of(self.state, &maps, addr)?;
        Some(stacktext::NativeSymbol {
            module: n.module.rsplit('/').next().unwrap_or(&n.module).to_string(),
            symbol: n.symbol,
            offset: n.offset,
            posthumous,
        })
    }
}

/// The mappings to name `pid`'s native addresses by, for `peer`: the live process's when
/// it runs and `peer` may read it; else the daemon's record of it, kept after its exit, if
/// `peer` was allowed to read it while it ran (`true`: posthumous). The error is the live
/// one: nothing is said about a record `peer` may not use.
fn native_maps(
    state: &State,
    peer: PeerCredentials,
    pid: u32,
) -> RpcResult<(Arc<symbolize::ProcessMaps>, bool)> {
    let live = authorize(state, peer, pid).and_then(|key| {
        let maps = symbolize::ProcessMaps::for_pid(pid).map_err(|_| exited(pid))?;
        // the mappings are the authorized process's only if it still holds the pid; none
        // at all: it exited and was not reaped yet (a zombie)
        if platform::start_time(pid).ok() != Some(key.start_time) || maps.regions().is_empty() {
            return Err(exited(pid));
        }
        Ok((Arc::new(maps), false))
    });
    match live {
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::NoSuchProcess | ErrorKind::ProcessExited
            ) =>
        {
            let keep = std::time::Duration::from_secs(state.config().posthumous_secs);
            match state.records.exited(pid, keep) {
                Some(r) if r.admits(&peer) => Ok((r.maps(), true)),
                _ => Err(e),
            }
        }
        other => other,
    }
}

/// The symbol at `addr` of the process whose mappings are `maps`, if one names it.
fn name_of(state: &State, maps: &symbolize::ProcessMaps, addr: u64) -> Option<NativeName> {
    let s = state.symbolizer.symbolize(maps, addr, false).ok()?;
    let hit = s.symbol?;
    let module = maps
        .region(addr)
        .and_then(|(_, r)| r.path.clone())
        .unwrap_or_else(|| s.module.name().to_string());
    Some(NativeName {
        module,
        symbol: hit.name.to_string(),
        offset: hit.offset,
    })
}

/// `symbolize`: names of native addresses of a live process, or posthumously from the
/// daemon's record of an exited one.
fn symbolize(
    state: &State,
    peer: PeerCredentials,
    p: &SymbolizeParams,
) -> RpcResult<SymbolizeResult> {
    if p.addresses.len() > MAX_SYMBOLIZE_ADDRESSES {
        return Err(RpcError::of(
            ErrorKind::InvalidParams,
            format!(
                "{} addresses asked for; at most {MAX_SYMBOLIZE_ADDRESSES} per request",
                p.addresses.len()
            ),
        ));
    }
    let (maps, posthumous) = native_maps(state, peer, p.pid)?;
    // with `module`, the addresses asked for are offsets into that object
    let addrs: Vec<Option<u64>> = p
        .addresses
        .iter()
        .map(|&a| match &p.module {
            Some(m) => crate::native::module_address(&state.symbolizer, &maps, m, a),
            None => Some(a),
        })
        .collect();
    Ok(SymbolizeResult {
        pid: p.pid,
        posthumous,
        symbols: addrs.iter().map(|a| name_of(state, &maps, (*a)?)).collect(),
        sources: p.lines.then(|| {
            addrs
                .iter()
                .map(|a| a.map_or_else(Vec::new, |a| source_of(state, &maps, a)))
                .collect()
        }),
    })
}

fn annotate(state: &State, peer: PeerCredentials, p: AnnotateParams) -> RpcResult<AnnotateResult> {
    let format = match p.format.as_deref() {
        None | Some("auto") => None,
        Some(f) => Some(
            f.parse::<stacktext::Format>()
                .map_err(|e| RpcError::of(ErrorKind::InvalidParams, e))?,
        ),
    };
    let opts = stacktext::Options {
        pid: p.pid,
        format,
        native_lines: p.native_lines,
        ..stacktext::Options::default()
    };
    let mut source = CacheSource {
        state,
        peer,
        failed: Default::default(),
        maps: Default::default(),
    };
    let mut out = Vec::with_capacity(p.text.len() + p.text.len() / 4);
    let summary = stacktext::annotate(p.text.as_bytes(), &mut out, &mut source, &opts)
        .map_err(|e| RpcError::of(ErrorKind::Internal, format!("annotating: {e}")))?;
    Ok(AnnotateResult {
        // the input was UTF-8 and only UTF-8 was added
        text: String::from_utf8_lossy(&out).into_owned(),
        partial: summary.has_problems(),
        summary,
    })
}

/// The daemon's totals for a privileged client; for anyone else their own share:
/// their requests, errors, denials and connections, and the processes their requests
/// attached.
fn status(state: &State, peer: PeerCredentials) -> StatusResult {
    let config = state.config();
    let base = StatusResult {
        version: env!("CARGO_PKG_VERSION").into(),
        pid: std::process::id(),
        uptime_seconds: state.started.elapsed().as_secs(),
        requests: 0,
        errors: 0,
        denied: 0,
        connections: 0,
        attached: 0,
        max_attached: config.max_attached,
        cache: Default::default(),
        uid: None,
        access_checkers: None,
    };
    if peer.privileged {
        return StatusResult {
            requests: state.requests.load(Ordering::Relaxed),
            errors: state.errors.load(Ordering::Relaxed),
            denied: state.denied.load(Ordering::Relaxed),
            connections: state.connections.load(Ordering::Relaxed),
            attached: state.cache.len(),
            cache: state.cache.total_sizes(),
            access_checkers: Some(state.checkers.running()),
            ..base
        };
    }
    let counts = state.counts_of(peer.uid);
    let own: Vec<_> = state
        .cache
        .entries()
        .into_iter()
        .filter(|e| e.owner_uid == peer.uid)
        .collect();
    let mut cache = protocol::rpc::CacheSizes::default();
    for e in &own {
        let s = e.sizes();
        cache.code_objects += s.code_objects;
        cache.bytes += s.bytes;
    }
    StatusResult {
        requests: counts.requests,
        errors: counts.errors,
        denied: counts.denied,
        connections: counts.connections,
        attached: own.len(),
        max_attached: config.max_attached_per_uid.min(config.max_attached),
        cache,
        uid: Some(peer.uid),
        ..base
    }
}
