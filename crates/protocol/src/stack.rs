use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Every thread's Python stack of one process, as `pystackd stack --json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessStack {
    pub pid: u32,
    /// Full interpreter version, e.g. `3.10.13`.
    pub python_version: String,
    /// Path of the object holding the interpreter (executable or libpython).
    pub python_binary: String,
    /// The PID namespace the process is in (the inode number of `/proc/PID/ns/pid`), only
    /// when it is not the reader's own (a container seen from the host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_ns: Option<u64>,
    /// The process's pid inside that namespace (set with `pid_ns`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ns_pid: Option<u64>,
    pub threads: Vec<ThreadStack>,
    /// Non-fatal observations (e.g. debug offsets disagreeing with the built-in table).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// One Python thread.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadStack {
    /// Interpreter id (0 for the main interpreter).
    pub interpreter_id: i64,
    /// `PyThreadState.thread_id`: `pthread_self()` of the thread (on illumos the LWP id).
    pub thread_id: u64,
    /// Kernel thread id (Linux LWP / illumos LWP id), what DTrace, bpftrace and perf call `tid`,
    /// as the reader's PID namespace numbers it (the host's, for a target in a container).
    pub os_tid: Option<u64>,
    /// With `os_tid` null: why the OS thread is not known (a subinterpreter's thread state
    /// that any thread may run, 3.8-3.12).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_tid_unknown: Option<String>,
    /// The thread id in the target's own PID namespace (what the application itself sees,
    /// `threading.get_native_id()`), only when it differs from `os_tid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ns_tid: Option<u64>,
    /// The thread's name to show: the `threading` module's name of the thread
    /// (`threading.Thread(name=...)`, `MainThread`) when it has one that could be read,
    /// else the OS's name ([`ThreadStack::os_name`]).
    pub name: Option<String>,
    /// Thread name as the OS reports it (`/proc/PID/task/TID/comm`, illumos `lwpname`),
    /// when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_name: Option<String>,
    /// Whether this thread holds the GIL; `None` when it could not be read consistently
    /// ([`ThreadState::gil_unknown`] says why).
    pub holds_gil: Option<bool>,
    /// What the thread is doing in the OS (running, blocked in a system call, waiting for
    /// the GIL) at the moment of the read (docs/json.md "Thread state").
    #[serde(flatten)]
    pub state: ThreadState,
    /// Frames, innermost first.
    pub frames: Vec<Frame>,
}

/// One Python frame. Strings are shared with the reader's code-object cache, so a
/// warm read allocates nothing per frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// `co_name`.
    pub function: Arc<str>,
    /// `co_qualname` (3.11+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qualname: Option<Arc<str>>,
    /// `co_filename` as the code object holds it (may be relative or `<string>`).
    pub filename: Arc<str>,
    /// Line being executed; `None` where the line table says the instruction has no line.
    pub line: Option<u32>,
    /// `co_firstlineno`.
    pub first_line: u32,
    /// True for the outermost frame run by one C call of the eval loop: the frames from
    /// the previous entry frame (exclusive) to this one (inclusive) belong to one
    /// `_PyEval_EvalFrameDefault` frame of the native stack. Always true up to 3.10.
    pub entry: bool,
    /// The frame's arguments and local variables (`stack --locals`), in the code object's
    /// order; absent when not asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locals: Option<Vec<Local>>,
}

/// One argument or local variable of a frame, its value shown as Python's `repr()` would,
/// within limits (docs/json.md "Locals").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Local {
    pub name: String,
    pub kind: LocalKind,
    /// The value's type name (`tp_name`, e.g. `int`, `dict`, `Point`); empty when the value
    /// could not be read.
    #[serde(rename = "type")]
    pub type_name: String,
    pub repr: String,
    /// True when the limits cut the repr short (marked with `…` where they did).
    pub truncated: bool,
    /// Set when the value shows a mutable container's items (`list`, `dict`, `set`, or a
    /// `tuple`/`frozenset` holding one) read while some thread held the GIL and was not
    /// blocked: that thread may have been inside one C-level update of it
    /// (docs/json.md "Changing values").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mid_update: Option<MidUpdate>,
}

/// Why a value may be half updated (see [`Local::mid_update`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MidUpdate {
    /// The OS thread id (`os_tid`) of the thread that held the GIL, when known.
    pub thread: Option<u64>,
    /// The reason in words, as text output shows it.
    pub reason: String,
}

/// What one thread was doing at the moment of a read, as the OS and the interpreter tell
/// it. Every field is absent where it was not read (a stack built from a trace).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<RunState>,
    /// The system call the thread is in (Linux: `/proc/PID/task/TID/syscall`, illumos:
    /// `pr_syscall`), by name where the number is known, else `syscall_N`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syscall: Option<String>,
    /// The kernel function the thread sleeps in (Linux `wchan`, illumos none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wchan: Option<String>,
    /// With `state` `unknown`: why the state could not be read consistently.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_unknown: Option<String>,
    /// With `holds_gil` null: why the GIL could not be read consistently.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gil_unknown: Option<String>,
}

/// A thread's scheduling state (docs/json.md "Thread state").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// On a CPU, or (Linux, which does not tell them apart) ready to run.
    Running,
    /// Ready to run, waiting for a CPU (illumos `SRUN`).
    Runnable,
    /// Asleep in the kernel (a system call, a page fault).
    Blocked,
    /// Asleep in the kernel on the GIL's own mutex or condition variable.
    WaitingForGil,
    /// Stopped by a signal or a debugger (not by this read).
    Stopped,
    /// Not read consistently: [`ThreadState::state_unknown`] says why.
    Unknown,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Runnable => "runnable",
            RunState::Blocked => "blocked",
            RunState::WaitingForGil => "waiting for the GIL",
            RunState::Stopped => "stopped",
            RunState::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LocalKind {
    /// A parameter of the function (including `*args`, `**kwargs`, keyword-only ones).
    Arg,
    Local,
    /// A local variable that an inner function captures (read through its cell).
    Cell,
    /// A variable of an enclosing function this one uses (read through its cell).
    Free,
}

impl LocalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LocalKind::Arg => "arg",
            LocalKind::Local => "local",
            LocalKind::Cell => "cell",
            LocalKind::Free => "free",
        }
    }
}

impl ThreadStack {
    /// The frames grouped by the C eval call that runs them, innermost group first.
    pub fn eval_groups(&self) -> Vec<&[Frame]> {
        let mut groups = Vec::new();
        let mut start = 0;
        for (i, f) in self.frames.iter().enumerate() {
            if f.entry {
                groups.push(&self.frames[start..=i]);
                start = i + 1;
            }
        }
        if start < self.frames.len() {
            groups.push(&self.frames[start..]);
        }
        groups
    }
}

/// A name as text output prints it: control characters (a newline in a file name would split
/// the frame line) as `\n`, `\t`, `\r`, `\\`-escaped hex otherwise; JSON carries the raw string.
pub fn escape_control(s: &str) -> std::borrow::Cow<'_, str> {
    // fast path on bytes: C0 controls and DEL are single bytes, C1 controls (U+0080..U+009F)
    // are 0xC2 0x80..0x9F in UTF-8
    let b = s.as_bytes();
    // a plain scan first, the pair check only where a 0xC2 lead byte is; the scan folds
    // each 16-byte piece without an early exit, so that it vectorizes (every frame's names
    // go through here: 2.5 times faster than `any` on file names)
    let has_control = b.chunks(16).any(|piece| {
        piece.iter().fold(false, |hit, &c| {
            hit | (c < 0x20) | (c == 0x7f) | (c == 0xc2)
        })
    }) && b.iter().enumerate().any(|(i, &c)| {
        c < 0x20 || c == 0x7f || (c == 0xc2 && matches!(b.get(i + 1), Some(0x80..=0x9f)))
    });
    if !has_control {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\x{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod escape_tests {
    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(super::escape_control("a.py"), "a.py");
        assert_eq!(
            super::escape_control("a\nb\t\u{1b}.py"),
            "a\\nb\\t\\x{1b}.py"
        );
        assert_eq!(super::escape_control("módulo_ñ.py"), "módulo_ñ.py");
        assert_eq!(super::escape_control("a\u{85}b"), "a\\x{85}b");
    }
}
