//! JSON-RPC 2.0 messages of the daemon's API: one JSON object per line on its Unix
//! socket. The envelopes (`Request`, `Response`, `RpcError`) are generic; the typed
//! params and results of each method follow. `docs/protocol.md` documents each method
//! with an example.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::ProcessStack;

pub const JSONRPC_VERSION: &str = "2.0";

/// Version of the method set below; bumped when a method or field changes meaning.
pub const PROTOCOL_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub jsonrpc: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Value>,
    pub method: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub jsonrpc: String,
    pub id: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RpcError>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl Request {
    pub fn new(id: impl Into<Value>, method: &str, params: Option<Value>) -> Self {
        Request {
            jsonrpc: JSONRPC_VERSION.into(),
            id: Some(id.into()),
            method: method.into(),
            params,
        }
    }
}

impl Response {
    pub fn ok(id: Value, result: Value) -> Self {
        Response {
            jsonrpc: JSONRPC_VERSION.into(),
            id,
            result: Some(result),
            error: None,
        }
    }
    pub fn err(id: Value, error: RpcError) -> Self {
        Response {
            jsonrpc: JSONRPC_VERSION.into(),
            id,
            result: None,
            error: Some(error),
        }
    }
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        RpcError {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// An error of one kind: its code comes from the kind.
    pub fn of(kind: crate::ErrorKind, message: impl Into<String>) -> Self {
        RpcError::new(kind.rpc_code(), message)
    }

    /// The kind its code stands for.
    pub fn kind(&self) -> crate::ErrorKind {
        crate::ErrorKind::from_rpc_code(self.code)
    }
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (code {})", self.message, self.code)
    }
}

impl std::error::Error for RpcError {}

/// Standard JSON-RPC codes plus pystackd's own (-32000..-32099, the server range).
pub mod codes {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const INTERNAL_ERROR: i64 = -32603;
    pub const NO_SUCH_PROCESS: i64 = -32001;
    pub const NOT_PYTHON: i64 = -32002;
    pub const PERMISSION_DENIED: i64 = -32003;
    pub const UNSUPPORTED_VERSION: i64 = -32004;
    pub const PROCESS_EXITED: i64 = -32005;
    pub const INCONSISTENT_READ: i64 = -32006;
    pub const REQUEST_TOO_LARGE: i64 = -32007;
    /// A configured limit is reached (attached processes, connections).
    pub const LIMIT_REACHED: i64 = -32008;
    /// `stack` with a `tid` the process does not have.
    pub const NO_SUCH_THREAD: i64 = -32009;
}

/// Method names.
pub mod methods {
    pub const ATTACH: &str = "attach";
    pub const DETACH: &str = "detach";
    pub const LIST: &str = "list";
    pub const STACK: &str = "stack";
    pub const ANNOTATE: &str = "annotate";
    pub const STATUS: &str = "status";
    pub const VERSION: &str = "version";
    pub const PROFILE: &str = "profile";
    pub const PROFILE_RESULT: &str = "profile_result";
    pub const PROFILE_STOP: &str = "profile_stop";
    pub const SYMBOLIZE: &str = "symbolize";
}

/// `attach`: find the interpreter of a process and keep it cached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachParams {
    pub pid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachResult {
    #[serde(flatten)]
    pub process: AttachedProcess,
    /// False when the process was already attached (by this or another client).
    pub newly_attached: bool,
    /// Number of OS threads (LWPs) of the process at attach time.
    pub os_threads: usize,
}

/// `symbolize`: name native addresses of a process: from its mappings while it runs, or
/// from the daemon's record of its mappings after it exited (posthumously).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SymbolizeParams {
    pub pid: u32,
    /// At most [`MAX_SYMBOLIZE_ADDRESSES`].
    pub addresses: Vec<u64>,
    /// Also each address's source frames from DWARF (`sources`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lines: bool,
    /// The file name of a shared object (`libfoo.so.1`): `addresses` are then offsets into
    /// it, as tracers print `libfoo.so.1+0x1a2b`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
}

/// Addresses one `symbolize` request may ask for.
pub const MAX_SYMBOLIZE_ADDRESSES: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SymbolizeResult {
    pub pid: u32,
    /// The process had exited: the names come from the daemon's record of its mappings.
    pub posthumous: bool,
    /// One per address, in order; `null` where no symbol names it.
    pub symbols: Vec<Option<NativeName>>,
    /// With `lines`: one list per address, in order, of its source frames (innermost
    /// first; empty without DWARF).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<Vec<crate::NativeSource>>>,
}

/// A native address named: the mapped file's name, the symbol and the offset into it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NativeName {
    /// The file's path as the process saw it.
    pub module: String,
    pub symbol: String,
    pub offset: u64,
}

/// `detach`: drop a process from the cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetachParams {
    pub pid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetachResult {
    pub pid: u32,
    /// False when the process was not attached.
    pub detached: bool,
}

/// `list`: the attached processes the caller may inspect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListResult {
    pub processes: Vec<AttachedProcess>,
}

/// One attached process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachedProcess {
    pub pid: u32,
    /// Opaque start time (with the pid, identifies the process across pid reuse).
    pub start_time: u64,
    pub python_version: String,
    /// Object holding the interpreter (executable or libpython).
    pub python_binary: String,
    /// The process's executable as the kernel reports it, if readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executable: Option<String>,
    /// Seconds since it was attached.
    pub attached_seconds: u64,
    /// Stack reads served for it.
    pub stacks_read: u64,
    pub cache: CacheSizes,
}

/// Sizes of per-process caches (code objects and bytes they hold).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheSizes {
    pub code_objects: usize,
    pub bytes: usize,
}

/// `stack`: every thread's Python stack (attaches the process if needed); the result
/// is a [`ProcessStack`], the same data as `pystackd stack --json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StackParams {
    pub pid: u32,
    /// Only this OS thread id (LWP): as the daemon's PID namespace numbers it (the host's),
    /// or as the target's own namespace does (`ThreadStack::ns_tid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tid: Option<u64>,
    /// Stop the target for the read.
    #[serde(default)]
    pub pause: bool,
    /// Also read each frame's arguments and local variables (`Frame::locals`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub locals: bool,
    /// Every thread's native stack with the Python frames under their eval-loop frames
    /// (stops the process): the result is then what `pystackd stack --native --json`
    /// prints, not a `ProcessStack`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub native: bool,
    /// With `native`: each native frame's source lines and inlined functions (DWARF).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub native_lines: bool,
}

pub type StackResult = ProcessStack;

/// `profile`: start sampling a process in the daemon (as `pystackd record` does) for a
/// bounded time; the result names the session, whose profile `profile_result` gives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileParams {
    pub pid: u32,
    /// Samples per second (1 to 10,000; default 100).
    #[serde(default = "default_rate")]
    pub rate: u32,
    /// Seconds to sample (at most 3,600; rate × duration at most 1,000,000 samples).
    pub duration: f64,
    /// Keep samples of idle threads (blocked in the kernel).
    #[serde(default)]
    pub idle: bool,
    /// Stop every thread for each sample.
    #[serde(default)]
    pub pause: bool,
    /// One root per thread in folded and flame graph output.
    #[serde(default)]
    pub threads: bool,
    /// Count only the thread holding the GIL (refused for a free-threaded build).
    #[serde(default)]
    pub gil: bool,
    /// Native frames too, with the Python frames in place of the eval-loop frames that run
    /// them (`record --native`): every sample stops the process, as `pause`.
    #[serde(default)]
    pub native: bool,
}

fn default_rate() -> u32 {
    100
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileStarted {
    /// The session's id, for `profile_result` and `profile_stop`.
    pub session: u64,
    pub pid: u32,
    pub rate: u32,
    pub duration: f64,
}

/// What `profile_result` gives the profile as.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProfileFormat {
    /// `frame;frame;... count` lines, outermost first.
    #[default]
    Folded,
    /// speedscope's JSON file format (as a string).
    Speedscope,
    /// An SVG flame graph (as a string).
    Flamegraph,
    /// pprof's gzipped `profile.proto`, base64-encoded.
    Pprof,
}

/// `profile_result` and `profile_stop`: one session of the caller's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileResultParams {
    pub session: u64,
    /// The profile's format; with `profile_stop` too (default folded).
    #[serde(default)]
    pub format: ProfileFormat,
}

/// Where a profiling session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProfileState {
    /// Still sampling (`data` is absent).
    Running,
    /// Its duration ended.
    Done,
    /// Ended early by `profile_stop`.
    Stopped,
    /// The process exited (what was seen is kept).
    Exited,
    /// Sampling failed (`error` says why; what was seen is kept).
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileResult {
    pub session: u64,
    pub pid: u32,
    pub state: ProfileState,
    /// Reads that gave a stack.
    pub samples: u64,
    /// Reads the target moved under, dropped as torn.
    pub dropped: u64,
    /// Thread stacks left out as idle.
    pub idle_skipped: u64,
    /// With `gil`: thread samples left out as not holding the GIL, or with its state
    /// unknown (torn under the read).
    #[serde(default)]
    pub gil_skipped: u64,
    /// Seconds sampled so far.
    pub elapsed: f64,
    pub rate_requested: u32,
    pub rate_achieved: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The profile, once the session has ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<ProfileFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

/// `annotate`: add Python frames to a native stack trace text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnnotateParams {
    /// The process the stacks come from, when the text does not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    pub text: String,
    /// Input format (`dtrace`, `bpftrace`, `perf`, `gdb`); guessed when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// Add each native frame's source file, line and inlined functions (DWARF).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub native_lines: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnotateResult {
    pub text: String,
    /// True when some stacks could not be annotated.
    #[serde(default)]
    pub partial: bool,
    /// What happened to each kind of stack (counts, and the first reasons in full).
    #[serde(default)]
    pub summary: crate::AnnotateSummary,
}

/// `status`: the daemon's counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusResult {
    pub version: String,
    pub pid: u32,
    pub uptime_seconds: u64,
    /// Requests answered since start (all methods, errors included).
    pub requests: u64,
    /// Requests answered with an error.
    pub errors: u64,
    /// Requests refused by the access check.
    pub denied: u64,
    /// Open client connections.
    pub connections: u64,
    pub attached: usize,
    pub max_attached: usize,
    /// Sum of the attached processes' caches.
    pub cache: CacheSizes,
    /// Present when the numbers are one client uid's only (a non-root client sees
    /// its own requests, errors, denials, connections and the processes its requests
    /// attached; `max_attached` is then the limit that applies to it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Running access checkers (root clients only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_checkers: Option<usize>,
}

/// `version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionResult {
    pub version: String,
    pub protocol: u32,
}

/// A request as the daemon received it: `id` exactly as sent (its JSON text, so that
/// `123456789012345678901234567890` or `1e2` come back unchanged), `None` for a
/// notification.
#[derive(Debug)]
pub struct IncomingRequest {
    pub id: Option<Box<RawValue>>,
    pub method: String,
    /// An object, or `None` when absent or `null`.
    pub params: Option<Value>,
}

/// Why a line is not a request: the error to answer with, and the id to answer to
/// when the request was readable far enough to have one.
#[derive(Debug)]
pub struct BadRequest {
    pub id: Option<Box<RawValue>>,
    pub error: RpcError,
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default, deserialize_with = "present")]
    id: Option<Box<RawValue>>,
    #[serde(default)]
    jsonrpc: Option<Value>,
    #[serde(default)]
    method: Option<Value>,
    #[serde(default)]
    params: Option<Value>,
}

/// `"id": null` is `Some(null)`, unlike an absent id (a notification).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

/// Parse one request line (JSON-RPC 2.0, one object; batches are not supported).
/// Duplicate keys anywhere in it are an error rather than "last one wins": the
/// daemon and whatever filtered the request on its way must not read different
/// values.
pub fn parse_request(line: &str) -> Result<IncomingRequest, BadRequest> {
    let bad = |id: Option<Box<RawValue>>, code, msg: String| BadRequest {
        id,
        error: RpcError::new(code, msg),
    };
    if let Err(e) = serde_json::from_str::<Unique>(line) {
        return Err(if e.is_data() {
            bad(
                None,
                codes::INVALID_REQUEST,
                format!("invalid request: {e}"),
            )
        } else {
            bad(None, codes::PARSE_ERROR, format!("invalid JSON: {e}"))
        });
    }
    match line.trim_start().as_bytes().first() {
        Some(b'{') => {}
        Some(b'[') => {
            return Err(bad(
                None,
                codes::INVALID_REQUEST,
                "batch requests (JSON arrays) are not supported; send one object per line".into(),
            ))
        }
        _ => {
            return Err(bad(
                None,
                codes::INVALID_REQUEST,
                "a request must be a JSON object".into(),
            ))
        }
    }
    let env: Envelope = serde_json::from_str(line).map_err(|e| {
        bad(
            None,
            codes::INVALID_REQUEST,
            format!("invalid request: {e}"),
        )
    })?;
    if let Some(id) = &env.id {
        // a string, a number or null, as JSON-RPC 2.0 says
        if !matches!(
            id.get().as_bytes().first(),
            Some(b'"' | b'-' | b'0'..=b'9' | b'n')
        ) {
            return Err(bad(
                None,
                codes::INVALID_REQUEST,
                "id must be a string, a number or null".into(),
            ));
        }
    }
    let id = env.id;
    if env.jsonrpc.as_ref().and_then(Value::as_str) != Some(JSONRPC_VERSION) {
        return Err(bad(
            id,
            codes::INVALID_REQUEST,
            format!("jsonrpc must be \"{JSONRPC_VERSION}\""),
        ));
    }
    let method = match env.method {
        Some(Value::String(m)) => m,
        _ => {
            return Err(bad(
                id,
                codes::INVALID_REQUEST,
                "method must be a string".into(),
            ))
        }
    };
    let params = match env.params {
        None | Some(Value::Null) => None,
        Some(p @ Value::Object(_)) => Some(p),
        Some(_) => {
            return Err(bad(
                id,
                codes::INVALID_PARAMS,
                format!("params of `{method}` must be an object (by-name parameters)"),
            ))
        }
    };
    Ok(IncomingRequest { id, method, params })
}

/// One reply line (with its newline) to the request of `id` (`None`: `null`).
pub fn encode_response(id: Option<&RawValue>, result: Result<&Value, &RpcError>) -> Vec<u8> {
    #[derive(Serialize)]
    struct Out<'a> {
        jsonrpc: &'static str,
        id: &'a RawValue,
        #[serde(skip_serializing_if = "Option::is_none")]
        result: Option<&'a Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<&'a RpcError>,
    }
    let null = RawValue::NULL;
    let out = Out {
        jsonrpc: JSONRPC_VERSION,
        id: id.unwrap_or(null),
        result: result.ok(),
        error: result.err(),
    };
    let mut v = serde_json::to_vec(&out).unwrap_or_else(|e| {
        // (only a map with non-string keys could fail, and there is none)
        format!(
            r#"{{"jsonrpc":"2.0","id":null,"error":{{"code":{},"message":"encoding the reply: {}"}}}}"#,
            codes::INTERNAL_ERROR,
            e.to_string().replace(['"', '\\'], "'")
        )
        .into_bytes()
    });
    v.push(b'\n');
    v
}

/// Any JSON value, refused if some object in it repeats a key.
struct Unique;

impl<'de> Deserialize<'de> for Unique {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueVisitor)
    }
}

struct UniqueVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueVisitor {
    type Value = Unique;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_str<E>(self, _: &str) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_unit<E>(self) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Unique, A::Error> {
        while a.next_element::<Unique>()?.is_some() {}
        Ok(Unique)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Unique, A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(k) = a.next_key::<String>()? {
            a.next_value::<Unique>()?;
            if seen.contains(&k) {
                let shown: String = k.chars().take(64).collect();
                return Err(serde::de::Error::custom(format!(
                    "duplicate key `{}` in an object",
                    shown.escape_debug()
                )));
            }
            seen.insert(k);
        }
        Ok(Unique)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_line_round_trips() {
        let r = Request::new(7, methods::STACK, Some(serde_json::json!({"pid": 42})));
        let line = serde_json::to_string(&r).unwrap();
        assert_eq!(
            line,
            r#"{"jsonrpc":"2.0","id":7,"method":"stack","params":{"pid":42}}"#
        );
        let back: Request = serde_json::from_str(&line).unwrap();
        assert_eq!(back, r);
        let p: StackParams = serde_json::from_value(back.params.unwrap()).unwrap();
        assert_eq!(
            p,
            StackParams {
                pid: 42,
                ..StackParams::default()
            }
        );
    }

    #[test]
    fn params_reject_unknown_fields() {
        let e = serde_json::from_str::<StackParams>(r#"{"pid":1,"paus":true}"#).unwrap_err();
        assert!(e.to_string().contains("paus"), "{e}");
    }

    fn reply_id(line: &str) -> String {
        let r = parse_request(line).unwrap();
        let out = encode_response(r.id.as_deref(), Ok(&Value::Bool(true)));
        let text = String::from_utf8(out).unwrap();
        let start = text.find("\"id\":").unwrap() + 5;
        let end = text.find(",\"result\"").unwrap();
        text[start..end].to_string()
    }

    #[test]
    fn ids_come_back_exactly_as_sent() {
        for id in [
            "123456789012345678901234567890",
            "1e2",
            "-0",
            "1.50",
            "18446744073709551616",
            "\"x\"",
            "\"caf\\u00e9 \\\"q\\\"\"",
            "null",
            "7",
        ] {
            let line = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"version"}}"#);
            assert_eq!(reply_id(&line), id, "{line}");
        }
        // absent: a notification; null: a request answered with id null
        let r = parse_request(r#"{"jsonrpc":"2.0","method":"version"}"#).unwrap();
        assert!(r.id.is_none());
        let r = parse_request(r#"{"jsonrpc":"2.0","method":"version","id":null}"#).unwrap();
        assert_eq!(r.id.unwrap().get(), "null");
        for bad in ["true", "[1]", "{}"] {
            let line = format!(r#"{{"jsonrpc":"2.0","id":{bad},"method":"version"}}"#);
            let e = parse_request(&line).unwrap_err();
            assert_eq!(e.error.code, codes::INVALID_REQUEST, "{line}");
        }
        // an error reply without id
        let out = encode_response(None, Err(&RpcError::new(codes::PARSE_ERROR, "x")));
        assert_eq!(
            out,
            b"{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32700,\"message\":\"x\"}}\n"
        );
    }

    #[test]
    fn duplicate_keys_are_refused() {
        for line in [
            r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"version"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"stack","method":"version"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"stack","params":{"pid":1,"pid":2}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":[{"b":1,"b":1}]}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":1,"\u0061":2}}"#,
        ] {
            let e = parse_request(line).unwrap_err();
            assert_eq!(e.error.code, codes::INVALID_REQUEST, "{line}");
            assert!(e.error.message.contains("duplicate key"), "{:?}", e.error);
        }
        // the same key in different objects is fine
        let r = parse_request(
            r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":{"pid":1},"b":{"pid":2}}}"#,
        )
        .unwrap();
        assert_eq!(r.method, "x");
    }

    #[test]
    fn params_must_be_an_object() {
        for p in ["[]", "[1]", "1", "\"pid\"", "true"] {
            let line = format!(r#"{{"jsonrpc":"2.0","id":3,"method":"stack","params":{p}}}"#);
            let e = parse_request(&line).unwrap_err();
            assert_eq!(e.error.code, codes::INVALID_PARAMS, "{line}");
            // answered to the request's id
            assert_eq!(e.id.unwrap().get(), "3");
        }
        for p in ["null", "{}", "{\"pid\":1}"] {
            let line = format!(r#"{{"jsonrpc":"2.0","id":3,"method":"stack","params":{p}}}"#);
            parse_request(&line).unwrap();
        }
    }

    #[test]
    fn not_requests() {
        let code = |l: &str| parse_request(l).unwrap_err().error.code;
        assert_eq!(code("not json"), codes::PARSE_ERROR);
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":1,"method":"x"} x"#),
            codes::PARSE_ERROR
        );
        assert_eq!(code("[]"), codes::INVALID_REQUEST);
        assert_eq!(code("3"), codes::INVALID_REQUEST);
        assert_eq!(
            code(r#"{"jsonrpc":"1.0","id":1,"method":"x"}"#),
            codes::INVALID_REQUEST
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":1,"method":7}"#),
            codes::INVALID_REQUEST
        );
        assert_eq!(code(r#"{"jsonrpc":"2.0","id":1}"#), codes::INVALID_REQUEST);
    }

    #[test]
    fn error_response_has_no_result() {
        let r = Response::err(
            Value::Null,
            RpcError::new(codes::PARSE_ERROR, "invalid JSON"),
        );
        let line = serde_json::to_string(&r).unwrap();
        assert_eq!(
            line,
            r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"invalid JSON"}}"#
        );
    }
}
