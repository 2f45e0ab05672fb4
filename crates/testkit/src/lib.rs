//! pystackd's test kit: what every integration test and benchmark of the workspace uses to
//! find interpreters, start targets, run the daemon, create users and skip.
//!
//! A dev-dependency (`publish = false`) of `symd`, `pyframe-reader` and `stacktext`.
//!
//! # Interpreters, by property
//!
//! Every interpreter comes from `tests/pythons/list` (run once per test process; its
//! `#SKIP` lines are printed). A test asks for what it needs, never for a label or a patch
//! version:
//!
//! ```no_run
//! use testkit::{require, Want};
//! # fn t() {
//! // "3.12, shared libpython, with symbols" (a pyenv-style build that gdb can name)
//! let py = require!(testkit::python(&Want::version("3.12").shared().symbols()));
//! let target = testkit::Target::spawn(&py, "nested_eval.py", &[]);
//! # }
//! ```
//!
//! [`Want`] knows the version (`version("3.10")`, `at_least("3.12")`, `at_most("3.10")`),
//! the build (`shared()`, `static_build()`, `symbols()`, `stripped()`, `frame_pointers()`,
//! `no_frame_pointers()`, `pyenv()`, `debian()`, `host()`), how a Debian build is started
//! (`direct()`, `through_ldso()`) and whether any user may run it (`usable_by_others()`).
//! [`pythons::all`] is every supported interpreter (3.8 to 3.15), [`pythons::matching`]
//! every one that fits, [`pythons::distinct_builds`] every build once (a Debian build's
//! `-direct` twin left out).
//!
//! # Skips and `PYSTACKD_STRICT=1`
//!
//! A test that lacks a prerequisite (an interpreter, gdb, bpftrace, perf, root, ...) ends
//! through [`skip!`] or [`require!`]: it prints `SKIP: reason` and returns; with
//! `PYSTACKD_STRICT=1` (set by CI) it fails instead, so a green strict run has tested
//! everything. Under strict mode, [`pythons::all`] also fails when `tests/pythons/list`
//! reported a `#SKIP` line (an expected build is missing).
//!
//! Some skips are facts about a build, not missing prerequisites (bpftrace's `ustack` stops
//! early without frame pointers; gdb cannot name the eval loop of a stripped build): those
//! go through [`skip_case`], which prints `SKIP (case): reason` in every mode.
//!
//! # The rest
//!
//! * [`Target`]: a program of `tests/targets/` started under an interpreter (optionally as
//!   another user), with the ground truth it wrote about itself ([`GroundTruth`]).
//! * [`daemon`]: a real `pystackd serve` on a temporary socket and raw JSON-RPC connections.
//! * [`TestUser`]: a system user created with `useradd` for one test, deleted on drop;
//!   [`RunAs`] runs a program as a uid/gid through `setpriv`.
//! * [`tools`]: gdb captures, gdb's text rewritten into DTrace's layout, `pystackd annotate`.
#![allow(clippy::new_without_default)]

pub mod daemon;
pub mod pythons;
pub mod target;
pub mod tools;
pub mod user;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

pub use pythons::{python, Interpreter, Want};
pub use target::{
    spawn_ready, FrameTruth, GroundTruth, LocalTruth, SelfCheck, Target, ThreadTruth,
};
pub use user::{RunAs, TestUser};

/// Whether `PYSTACKD_STRICT=1`: a missing prerequisite fails the test instead of skipping it.
pub fn strict() -> bool {
    std::env::var("PYSTACKD_STRICT").is_ok_and(|v| v == "1")
}

/// A missing prerequisite: an interpreter, a tool, root, a kernel feature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip(pub String);

impl Skip {
    pub fn new(reason: impl Into<String>) -> Skip {
        Skip(reason.into())
    }

    /// Prints `SKIP: reason`; under `PYSTACKD_STRICT=1` panics instead (the test fails).
    pub fn report(&self) {
        if strict() {
            panic!("PYSTACKD_STRICT=1: missing prerequisite: {}", self.0);
        }
        eprintln!("SKIP: {}", self.0);
    }
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for Skip {
    fn from(s: String) -> Skip {
        Skip(s)
    }
}

impl From<&str> for Skip {
    fn from(s: &str) -> Skip {
        Skip(s.to_string())
    }
}

/// Ends the calling function for a missing prerequisite: prints `SKIP: reason` and returns
/// `Default::default()`; under `PYSTACKD_STRICT=1` fails the test instead.
///
/// `skip!("gdb not installed")`, `skip!("{} absent", path.display())`.
#[macro_export]
macro_rules! skip {
    ($($arg:tt)+) => {{
        $crate::Skip::new(format!($($arg)+)).report();
        #[allow(unreachable_code)]
        return Default::default();
    }};
}

/// The value of a `Result<T, Skip>` (or of any error that converts into a [`Skip`]), else
/// [`skip!`] with its reason.
///
/// `let py = require!(testkit::python(&Want::version("3.10")));`,
/// `require!(testkit::tool("gdb"));`, `require!(testkit::root("to switch users"));`.
#[macro_export]
macro_rules! require {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => {
                $crate::Skip::from(e).report();
                #[allow(unreachable_code)]
                return Default::default();
            }
        }
    };
}

/// A case not covered because of a fact about a build (not a missing prerequisite): printed
/// as `SKIP (case): reason` in every mode, strict included.
pub fn skip_case(reason: impl std::fmt::Display) {
    eprintln!("SKIP (case): {reason}");
}

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    // CARGO_MANIFEST_DIR is crates/testkit
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/testkit has a grandparent")
        .to_path_buf()
}

/// Directory of the target programs (`tests/targets`).
pub fn targets_dir() -> PathBuf {
    workspace_root().join("tests").join("targets")
}

/// The `pystackd` binary of this build: `$PYSTACKD_BIN`, else `pystackd` next to the
/// directory of the running test or bench executable (`target/PROFILE/deps/..`), where cargo
/// puts the binary of the package under test.
pub fn pystackd_bin() -> &'static str {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("PYSTACKD_BIN") {
            return p.to_string_lossy().into_owned();
        }
        let exe = std::env::current_exe().expect("current_exe");
        let mut dir = exe.parent().expect("exe has a directory");
        if dir.ends_with("deps") {
            dir = dir.parent().expect("deps has a parent");
        }
        let bin = dir.join("pystackd");
        assert!(
            bin.is_file(),
            "no pystackd binary at {} (run the tests of the symd package, or set PYSTACKD_BIN)",
            bin.display()
        );
        bin.to_string_lossy().into_owned()
    })
}

/// Whether the process runs as root (effective uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `Ok` as root, else a [`Skip`] saying what root is needed for.
pub fn root(why: &str) -> Result<(), Skip> {
    if is_root() {
        Ok(())
    } else {
        Err(Skip(format!("not root (needed {why})")))
    }
}

/// Whether `tool arg` runs and exits 0 (e.g. `have("gdb", "--version")`).
pub fn have(tool: &str, arg: &str) -> bool {
    Command::new(tool)
        .arg(arg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Debian packages of the tools the tests use, for skip messages.
fn package_of(tool: &str) -> &str {
    match tool {
        "perf" => "linux-perf",
        "setpriv" | "unshare" => "util-linux",
        "script" => "bsdutils",
        "systemd-socket-activate" => "systemd",
        "go" => "golang-go",
        other => other,
    }
}

/// `Ok` when `tool --version` (`go version`) runs and exits 0, else a [`Skip`] naming the package.
pub fn tool(tool: &str) -> Result<(), Skip> {
    // go has no --version: `go version`
    let arg = if tool == "go" { "version" } else { "--version" };
    if have(tool, arg) {
        Ok(())
    } else {
        Err(Skip(format!(
            "{tool} not installed or not working (apt-get install {})",
            package_of(tool)
        )))
    }
}

/// The first `name` on `$PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "pystackd-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The text of line `line` (1-based) of `path`, if it is a readable file.
pub fn source_line(path: &str, line: u32) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .nth(line.checked_sub(1)? as usize)
        .map(str::to_owned)
}
