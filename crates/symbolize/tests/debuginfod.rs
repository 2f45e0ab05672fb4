//! The debuginfod client against servers run here (a std TcpListener thread on the
//! loopback): found and cached, a server down, silent, slow, oversized, wrong content,
//! 404 and the negative cache. Every failure must come back within a bounded time.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use symbolize::{
    BuildId, Config, DebugOrigin, Debuginfod, DebuginfodConfig, DebuginfodError, ElfFile,
    Symbolizer,
};

#[derive(Clone)]
enum Reply {
    Body(Arc<Vec<u8>>),
    Status(u16),
    /// read the request, then say nothing
    Silent,
    /// promise `len` bytes, send one every `every`
    Trickle {
        len: usize,
        every: Duration,
    },
    /// a Content-Length over any limit
    HugeLength,
    /// no Content-Length, bytes until the client hangs up
    Endless,
}

struct Server {
    url: String,
    hits: Arc<AtomicUsize>,
    paths: Arc<std::sync::Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // wake the accept loop
        let _ = TcpStream::connect(self.url.trim_start_matches("http://"));
    }
}

fn serve(reply: Reply) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let paths = Arc::new(std::sync::Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let (h, p, s) = (hits.clone(), paths.clone(), stop.clone());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            if s.load(Ordering::SeqCst) {
                break;
            }
            let Ok(mut conn) = conn else { continue };
            h.fetch_add(1, Ordering::SeqCst);
            let (reply, p, s) = (reply.clone(), p.clone(), s.clone());
            std::thread::spawn(move || {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&req)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string();
                p.lock()
                    .unwrap()
                    .push(line.split_whitespace().nth(1).unwrap_or("").to_string());
                let deadline = Instant::now() + Duration::from_secs(20);
                match reply {
                    Reply::Body(b) => {
                        let _ = write!(
                            conn,
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            b.len()
                        );
                        let _ = conn.write_all(&b);
                    }
                    Reply::Status(code) => {
                        let _ = write!(
                            conn,
                            "HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        );
                    }
                    Reply::Silent => {
                        while Instant::now() < deadline && !s.load(Ordering::SeqCst) {
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                    Reply::Trickle { len, every } => {
                        let _ = write!(
                            conn,
                            "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
                        );
                        for _ in 0..len {
                            if Instant::now() > deadline || conn.write_all(b"\x7f").is_err() {
                                break;
                            }
                            std::thread::sleep(every);
                        }
                    }
                    Reply::HugeLength => {
                        let _ = write!(conn, "HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\nConnection: close\r\n\r\n");
                        let _ = conn.write_all(&[0u8; 4096]);
                    }
                    Reply::Endless => {
                        let _ = write!(conn, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
                        let chunk = vec![0u8; 64 * 1024];
                        while Instant::now() < deadline && conn.write_all(&chunk).is_ok() {}
                    }
                }
            });
        }
    });
    Server {
        url: format!("http://{addr}"),
        hits,
        paths,
        stop,
    }
}

fn client(url: &str, cache: &Path) -> DebuginfodConfig {
    let mut c = DebuginfodConfig::new(vec![url.to_string()], cache.to_path_buf());
    c.connect_timeout = Duration::from_secs(1);
    c.read_timeout = Duration::from_secs(1);
    c.total_timeout = Duration::from_secs(3);
    c.max_bytes = 8 << 20;
    c
}

fn fixture(tmp: &Path) -> Option<(Fixture, BuildId, u64)> {
    let Some(f) = build_fixture(tmp, 3, &[]) else {
        skip("no gcc/objcopy to build the fixture");
        return None;
    };
    let id = ElfFile::open(&f.stripped)
        .unwrap()
        .build_id
        .clone()
        .expect("built with --build-id");
    let helper = nm_addr(&f.full, "helper_static").expect("nm names helper_static");
    Some((f, id, helper))
}

#[test]
fn found_on_the_server_verified_cached_and_used() {
    let tmp = tempfile::tempdir().unwrap();
    let Some((f, id, helper)) = fixture(tmp.path()) else {
        return;
    };
    // the stripped binary alone, elsewhere: no debuglink sibling to find
    let alone = tmp.path().join("alone");
    std::fs::create_dir(&alone).unwrap();
    let bin = alone.join("prog");
    std::fs::copy(&f.stripped, &bin).unwrap();
    let server = serve(Reply::Body(Arc::new(std::fs::read(&f.debug).unwrap())));
    let cache = tmp.path().join("cache");

    let mut config = Config::local(vec![]);
    config.debuginfod = Some(client(&server.url, &cache));
    let sym = Symbolizer::new(config.clone());
    let s = sym.symbolize_file(&bin, helper + 1, true).unwrap();
    assert_eq!(s.symbol.as_ref().map(|h| &*h.name), Some("helper_static"));
    assert_eq!(
        s.frames.last().and_then(|f| f.function.as_deref()),
        Some("helper_static")
    );
    assert_eq!(
        s.module.debug_file().map(|d| d.1),
        Some(DebugOrigin::Debuginfod)
    );
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);
    assert_eq!(
        server.paths.lock().unwrap()[0],
        format!("/buildid/{}/debuginfo", id.hex())
    );
    assert!(cache.join(id.hex()).join("debuginfo").is_file());

    // a new symbolizer with the server gone: from the cache, no request
    drop(server);
    let sym = Symbolizer::new(config);
    let s = sym.symbolize_file(&bin, helper, false).unwrap();
    assert_eq!(s.symbol.as_ref().map(|h| &*h.name), Some("helper_static"));
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let r = f();
    (r, t.elapsed())
}

#[test]
fn server_down_fails_fast_and_is_negatively_cached() {
    let tmp = tempfile::tempdir().unwrap();
    let id = BuildId::from_hex("00112233445566778899aabbccddeeff00112233").unwrap();
    // a port nobody listens on: bound, then closed
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let c = Debuginfod::new(client(&format!("http://127.0.0.1:{port}"), tmp.path()));
    let (r, t) = timed(|| c.fetch(&id));
    eprintln!("server down: {r:?} in {t:?}");
    assert!(
        matches!(r, Err(DebuginfodError::Unreachable { .. })),
        "{r:?}"
    );
    assert!(t < Duration::from_secs(2), "{t:?}");
    let (r, t) = timed(|| c.fetch(&id));
    assert!(
        matches!(r, Err(DebuginfodError::NegativelyCached { .. })),
        "{r:?}"
    );
    assert!(t < Duration::from_millis(100));
}

#[test]
fn silent_server_times_out() {
    let tmp = tempfile::tempdir().unwrap();
    let id = BuildId::from_hex("0011223344").unwrap();
    let server = serve(Reply::Silent);
    let c = Debuginfod::new(client(&server.url, tmp.path()));
    let (r, t) = timed(|| c.fetch(&id));
    eprintln!("silent server: {r:?} in {t:?}");
    assert!(matches!(r, Err(DebuginfodError::Timeout { .. })), "{r:?}");
    assert!(t < Duration::from_secs(4), "{t:?}");
}

#[test]
fn slow_trickle_is_cut_by_the_whole_request_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let id = BuildId::from_hex("0011223355").unwrap();
    // a byte every 100 ms never trips the 1 s read timeout: the 3 s total does
    let server = serve(Reply::Trickle {
        len: 100_000,
        every: Duration::from_millis(100),
    });
    let c = Debuginfod::new(client(&server.url, tmp.path()));
    let (r, t) = timed(|| c.fetch(&id));
    eprintln!("slow server: {r:?} in {t:?}");
    assert!(matches!(r, Err(DebuginfodError::Timeout { .. })), "{r:?}");
    assert!(t < Duration::from_secs(5), "{t:?}");
    assert!(!tmp.path().join(id.hex()).join("debuginfo").exists());
}

#[test]
fn oversized_replies_are_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    for (i, reply) in [Reply::HugeLength, Reply::Endless].into_iter().enumerate() {
        let id = BuildId::from_hex(&format!("aabbccdd0{i}")).unwrap();
        let server = serve(reply);
        let c = Debuginfod::new(client(&server.url, tmp.path()));
        let (r, t) = timed(|| c.fetch(&id));
        eprintln!("oversized reply {i}: {r:?} in {t:?}");
        assert!(matches!(r, Err(DebuginfodError::TooLarge { .. })), "{r:?}");
        assert!(t < Duration::from_secs(4), "{t:?}");
        let dir = tmp.path().join(id.hex());
        let left: Vec<_> = std::fs::read_dir(&dir)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(
            left.iter().all(|n| n.to_string_lossy().ends_with(".neg")),
            "{left:?}"
        );
    }
}

#[test]
fn wrong_content_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let Some((f, id, _)) = fixture(tmp.path()) else {
        return;
    };
    let other = build_fixture(tmp.path(), 4, &[]).unwrap();
    for (what, body) in [
        (
            "another build's debug file",
            std::fs::read(&other.debug).unwrap(),
        ),
        ("not ELF", b"<html>proxy error</html>".to_vec()),
        (
            "truncated ELF",
            std::fs::read(&f.debug).unwrap()[..100].to_vec(),
        ),
    ] {
        let cache = tmp.path().join(format!("cache-{}", what.len()));
        let server = serve(Reply::Body(Arc::new(body)));
        let c = Debuginfod::new(client(&server.url, &cache));
        let r = c.fetch(&id);
        eprintln!("{what}: {r:?}");
        assert!(
            matches!(r, Err(DebuginfodError::WrongContent { .. })),
            "{what}: {r:?}"
        );
        assert!(!cache.join(id.hex()).join("debuginfo").exists());
    }
}

#[test]
fn not_found_then_asked_again_after_the_negative_ttl() {
    let tmp = tempfile::tempdir().unwrap();
    let id = BuildId::from_hex("feedface").unwrap();
    let server = serve(Reply::Status(404));
    let mut cfg = client(&server.url, tmp.path());
    let c = Debuginfod::new(cfg.clone());
    assert!(matches!(
        c.fetch(&id),
        Err(DebuginfodError::NotFound { .. })
    ));
    assert!(matches!(
        c.fetch(&id),
        Err(DebuginfodError::NegativelyCached { .. })
    ));
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);
    cfg.negative_ttl = Duration::ZERO;
    let c = Debuginfod::new(cfg);
    assert!(matches!(
        c.fetch(&id),
        Err(DebuginfodError::NotFound { .. })
    ));
    assert_eq!(server.hits.load(Ordering::SeqCst), 2);
}

#[test]
fn urls_from_the_environment_syntax() {
    assert_eq!(
        symbolize::debuginfod::parse_urls(" https://a.example/  http://b:8002\thttp://c "),
        vec!["https://a.example", "http://b:8002", "http://c"]
    );
    assert!(symbolize::debuginfod::parse_urls("   ").is_empty());
}
