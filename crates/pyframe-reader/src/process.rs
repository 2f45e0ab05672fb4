//! A Python process attached for reading: where its interpreter is, which layout it
//! uses, and the per-process caches. This is the reader's public entry point.

use protocol::ProcessStack;

use crate::error::Result;

/// Options for one stack read.
#[derive(Debug, Clone, Default)]
pub struct StackOptions {
    /// Stop the target for the read (consistent snapshot), resuming it afterwards.
    pub pause: bool,
    /// Only this OS thread id (LWP); `None` for all threads.
    pub tid: Option<u64>,
}

/// Sizes of the per-process caches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub code_objects: usize,
    pub bytes: usize,
}

/// An attached CPython process.
pub struct PythonProcess {
    _private: (),
}

impl PythonProcess {
    /// Find the interpreter in process `pid` and pick its layout.
    pub fn attach(_pid: u32) -> Result<PythonProcess> {
        todo!()
    }
    pub fn pid(&self) -> u32 {
        todo!()
    }
    /// Start time of the process (opaque; with the pid it identifies the process).
    pub fn start_time(&self) -> u64 {
        todo!()
    }
    /// Full version, e.g. "3.10.13".
    pub fn version(&self) -> &str {
        todo!()
    }
    /// Path of the object holding the interpreter.
    pub fn binary_path(&self) -> &str {
        todo!()
    }
    /// Read every thread's stack (or one thread's, see [`StackOptions::tid`]).
    pub fn stack(&mut self, _opts: &StackOptions) -> Result<ProcessStack> {
        todo!()
    }
    pub fn cache_stats(&self) -> CacheStats {
        todo!()
    }
}
