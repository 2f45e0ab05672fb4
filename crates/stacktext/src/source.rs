//! Where Python stacks come from: the live reader or the daemon, plugged in by the binary.

use protocol::{ErrorKind, ThreadStack};

/// Why a source could not give a process's Python stacks: its kind (whether it lasts, for
/// one) and what to tell the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SourceError {
    pub kind: ErrorKind,
    pub message: String,
}

impl SourceError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        SourceError {
            kind,
            message: message.into(),
        }
    }

    pub fn no_such_process(pid: u32) -> Self {
        SourceError::new(ErrorKind::NoSuchProcess, format!("no such process {pid}"))
    }
}

/// A native frame named by pystackd rather than by the tracer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativeSymbol {
    /// The object's file name (`libpython3.14.so.1.0`).
    pub module: String,
    /// The symbol (`_PyEval_EvalFrameDefault.cold`).
    pub symbol: String,
    pub offset: u64,
    /// Named from the daemon's record of the mappings of a process that has exited.
    pub posthumous: bool,
}

/// How a stack read relates to the moment the probe fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Moment {
    /// The probe's moment, shown: the thread was held still (stopped at the probe, or by the
    /// tracer writing the text) from before the read to after it.
    Probe,
    /// Read later, when the text arrived: the thread may have run since the probe, so these
    /// frames are printed as `[~ ... ]`, never as plain lines.
    Later,
}

/// A provider of the Python stacks of a process.
pub trait StackSource {
    /// Every Python thread of `pid`, frames innermost first.
    fn thread_stacks(&mut self, pid: u32) -> Result<Vec<ThreadStack>, SourceError>;

    /// Resume a target that the tracer stopped (`--stopped`), after its stack was read.
    fn resume(&mut self, pid: u32) -> Result<(), SourceError>;

    /// The process a thread id belongs to, when the text names only the thread (gdb's
    /// `LWP` headers). The default knows nothing.
    fn pid_of_tid(&mut self, _tid: u64) -> Option<u32> {
        None
    }

    /// The Python frames a probe captured for the thread that fired (`pyframes=` tokens,
    /// innermost first, see `pystackd probe`), resolved against process `pid`: one thread's
    /// stack, exact by construction. A frame that cannot be resolved with the identity the
    /// probe captured is an error, never a guess. The default resolves nothing.
    fn captured(
        &mut self,
        pid: u32,
        _tid: Option<u64>,
        _tokens: &[String],
    ) -> Result<ThreadStack, SourceError> {
        Err(SourceError::new(
            ErrorKind::InvalidRequest,
            format!("captured frames of process {pid} cannot be resolved here"),
        ))
    }

    /// The native symbol at `addr` in process `pid` (`module`symbol+0xoff`), for frames the
    /// tracer printed without one (`??`, `[unknown]`, a bare address): debug info and
    /// build-ids can name what the tracer could not (Debian's `.cold` eval loop). The
    /// default knows nothing.
    fn native_symbol(&mut self, _pid: u32, _addr: u64) -> Option<NativeSymbol> {
        None
    }

    /// The native symbol at offset `offset` of shared object `module` (its file name, as a
    /// tracer prints `libfoo.so+0x1a2b`) mapped in process `pid`. The default knows nothing.
    fn native_in_module(&mut self, _pid: u32, _module: &str, _offset: u64) -> Option<NativeSymbol> {
        None
    }

    /// The source frames (DWARF file, line, inlined functions; innermost first) of `addr`
    /// in process `pid`, for `--native-lines`. The default knows none.
    fn native_source(&mut self, _pid: u32, _addr: u64) -> Vec<protocol::NativeSource> {
        Vec::new()
    }

    /// What the last `thread_stacks(pid)` shows about thread `tid` (`None`: the thread was
    /// picked by its shape, so every thread counts). The default proves nothing.
    fn moment(&mut self, _pid: u32, _tid: Option<u64>) -> Moment {
        Moment::Later
    }
}

impl<S: StackSource + ?Sized> StackSource for &mut S {
    fn thread_stacks(&mut self, pid: u32) -> Result<Vec<ThreadStack>, SourceError> {
        (**self).thread_stacks(pid)
    }
    fn resume(&mut self, pid: u32) -> Result<(), SourceError> {
        (**self).resume(pid)
    }
    fn pid_of_tid(&mut self, tid: u64) -> Option<u32> {
        (**self).pid_of_tid(tid)
    }
    fn moment(&mut self, pid: u32, tid: Option<u64>) -> Moment {
        (**self).moment(pid, tid)
    }
    fn captured(
        &mut self,
        pid: u32,
        tid: Option<u64>,
        tokens: &[String],
    ) -> Result<ThreadStack, SourceError> {
        (**self).captured(pid, tid, tokens)
    }
    fn native_symbol(&mut self, pid: u32, addr: u64) -> Option<NativeSymbol> {
        (**self).native_symbol(pid, addr)
    }
    fn native_source(&mut self, pid: u32, addr: u64) -> Vec<protocol::NativeSource> {
        (**self).native_source(pid, addr)
    }
    fn native_in_module(&mut self, pid: u32, module: &str, offset: u64) -> Option<NativeSymbol> {
        (**self).native_in_module(pid, module, offset)
    }
}

impl<S: StackSource + ?Sized> StackSource for Box<S> {
    fn thread_stacks(&mut self, pid: u32) -> Result<Vec<ThreadStack>, SourceError> {
        (**self).thread_stacks(pid)
    }
    fn resume(&mut self, pid: u32) -> Result<(), SourceError> {
        (**self).resume(pid)
    }
    fn pid_of_tid(&mut self, tid: u64) -> Option<u32> {
        (**self).pid_of_tid(tid)
    }
    fn moment(&mut self, pid: u32, tid: Option<u64>) -> Moment {
        (**self).moment(pid, tid)
    }
    fn captured(
        &mut self,
        pid: u32,
        tid: Option<u64>,
        tokens: &[String],
    ) -> Result<ThreadStack, SourceError> {
        (**self).captured(pid, tid, tokens)
    }
    fn native_symbol(&mut self, pid: u32, addr: u64) -> Option<NativeSymbol> {
        (**self).native_symbol(pid, addr)
    }
    fn native_source(&mut self, pid: u32, addr: u64) -> Vec<protocol::NativeSource> {
        (**self).native_source(pid, addr)
    }
    fn native_in_module(&mut self, pid: u32, module: &str, offset: u64) -> Option<NativeSymbol> {
        (**self).native_in_module(pid, module, offset)
    }
}
