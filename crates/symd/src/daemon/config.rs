//! The daemon's configuration file, TOML (`key = value` lines, `#` comments), parsed by the
//! `toml` crate into [`Config`]; unknown keys are an error (a typo must not pass silently).
//! Read at start and again on SIGHUP.

use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `tracing` filter directive (`info`, `debug`, `pystackd=trace`, ...). The
    /// `PYSTACKD_LOG` / `RUST_LOG` environment variables take precedence.
    pub log_level: String,
    /// Most processes kept attached; `stack` on more reads without caching.
    pub max_attached: usize,
    /// Longest request line accepted, in bytes.
    pub max_request_bytes: usize,
    /// Most client connections open at once.
    pub max_connections: usize,
    /// How often attached processes are checked for exit, in seconds.
    pub sweep_interval_secs: u64,
    /// Most connections one non-root uid may hold open.
    pub max_connections_per_uid: usize,
    /// Most processes one non-root uid's requests may keep attached.
    pub max_attached_per_uid: usize,
    /// A connection that completes no request line for this long is closed, and so is
    /// one whose reply cannot be written for this long.
    pub idle_timeout_secs: u64,
    /// Most connections root may hold open; never more than half of
    /// `max_connections`, so that root alone cannot take them all.
    pub max_connections_root: usize,
    /// Most access checkers (one per non-root client uid) running at once.
    pub max_access_checkers: usize,
    /// How long the record of an attached process's executable mappings is kept after
    /// the process exits, in seconds, to name its addresses posthumously (0: never).
    pub posthumous_secs: u64,
    /// Most processes whose mappings are recorded at once (the oldest exited ones are
    /// dropped first).
    pub max_records: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            log_level: "info".into(),
            max_attached: 256,
            max_request_bytes: 1 << 20,
            max_connections: 1024,
            sweep_interval_secs: 5,
            max_connections_per_uid: 64,
            max_attached_per_uid: 64,
            idle_timeout_secs: 300,
            max_connections_root: 512,
            max_access_checkers: 64,
            posthumous_secs: 600,
            max_records: 1024,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {msg}")]
    Syntax {
        path: String,
        line: usize,
        msg: String,
    },
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&text).map_err(|(line, msg)| ConfigError::Syntax {
            path: path.display().to_string(),
            line,
            msg,
        })
    }

    /// Parse the file's text; errors carry the 1-based line number.
    pub fn parse(text: &str) -> Result<Config, (usize, String)> {
        let c: Config = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(1, |sp| {
                text[..sp.start.min(text.len())].matches('\n').count() + 1
            });
            // name the key of that line: toml's message for a bad value does not
            let key = text
                .lines()
                .nth(line - 1)
                .and_then(|l| l.split_once('='))
                .map(|(k, _)| k.trim())
                .filter(|k| !k.is_empty());
            match key {
                Some(k) => (line, format!("{k}: {}", e.message())),
                None => (line, e.message().to_string()),
            }
        })?;
        c.checked().map_err(|m| (1, m))
    }

    /// Ranges TOML cannot express: a request cap that leaves room for a request, and
    /// counts and intervals of at least one.
    fn checked(mut self) -> Result<Config, String> {
        if !(64..=(64 << 20)).contains(&self.max_request_bytes) {
            return Err("max_request_bytes must be 64 .. 67108864".into());
        }
        for v in [
            &mut self.max_connections,
            &mut self.max_connections_per_uid,
            &mut self.max_connections_root,
            &mut self.max_access_checkers,
        ] {
            *v = (*v).max(1);
        }
        self.sweep_interval_secs = self.sweep_interval_secs.max(1);
        self.idle_timeout_secs = self.idle_timeout_secs.max(1);
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keys_comments_and_quotes() {
        let c = Config::parse(
            "# pystackd\nlog_level = \"debug\" # more\n\nmax_attached=3\nmax_request_bytes = 4_096\n",
        )
        .unwrap();
        assert_eq!(c.log_level, "debug");
        assert_eq!(c.max_attached, 3);
        assert_eq!(c.max_request_bytes, 4096);
        assert_eq!(c.max_connections, Config::default().max_connections);
        let c = Config::parse(
            "max_connections_per_uid = 2\nmax_attached_per_uid = 3\nidle_timeout_secs = 0\n",
        )
        .unwrap();
        assert_eq!(
            (
                c.max_connections_per_uid,
                c.max_attached_per_uid,
                c.idle_timeout_secs
            ),
            (2, 3, 1)
        );
        let c = Config::parse("max_connections_root = 5\nmax_access_checkers = 0\n").unwrap();
        assert_eq!((c.max_connections_root, c.max_access_checkers), (5, 1));
        let c = Config::parse("posthumous_secs = 0\nmax_records = 7\n").unwrap();
        assert_eq!((c.posthumous_secs, c.max_records), (0, 7));
        assert_eq!(Config::default().posthumous_secs, 600);
    }

    #[test]
    fn rejects_unknown_keys_and_bad_values() {
        assert_eq!(Config::parse("a = 1").unwrap_err().0, 1);
        assert!(Config::parse("\nmax_attached = -1")
            .unwrap_err()
            .1
            .contains("max_attached"));
        assert!(Config::parse("log_level = \"x").is_err());
        assert_eq!(
            Config::parse("max_attached = 1\nmax_atached = 2")
                .unwrap_err()
                .0,
            2
        );
        assert!(Config::parse("max_request_bytes = 1").is_err());
        assert!(Config::parse("just words").is_err());
    }
}
