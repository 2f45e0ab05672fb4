//! Real interpreters and targets for the capture crate's tests (a small version of the
//! symd test kit: `tests/pythons/list`, READY protocol of `tests/targets/`).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/capture has a grandparent")
        .to_path_buf()
}

/// (label, (major, minor), command) of every supported interpreter `tests/pythons/list`
/// offers, through the test kit (its `#SKIP` lines printed; unsupported and free-threaded
/// builds left out).
pub fn interpreters() -> Vec<(String, (u8, u8), PathBuf)> {
    testkit::pythons::all()
        .unwrap_or_default()
        .into_iter()
        .map(|i| (i.label, i.version, i.command))
        .collect()
}

pub fn strict() -> bool {
    std::env::var("PYSTACKD_STRICT").is_ok_and(|v| v == "1")
}

pub fn skip(reason: &str) {
    if strict() {
        panic!("PYSTACKD_STRICT=1 and this test would skip: {reason}");
    }
    eprintln!("SKIP: {reason}");
}

/// A target of `tests/targets/` started and READY; killed on drop.
pub struct Target {
    child: Child,
    _stdin: Option<ChildStdin>,
    dir: PathBuf,
}

impl Target {
    pub fn spawn(python: &Path, script: &str, args: &[&str]) -> Result<Target, String> {
        let dir = std::env::temp_dir().join(format!(
            "capture-test-{}-{}-{}",
            std::process::id(),
            script,
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let mut child = Command::new(python)
            .args(["-E", "-s", "-B"])
            .arg(workspace_root().join("tests/targets").join(script))
            .arg(dir.join("truth.json"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        let stdin = child.stdin.take();
        let mut out = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        loop {
            line.clear();
            if out.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{script} under {} exited before READY",
                    python.display()
                ));
            }
            if line.trim() == "READY" {
                break;
            }
        }
        Ok(Target {
            child,
            _stdin: stdin,
            dir,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
