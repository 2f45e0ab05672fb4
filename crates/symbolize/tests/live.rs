//! A live process: addresses of its executable mappings (PIE executable, shared
//! libpython, libc, the loader) symbolized through `/proc/PID/maps` and compared with
//! gdb's `info symbol` on the same running process.

mod common;

use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::*;
use symbolize::{Config, ProcessMaps, Symbolizer};

struct Target(Child);
impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(python: &Path) -> Target {
    let mut child = Command::new(python)
        .args([
            "-c",
            "import time, sys; print('ready', flush=True); time.sleep(120)",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start python");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    Target(child)
}

/// gdb's `info symbol` for each address of live process `pid`: (name, offset, object)
/// or `None` for "No symbol matches".
fn gdb_info_symbol(pid: u32, extra: &[String], addrs: &[u64]) -> Vec<Option<(String, u64)>> {
    let mut cmd = Command::new("gdb");
    cmd.args([
        "-nx",
        "-batch",
        "-ex",
        "set width 0",
        "-ex",
        "set debuginfod enabled off",
    ]);
    for e in extra {
        // before the attach: settings that decide which debug files are read
        cmd.arg("-iex").arg(e);
    }
    cmd.arg("-p").arg(pid.to_string());
    for a in addrs {
        cmd.arg("-ex")
            .arg("echo @@\\n")
            .arg("-ex")
            .arg(format!("info symbol {a:#x}"));
    }
    let out = cmd.stdin(Stdio::null()).output().expect("gdb runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut res: Vec<Option<(String, u64)>> = text
        .split("@@\n")
        .skip(1)
        .map(|chunk| {
            let line = chunk.lines().next()?;
            if line.starts_with("No symbol matches") {
                return None;
            }
            let (head, _) = line.split_once(" in section ")?;
            Some(match head.split_once(" + ") {
                Some((n, off)) => (n.to_string(), off.trim().parse().ok()?),
                None => (head.to_string(), 0),
            })
        })
        .collect();
    res.resize(addrs.len(), None);
    res
}

/// gdb's print form of an ELF name: no `@VERSION`, no `.N` clone numbers
/// (`.constprop.0`), `X.cold` shown as `X[cold]`, and Python's clinic names
/// (`os__path_splitroot_ex`) shown as `os.path_splitroot_ex`.
fn norm(n: &str) -> String {
    let n = n.split('@').next().unwrap_or(n);
    let n = n.replace("[cold]", ".cold").replace("__", ".");
    n.split('.')
        .filter(|c| c.is_empty() || !c.bytes().all(|b| b.is_ascii_digit()))
        .collect::<Vec<_>>()
        .join(".")
}

/// Every defined name per address (symtab and dynsym, sized or not), from nm.
fn all_names_by_addr(path: &Path) -> HashMap<u64, Vec<String>> {
    let mut m: HashMap<u64, Vec<String>> = HashMap::new();
    for dynamic in [false, true] {
        let mut cmd = Command::new("nm");
        cmd.arg("--defined-only");
        if dynamic {
            cmd.arg("-D");
        }
        let Ok(out) = cmd.arg(path).output() else {
            continue;
        };
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() == 3 {
                if let Ok(a) = u64::from_str_radix(f[0], 16) {
                    m.entry(a).or_default().push(f[2].to_string());
                }
            }
        }
    }
    m
}

fn compare_live(
    python: &Path,
    debug_roots: Vec<PathBuf>,
    gdb_extra: &[String],
    n: usize,
    want_module: &str,
) -> (usize, usize) {
    let t = start(python);
    let pid = t.0.id();
    let maps = ProcessMaps::for_pid(pid).unwrap();
    let exec: Vec<_> = maps
        .regions()
        .iter()
        .filter(|r| r.exec && r.is_file())
        .cloned()
        .collect();
    assert!(
        exec.iter()
            .any(|r| r.path.as_deref().is_some_and(|p| p.contains(want_module))),
        "{exec:?}"
    );
    let mut rng = Rng(pid as u64 | 1);
    let addrs: Vec<u64> = (0..n)
        .map(|_| {
            let r = &exec[rng.below(exec.len() as u64) as usize];
            r.start + rng.below(r.end - r.start)
        })
        .collect();
    let sym = Symbolizer::new(Config::local(debug_roots));
    let truth = gdb_info_symbol(pid, gdb_extra, &addrs);
    let mut ok = 0;
    let mut named = 0;
    let mut plt = 0;
    let mut aliases: HashMap<PathBuf, HashMap<u64, Vec<String>>> = HashMap::new();
    for (a, want) in addrs.iter().zip(&truth) {
        let s = sym.symbolize(&maps, *a, false).unwrap();
        let got = s.symbol.as_ref().map(|h| (h.name.to_string(), h.offset));
        if want.is_some() {
            named += 1;
        }
        let same = match (&got, want, &s.symbol) {
            (None, None, _) => true,
            (Some((g, go)), Some((w, wo)), Some(hit)) if go == wo => {
                // gdb picks its own alias among names of one address (ctan/ctanf64) and
                // drops `.0` of `.constprop.0`: binutils' nm says which names are aliases
                norm(g) == norm(w) || {
                    let mut files = vec![PathBuf::from(&**s.module.name())];
                    files.extend(s.module.debug_file().map(|d| d.0.to_path_buf()));
                    files.iter().any(|f| {
                        aliases
                            .entry(f.clone())
                            .or_insert_with(|| all_names_by_addr(f))
                            .get(&hit.addr)
                            .is_some_and(|names| names.iter().any(|n| norm(n) == norm(w)))
                    })
                }
            }
            _ => false,
        };
        if want.as_ref().is_some_and(|w| w.0.ends_with("@plt")) {
            plt += 1;
        }
        if same {
            ok += 1;
        } else {
            eprintln!("{a:#x} ({}): gdb {want:?} we {got:?}", s.module.name());
        }
    }
    eprintln!(
        "{}: {ok}/{n} addresses agree with gdb's info symbol ({named} named by gdb; {plt} of them PLT stubs, NAME@plt)",
        python.display()
    );
    (ok, n)
}

#[test]
fn live_pyenv_python_agrees_with_gdb_info_symbol() {
    let py = home().join(".pyenv/versions/3.12.1/bin/python3.12");
    if !py.is_file() || !have("gdb") {
        return skip("no pyenv 3.12.1 or no gdb");
    }
    // the host's /usr/lib/debug (libc6-dbg names libc's local functions), as gdb reads it
    let (ok, n) = compare_live(
        &py,
        vec!["/usr/lib/debug".into()],
        &[],
        400,
        "libpython3.12",
    );
    assert!(ok * 100 >= n * 99, "{ok}/{n}");
}

#[test]
fn live_debian_314_cold_part_agrees_with_gdb_using_the_debug_file() {
    let Some((root, dbg)) = debian_dbg("3.14") else {
        return skip("no Debian 3.14 with -dbg (WITH_DBG=1 tests/pythons/get-pythons ~/.cache/pystackd/pydbg 3.14)");
    };
    if !have("gdb") {
        return skip("no gdb");
    }
    let wrapper = root
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("bin/python3.14-direct");
    let py = if wrapper.is_file() {
        wrapper
    } else {
        root.join("usr/bin/python3.14")
    };
    let extra = vec![format!("set debug-file-directory {}", dbg.display())];
    let (ok, n) = compare_live(&py, vec![dbg.clone()], &extra, 300, "python3.14");
    assert!(ok * 100 >= n * 99, "{ok}/{n}");

    // the eval loop's .cold part, at its run-time address
    let t = start(&py);
    let pid = t.0.id();
    let maps = ProcessMaps::for_pid(pid).unwrap();
    let sym = Symbolizer::new(Config::local(vec![dbg]));
    let cold = maps
        .regions()
        .iter()
        .filter(|r| {
            r.exec
                && r.path
                    .as_deref()
                    .is_some_and(|p| p.ends_with("/python3.14"))
        })
        .find_map(|r| {
            (r.start..r.end).step_by(0x40).find_map(|a| {
                let s = sym.symbolize(&maps, a, false).ok()?;
                s.symbol
                    .filter(|h| &*h.name == "_PyEval_EvalFrameDefault.cold")
                    .map(|h| a - h.offset + 0x40)
            })
        })
        .expect("the .cold part is mapped and named");
    let g = gdb_info_symbol(pid, &extra, &[cold]);
    // gdb prints ELF's `X.cold` as `X.cold` or `X[cold]`
    assert_eq!(
        g[0].as_ref().map(|(n, o)| (norm(n), *o)),
        Some(("_PyEval_EvalFrameDefault.cold".to_string(), 0x40)),
        "gdb {:?}",
        g[0]
    );
    eprintln!(
        "live Debian 3.14: {cold:#x} is _PyEval_EvalFrameDefault.cold+0x40 for gdb and for us"
    );
}
