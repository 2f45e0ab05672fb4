//! JSON-RPC 2.0 messages of the daemon's API: one JSON object per line on its Unix
//! socket. The envelopes (`Request`, `Response`, `RpcError`) are generic; the typed
//! params and results of each method follow. `docs/protocol.md` documents each method
//! with an example.

use serde::{Deserialize, Serialize};
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StackParams {
    pub pid: u32,
    /// Only this OS thread id (LWP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tid: Option<u64>,
    /// Stop the target for the read.
    #[serde(default)]
    pub pause: bool,
}

pub type StackResult = ProcessStack;

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
}

/// `version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionResult {
    pub version: String,
    pub protocol: u32,
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
                tid: None,
                pause: false
            }
        );
    }

    #[test]
    fn params_reject_unknown_fields() {
        let e = serde_json::from_str::<StackParams>(r#"{"pid":1,"paus":true}"#).unwrap_err();
        assert!(e.to_string().contains("paus"), "{e}");
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
