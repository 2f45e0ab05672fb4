//! Read every thread's Python stack out of a live CPython process (or a memory
//! snapshot) using known struct layouts, without running code in the target.

pub mod binary;
pub mod code;
pub mod error;
pub mod identity;
pub mod layout;
pub mod linetable;
pub mod memory;
pub mod names;
pub mod objects;
pub mod platform;
pub mod process;
pub mod threadstate;
pub mod values;
pub mod version;
pub mod walker;
pub mod witness;

pub use error::{Error, MemoryError, Result};
pub use identity::Identity;
pub use memory::{Memory, MemoryExt, Snapshot};
pub use process::{CacheStats, PythonProcess, StackOptions};
