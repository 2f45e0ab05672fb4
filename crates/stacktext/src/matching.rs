//! Which native frames are calls of CPython's eval loop, and which Python thread and frames
//! belong to them.

use protocol::{Frame, ThreadStack};

/// One C function that runs Python bytecode.
pub struct EvalFunction {
    pub name: &'static str,
    /// The name is a prefix (generated functions of the tail-call interpreter).
    pub prefix: bool,
    /// Indexes (in [`EVAL_FUNCTIONS`]) of the functions this one calls directly as a thin
    /// wrapper: when it sits right outside one of them, both are one eval call.
    pub wraps: &'static [usize],
}

/// All eval-loop functions, every CPython version. Compiler clones (`.cold`,
/// `.constprop.N`, `.lto_priv.N`, `.isra.N`) are matched by their base name.
pub const EVAL_FUNCTIONS: &[EvalFunction] = &[
    // 3.6+: the eval loop.
    EvalFunction {
        name: "_PyEval_EvalFrameDefault",
        prefix: false,
        wraps: &[1, 2],
    },
    // OmniOS debug builds: the loop renamed, with a `_PyEval_EvalFrameDefault` wrapper
    // around it for the ustack helper; the Real frame is the one to annotate.
    EvalFunction {
        name: "_PyEval_EvalFrameDefaultReal",
        prefix: false,
        wraps: &[],
    },
    // 3.14+ tail-calling interpreter: one function per instruction (`_TAIL_CALL_<OP>`,
    // `_TAIL_CALL_start_frame`, labels), called by `_PyEval_EvalFrameDefault`.
    EvalFunction {
        name: "_TAIL_CALL_",
        prefix: true,
        wraps: &[],
    },
    // The loop up to 3.5; a wrapper of `_PyEval_EvalFrameDefault` from 3.6.
    EvalFunction {
        name: "PyEval_EvalFrameEx",
        prefix: false,
        wraps: &[0],
    },
    // The loop in 2.4; a wrapper of the above later.
    EvalFunction {
        name: "PyEval_EvalFrame",
        prefix: false,
        wraps: &[0, 3],
    },
];

/// Inline helpers gdb shows between a wrapper and the loop; they do not break adjacency.
pub const TRANSPARENT: &[&str] = &["_PyEval_EvalFrame"];

/// The symbol without a compiler clone suffix (C names hold no `.`).
fn base_name(sym: &[u8]) -> &[u8] {
    match memchr::memchr(b'.', sym) {
        Some(p) => &sym[..p],
        None => sym,
    }
}

enum Kind {
    Eval(usize),
    Transparent,
    Other,
}

fn classify(sym: &[u8]) -> Kind {
    // Cheap rejection: every name of interest starts with `_P`, `_T` or `Py`.
    if sym.len() < 11 || !(sym[0] == b'_' || sym[0] == b'P') {
        return Kind::Other;
    }
    let base = base_name(sym);
    for (i, f) in EVAL_FUNCTIONS.iter().enumerate() {
        let hit = if f.prefix {
            base.starts_with(f.name.as_bytes())
        } else {
            base == f.name.as_bytes()
        };
        if hit {
            return Kind::Eval(i);
        }
    }
    if TRANSPARENT.iter().any(|t| base == t.as_bytes()) {
        Kind::Transparent
    } else {
        Kind::Other
    }
}

/// Whether `sym` names an eval-loop function.
pub fn is_eval_symbol(sym: &[u8]) -> bool {
    matches!(classify(sym), Kind::Eval(_))
}

/// Finds the eval calls in a stack given innermost first as `(id, symbol)`; pushes the id
/// of the frame to annotate for each call, innermost first.
pub fn eval_calls<'a, I: IntoIterator<Item = (usize, &'a [u8])>>(frames: I, out: &mut Vec<usize>) {
    // The previous eval function, while only transparent frames followed it.
    let mut last: Option<usize> = None;
    for (id, sym) in frames {
        match classify(sym) {
            Kind::Eval(i) => {
                let wrapper = last.is_some_and(|l| EVAL_FUNCTIONS[i].wraps.contains(&l));
                if !wrapper {
                    out.push(id);
                }
                last = Some(i);
            }
            Kind::Transparent => {}
            Kind::Other => last = None,
        }
    }
}

/// Where the Python frame groups of a thread (`groups` of them, one per C eval call,
/// innermost first) go in a native stack given innermost first as `(id, symbol)`: the id of
/// the eval frame of each group, innermost first, when the counts fit as annotate requires
/// (equal, or one more eval frame than groups: a call entering or leaving, whose outermost
/// eval frame stays without Python frames). `None` when they cannot be placed (no eval
/// frame named, as in stripped builds whose loop has no symbol).
pub fn place_groups<'a, I: IntoIterator<Item = (usize, &'a [u8])>>(
    frames: I,
    groups: usize,
) -> Option<Vec<usize>> {
    let mut evals = Vec::new();
    eval_calls(frames, &mut evals);
    if groups == 0 || !fits(groups, evals.len()) {
        return None;
    }
    evals.truncate(groups);
    Some(evals)
}

/// Why a stack was left unannotated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unmatched {
    NoPid,
    /// The record's lines name two different processes or threads (`pid=`/`tid=` lines of
    /// probes on two CPUs interleaved, or a key column disagreeing with such a line).
    Interleaved {
        what: &'static str,
        first: u64,
        second: u64,
    },
    /// The record holds two `pyframes=` captures (probes on two CPUs interleaved).
    TwoCaptures,
    /// The aggregation key before the stack has integer columns and `--keys` names none.
    UnnamedKeys(String),
    /// `--keys` names a different number of columns than the key line holds.
    KeyColumns {
        named: usize,
        found: String,
    },
    /// A key column `--keys` calls the pid or tid holds no such value.
    KeyValue {
        what: &'static str,
        value: i64,
    },
    /// The system says the keys' thread belongs to another process (or the pid is itself
    /// a thread of another process): the columns are not what `--keys` says.
    KeyOwner {
        id: u64,
        owner: u32,
        pid: u32,
    },
    Source(String),
    ThreadNotFound(u64),
    NoThreadFits {
        eval_calls: usize,
    },
    AmbiguousThread {
        candidates: usize,
    },
    Mismatch {
        eval_calls: usize,
        groups: usize,
    },
}

impl Unmatched {
    /// Short key for the summary's counts.
    pub fn kind(&self) -> &'static str {
        match self {
            Unmatched::NoPid => "no pid known",
            Unmatched::Interleaved { .. } => "record names two processes or threads",
            Unmatched::TwoCaptures => "record holds two captures",
            Unmatched::UnnamedKeys(_) => "aggregation key columns not named (--keys)",
            Unmatched::KeyColumns { .. } => "aggregation key columns do not fit --keys",
            Unmatched::KeyValue { .. } => "aggregation key column out of range",
            Unmatched::KeyOwner { .. } => "aggregation key columns are not pid and tid",
            Unmatched::Source(_) => "Python stacks unavailable",
            Unmatched::ThreadNotFound(_) => "thread not a Python thread",
            Unmatched::NoThreadFits { .. } => "no Python thread fits",
            Unmatched::AmbiguousThread { .. } => "several Python threads fit",
            Unmatched::Mismatch { .. } => "eval frames and Python frames disagree",
        }
    }
}

impl std::fmt::Display for Unmatched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unmatched::NoPid => write!(f, "no pid known (use --pid or print pid=N)"),
            Unmatched::TwoCaptures => write!(
                f,
                "the record holds two pyframes= captures (output of probes on several CPUs \
                 interleaved?): which one the stack belongs to is unknown"
            ),
            Unmatched::Interleaved {
                what,
                first,
                second,
            } => write!(
                f,
                "the record names {what} {first} and {what} {second} (output of probes on \
                 several CPUs interleaved?): which one the stack belongs to is unknown"
            ),
            Unmatched::UnnamedKeys(k) => write!(
                f,
                "no pid known: the aggregation key before the stack has integer columns ({k}); \
                 say which is the pid with --keys (e.g. --keys pid,tid for @[pid, tid, ustack()])"
            ),
            Unmatched::KeyColumns { named, found } => write!(
                f,
                "--keys names {named} columns but the aggregation key before the stack has \
                 these integers: {found}"
            ),
            Unmatched::KeyValue { what, value } => {
                write!(f, "key column {what} holds {value}, not a {what}")
            }
            Unmatched::KeyOwner { id, owner, pid } => write!(
                f,
                "the key names pid {pid}, but thread {id} belongs to process {owner}: \
                 are the --keys columns in the script's order?"
            ),
            Unmatched::Source(e) => write!(f, "Python stacks unavailable: {e}"),
            Unmatched::ThreadNotFound(t) => {
                write!(f, "thread {t} is not a Python thread of the process")
            }
            Unmatched::NoThreadFits { eval_calls } => {
                write!(
                    f,
                    "no Python thread has {eval_calls} (or one fewer) eval calls"
                )
            }
            Unmatched::AmbiguousThread { candidates } => {
                write!(f, "{candidates} Python threads fit and no tid is known")
            }
            Unmatched::Mismatch { eval_calls, groups } => {
                write!(
                    f,
                    "{eval_calls} eval frames but {groups} Python eval groups"
                )
            }
        }
    }
}

/// The Python frames of the matched thread, one group per eval call (innermost first).
#[derive(Debug)]
pub struct Matched<'a> {
    pub thread: &'a ThreadStack,
    pub groups: Vec<&'a [Frame]>,
    /// One more eval frame than groups (a call unwinding): the outermost stays unannotated.
    pub race: bool,
}

fn fits(groups: usize, calls: usize) -> bool {
    groups == calls || groups + 1 == calls
}

/// Picks the thread (by tid, else the only one, else the unique one whose group count fits)
/// and checks its groups against the `calls` eval calls of the native stack.
pub fn match_thread(
    threads: &[ThreadStack],
    tid: Option<u64>,
    calls: usize,
) -> Result<Matched<'_>, Unmatched> {
    let thread = if let Some(tid) = tid {
        // the host's tid first (perf, gdb, bpftrace on the host), then the one the
        // target's own PID namespace gives (tools run inside a container)
        threads
            .iter()
            .find(|t| t.os_tid == Some(tid))
            .or_else(|| threads.iter().find(|t| t.ns_tid == Some(tid)))
            .ok_or(Unmatched::ThreadNotFound(tid))?
    } else if threads.len() == 1 {
        &threads[0]
    } else {
        let mut found = threads
            .iter()
            .filter(|t| fits(t.eval_groups().len(), calls));
        match (found.next(), found.next()) {
            (Some(t), None) => t,
            (None, _) => return Err(Unmatched::NoThreadFits { eval_calls: calls }),
            (Some(_), Some(_)) => {
                let candidates = 2 + found.count();
                return Err(Unmatched::AmbiguousThread { candidates });
            }
        }
    };
    let groups = thread.eval_groups();
    if !fits(groups.len(), calls) {
        return Err(Unmatched::Mismatch {
            eval_calls: calls,
            groups: groups.len(),
        });
    }
    Ok(Matched {
        thread,
        race: groups.len() + 1 == calls,
        groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calls(syms: &[&str]) -> Vec<usize> {
        let mut v = Vec::new();
        eval_calls(
            syms.iter().enumerate().map(|(i, s)| (i, s.as_bytes())),
            &mut v,
        );
        v
    }

    #[test]
    fn groups_placed_on_eval_frames() {
        let syms = [
            "os_read",
            "_PyEval_EvalFrameDefault",
            "builtin_sorted",
            "_PyEval_EvalFrameDefault.cold",
            "main",
        ];
        let frames = || syms.iter().enumerate().map(|(i, s)| (i, s.as_bytes()));
        assert_eq!(place_groups(frames(), 2), Some(vec![1, 3]));
        // one eval frame more than groups: the outermost stays bare
        assert_eq!(place_groups(frames(), 1), Some(vec![1]));
        assert_eq!(place_groups(frames(), 3), None);
        assert_eq!(place_groups(frames(), 0), None);
        // stripped: no eval frame named
        assert_eq!(place_groups([(0, &b"??"[..])], 1), None);
    }

    #[test]
    fn wrappers_and_suffixes() {
        // OmniOS debug build: Real + wrapper are one call, annotated on Real.
        assert_eq!(
            calls(&[
                "os_rmdir",
                "_PyEval_EvalFrameDefaultReal",
                "_PyEval_EvalFrameDefault",
                "_PyEval_Vector"
            ]),
            vec![1]
        );
        assert_eq!(
            calls(&[
                "_PyEval_EvalFrameDefault.cold",
                "x",
                "_PyEval_EvalFrameDefault.constprop.0"
            ]),
            vec![0, 2]
        );
        // 3.6-3.10 wrapper, with gdb's inline helper between.
        assert_eq!(
            calls(&[
                "_PyEval_EvalFrameDefault",
                "_PyEval_EvalFrame",
                "PyEval_EvalFrameEx"
            ]),
            vec![0]
        );
        // `_PyEval_EvalFrame` alone is no eval call.
        assert_eq!(
            calls(&["_PyEval_EvalFrame", "_PyEval_Vector"]),
            Vec::<usize>::new()
        );
        assert_eq!(
            calls(&[
                "_TAIL_CALL_BINARY_OP",
                "_PyEval_EvalFrameDefault",
                "f",
                "_TAIL_CALL_CALL"
            ]),
            vec![0, 3]
        );
        assert_eq!(
            calls(&["PyEval_EvalFrame", "fast_function", "PyEval_EvalFrame"]),
            vec![0, 2]
        );
    }
}
