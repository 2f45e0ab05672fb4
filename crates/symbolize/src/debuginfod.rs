//! A debuginfod client: `GET <url>/buildid/<hex>/debuginfo` on each server of
//! `DEBUGINFOD_URLS` in turn, the reply kept in a local cache directory.
//!
//! HTTP is done with `ureq`, a small blocking client: this crate runs inside the
//! daemon's blocking worker threads and in one-shot commands, so an async runtime
//! (tokio + hyper) would buy nothing and add a second runtime to the annotate/stack
//! binaries; `ureq` gives per-phase timeouts (resolve, connect, per read, whole call),
//! a body size limit, and rustls for https without a system OpenSSL.
//!
//! Guarantees, each tested against a local server:
//! - a server that is down or does not answer costs at most `connect_timeout` (resp.
//!   `total_timeout`) per URL, never a hang;
//! - a reply larger than `max_bytes` is dropped, without being held in memory whole;
//! - a reply that is not an ELF file with the requested build-id is refused;
//! - a failed build-id is not asked again for `negative_ttl` (an empty
//!   `<cache>/<hex>/debuginfo.neg` file whose mtime is the failure's time, so the
//!   answer survives restarts and is shared between processes).

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::elf::{BuildId, ElfFile};
use crate::error::DebuginfodError;

/// Settings of the client.
#[derive(Debug, Clone)]
pub struct DebuginfodConfig {
    /// Server base URLs, tried in order.
    pub urls: Vec<String>,
    /// Where downloaded files are kept: `<cache_dir>/<build-id hex>/debuginfo`.
    pub cache_dir: PathBuf,
    pub connect_timeout: Duration,
    /// Longest wait for any one read from the server.
    pub read_timeout: Duration,
    /// Bound on a whole request to one server, body included.
    pub total_timeout: Duration,
    /// Largest reply accepted.
    pub max_bytes: u64,
    /// How long a failed build-id is not asked for again.
    pub negative_ttl: Duration,
}

impl DebuginfodConfig {
    /// From the environment: `DEBUGINFOD_URLS` (space-separated), the cache under
    /// `$PYSTACKD_DEBUGINFOD_CACHE`, else `$XDG_CACHE_HOME/pystackd/debuginfod`, else
    /// `$HOME/.cache/pystackd/debuginfod`. `None` when `DEBUGINFOD_URLS` is unset or empty.
    pub fn from_env() -> Option<DebuginfodConfig> {
        let urls = parse_urls(&std::env::var("DEBUGINFOD_URLS").ok()?);
        if urls.is_empty() {
            return None;
        }
        let cache_dir = if let Some(d) = std::env::var_os("PYSTACKD_DEBUGINFOD_CACHE") {
            PathBuf::from(d)
        } else if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
            PathBuf::from(d).join("pystackd/debuginfod")
        } else if let Some(h) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
            PathBuf::from(h).join(".cache/pystackd/debuginfod")
        } else {
            std::env::temp_dir().join("pystackd-debuginfod")
        };
        Some(DebuginfodConfig::new(urls, cache_dir))
    }

    /// Defaults for everything but the servers and the cache: connect 2 s, read 10 s,
    /// a whole request 120 s, replies up to 2 GiB, failures remembered 10 minutes.
    pub fn new(urls: Vec<String>, cache_dir: PathBuf) -> DebuginfodConfig {
        DebuginfodConfig {
            urls,
            cache_dir,
            connect_timeout: Duration::from_secs(2),
            read_timeout: Duration::from_secs(10),
            total_timeout: Duration::from_secs(120),
            max_bytes: 2 << 30,
            negative_ttl: Duration::from_secs(600),
        }
    }
}

/// `DEBUGINFOD_URLS` is a space-separated list (elfutils also accepts tabs/newlines).
pub fn parse_urls(s: &str) -> Vec<String> {
    s.split_whitespace()
        .map(|u| u.trim_end_matches('/').to_string())
        .filter(|u| !u.is_empty())
        .collect()
}

/// The client. Cheap to share (`&self` everywhere).
pub struct Debuginfod {
    config: DebuginfodConfig,
    agent: ureq::Agent,
}

impl std::fmt::Debug for Debuginfod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Debuginfod")
            .field("config", &self.config)
            .finish()
    }
}

impl Debuginfod {
    pub fn new(config: DebuginfodConfig) -> Debuginfod {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_resolve(Some(config.connect_timeout))
            .timeout_connect(Some(config.connect_timeout))
            .timeout_send_request(Some(config.read_timeout))
            .timeout_recv_response(Some(config.read_timeout))
            .timeout_per_read(Some(config.read_timeout))
            .timeout_global(Some(config.total_timeout))
            .http_status_as_error(false)
            .max_redirects(4)
            .user_agent(concat!("pystackd/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Debuginfod { config, agent }
    }

    pub fn config(&self) -> &DebuginfodConfig {
        &self.config
    }

    /// Where a build-id's debuginfo is (or would be) cached.
    pub fn cache_path(&self, build_id: &BuildId) -> PathBuf {
        self.config.cache_dir.join(build_id.hex()).join("debuginfo")
    }

    fn negative_path(&self, build_id: &BuildId) -> PathBuf {
        self.config
            .cache_dir
            .join(build_id.hex())
            .join("debuginfo.neg")
    }

    /// The path of a verified debug file for `build_id`: from the cache, else
    /// downloaded from the first server that has it.
    pub fn fetch(&self, build_id: &BuildId) -> Result<PathBuf, DebuginfodError> {
        if self.config.urls.is_empty() {
            return Err(DebuginfodError::NotConfigured);
        }
        let cached = self.cache_path(build_id);
        if cached.is_file() {
            // verified before it was renamed into place; checked again anyway, cheaply
            if let Ok(f) = ElfFile::open(&cached) {
                if f.build_id.as_ref() == Some(build_id) {
                    return Ok(cached);
                }
            }
            let _ = fs::remove_file(&cached);
        }
        let neg = self.negative_path(build_id);
        if let Ok(md) = fs::metadata(&neg) {
            let age = md
                .modified()
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .unwrap_or(Duration::ZERO);
            if age < self.config.negative_ttl {
                return Err(DebuginfodError::NegativelyCached {
                    build_id: build_id.clone(),
                    ttl_secs: self.config.negative_ttl.as_secs(),
                });
            }
            let _ = fs::remove_file(&neg);
        }
        let mut last_err = None;
        for base in &self.config.urls {
            let url = format!("{base}/buildid/{}/debuginfo", build_id.hex());
            match self.download(&url, build_id, &cached) {
                Ok(()) => return Ok(cached),
                Err(e) => last_err = Some(e),
            }
        }
        let err = match last_err {
            Some(DebuginfodError::Status { status: 404, .. }) | None => DebuginfodError::NotFound {
                build_id: build_id.clone(),
            },
            Some(e) => e,
        };
        // remember the failure (best effort: a read-only cache just means no memory)
        if fs::create_dir_all(neg.parent().unwrap_or(Path::new("."))).is_ok() {
            let _ = fs::File::create(&neg);
        }
        Err(err)
    }

    fn download(&self, url: &str, build_id: &BuildId, dest: &Path) -> Result<(), DebuginfodError> {
        let map_err = |e: ureq::Error| match e {
            ureq::Error::Timeout(_) => DebuginfodError::Timeout {
                url: url.to_string(),
            },
            ureq::Error::BodyExceedsLimit(_) => DebuginfodError::TooLarge {
                url: url.to_string(),
                limit: self.config.max_bytes,
            },
            ureq::Error::Io(ref io) if io.kind() == std::io::ErrorKind::TimedOut => {
                DebuginfodError::Timeout {
                    url: url.to_string(),
                }
            }
            other => DebuginfodError::Unreachable {
                url: url.to_string(),
                reason: other.to_string(),
            },
        };
        let mut resp = self.agent.get(url).call().map_err(map_err)?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(DebuginfodError::Status {
                url: url.to_string(),
                status,
            });
        }
        if let Some(len) = resp
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            if len > self.config.max_bytes {
                return Err(DebuginfodError::TooLarge {
                    url: url.to_string(),
                    limit: self.config.max_bytes,
                });
            }
        }
        let dir = dest.parent().unwrap_or(Path::new("."));
        let cache_err = |path: &Path, source| DebuginfodError::Cache {
            path: path.to_path_buf(),
            source,
        };
        fs::create_dir_all(dir).map_err(|e| cache_err(dir, e))?;
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = dir.join(format!(".debuginfo.{}.{seq}.tmp", std::process::id()));
        let result = (|| {
            let mut out = fs::File::create(&tmp).map_err(|e| cache_err(&tmp, e))?;
            // streamed to disk: a large debug file is never held in memory whole
            let mut reader = resp
                .body_mut()
                .with_config()
                .limit(self.config.max_bytes)
                .reader();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    // ureq reports its own errors (timeouts, the body limit) inside io::Error
                    Err(e) => {
                        return Err(match e.kind() {
                            std::io::ErrorKind::TimedOut => DebuginfodError::Timeout {
                                url: url.to_string(),
                            },
                            _ => {
                                match e.into_inner().map(|inner| inner.downcast::<ureq::Error>()) {
                                    Some(Ok(ureq_err)) => map_err(*ureq_err),
                                    Some(Err(other)) => DebuginfodError::Unreachable {
                                        url: url.to_string(),
                                        reason: other.to_string(),
                                    },
                                    None => DebuginfodError::Unreachable {
                                        url: url.to_string(),
                                        reason: "read failed".into(),
                                    },
                                }
                            }
                        })
                    }
                };
                out.write_all(&buf[..n]).map_err(|e| cache_err(&tmp, e))?;
            }
            out.sync_all().map_err(|e| cache_err(&tmp, e))?;
            drop(out);
            let file = ElfFile::open(&tmp).map_err(|e| DebuginfodError::WrongContent {
                url: url.to_string(),
                reason: e.to_string(),
            })?;
            if file.build_id.as_ref() != Some(build_id) {
                return Err(DebuginfodError::WrongContent {
                    url: url.to_string(),
                    reason: format!(
                        "build-id {} instead of {build_id}",
                        file.build_id
                            .as_ref()
                            .map(|b| b.hex())
                            .unwrap_or_else(|| "(none)".into())
                    ),
                });
            }
            drop(file);
            fs::rename(&tmp, dest).map_err(|e| cache_err(dest, e))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }
}
