//! `pystackd serve`: the resident service. It keeps attached Python processes (and
//! their caches) and answers JSON-RPC 2.0 requests, one JSON object per line, on a
//! Unix socket. See docs/protocol.md and docs/service.md.

pub mod auth;
pub mod cache;
pub mod checker;
pub mod config;
pub mod methods;
pub mod peer;
pub mod profiles;
pub mod records;
pub mod server;
pub mod socket;
pub mod state;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

use crate::exit;
use config::Config;
use socket::Origin;
use state::State;

type FilterHandle = reload::Handle<EnvFilter, Registry>;

/// Run the daemon until SIGTERM/SIGINT. `socket` is used unless systemd passed one.
pub fn run(socket: &Path, config_path: Option<&Path>, log_level: Option<&str>) -> ExitCode {
    if let Some(Err(e)) = log_level.map(EnvFilter::try_new) {
        eprintln!(
            "pystackd: --log-level `{}`: {e}",
            log_level.unwrap_or_default()
        );
        return ExitCode::from(exit::FAILURE);
    }
    let config = match config_path.map(Config::load).transpose() {
        Ok(c) => c.unwrap_or_default(),
        Err(e) => {
            eprintln!("pystackd: {e}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    let log_handle = init_logging(&config, log_level);
    // One log record instead of a multi-line backtrace (the daemon survives reader
    // panics: they fail one request).
    std::panic::set_hook(Box::new(|info| error!("panic: {info}")));

    let listener = match socket::activated_listener() {
        Ok(Some(l)) => {
            info!("using the socket passed by systemd");
            Ok((l, Origin::Activated))
        }
        Ok(None) => socket::bind(socket),
        Err(e) => Err(format!("socket activation: {e}")),
    };
    let (listener, origin) = match listener {
        Ok(l) => l,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(exit::FAILURE);
        }
    };

    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("pystackd")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!("starting the runtime: {e}");
            origin.cleanup();
            return ExitCode::from(exit::FAILURE);
        }
    };
    let state = Arc::new(State::new(config));
    let code = rt.block_on(serve(
        state,
        listener,
        config_path.map(Path::to_path_buf),
        log_handle,
    ));
    origin.cleanup();
    // Reads still running on the blocking pool are not waited for.
    rt.shutdown_timeout(Duration::from_secs(1));
    info!("stopped");
    code
}

async fn serve(
    state: Arc<State>,
    listener: std::os::unix::net::UnixListener,
    config_path: Option<PathBuf>,
    log_handle: Option<FilterHandle>,
) -> ExitCode {
    let listener = match tokio::net::UnixListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            error!("socket: {e}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    let (mut term, mut int, mut hup) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(t), Ok(i), Ok(h)) => (t, i, h),
        _ => {
            error!("cannot install signal handlers");
            return ExitCode::from(exit::FAILURE);
        }
    };
    info!(
        version = env!("CARGO_PKG_VERSION"),
        pid = std::process::id(),
        "serving"
    );
    tokio::spawn(sweep(state.clone()));
    let accept = server::accept_loop(state.clone(), listener);
    tokio::pin!(accept);
    loop {
        tokio::select! {
            _ = &mut accept => return ExitCode::from(exit::FAILURE),
            _ = term.recv() => { info!("SIGTERM: shutting down"); break }
            _ = int.recv() => { info!("SIGINT: shutting down"); break }
            _ = hup.recv() => reload(&state, config_path.as_deref(), log_handle.as_ref()),
        }
    }
    ExitCode::from(exit::OK)
}

/// SIGHUP: read the config file again; a bad file leaves the running config alone.
fn reload(state: &State, path: Option<&Path>, log_handle: Option<&FilterHandle>) {
    let Some(path) = path else {
        info!("SIGHUP: no config file (--config) to reload");
        return;
    };
    match Config::load(path) {
        Ok(c) => {
            if let Some(h) = log_handle {
                match EnvFilter::try_new(&c.log_level) {
                    Ok(f) => {
                        let _ = h.reload(f);
                    }
                    Err(e) => warn!("log_level `{}`: {e}; keeping the old one", c.log_level),
                }
            }
            if c.max_attached < state.cache.len() {
                warn!(
                    "max_attached {} is below the {} processes attached; no new ones until some go",
                    c.max_attached,
                    state.cache.len()
                );
            }
            *state.config.write().unwrap_or_else(|p| p.into_inner()) = c;
            info!("configuration reloaded from {}", path.display());
        }
        Err(e) => error!("reloading configuration: {e}; keeping the running one"),
    }
}

/// Drop attached processes that have exited (or whose pid now names another process).
async fn sweep(state: Arc<State>) {
    loop {
        let secs = state.config().sweep_interval_secs.max(1);
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let st = state.clone();
        let _ = tokio::task::spawn_blocking(move || {
            st.checkers.reap_idle(checker::IDLE);
            for e in st.cache.entries() {
                if !e.identity.alive() && st.cache.remove(e.key) {
                    info!(pid = e.key.pid, "process exited; detached");
                }
            }
            let keep = Duration::from_secs(st.config().posthumous_secs);
            st.records.sweep(&st.symbolizer, keep);
        })
        .await;
    }
}

/// Plain one-line records without colours on stderr (journald, SMF log files). The
/// filter comes from `--log-level`, else `PYSTACKD_LOG` or `RUST_LOG`, else the
/// config's `log_level`; the returned handle reloads the latter on SIGHUP (`None`:
/// the command line or the environment rules).
fn init_logging(config: &Config, log_level: Option<&str>) -> Option<FilterHandle> {
    let from_env = log_level.map(str::to_string).or_else(|| {
        std::env::var("PYSTACKD_LOG")
            .or_else(|_| std::env::var("RUST_LOG"))
            .ok()
    });
    let directive = from_env.as_deref().unwrap_or(&config.log_level);
    let filter = EnvFilter::try_new(directive).unwrap_or_else(|e| {
        eprintln!("pystackd: log filter `{directive}`: {e}; using `info`");
        EnvFilter::new("info")
    });
    let (filter, handle) = reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_target(false)
        .with_writer(std::io::stderr);
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init();
    from_env.is_none().then_some(handle)
}
