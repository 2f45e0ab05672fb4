//! The test targets themselves, under every interpreter of tests/pythons/list: they start,
//! reach READY, and their ground truth is what the other integration tests rely on.
//! Needs nothing from pystackd.

use std::path::Path;

use testkit::{require, source_line, GroundTruth, Interpreter, Target, ThreadTruth, Want};

const MAIN_WORKERS: &[&str] = &[
    "deep-recursion",
    "methods",
    "generator-coroutine",
    "asyncio",
    "sorted-key",
    "exec-code",
    "big-function",
    "non-ascii-ñ",
];

/// Runs `check` on every interpreter, collecting every failure before failing.
fn for_each_interpreter(what: &str, check: impl Fn(&Interpreter) -> Result<(), String>) {
    let list = require!(testkit::pythons::all());
    let failures: Vec<String> = list
        .iter()
        .filter_map(|i| check(i).err().map(|e| format!("[{}] {e}", i.label)))
        .collect();
    eprintln!("{what}: {} interpreters checked", list.len());
    assert!(failures.is_empty(), "{what}:\n{}", failures.join("\n"));
}

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)*) => {
        if !$cond {
            return Err(format!($($fmt)*));
        }
    };
}

fn basename(p: &str) -> &str {
    Path::new(p)
        .file_name()
        .and_then(|s| s.to_str())
        .unwrap_or(p)
}

fn functions(t: &ThreadTruth) -> Vec<&str> {
    t.frames.iter().map(|f| f.function.as_str()).collect()
}

fn thread<'a>(truth: &'a GroundTruth, name: &str) -> Result<&'a ThreadTruth, String> {
    truth
        .thread(name)
        .ok_or_else(|| format!("no thread {name:?}"))
}

/// Checks common to the blocking targets.
fn check_blocking(interp: &Interpreter, target: &Target, workers: &[&str]) -> Result<(), String> {
    let truth = target.truth();
    let (x, y) = interp.version;
    ensure!(
        truth.version.starts_with(&format!("{x}.{y}.")),
        "version {} is not {x}.{y}.*",
        truth.version
    );
    ensure!(truth.pid == target.pid(), "pid mismatch");
    let mut names: Vec<&str> = truth.threads.iter().map(|t| t.name.as_str()).collect();
    names.sort_unstable();
    let mut want: Vec<&str> = workers.iter().copied().chain(["MainThread"]).collect();
    want.sort_unstable();
    ensure!(names == want, "threads {names:?}, want {want:?}");
    ensure!(
        truth
            .threads
            .iter()
            .any(|t| t.native_id == u64::from(truth.pid) && t.name == "MainThread"),
        "MainThread's native id is not the pid"
    );
    ensure!(!truth.files.is_empty(), "no files");
    for f in &truth.files {
        ensure!(
            Path::new(f).is_absolute() && Path::new(f).is_file(),
            "file {f:?} is not an absolute path to a file"
        );
    }
    for t in &truth.threads {
        ensure!(t.os_name.is_some(), "thread {} has no OS name", t.name);
        ensure!(!t.frames.is_empty(), "thread {} has no frames", t.name);
        for f in &t.frames {
            ensure!(
                truth.is_program_file(&f.filename) || truth.is_stdlib_file(&f.filename),
                "thread {}: frame {}:{:?} {} is neither the program's nor the stdlib's",
                t.name,
                f.filename,
                f.line,
                f.function
            );
            ensure!(
                f.line.is_some(),
                "thread {}: frame {} has no line",
                t.name,
                f.function
            );
        }
        // the recorded innermost line is the blocking call (the protocol's whole point)
        let inner = &t.frames[0];
        ensure!(
            truth.is_program_file(&inner.filename),
            "thread {}: innermost frame {} not in the program",
            t.name,
            inner.filename
        );
        if let Some(text) = source_line(&inner.filename, inner.line.unwrap_or(0)) {
            ensure!(
                text.contains("os.read(") || text.contains("time.sleep("),
                "thread {}: innermost line {}:{:?} is not a blocking call: {text:?}",
                t.name,
                inner.filename,
                inner.line
            );
        } else {
            ensure!(
                truth.exec_filenames.contains(&inner.filename),
                "thread {}: cannot read {}:{:?}",
                t.name,
                inner.filename,
                inner.line
            );
        }
        // outermost frame: the thread's bootstrap (stdlib) or the main module
        let outer = t.frames.last().unwrap();
        if t.name == "MainThread" {
            ensure!(
                outer.function == "<module>",
                "main thread's outermost frame is {}",
                outer.function
            );
        } else {
            ensure!(
                truth.is_stdlib_file(&outer.filename),
                "thread {}: outermost frame {} not stdlib",
                t.name,
                outer.filename
            );
        }
    }
    Ok(())
}

fn check_main_target(interp: &Interpreter, target: &Target, depth: u32) -> Result<(), String> {
    let truth = target.truth();
    ensure!(truth.target == "main_target", "target {}", truth.target);
    ensure!(truth.depth == Some(depth), "depth {:?}", truth.depth);

    let deep = thread(truth, "deep-recursion")?;
    ensure!(
        deep.frames.len() >= depth as usize,
        "deep thread has {} frames",
        deep.frames.len()
    );
    let files: Vec<&str> = deep.frames.iter().map(|f| basename(&f.filename)).collect();
    ensure!(
        files.contains(&"módulo_ñ.py") && files.contains(&"target_lib.py"),
        "deep recursion does not cross files: {files:?}"
    );
    ensure!(
        truth.files.iter().any(|f| basename(f) == "módulo_ñ.py"),
        "files lack módulo_ñ.py: {:?}",
        truth.files
    );
    let recursion = deep
        .frames
        .iter()
        .filter(|f| f.function == "función_ñ" || f.function == "descend")
        .count();
    ensure!(
        recursion as u32 >= depth,
        "only {recursion} recursion frames"
    );
    ensure!(
        deep.frames[0].function == "último_nivel",
        "deep innermost {}",
        deep.frames[0].function
    );

    let methods = functions(thread(truth, "methods")?);
    for f in [
        "decorated_leaf",
        "wrapper",
        "<lambda>",
        "inner",
        "run",
        "helper",
        "build",
        "methods",
    ] {
        ensure!(
            methods.contains(&f),
            "methods thread lacks {f}: {methods:?}"
        );
    }
    let gen = functions(thread(truth, "generator-coroutine")?);
    ensure!(
        gen.starts_with(&["produce", "consume", "drive"]),
        "generator-coroutine: {gen:?}"
    );
    let aio = functions(thread(truth, "asyncio")?);
    ensure!(
        aio.starts_with(&["async_leaf", "async_middle"]),
        "asyncio: {aio:?}"
    );
    ensure!(aio.contains(&"run_asyncio"), "asyncio: {aio:?}");
    let sorted = functions(thread(truth, "sorted-key")?);
    ensure!(
        sorted.starts_with(&["sort_key_that_blocks", "sorted_key"]),
        "sorted-key: {sorted:?}"
    );

    let exec = thread(truth, "exec-code")?;
    let exec_files: Vec<&str> = exec.frames.iter().map(|f| f.filename.as_str()).collect();
    ensure!(
        exec_files.starts_with(&["<pystackd-generated>", "<string>", "<string>"]),
        "exec-code: {exec_files:?}"
    );

    let big = thread(truth, "big-function")?;
    for name in ["far_with_comments", "far_with_statements"] {
        let f = big
            .frames
            .iter()
            .find(|f| f.function == name)
            .ok_or(format!("no {name}"))?;
        let delta = f.line.unwrap_or(0).saturating_sub(f.first_line);
        ensure!(
            delta > 300,
            "{name}: line {:?} only {delta} after its first line",
            f.line
        );
    }

    let non_ascii = thread(truth, "non-ascii-ñ")?;
    ensure!(
        non_ascii.frames[0].function == "método_ñ",
        "non-ascii innermost {}",
        non_ascii.frames[0].function
    );
    if interp.version >= (3, 11) {
        ensure!(
            non_ascii.frames[0].qualname.as_deref() == Some("Clase_ñ.método_ñ"),
            "qualname {:?}",
            non_ascii.frames[0].qualname
        );
    }
    Ok(())
}

#[test]
fn main_target_under_every_interpreter() {
    for_each_interpreter("main_target", |interp| {
        let target = Target::try_spawn(interp, "main_target.py", &[])?;
        check_blocking(interp, &target, MAIN_WORKERS)?;
        check_main_target(interp, &target, 40)
    });
}

#[test]
fn main_target_options() {
    // one interpreter is enough for the option parsing; the newest exercises the most
    let interp = require!(testkit::pythons::all())
        .into_iter()
        .max_by_key(|i| i.version)
        .expect("all() is not empty");
    let target = Target::spawn(
        &interp,
        "main_target.py",
        &["--depth", "120", "--extra-threads", "3"],
    );
    let mut workers = MAIN_WORKERS.to_vec();
    workers.extend(["extra-0", "extra-1", "extra-2"]);
    check_blocking(&interp, &target, &workers).unwrap();
    check_main_target(&interp, &target, 120).unwrap();
}

#[test]
fn nested_eval_under_every_interpreter() {
    for_each_interpreter("nested_eval", |interp| {
        let target = Target::try_spawn(interp, "nested_eval.py", &[])?;
        check_blocking(interp, &target, &["callbacks-0", "callbacks-1", "sleeper"])?;
        let truth = target.truth();
        ensure!(truth.target == "nested_eval", "target {}", truth.target);
        for name in ["callbacks-0", "callbacks-1"] {
            let f = functions(thread(truth, name)?);
            ensure!(
                f.starts_with(&["reduce_step", "map_callback", "sort_key", "callbacks"]),
                "{name}: {f:?}"
            );
        }
        let f = functions(thread(truth, "sleeper")?);
        ensure!(
            f.starts_with(&["sleep_key", "smallest", "sleeper"]),
            "sleeper: {f:?}"
        );
        Ok(())
    });
}

#[test]
fn busy_target_under_every_interpreter() {
    for_each_interpreter("busy_target", |interp| {
        let mut target = Target::try_spawn(interp, "busy_target.py", &["--self-check", "20"])?;
        let truth = target.truth().clone();
        ensure!(truth.target == "busy_target", "target {}", truth.target);
        ensure!(
            truth.worker_threads == Some(3),
            "worker_threads {:?}",
            truth.worker_threads
        );
        let (x, y) = interp.version;
        ensure!(
            truth.version.starts_with(&format!("{x}.{y}.")),
            "version {}",
            truth.version
        );
        ensure!(
            truth.files.len() == 1 && basename(&truth.files[0]) == "busy_target.py",
            "files {:?}",
            truth.files
        );
        for f in ["work", "recurse", "leaf", "<lambda>", "<module>", "area"] {
            ensure!(
                truth.functions.iter().any(|g| g == f),
                "functions lack {f}: {:?}",
                truth.functions
            );
        }
        let check = truth.self_check.as_ref().ok_or("no self_check")?;
        ensure!(check.samples == 20, "self_check samples {}", check.samples);
        ensure!(
            check.functions_seen.iter().any(|f| f == "work"),
            "workers not seen running: {:?}",
            check.functions_seen
        );
        for f in &check.functions_seen {
            ensure!(
                truth.functions.contains(f),
                "sampled function {f} not in the list"
            );
        }
        ensure!(target.is_running(), "busy target exited");
        Ok(())
    });
}

#[test]
fn target_killed_on_drop() {
    let interp = require!(testkit::python(&Want::any()));
    let pid = {
        let target = Target::spawn(&interp, "nested_eval.py", &[]);
        target.pid()
    };
    // reaped: no /proc entry left (a zombie would still have one)
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} still exists after drop"
    );
}

#[test]
fn spawn_failure_reports_target_stderr() {
    let interp = require!(testkit::python(&Want::any()));
    let dir = std::env::temp_dir().join(format!("pystackd-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("fails.py");
    std::fs::write(
        &script,
        "import sys\nsys.stderr.write('boom from target\\n')\nsys.exit(4)\n",
    )
    .unwrap();
    let err = match Target::try_spawn(&interp, script.to_str().unwrap(), &[]) {
        Ok(_) => panic!("a target that exits at once reached READY"),
        Err(e) => e,
    };
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(err.contains("boom from target"), "{err}");
    assert!(err.contains("exited before READY"), "{err}");
}
