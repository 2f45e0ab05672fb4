//! Helpers shared by the tests: the provisioned binaries, skips that PYSTACKD_STRICT=1
//! turns into failures, and the binutils ground truth.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Skip a test for a missing prerequisite: print why; fail under PYSTACKD_STRICT=1.
pub fn skip(reason: &str) {
    if std::env::var("PYSTACKD_STRICT").as_deref() == Ok("1") {
        panic!("PYSTACKD_STRICT=1 and this test cannot run: {reason}");
    }
    eprintln!("SKIP: {reason}");
}

pub fn home() -> PathBuf {
    PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
}

/// pyenv's shared libpythons (built with symbols and DWARF).
pub fn pyenv_libpythons() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(home().join(".pyenv/versions")) {
        for e in rd.flatten() {
            let lib = e.path().join("lib");
            if let Ok(files) = std::fs::read_dir(&lib) {
                for f in files.flatten() {
                    let n = f.file_name().to_string_lossy().into_owned();
                    if n.starts_with("libpython3.") && n.ends_with(".so.1.0") {
                        out.push(f.path());
                    }
                }
            }
        }
    }
    // newest first (3.13 before 3.9)
    let key = |p: &PathBuf| {
        let n = p.file_name().unwrap().to_string_lossy().into_owned();
        n.trim_start_matches("libpython3.")
            .split('.')
            .next()
            .and_then(|m| m.parse::<u32>().ok())
            .unwrap_or(0)
    };
    out.sort_by_key(|p| std::cmp::Reverse(key(p)));
    out
}

/// The Debian build of `version` fetched with WITH_DBG=1 (tests/pythons/get-pythons):
/// (root of the extracted tree, its usr/lib/debug).
pub fn debian_dbg(version: &str) -> Option<(PathBuf, PathBuf)> {
    let dirs = [
        // where tests/run puts them (WITH_DBG=1 get-pythons)
        std::env::var_os("PYSTACKD_DBG_ROOT").map(PathBuf::from),
        Some(home().join(".cache/pystackd/pydbg")),
        Some(home().join(".cache/pystackd/pythons")),
    ];
    for d in dirs.into_iter().flatten() {
        let root = d.join(format!("py{version}/root"));
        let dbg = root.join("usr/lib/debug");
        if root.join(format!("usr/bin/python{version}")).is_file() && dbg.join(".build-id").is_dir()
        {
            return Some((root, dbg));
        }
    }
    None
}

pub fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A sized text symbol from `nm -S --defined-only`.
#[derive(Debug, Clone)]
pub struct NmSym {
    pub addr: u64,
    pub size: u64,
    pub name: String,
}

/// Text symbols (t T w W i) with a size, from binutils `nm` (both .symtab and, with
/// `dynamic`, .dynsym).
pub fn nm_text_symbols(path: &Path, dynamic: bool) -> Vec<NmSym> {
    let mut cmd = Command::new("nm");
    cmd.args(["-S", "--defined-only"]);
    if dynamic {
        cmd.arg("-D");
    }
    let out = cmd.arg(path).output().expect("nm runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut syms = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() != 4 || !matches!(f[2], "t" | "T" | "w" | "W" | "i") {
            continue;
        }
        let (Ok(addr), Ok(size)) = (u64::from_str_radix(f[0], 16), u64::from_str_radix(f[1], 16))
        else {
            continue;
        };
        if size == 0 || addr == 0 {
            continue;
        }
        // nm -D prints versioned names (memcpy@@GLIBC_2.14)
        let name = f[3].split('@').next().unwrap_or(f[3]).to_string();
        syms.push(NmSym { addr, size, name });
    }
    syms
}

/// Names per start address.
pub fn names_by_addr(syms: &[NmSym]) -> HashMap<u64, Vec<String>> {
    let mut m: HashMap<u64, Vec<String>> = HashMap::new();
    for s in syms {
        m.entry(s.addr).or_default().push(s.name.clone());
    }
    m
}

/// One `addr2line -f -i` answer: (function, file, line) frames, innermost first.
pub type A2lFrames = Vec<(String, String, u32)>;

/// binutils `addr2line -a -f -i -e FILE` for every address (one run, addresses on stdin).
pub fn addr2line(path: &Path, addrs: &[u64]) -> Vec<A2lFrames> {
    use std::io::Write;
    let mut child = Command::new("addr2line")
        .args(["-a", "-f", "-i", "-e"])
        .arg(path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("addr2line runs");
    let mut input = String::new();
    for a in addrs {
        input.push_str(&format!("{a:#x}\n"));
    }
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("addr2line output");
    writer.join().unwrap().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut groups: Vec<A2lFrames> = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(l) = lines.next() {
        if l.starts_with("0x") {
            groups.push(Vec::new());
            continue;
        }
        let func = l.to_string();
        let loc = lines.next().unwrap_or("??:0");
        // "file:line (discriminator N)"
        let loc = loc.split(" (discriminator").next().unwrap_or(loc);
        let (file, line) = loc.rsplit_once(':').unwrap_or((loc, "0"));
        let line = line.trim().parse().unwrap_or(0);
        if let Some(g) = groups.last_mut() {
            g.push((func, file.to_string(), line));
        }
    }
    groups
}

/// A small deterministic PRNG (xorshift64*), so a failure can be replayed.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

/// gdb's `info line *ADDR` for each address of `file` (one batch run): the
/// (file as gdb prints it, line) of the line-table row holding the address.
pub fn gdb_info_line(file: &Path, addrs: &[u64]) -> Vec<Option<(String, u32)>> {
    let mut cmd = Command::new("gdb");
    cmd.args([
        "-nx",
        "-batch",
        "-ex",
        "set width 0",
        "-ex",
        "set debuginfod enabled off",
    ]);
    for a in addrs {
        cmd.arg("-ex")
            .arg(format!("echo @@{a:#x}\\n"))
            .arg("-ex")
            .arg(format!("info line *{a:#x}"));
    }
    let out = cmd.arg(file).output().expect("gdb runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut res = Vec::new();
    for chunk in text.split("@@").skip(1) {
        let ans = chunk.split_once("Line ").and_then(|(_, rest)| {
            let (line, rest) = rest.split_once(" of \"")?;
            let (f, _) = rest.split_once('"')?;
            Some((f.to_string(), line.trim().parse().ok()?))
        });
        res.push(ans);
    }
    res.resize(addrs.len(), None);
    res
}

/// A small program built here with gcc and split with binutils' objcopy, the way
/// distributions do: `full` (symbols + DWARF), `stripped` (no .symtab, a
/// `.gnu_debuglink`), `debug` (`--only-keep-debug`).
pub struct Fixture {
    pub full: PathBuf,
    pub stripped: PathBuf,
    pub debug: PathBuf,
}

pub const FIXTURE_C: &str = r#"
#include <stdio.h>
static int __attribute__((noinline)) helper_static(int x) { return x * VARIANT + 1; }
static inline int twice_inlined(int x) { return helper_static(x) + 2; }
int __attribute__((noinline)) exported_fn(int x) { return twice_inlined(x) * 2; }
int main(int argc, char **argv) { printf("%d\n", exported_fn(argc)); return 0; }
"#;

pub fn build_fixture(dir: &Path, variant: u32, extra_cflags: &[&str]) -> Option<Fixture> {
    if !have("gcc") || !have("objcopy") {
        return None;
    }
    let src = dir.join(format!("fixture{variant}.c"));
    std::fs::write(&src, FIXTURE_C).ok()?;
    let full = dir.join(format!("fixture{variant}"));
    let debug = dir.join(format!("fixture{variant}.debug"));
    let stripped = dir.join(format!("fixture{variant}.stripped"));
    let ok = |c: &mut Command| c.status().is_ok_and(|s| s.success());
    let built = ok(Command::new("gcc")
        .args(["-g", "-O2", "-fPIE", "-pie", "-Wl,--build-id=sha1"])
        .arg(format!("-DVARIANT={variant}"))
        .args(extra_cflags)
        .arg("-o")
        .arg(&full)
        .arg(&src))
        && ok(Command::new("objcopy")
            .arg("--only-keep-debug")
            .arg(&full)
            .arg(&debug))
        && ok(Command::new("objcopy")
            .arg("--strip-all")
            .arg(format!("--add-gnu-debuglink={}", debug.display()))
            .arg(&full)
            .arg(&stripped));
    built.then_some(Fixture {
        full,
        stripped,
        debug,
    })
}

/// `nm`'s address of a symbol.
pub fn nm_addr(path: &Path, name: &str) -> Option<u64> {
    let out = Command::new("nm").arg(path).output().ok()?;
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() == 3 && f[2] == name)
            .then(|| u64::from_str_radix(f[0], 16).ok())
            .flatten()
    })
}
