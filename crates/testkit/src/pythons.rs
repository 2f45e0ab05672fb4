//! Interpreters from `tests/pythons/list`, asked for by property.
//!
//! The list prints one tab-separated line per interpreter, `LABEL  X.Y  COMMAND`, and
//! `#SKIP  X.Y  reason` for builds it expected but did not find. Labels say what a build is:
//!
//! | label               | build                                                        |
//! |---------------------|--------------------------------------------------------------|
//! | `pyenv-3.X.Y`       | pyenv: shared libpython, with symbols (DWARF)                |
//! | `debian-3.X-ldso`   | Debian's static, stripped build, started through its ld.so   |
//! | `debian-3.X-direct` | the same binary started directly                             |
//! | `fp-3.X.Y`          | test-only build with frame pointers: shared, with symbols    |
//! | `host-3.X`          | the host's `/usr/bin/python3.X` (Debian: static, stripped)   |
//!
//! Builds outside 3.8..3.15 (old pyenv builds, offered to check that pystackd refuses them)
//! are listed too; only [`Want::unsupported`] finds them.

use std::collections::HashMap;
use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

use crate::Skip;

/// The oldest and newest CPython pystackd supports.
pub const SUPPORTED: ((u8, u8), (u8, u8)) = ((3, 8), (3, 15));

/// Where a build comes from (the label's first word), which fixes what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Build {
    /// pyenv: shared libpython, symbols.
    Pyenv,
    /// Debian's packages laid out by `tests/pythons/provision`: static, stripped.
    Debian(Launch),
    /// `tests/pythons/build-cpython fp`: frame pointers, shared libpython, symbols.
    FramePointers,
    /// The host's `/usr/bin/python3.X` (static, stripped on Debian).
    Host,
    /// `tests/pythons/build-cpython ft`: free-threaded (`--disable-gil`), shared, symbols;
    /// not read by pystackd yet, so never among the supported interpreters.
    FreeThreaded,
    /// A label the kit does not know: no property is assumed.
    Other,
}

/// How a Debian build is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Launch {
    /// Through its own `ld.so` (`/proc/PID/exe` is the loader).
    Ldso,
    /// Directly.
    Direct,
}

/// One interpreter from `tests/pythons/list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interpreter {
    /// e.g. `pyenv-3.10.13`, `debian-3.13-ldso`, `debian-3.13-direct`, `fp-3.12.6`, `host-3.11`.
    pub label: String,
    /// (major, minor) as the interpreter reports it.
    pub version: (u8, u8),
    /// What to execute (a Debian `-ldso`/`-direct` command is a shell script that `exec`s,
    /// so the spawned pid is the interpreter's).
    pub command: PathBuf,
    pub build: Build,
}

impl Interpreter {
    fn from_line(label: &str, xy: &str, command: &str) -> Option<Interpreter> {
        let version = parse_xy(xy)?;
        let build = match label.split('-').next() {
            Some("pyenv") => Build::Pyenv,
            Some("fp") => Build::FramePointers,
            Some("ft") => Build::FreeThreaded,
            Some("host") => Build::Host,
            Some("debian") if label.ends_with("-direct") => Build::Debian(Launch::Direct),
            Some("debian") => Build::Debian(Launch::Ldso),
            _ => Build::Other,
        };
        Some(Interpreter {
            label: label.to_string(),
            version,
            command: PathBuf::from(command),
            build,
        })
    }

    /// `"3.12"`.
    pub fn xy(&self) -> String {
        format!("{}.{}", self.version.0, self.version.1)
    }

    /// Within 3.8..3.15, and a GIL build (free-threaded builds are read except by `trace`
    /// and `probe`: tests that cover them ask for [`all_with_free_threaded`]).
    pub fn supported(&self) -> bool {
        self.version >= SUPPORTED.0 && self.version <= SUPPORTED.1 && !self.free_threaded()
    }

    /// A free-threaded build (`python3.13t`).
    pub fn free_threaded(&self) -> bool {
        self.build == Build::FreeThreaded
    }

    /// libpython is a shared library (else the runtime is in the executable).
    pub fn shared(&self) -> bool {
        matches!(self.build, Build::Pyenv | Build::FramePointers)
    }

    /// Symbols and DWARF (gdb names the eval loop; layouts can be checked against it).
    pub fn symbols(&self) -> bool {
        matches!(self.build, Build::Pyenv | Build::FramePointers)
    }

    /// Static and stripped (Debian's builds, the host's).
    pub fn stripped(&self) -> bool {
        matches!(self.build, Build::Debian(_) | Build::Host)
    }

    /// Built with frame pointers (native unwinders that follow them see the whole stack).
    pub fn frame_pointers(&self) -> bool {
        self.build == Build::FramePointers
    }

    /// Another run of a build already listed under its `-ldso` twin.
    pub fn is_twin(&self) -> bool {
        self.build == Build::Debian(Launch::Direct)
    }

    /// Whether any user may run it: the command and every directory above it are
    /// world-searchable (pyenv's builds under a 0700 /root are not).
    pub fn usable_by_others(&self) -> bool {
        let Ok(path) = self.command.canonicalize() else {
            return false;
        };
        let mode = |p: &Path| std::fs::metadata(p).map(|m| m.permissions().mode()).ok();
        if mode(&path).is_none_or(|m| m & 0o005 != 0o005) {
            return false;
        }
        path.ancestors()
            .skip(1)
            .all(|d| mode(d).is_some_and(|m| m & 0o001 != 0))
    }

    /// `platform.python_version()` of the interpreter, e.g. `3.12.1` (run once per
    /// interpreter and test process).
    pub fn full_version(&self) -> String {
        static CACHE: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        if let Some(v) = cache.lock().unwrap().get(&self.label) {
            return v.clone();
        }
        let out = Command::new(&self.command)
            .args([
                "-I",
                "-S",
                "-c",
                "import platform; print(platform.python_version())",
            ])
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", self.label));
        let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            out.status.success() && !v.is_empty(),
            "{}: no version",
            self.label
        );
        cache.lock().unwrap().insert(self.label.clone(), v.clone());
        v
    }

    /// The ELF file holding the interpreter's runtime (`.PyRuntime`, the eval loop):
    /// libpython for a shared build, else the executable. Asked of the running interpreter
    /// (its own `/proc/self/maps`), once per interpreter and test process.
    pub fn runtime_elf(&self) -> Result<PathBuf, String> {
        static CACHE: OnceLock<Mutex<HashMap<String, Result<PathBuf, String>>>> = OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        if let Some(r) = cache.lock().unwrap().get(&self.label) {
            return r.clone();
        }
        const SCRIPT: &str = "import sys\n\
v = '%d.%d' % sys.version_info[:2]\n\
paths = [l.split(None, 5)[5].strip() for l in open('/proc/self/maps') if len(l.split(None, 5)) == 6]\n\
lib = [p for p in paths if '/libpython' + v in p]\n\
exe = [p for p in paths if p.rsplit('/', 1)[-1] == 'python' + v]\n\
print((lib or exe or [''])[0])\n";
        let r = Command::new(&self.command)
            .args(["-I", "-S", "-c", SCRIPT])
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("{}: {e}", self.label))
            .and_then(|o| {
                let p = String::from_utf8_lossy(&o.stdout).trim().to_string();
                if o.status.success() && !p.is_empty() {
                    Ok(PathBuf::from(p))
                } else {
                    Err(format!(
                        "{}: no runtime ELF found ({})",
                        self.label, o.status
                    ))
                }
            });
        cache.lock().unwrap().insert(self.label.clone(), r.clone());
        r
    }
}

impl fmt::Display for Interpreter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label)
    }
}

fn parse_xy(s: &str) -> Option<(u8, u8)> {
    let (a, b) = s.split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// What `tests/pythons/list` printed: interpreters and `#SKIP` reasons.
#[derive(Debug, Clone, Default)]
pub struct List {
    pub interpreters: Vec<Interpreter>,
    /// `#SKIP` lines (`X.Y reason`) and lines the kit could not parse.
    pub skips: Vec<String>,
}

/// Parses `tests/pythons/list` output.
pub fn parse_list(text: &str) -> List {
    let mut list = List::default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.splitn(3, '\t').collect();
        if fields[0] == "#SKIP" {
            list.skips.push(fields[1..].join(" "));
            continue;
        }
        match fields.as_slice() {
            [label, xy, cmd] => match Interpreter::from_line(label, xy, cmd) {
                Some(i) => list.interpreters.push(i),
                None => list
                    .skips
                    .push(format!("unparsable line from tests/pythons/list: {line:?}")),
            },
            _ => list
                .skips
                .push(format!("unparsable line from tests/pythons/list: {line:?}")),
        }
    }
    list
}

/// `tests/pythons/list`, run once per test process; its `#SKIP` lines printed once.
pub fn list() -> &'static List {
    static LIST: OnceLock<List> = OnceLock::new();
    LIST.get_or_init(|| {
        let script = crate::workspace_root().join("tests/pythons/list");
        let out = Command::new("bash")
            .arg(&script)
            .stderr(Stdio::inherit())
            .output();
        let list = match out {
            Ok(o) if o.status.success() => parse_list(&String::from_utf8_lossy(&o.stdout)),
            Ok(o) => List {
                interpreters: Vec::new(),
                skips: vec![format!("{} failed ({})", script.display(), o.status)],
            },
            Err(e) => List {
                interpreters: Vec::new(),
                skips: vec![format!("cannot run {}: {e}", script.display())],
            },
        };
        for s in &list.skips {
            eprintln!("SKIP (tests/pythons/list): {s}");
        }
        list
    })
}

/// Every supported interpreter (3.8..3.15), in the list's order, or a [`Skip`] when there is
/// none. Under `PYSTACKD_STRICT=1` fails when the list reported missing builds: a test of
/// "every interpreter" covers them all or fails.
pub fn all() -> Result<Vec<Interpreter>, Skip> {
    let list = list();
    if crate::strict() && !list.skips.is_empty() {
        panic!(
            "PYSTACKD_STRICT=1: tests/pythons/list misses builds:\n  {}",
            list.skips.join("\n  ")
        );
    }
    let v: Vec<Interpreter> = list
        .interpreters
        .iter()
        .filter(|i| i.supported())
        .cloned()
        .collect();
    if v.is_empty() {
        return Err(Skip::new("tests/pythons/list found no interpreter"));
    }
    Ok(v)
}

/// [`all`] without the `-direct` twins of Debian builds (same binary, started differently).
pub fn distinct_builds() -> Result<Vec<Interpreter>, Skip> {
    Ok(all()?.into_iter().filter(|i| !i.is_twin()).collect())
}

/// [`all`] and the free-threaded builds (3.13t), for tests of what pystackd reads on
/// those too (stacks, `--locals`, thread names); `trace` and `probe` refuse them, so
/// [`all`] leaves them out. No free-threaded build in the list is a printed skip of that
/// part (a failure under PYSTACKD_STRICT=1).
pub fn all_with_free_threaded() -> Result<Vec<Interpreter>, Skip> {
    let mut v = all()?;
    let ft = matching(&Want::any().free_threaded());
    if ft.is_empty() {
        Skip::new(
            "no free-threaded build in tests/pythons/list (run tests/pythons/build-cpython ft)",
        )
        .report();
    }
    v.extend(ft);
    Ok(v)
}

/// Every listed interpreter that fits `want`, in the list's order (not strict-checked: an
/// empty answer is the caller's to judge; see [`python`]).
pub fn matching(want: &Want) -> Vec<Interpreter> {
    list()
        .interpreters
        .iter()
        .filter(|i| want.fits(i))
        .cloned()
        .collect()
}

/// The first interpreter that fits `want` (the list's order: pyenv, Debian, frame pointers,
/// host), or a [`Skip`] saying what was asked for.
pub fn python(want: &Want) -> Result<Interpreter, Skip> {
    matching(want)
        .into_iter()
        .next()
        .ok_or_else(|| Skip(format!("no interpreter in tests/pythons/list is {want}")))
}

/// Every interpreter that fits `want`, or a [`Skip`] when none does. Under
/// `PYSTACKD_STRICT=1` fails when the list reported a missing build of a version `want`
/// covers: a test of "every build that fits" covers them all or fails.
pub fn pythons(want: &Want) -> Result<Vec<Interpreter>, Skip> {
    if crate::strict() {
        let missed: Vec<&String> = list()
            .skips
            .iter()
            .filter(|s| {
                s.split_whitespace()
                    .next()
                    .and_then(parse_xy)
                    .is_none_or(|v| want.covers_version(v))
            })
            .collect();
        if !missed.is_empty() {
            panic!(
                "PYSTACKD_STRICT=1: tests/pythons/list misses builds {want} asks for:\n  {}",
                missed
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join("\n  ")
            );
        }
    }
    let v = matching(want);
    if v.is_empty() {
        Err(Skip(format!(
            "no interpreter in tests/pythons/list is {want}"
        )))
    } else {
        Ok(v)
    }
}

/// A description of the interpreter a test needs. Everything unset is "any".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Want {
    min: Option<(u8, u8)>,
    max: Option<(u8, u8)>,
    shared: Option<bool>,
    symbols: Option<bool>,
    frame_pointers: Option<bool>,
    build: Option<BuildKind>,
    launch: Option<Launch>,
    usable_by_others: Option<bool>,
    unsupported: bool,
    free_threaded: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BuildKind {
    Pyenv,
    Debian,
    Host,
}

fn xy(s: &str) -> (u8, u8) {
    parse_xy(s).unwrap_or_else(|| panic!("not an X.Y version: {s:?}"))
}

impl Want {
    /// Any supported interpreter.
    pub fn any() -> Want {
        Want::default()
    }
    /// Exactly `X.Y`, e.g. `Want::version("3.10")`.
    pub fn version(v: &str) -> Want {
        Want::any().min(v).max(v)
    }
    /// `X.Y` or newer.
    pub fn at_least(v: &str) -> Want {
        Want::any().min(v)
    }
    /// `X.Y` or older.
    pub fn at_most(v: &str) -> Want {
        Want::any().max(v)
    }
    pub fn min(mut self, v: &str) -> Want {
        self.min = Some(xy(v));
        self
    }
    pub fn max(mut self, v: &str) -> Want {
        self.max = Some(xy(v));
        self
    }
    /// libpython is a shared library.
    pub fn shared(mut self) -> Want {
        self.shared = Some(true);
        self
    }
    /// The runtime is linked into the executable.
    pub fn static_build(mut self) -> Want {
        self.shared = Some(false);
        self
    }
    /// With symbols and DWARF.
    pub fn symbols(mut self) -> Want {
        self.symbols = Some(true);
        self
    }
    /// Without symbols.
    pub fn stripped(mut self) -> Want {
        self.symbols = Some(false);
        self
    }
    pub fn frame_pointers(mut self) -> Want {
        self.frame_pointers = Some(true);
        self
    }
    pub fn no_frame_pointers(mut self) -> Want {
        self.frame_pointers = Some(false);
        self
    }
    /// A pyenv build.
    pub fn pyenv(mut self) -> Want {
        self.build = Some(BuildKind::Pyenv);
        self
    }
    /// One of Debian's builds laid out by `tests/pythons/provision`.
    pub fn debian(mut self) -> Want {
        self.build = Some(BuildKind::Debian);
        self
    }
    /// The host's own `/usr/bin/python3.X`.
    pub fn host(mut self) -> Want {
        self.build = Some(BuildKind::Host);
        self
    }
    /// Started directly (a Debian build's `-direct` run; every non-Debian build).
    pub fn direct(mut self) -> Want {
        self.launch = Some(Launch::Direct);
        self
    }
    /// A Debian build started through its own `ld.so`.
    pub fn through_ldso(mut self) -> Want {
        self.launch = Some(Launch::Ldso);
        self
    }
    /// Any user may run it (see [`Interpreter::usable_by_others`]).
    pub fn usable_by_others(mut self) -> Want {
        self.usable_by_others = Some(true);
        self
    }
    /// Some directory above it is not searchable by other users (pyenv's under a 0700 /root):
    /// a daemon running as another uid needs CAP_DAC_READ_SEARCH to open it.
    pub fn hidden_from_others(mut self) -> Want {
        self.usable_by_others = Some(false);
        self
    }
    /// A free-threaded build (read in part, see [`all_with_free_threaded`]; without this,
    /// none is ever given).
    pub fn free_threaded(mut self) -> Want {
        self.free_threaded = true;
        self.unsupported = true;
        self
    }

    /// Outside 3.8..3.15 (and no other version bound unless given).
    pub fn unsupported(mut self) -> Want {
        self.unsupported = true;
        self
    }

    /// Whether the version bounds admit `v`.
    pub fn covers_version(&self, v: (u8, u8)) -> bool {
        let supported = v >= SUPPORTED.0 && v <= SUPPORTED.1;
        supported != self.unsupported
            && self.min.is_none_or(|m| v >= m)
            && self.max.is_none_or(|m| v <= m)
    }

    /// Whether `i` is what is wanted.
    pub fn fits(&self, i: &Interpreter) -> bool {
        let launch = match i.build {
            Build::Debian(l) => l,
            _ => Launch::Direct,
        };
        i.supported() != self.unsupported
            && i.free_threaded() == self.free_threaded
            && self.min.is_none_or(|v| i.version >= v)
            && self.max.is_none_or(|v| i.version <= v)
            && self.shared.is_none_or(|s| i.shared() == s)
            && self.symbols.is_none_or(|s| i.symbols() == s)
            && self.frame_pointers.is_none_or(|s| i.frame_pointers() == s)
            && self.build.is_none_or(|b| match b {
                BuildKind::Pyenv => i.build == Build::Pyenv,
                BuildKind::Debian => matches!(i.build, Build::Debian(_)),
                BuildKind::Host => i.build == Build::Host,
            })
            && self.launch.is_none_or(|l| l == launch)
            && self
                .usable_by_others
                .is_none_or(|u| i.usable_by_others() == u)
    }
}

impl fmt::Display for Want {
    /// `3.12, shared, with symbols`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = |(a, b): (u8, u8)| format!("{a}.{b}");
        let mut parts = Vec::new();
        match (self.min, self.max) {
            (Some(a), Some(b)) if a == b => parts.push(v(a)),
            (Some(a), Some(b)) => parts.push(format!("{} to {}", v(a), v(b))),
            (Some(a), None) => parts.push(format!("{}+", v(a))),
            (None, Some(b)) => parts.push(format!("{} or older", v(b))),
            (None, None) if self.free_threaded => parts.push("a free-threaded build".into()),
            (None, None) if self.unsupported => parts.push("an unsupported version".into()),
            (None, None) => parts.push("any version".into()),
        }
        if let Some(b) = self.build {
            parts.push(
                match b {
                    BuildKind::Pyenv => "a pyenv build",
                    BuildKind::Debian => "a Debian build",
                    BuildKind::Host => "the host's",
                }
                .into(),
            );
        }
        match self.shared {
            Some(true) => parts.push("shared".into()),
            Some(false) => parts.push("static".into()),
            None => {}
        }
        match self.symbols {
            Some(true) => parts.push("with symbols".into()),
            Some(false) => parts.push("stripped".into()),
            None => {}
        }
        match self.frame_pointers {
            Some(true) => parts.push("with frame pointers".into()),
            Some(false) => parts.push("without frame pointers".into()),
            None => {}
        }
        match self.launch {
            Some(Launch::Direct) => parts.push("started directly".into()),
            Some(Launch::Ldso) => parts.push("started through its ld.so".into()),
            None => {}
        }
        match self.usable_by_others {
            Some(true) => parts.push("usable by any user".into()),
            Some(false) => parts.push("hidden from other users".into()),
            None => {}
        }
        f.write_str(&parts.join(", "))
    }
}

/// Where Debian's debug files for the layout checks are (`get-pythons` with `WITH_DBG=1`):
/// `$PYSTACKD_DBG_ROOT`, else `~/.cache/pystackd/pydbg` (where `tests/run` puts them).
pub fn debug_info_root() -> PathBuf {
    if let Some(p) = std::env::var_os("PYSTACKD_DBG_ROOT") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".cache/pystackd/pydbg")
}

/// The interpreter benchmarks run their targets under: `$PYSTACKD_BENCH_PYTHON` (a label
/// or command of the list), else the first of "3.12, 3.11, 3.10 from pyenv" (shared, with symbols, no
/// frame pointers: the builds docs/benchmarks.md was measured with).
pub fn bench_python() -> Option<Interpreter> {
    if let Ok(want) = std::env::var("PYSTACKD_BENCH_PYTHON") {
        // a label, or the command of one of the list's lines
        let found = list()
            .interpreters
            .iter()
            .find(|i| i.label == want || i.command == Path::new(&want))
            .cloned();
        if found.is_none() {
            eprintln!("PYSTACKD_BENCH_PYTHON={want}: not a label or command of tests/pythons/list");
        }
        return found;
    }
    ["3.12", "3.11", "3.10"]
        .iter()
        .find_map(|v| python(&Want::version(v).pyenv()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "pyenv-3.7.16\t3.7\t/p/3.7.16/bin/python3.7\n\
pyenv-3.12.1\t3.12\t/p/3.12.1/bin/python3.12\n\
debian-3.14-ldso\t3.14\t/d/bin/python3.14\n\
debian-3.14-direct\t3.14\t/d/bin/python3.14-direct\n\
fp-3.12.6\t3.12\t/d/fp/bin/python3.12\n\
host-3.11\t3.11\t/usr/bin/python3.11\n\
#SKIP\t3.13\tpyenv: no 3.13.* build in /p/versions\n\
garbage\n";

    #[test]
    fn parses_labels_into_properties() {
        let l = parse_list(SAMPLE);
        assert_eq!(l.interpreters.len(), 6);
        assert_eq!(l.skips.len(), 2, "{:?}", l.skips);
        assert!(l.skips[0].starts_with("3.13 pyenv: no 3.13"));
        let by = |label: &str| l.interpreters.iter().find(|i| i.label == label).unwrap();
        assert_eq!(by("pyenv-3.12.1").build, Build::Pyenv);
        assert!(by("pyenv-3.12.1").shared() && by("pyenv-3.12.1").symbols());
        assert_eq!(
            by("debian-3.14-direct").build,
            Build::Debian(Launch::Direct)
        );
        assert!(by("debian-3.14-direct").is_twin() && by("debian-3.14-ldso").stripped());
        assert!(by("fp-3.12.6").frame_pointers() && by("fp-3.12.6").shared());
        assert!(!by("pyenv-3.7.16").supported());
    }

    #[test]
    fn wants_select_by_property() {
        let l = parse_list(SAMPLE);
        let pick = |w: Want| -> Vec<&str> {
            l.interpreters
                .iter()
                .filter(|i| w.fits(i))
                .map(|i| i.label.as_str())
                .collect()
        };
        assert_eq!(
            pick(Want::version("3.12").shared().symbols()),
            ["pyenv-3.12.1", "fp-3.12.6"]
        );
        assert_eq!(pick(Want::any().frame_pointers()), ["fp-3.12.6"]);
        assert_eq!(
            pick(Want::version("3.14").static_build().direct()),
            ["debian-3.14-direct"]
        );
        assert_eq!(
            pick(Want::at_least("3.12").stripped()),
            ["debian-3.14-ldso", "debian-3.14-direct"]
        );
        assert_eq!(pick(Want::any().unsupported()), ["pyenv-3.7.16"]);
        assert_eq!(pick(Want::at_most("3.11").host()), ["host-3.11"]);
        assert_eq!(
            Want::version("3.12").shared().symbols().to_string(),
            "3.12, shared, with symbols"
        );
    }
}
