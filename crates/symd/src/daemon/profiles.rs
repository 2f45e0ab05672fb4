//! Profiling sessions: `profile` starts one (sampling in a thread of its own, as `pystackd
//! record` does), `profile_result` gives its state and, once it has ended, the profile,
//! `profile_stop` ends it early. A session belongs to the client uid that started it;
//! bounded per uid, in all, in samples (rate × duration) and in how long an ended one is
//! kept.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use protocol::rpc::{
    ProfileFormat, ProfileParams, ProfileResult, ProfileStarted, ProfileState, RpcError,
};
use protocol::ErrorKind;
use tracing::info;

use crate::profile::{Profile, RecordFormat};
use crate::sample::{self, End, Event, Sampler};

/// Running sessions one client uid may have at once.
pub const MAX_RUNNING_PER_UID: usize = 4;
/// Sessions (running or ended, not yet swept) kept in all.
pub const MAX_SESSIONS: usize = 64;
/// Samples one session may take (rate × duration): bounds its memory.
pub const MAX_SAMPLES: f64 = 1_000_000.0;
pub const MAX_DURATION: f64 = 3600.0;
pub const MAX_RATE: u32 = 10_000;
/// How long an ended session's profile is kept for `profile_result`.
pub const KEEP_ENDED: Duration = Duration::from_secs(600);

#[derive(Default)]
pub struct Sessions {
    next: AtomicU64,
    map: Mutex<HashMap<u64, Arc<Session>>>,
}

pub struct Session {
    id: u64,
    pub owner_uid: u32,
    pid: u32,
    rate: u32,
    threads: bool,
    stop: AtomicBool,
    inner: Mutex<Inner>,
}

struct Inner {
    state: ProfileState,
    profile: Profile,
    samples: u64,
    dropped: u64,
    idle_skipped: u64,
    gil_skipped: u64,
    started: Instant,
    /// When sampling ended.
    ended: Option<Instant>,
    error: Option<String>,
}

fn invalid(msg: impl Into<String>) -> RpcError {
    RpcError::of(ErrorKind::InvalidParams, msg)
}

/// The parameters' own limits (before anything is attached).
pub fn check(p: &ProfileParams) -> Result<(), RpcError> {
    if p.rate == 0 || p.rate > MAX_RATE {
        return Err(invalid(format!("rate {} is not in 1..={MAX_RATE}", p.rate)));
    }
    if !(p.duration > 0.0 && p.duration <= MAX_DURATION) {
        return Err(invalid(format!(
            "duration {} is not in (0, {MAX_DURATION}] seconds",
            p.duration
        )));
    }
    if f64::from(p.rate) * p.duration > MAX_SAMPLES {
        return Err(invalid(format!(
            "rate × duration = {:.0} samples: at most {MAX_SAMPLES:.0} per session (a lower \
             rate or a shorter duration)",
            f64::from(p.rate) * p.duration
        )));
    }
    Ok(())
}

impl Sessions {
    /// Drops ended sessions older than [`KEEP_ENDED`].
    fn sweep(map: &mut HashMap<u64, Arc<Session>>) {
        map.retain(|_, s| {
            let i = s.inner.lock().unwrap_or_else(|e| e.into_inner());
            i.ended.is_none_or(|t| t.elapsed() < KEEP_ENDED)
        });
    }

    /// Starts sampling `p.pid` (already authorized for `uid`; `start_time` is the
    /// process the authorization was about).
    pub fn start(
        self: &Arc<Self>,
        uid: u32,
        p: &ProfileParams,
        start_time: u64,
    ) -> Result<ProfileStarted, RpcError> {
        let mut sampler = Sampler::attach(sample::Settings {
            pid: p.pid,
            rate: p.rate,
            duration: Some(Duration::from_secs_f64(p.duration)),
            pause: p.pause,
            idle: p.idle,
            classify_idle: false,
            gil: p.gil,
            native: p.native,
        })
        .map_err(|e| super::methods::reader_error(&e))?;
        // the process attached must be the one authorized
        if pyframe_reader::platform::start_time(p.pid).ok() != Some(start_time) {
            return Err(RpcError::of(
                ErrorKind::ProcessExited,
                format!("process {} exited", p.pid),
            ));
        }
        let session = {
            let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            Self::sweep(&mut map);
            let running = map
                .values()
                .filter(|s| s.owner_uid == uid && s.running())
                .count();
            if running >= MAX_RUNNING_PER_UID {
                return Err(RpcError::of(
                    ErrorKind::LimitReached,
                    format!(
                        "{running} profiling sessions of this user are running (at most \
                         {MAX_RUNNING_PER_UID}): wait for one or stop it (profile_stop)"
                    ),
                ));
            }
            if map.len() >= MAX_SESSIONS {
                return Err(RpcError::of(
                    ErrorKind::LimitReached,
                    format!("the daemon keeps {MAX_SESSIONS} profiling sessions at most"),
                ));
            }
            let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
            let s = Arc::new(Session {
                id,
                owner_uid: uid,
                pid: p.pid,
                rate: p.rate,
                threads: p.threads,
                stop: AtomicBool::new(false),
                inner: Mutex::new(Inner {
                    state: ProfileState::Running,
                    profile: Profile::new(sampler.interval().as_nanos() as i64),
                    samples: 0,
                    dropped: 0,
                    idle_skipped: 0,
                    gil_skipped: 0,
                    started: sampler.started(),
                    ended: None,
                    error: None,
                }),
            });
            map.insert(id, s.clone());
            s
        };
        info!(
            session = session.id,
            pid = p.pid,
            uid,
            rate = p.rate,
            duration = p.duration,
            "profile started"
        );
        let s = session.clone();
        std::thread::Builder::new()
            .name(format!("profile-{}", session.id))
            .spawn(move || s.run(&mut sampler))
            .map_err(|e| RpcError::of(ErrorKind::Internal, format!("starting a thread: {e}")))?;
        Ok(ProfileStarted {
            session: session.id,
            pid: p.pid,
            rate: p.rate,
            duration: p.duration,
        })
    }

    /// The session `id` if `uid` may see it (its owner, or a privileged client).
    pub fn get(&self, id: u64, uid: u32, privileged: bool) -> Result<Arc<Session>, RpcError> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(&id) {
            Some(s) if s.owner_uid == uid || privileged => Ok(s.clone()),
            Some(_) => Err(RpcError::of(
                ErrorKind::PermissionDenied,
                format!("profiling session {id} belongs to another user"),
            )),
            None => Err(invalid(format!(
                "no profiling session {id} (ended sessions are kept {} s)",
                KEEP_ENDED.as_secs()
            ))),
        }
    }
}

impl Session {
    fn running(&self) -> bool {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).state == ProfileState::Running
    }

    fn run(&self, sampler: &mut Sampler) {
        let end = loop {
            if self.stop.load(Ordering::Relaxed) {
                sampler.stop();
            }
            match sampler.next_event() {
                // short waits: a stop is seen within 50 ms
                Event::Wait(d) => std::thread::sleep(d.min(Duration::from_millis(50))),
                Event::Sample(s) => {
                    let mut i = self.inner.lock().unwrap_or_else(|e| e.into_inner());
                    for t in s.counted() {
                        i.profile.add(t, self.threads);
                    }
                }
                Event::End(end) => break end,
            }
            let mut i = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            (i.samples, i.dropped, i.idle_skipped, i.gil_skipped) = (
                sampler.samples,
                sampler.dropped,
                sampler.idle_skipped,
                sampler.not_gil_skipped + sampler.gil_unknown_skipped,
            );
        };
        let mut i = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        (i.samples, i.dropped, i.idle_skipped, i.gil_skipped) = (
            sampler.samples,
            sampler.dropped,
            sampler.idle_skipped,
            sampler.not_gil_skipped + sampler.gil_unknown_skipped,
        );
        i.ended = Some(Instant::now());
        i.state = match end {
            End::Duration => ProfileState::Done,
            End::Interrupted => ProfileState::Stopped,
            End::Exited => ProfileState::Exited,
            End::Error(e) => {
                i.error = Some(e.to_string());
                ProfileState::Failed
            }
        };
        info!(session = self.id, samples = i.samples, state = ?i.state, "profile ended");
    }

    /// Ends the session early (its profile so far is kept).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Waits (at most `limit`) for a stopped session's thread to finish.
    pub fn wait_ended(&self, limit: Duration) {
        let until = Instant::now() + limit;
        while self.running() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Its state, and the profile in `format` once it has ended.
    pub fn result(&self, format: ProfileFormat) -> Result<ProfileResult, RpcError> {
        let i = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = i.ended.unwrap_or_else(Instant::now) - i.started;
        let data = if i.state == ProfileState::Running {
            None
        } else {
            let mut out = Vec::new();
            let f = match format {
                ProfileFormat::Folded => RecordFormat::Folded,
                ProfileFormat::Speedscope => RecordFormat::Speedscope,
                ProfileFormat::Flamegraph => RecordFormat::Flamegraph,
                ProfileFormat::Pprof => RecordFormat::Pprof,
            };
            i.profile
                .write(f, self.pid, elapsed, &mut out)
                .map_err(|e| RpcError::of(ErrorKind::Internal, format!("rendering: {e}")))?;
            Some(match format {
                ProfileFormat::Pprof => {
                    use base64::Engine;
                    base64::engine::general_purpose::STANDARD.encode(&out)
                }
                _ => String::from_utf8_lossy(&out).into_owned(),
            })
        };
        Ok(ProfileResult {
            session: self.id,
            pid: self.pid,
            state: i.state,
            samples: i.samples,
            dropped: i.dropped,
            idle_skipped: i.idle_skipped,
            gil_skipped: i.gil_skipped,
            elapsed: elapsed.as_secs_f64(),
            rate_requested: self.rate,
            rate_achieved: i.samples as f64 / elapsed.as_secs_f64().max(1e-9),
            error: i.error.clone(),
            format: data.is_some().then_some(format),
            data,
        })
    }
}
