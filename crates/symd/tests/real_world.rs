//! Where production Python runs: an interpreter deleted after it started (a venv or build
//! directory removed), and a libpython replaced in place while the process runs (an upgrade).
//! pystackd must read what is mapped, not what is on disk now: the stack is checked against
//! the line the target reports itself.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use testkit::{pystackd_bin, require, Interpreter, TempDir, Want};

/// Blocks in `blocked_here` after printing the line it blocks on (its own ground truth).
const TARGET: &str = "import os, inspect\n\
def blocked_here():\n    \
    print(inspect.currentframe().f_lineno + 1, flush=True)\n    \
    os.read(0, 1)\n\
blocked_here()\n";

struct Running {
    child: Child,
    script: PathBuf,
    line: u32,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(exe: &Path, dir: &Path, env: &[(&str, &Path)]) -> Running {
    let script = dir.join("target.py");
    std::fs::write(&script, TARGET).unwrap();
    let mut cmd = Command::new(exe);
    cmd.arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("the interpreter starts");
    let mut first = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut first)
        .unwrap();
    let line = first
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{}: target printed {first:?}", exe.display()));
    // printed before it blocks: wait until it sits in read(2) (x86_64 syscall 0)
    let pid = child.id();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read_to_string(format!("/proc/{pid}/syscall"))
        .map_or(true, |s| s.split_whitespace().next() != Some("0"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "target never blocked in read"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    Running {
        child,
        script,
        line,
    }
}

/// `pystackd stack --no-daemon PID` must show `blocked_here` at the target's own line.
fn check(what: &str, t: &Running) -> Result<(), String> {
    let out = Command::new(pystackd_bin())
        .args(["stack", "--no-daemon", &t.child.id().to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let want = format!("blocked_here ({}:{})", t.script.display(), t.line);
    if out.status.success() && text.contains(&want) {
        Ok(())
    } else {
        Err(format!(
            "{what}: want `{want}`, exit {:?}\n{text}{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A pyenv interpreter run against a private copy of its libpython (`LD_LIBRARY_PATH` beats
/// its RUNPATH); the copy then replaced by another file (rename over it, as package managers
/// do), then deleted.
fn libpython_case(py: &Interpreter) -> Result<(), String> {
    let lib = py.runtime_elf()?;
    let tmp = TempDir::new("replaced-libpython");
    let name = lib.file_name().unwrap();
    let copy = tmp.path().join(name);
    std::fs::copy(&lib, &copy).map_err(|e| format!("copy {}: {e}", lib.display()))?;
    let t = start(&py.command, tmp.path(), &[("LD_LIBRARY_PATH", tmp.path())]);
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", t.child.id())).unwrap();
    if !maps.contains(copy.to_str().unwrap()) {
        return Err(format!(
            "{}: the copy of libpython is not the one mapped",
            py.label
        ));
    }
    check(&format!("{} intact", py.label), &t)?;
    // an upgrade: a different file renamed over the path (here: not even an ELF file)
    let new = tmp.path().join("new.so");
    std::fs::write(&new, vec![0x7fu8; 1 << 16]).unwrap();
    std::fs::rename(&new, &copy).unwrap();
    check(&format!("{} replaced", py.label), &t)?;
    std::fs::remove_file(&copy).unwrap();
    check(&format!("{} deleted", py.label), &t)
}

#[test]
fn a_replaced_or_deleted_libpython_reads_like_an_intact_one() {
    // /proc/PID/map_files needs CAP_SYS_ADMIN
    require!(testkit::root(
        "open /proc/PID/map_files of a deleted libpython"
    ));
    let list = require!(testkit::pythons::pythons(&Want::any().pyenv().shared()));
    let failures: Vec<String> = list
        .iter()
        .filter_map(|p| libpython_case(p).err())
        .collect();
    eprintln!("{} pyenv interpreters checked", list.len());
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn a_deleted_static_interpreter_reads_like_an_intact_one() {
    require!(testkit::root(
        "open /proc/PID/map_files of a deleted interpreter"
    ));
    // a static build: the executable itself holds the interpreter
    let py = require!(testkit::python(&Want::any().static_build().host()));
    let tmp = TempDir::new("deleted-python");
    let exe = tmp.path().join("python3-copy");
    std::fs::copy(&py.command, &exe).unwrap();
    let t = start(&exe, tmp.path(), &[]);
    check("intact copy", &t).unwrap();
    std::fs::remove_file(&exe).unwrap();
    check("deleted", &t).unwrap();
}
