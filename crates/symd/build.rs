//! Links GCC's unwinder statically on Linux/glibc (what `gcc -static-libgcc` does for C++):
//! `pystackd` then loads no `libgcc_s.so.1`, whose constructor runs a series of CPUID
//! instructions. Each traps to the hypervisor on a virtual machine, where most production
//! Python runs; with the loading itself that was ~0.1 ms of a 1 ms `pystackd --version`
//! here (docs/benchmarks.md, "start-up"). Rust's std asks for `-lgcc_s`; a `libgcc_s.a`
//! that is GCC's own static `libgcc_eh.a`, found first on the search path, answers it.
//! Skipped (the shared library is used, as before) when the compiler has no
//! `libgcc_eh.a`, for static builds (`crt-static` links `libgcc_eh` already) and off
//! glibc.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CC");
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    if var("CARGO_CFG_TARGET_OS") != "linux"
        || var("CARGO_CFG_TARGET_ENV") != "gnu"
        || var("CARGO_CFG_TARGET_FEATURE")
            .split(',')
            .any(|f| f == "crt-static")
        || var("TARGET") != var("HOST")
    {
        return;
    }
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let Ok(out) = Command::new(&cc)
        .arg("-print-file-name=libgcc_eh.a")
        .output()
    else {
        return;
    };
    let eh = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    // a compiler without it prints the bare name back
    if !out.status.success() || !eh.is_absolute() || !eh.is_file() {
        return;
    }
    let dir = PathBuf::from(var("OUT_DIR")).join("static-libgcc");
    let link = dir.join("libgcc_s.a");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::remove_file(&link);
    if std::os::unix::fs::symlink(&eh, &link).is_ok() {
        // only the pystackd binary: test binaries keep the default
        println!("cargo:rustc-link-arg-bins=-L{}", dir.display());
    }
}
