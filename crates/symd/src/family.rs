//! The processes a recording follows: the one it was given and, with `--subprocesses`,
//! every process that one starts (and those start in turn), each sampled by its own
//! [`Sampler`] at the requested rate.
//!
//! Children are found by looking at the process tree every [`RESCAN`]: a child that lives
//! shorter than that can be missed (said in `--help`). A child that is not CPython (a shell,
//! a compiler) is tried again for [`START_TRIES`] looks, in case it is an interpreter still
//! starting or about to exec one, then left alone until it runs another program. A process
//! that runs exec is followed as its new program from then on: its samples before and after
//! go under separate roots. A process that ends leaves its samples in the profile.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pyframe_reader::Identity;

use crate::platform;
use crate::sample::{self, End, Event, Sample, Sampler, Settings};

/// How often the process tree is looked at for new children.
pub const RESCAN: Duration = Duration::from_millis(100);
/// Looks at a child that is not (yet) CPython before it is left alone.
const START_TRIES: u32 = 20;

/// A process image: pid, start time, `exe_identity` and `exec_token`.
type ImageKey = (u32, u64, Option<(u64, u64)>, Option<u64>);

struct Member {
    pid: u32,
    identity: Identity,
    label: Arc<str>,
    sampler: Sampler,
}

/// Counts over every process followed, those gone included.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub samples: u64,
    pub dropped: u64,
    pub retried: u64,
    pub idle_skipped: u64,
    pub not_gil_skipped: u64,
    pub gil_unknown_skipped: u64,
}

impl Counts {
    fn add(&mut self, s: &Sampler) {
        self.samples += s.samples;
        self.dropped += s.dropped;
        self.retried += s.retried;
        self.idle_skipped += s.idle_skipped;
        self.not_gil_skipped += s.not_gil_skipped;
        self.gil_unknown_skipped += s.gil_unknown_skipped;
    }
}

/// What the family has to say next.
pub enum FamilyEvent {
    Wait(Duration),
    /// A sample of the process labelled so (`process PID (command)`).
    Sample(Arc<str>, Sample),
    /// Something worth a line on stderr: a process followed, one that ended.
    Note(String),
    End(End),
}

pub struct Family {
    root: u32,
    settings: Settings,
    follow: bool,
    started: Instant,
    end: Option<Instant>,
    members: Vec<Member>,
    /// Processes (pid, start time, executable) found not to be CPython, and how many
    /// looks they have had.
    tried: HashMap<ImageKey, u32>,
    last_scan: Instant,
    gone: Counts,
    notes: Vec<String>,
    /// Processes followed in all.
    pub followed: usize,
}

/// `process PID (command)`: the program's file name (not its directory) and its
/// arguments, cut to 100 characters.
pub fn process_label(pid: u32) -> String {
    let Some(c) = platform::command_line(pid) else {
        return format!("process {pid}");
    };
    let (prog, args) = c.split_once(' ').unwrap_or((&c, ""));
    let prog = prog.rsplit('/').next().unwrap_or(prog);
    let c = protocol::escape_control(format!("{prog} {args}").trim_end()).into_owned();
    if c.chars().count() > 100 {
        let cut: String = c.chars().take(99).collect();
        format!("process {pid} ({cut}…)")
    } else {
        format!("process {pid} ({c})")
    }
}

/// Whether the process still runs, but another image (exec).
fn ran_exec(id: &Identity) -> bool {
    id.alive() && !id.is_same_image()
}

impl Family {
    /// Attaches `settings.pid` (an error here is the recording's: nothing to follow);
    /// with `follow`, its children are looked for from now on, and a root that is not
    /// CPython itself (a shell script, a launcher) is only their parent.
    pub fn attach(settings: Settings, follow: bool) -> Result<Family, pyframe_reader::Error> {
        let pid = settings.pid;
        let (members, started) = match Sampler::attach(settings) {
            Ok(sampler) => {
                let identity = Identity::of(pid)?;
                let started = sampler.started();
                let member = Member {
                    pid,
                    identity,
                    label: process_label(pid).into(),
                    sampler,
                };
                (vec![member], started)
            }
            Err(e) if follow && e.kind() == protocol::ErrorKind::NotPython => {
                // its children may be: the root must exist, though
                Identity::of(pid)?;
                (Vec::new(), Instant::now())
            }
            Err(e) => return Err(e),
        };
        let followed = members.len();
        Ok(Family {
            root: pid,
            settings,
            follow,
            started,
            end: settings.duration.map(|d| started + d),
            members,
            tried: HashMap::new(),
            // the first look at once
            last_scan: started - RESCAN,
            gone: Counts::default(),
            notes: Vec::new(),
            followed,
        })
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / f64::from(self.settings.rate.max(1)))
    }

    pub fn counts(&self) -> Counts {
        let mut c = self.gone;
        for m in &self.members {
            c.add(&m.sampler);
        }
        c
    }

    /// The notes not yet given out (after the end), oldest first.
    pub fn take_notes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notes)
    }

    fn retire(&mut self, i: usize, why: &str) {
        let m = self.members.remove(i);
        self.gone.add(&m.sampler);
        if self.follow {
            self.notes.push(format!(
                "{} {why} after {} samples",
                m.label, m.sampler.samples
            ));
        }
    }

    /// Every live descendant of the root and of the processes followed (a process whose
    /// parent ended is re-parented, and its children are still found through it).
    fn descendants(&self) -> Vec<u32> {
        let mut seen: Vec<u32> = Vec::new();
        let mut todo: Vec<u32> = vec![self.root];
        todo.extend(self.members.iter().map(|m| m.pid));
        while let Some(p) = todo.pop() {
            for c in platform::children(p) {
                if !seen.contains(&c) && c != self.root && seen.len() < 4096 {
                    seen.push(c);
                    todo.push(c);
                }
            }
        }
        seen
    }

    fn scan(&mut self) {
        self.last_scan = Instant::now();
        // a process that ran exec: its new program is a new member
        let mut i = 0;
        while i < self.members.len() {
            if ran_exec(&self.members[i].identity) {
                self.retire(i, "ran another program (exec)");
            } else {
                i += 1;
            }
        }
        // bounded: processes that ended are forgotten once many have been seen
        if self.tried.len() > 4096 {
            self.tried
                .retain(|k, _| pyframe_reader::platform::start_time(k.0).ok() == Some(k.1));
        }
        let mut candidates = self.descendants();
        candidates.push(self.root);
        let remaining = self
            .end
            .map(|e| e.saturating_duration_since(Instant::now()));
        if remaining.is_some_and(|r| r.is_zero()) {
            return;
        }
        for pid in candidates {
            if self.members.iter().any(|m| m.pid == pid) {
                continue;
            }
            // a process left alone costs two small reads per look, not an attach
            let Ok(start_time) = pyframe_reader::platform::start_time(pid) else {
                continue;
            };
            let key = (
                pid,
                start_time,
                pyframe_reader::platform::exe_identity(pid),
                pyframe_reader::platform::exec_token(pid),
            );
            let tries = self.tried.entry(key).or_insert(0);
            if *tries >= START_TRIES {
                continue;
            }
            *tries += 1;
            let Ok(identity) = Identity::expect(pid, start_time) else {
                continue;
            };
            let settings = Settings {
                pid,
                duration: remaining,
                ..self.settings
            };
            match Sampler::attach(settings) {
                Ok(sampler) => {
                    self.tried.remove(&key);
                    let label: Arc<str> = process_label(pid).into();
                    self.notes.push(format!("following {label}"));
                    self.followed += 1;
                    self.members.push(Member {
                        pid,
                        identity,
                        label,
                        sampler,
                    });
                }
                Err(e) => {
                    use protocol::ErrorKind as K;
                    // anything else may be a process between fork and exec, or an
                    // interpreter still loading: looked at again
                    let lasting = matches!(e.kind(), K::PermissionDenied | K::UnsupportedVersion);
                    if lasting {
                        // permission, an unsupported version: said once, not tried again
                        self.tried.insert(key, START_TRIES);
                        self.notes
                            .push(format!("not following {}: {e}", process_label(pid)));
                    }
                }
            }
        }
    }

    pub fn next_event(&mut self) -> FamilyEvent {
        if !self.notes.is_empty() {
            return FamilyEvent::Note(self.notes.remove(0));
        }
        if sample::interrupted() {
            return FamilyEvent::End(End::Interrupted);
        }
        if self.end.is_some_and(|e| Instant::now() >= e) {
            return FamilyEvent::End(End::Duration);
        }
        if self.follow && self.last_scan.elapsed() >= RESCAN {
            self.scan();
            if !self.notes.is_empty() {
                return FamilyEvent::Note(self.notes.remove(0));
            }
        }
        let mut wait = if self.follow {
            RESCAN.saturating_sub(self.last_scan.elapsed())
        } else {
            Duration::from_secs(1)
        };
        let mut i = 0;
        while i < self.members.len() {
            match self.members[i].sampler.next_event() {
                Event::Wait(d) => {
                    wait = wait.min(d);
                    i += 1;
                }
                Event::Sample(s) if self.follow && ran_exec(&self.members[i].identity) => {
                    // the process ran exec during or before this read: the stack may be
                    // the new program's, and this root is the old one's (a same-file exec
                    // can leave every address valid). Dropped; the new program is a new
                    // member from the next look.
                    drop(s);
                    self.retire(i, "ran another program (exec)");
                    self.last_scan = Instant::now() - RESCAN;
                }
                Event::Sample(s) => {
                    let label = self.members[i].label.clone();
                    // the next call starts after this member: none starves the others
                    self.members.rotate_left(i + 1);
                    return FamilyEvent::Sample(label, s);
                }
                Event::End(End::Exited) if self.follow => self.retire(i, "exited"),
                Event::End(End::Error(e)) if self.follow => {
                    self.retire(i, &format!("could not be read any more ({e})"))
                }
                Event::End(End::Exited) => {
                    self.retire(i, "exited");
                    return FamilyEvent::End(End::Exited);
                }
                Event::End(e) => return FamilyEvent::End(e),
            }
        }
        if self.members.is_empty() {
            if !self.follow {
                return FamilyEvent::End(End::Exited);
            }
            // followed processes all gone: over once the root has ended too and a last
            // look finds nothing new to follow
            if !pyframe_reader::platform::exists(self.root)
                || pyframe_reader::platform::has_exited(self.root)
            {
                self.scan();
                if self.members.is_empty() {
                    return FamilyEvent::End(End::Exited);
                }
                wait = Duration::ZERO;
            }
        }
        FamilyEvent::Wait(wait)
    }
}
