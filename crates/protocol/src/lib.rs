//! The data model shared by the reader, the CLI and the daemon, and the JSON-RPC
//! messages of the daemon's API. Everything here is plain serde data; the schema is
//! documented in `docs/json.md` and `docs/protocol.md`.

pub mod error;
mod native;
pub mod rpc;
mod stack;
mod summary;

pub use error::ErrorKind;
pub use native::NativeSource;
pub use stack::{
    escape_control, Frame, Local, LocalKind, MidUpdate, ProcessStack, RunState, ThreadStack,
    ThreadState,
};
pub use summary::AnnotateSummary;
