//! The interpreter the benchmarks run their target under (shared by the reader's and the
//! binary's benches): $PYSTACKD_BENCH_PYTHON, else pyenv's 3.12/3.11/3.10.

pub fn python() -> Option<String> {
    if let Ok(p) = std::env::var("PYSTACKD_BENCH_PYTHON") {
        return Some(p);
    }
    let root = std::env::var("PYENV_ROOT")
        .unwrap_or_else(|_| format!("{}/.pyenv", std::env::var("HOME").unwrap_or_default()));
    [
        "3.12.1/bin/python3.12",
        "3.11.7/bin/python3.11",
        "3.10.13/bin/python3.10",
    ]
    .iter()
    .map(|p| format!("{root}/versions/{p}"))
    .find(|p| std::path::Path::new(p).exists())
}
