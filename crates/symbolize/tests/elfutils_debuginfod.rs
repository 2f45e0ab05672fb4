//! The real elfutils `debuginfod` (Debian package `debuginfod`) serving a directory with
//! Debian's python3.14-dbg and python3.14-minimal .debs on a loopback port: the stripped
//! 3.14's `.cold` eval loop is named from the downloaded debug file; with the server
//! stopped, the same lookup gives up within a bounded time and the code stays unnamed.
//! Skipped (with the reason printed) when the server or the .debs are absent;
//! PYSTACKD_STRICT=1 makes that a failure.

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use symbolize::{Config, DebugOrigin, DebuginfodConfig, ElfFile, Symbolizer};

struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn debs() -> Option<(PathBuf, PathBuf, PathBuf)> {
    let (root, _) = debian_dbg("3.14")?;
    let dir = root.parent()?.join("debs");
    let find = |prefix: &str| {
        std::fs::read_dir(&dir)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name().is_some_and(|n| {
                    n.to_string_lossy().starts_with(prefix) && n.to_string_lossy().ends_with(".deb")
                })
            })
    };
    Some((root, find("python3.14-dbg_")?, find("python3.14-minimal_")?))
}

#[test]
fn elfutils_debuginfod_serves_debian_dbg_debs() {
    if Command::new("debuginfod")
        .arg("--version")
        .output()
        .is_err()
    {
        return skip("no elfutils debuginfod (apt-get install debuginfod)");
    }
    let Some((root, dbg_deb, min_deb)) = debs() else {
        return skip("no Debian 3.14 .debs with -dbg (WITH_DBG=1 tests/pythons/get-pythons ~/.cache/pystackd/pydbg 3.14)");
    };
    let bin = root.join("usr/bin/python3.14");
    let id = ElfFile::open(&bin).unwrap().build_id.clone().unwrap();
    let (_, dbg_root) = debian_dbg("3.14").unwrap();
    let local_debug = dbg_root.join(format!(
        ".build-id/{}/{}.debug",
        &id.hex()[..2],
        &id.hex()[2..]
    ));
    let cold = nm_text_symbols(&local_debug, false)
        .into_iter()
        .find(|s| s.name == "_PyEval_EvalFrameDefault.cold")
        .expect("nm names the .cold part in the debug file");

    let tmp = tempfile::tempdir().unwrap();
    let served = tmp.path().join("debs");
    std::fs::create_dir(&served).unwrap();
    for d in [&dbg_deb, &min_deb] {
        std::os::unix::fs::symlink(d, served.join(d.file_name().unwrap())).unwrap();
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = Server(
        Command::new("debuginfod")
            // -U would need bsdtar; dpkg-deb is on every Debian. -L: the .debs are symlinks
            .args(["-L", "-Z", ".deb=dpkg-deb --fsys-tarfile"])
            .arg(&served)
            .arg("-d")
            .arg(tmp.path().join("db.sqlite"))
            .args([
                "-p",
                &port.to_string(),
                "-c",
                "1",
                "-t",
                "3600",
                "-g",
                "3600",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start debuginfod"),
    );
    let url = format!("http://127.0.0.1:{port}");
    let cache = tmp.path().join("cache");
    let mut cfg = DebuginfodConfig::new(vec![url.clone()], cache.clone());
    cfg.connect_timeout = Duration::from_secs(1);
    cfg.read_timeout = Duration::from_secs(30);
    cfg.total_timeout = Duration::from_secs(120);
    cfg.negative_ttl = Duration::ZERO;
    // wait for the server to scan the .debs (it answers 404 until then)
    let client = symbolize::Debuginfod::new(cfg.clone());
    let t0 = Instant::now();
    loop {
        match client.fetch(&id) {
            Ok(p) => {
                eprintln!("debuginfod served {} after {:?}", p.display(), t0.elapsed());
                break;
            }
            Err(_) if t0.elapsed() < Duration::from_secs(180) => {
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => panic!("debuginfod never served {id}: {e}"),
        }
    }
    let _ = std::fs::remove_dir_all(&cache);

    let mut config = Config::local(vec![]);
    config.debuginfod = Some(cfg.clone());
    let sym = Symbolizer::new(config);
    let s = sym.symbolize_file(&bin, cold.addr + 0x10, true).unwrap();
    assert_eq!(
        s.symbol.as_ref().map(|h| (&*h.name, h.offset)),
        Some(("_PyEval_EvalFrameDefault.cold", 0x10))
    );
    assert_eq!(
        s.module.debug_file().map(|d| d.1),
        Some(DebugOrigin::Debuginfod)
    );
    assert_eq!(
        s.frames.last().and_then(|f| f.function.as_deref()),
        Some("_PyEval_EvalFrameDefault")
    );
    eprintln!("real debuginfod: {s} ({:?})", s.frames.last());

    // the server stopped, nothing cached: bounded, and the .cold part stays unnamed
    drop(server);
    let mut config = Config::local(vec![]);
    let mut down = cfg;
    down.cache_dir = tmp.path().join("cache-2");
    config.debuginfod = Some(down);
    let sym = Symbolizer::new(config);
    let t = Instant::now();
    let s = sym.symbolize_file(&bin, cold.addr + 0x10, true).unwrap();
    let took = t.elapsed();
    eprintln!(
        "server stopped: {s} in {took:?}: {:?}",
        s.module.debug_search().debuginfod_error
    );
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert!(s
        .symbol
        .as_ref()
        .is_none_or(|h| &*h.name != "_PyEval_EvalFrameDefault.cold"));
    assert!(s.module.debug_search().debuginfod_error.is_some());
}
