//! What `pystackd annotate` (and the daemon's `annotate` method) did with the stacks of one
//! run: the end-of-run report on stderr and the `summary` of the JSON-RPC answer.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How many detailed reasons are kept (the counts are always complete).
const MAX_DETAILS: usize = 20;

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnotateSummary {
    /// Stacks seen.
    pub stacks: u64,
    /// Stacks with at least one eval-loop frame.
    pub with_eval_frames: u64,
    /// Stacks that got Python frames.
    pub annotated: u64,
    /// Of those, stacks whose Python frames were read later than the probe fired and may
    /// have moved since (printed `[~ ... ]`); the rest were shown to be the probe's.
    #[serde(default)]
    pub read_later: u64,
    /// Of those, stacks with one eval frame more than Python groups (outermost left bare).
    pub race_outermost_bare: u64,
    /// Stacks without an eval frame whose Python frames, captured at the probe, were printed
    /// after the native stack.
    #[serde(default)]
    pub captured_unplaced: u64,
    /// Stacks whose eval frames all carried helper annotations already.
    pub already_annotated: u64,
    /// Stacks longer than the pending-stack cap, printed unannotated.
    pub too_long: u64,
    /// Unannotated stacks by reason.
    pub unannotated: BTreeMap<String, u64>,
    /// The first reasons in full (stack number: reason).
    pub details: Vec<String>,
    /// `resume` failures in `--stopped` mode.
    pub resume_errors: u64,
}

impl AnnotateSummary {
    /// Count one unannotated stack under `kind`, keeping the first reasons in full.
    pub fn record_unannotated(&mut self, kind: &str, detail: impl FnOnce() -> String) {
        *self.unannotated.entry(kind.to_string()).or_default() += 1;
        if self.details.len() < MAX_DETAILS {
            self.details
                .push(format!("stack {}: {}", self.stacks, detail()));
        }
    }

    pub fn unannotated_total(&self) -> u64 {
        self.unannotated.values().sum()
    }

    /// Stacks with no eval-loop frame: nothing to annotate (the thread ran no Python code at
    /// that moment, or the tracer could not name the loop).
    pub fn without_eval_frames(&self) -> u64 {
        self.stacks
            .saturating_sub(self.with_eval_frames)
            .saturating_sub(self.too_long)
            .saturating_sub(self.captured_unplaced)
    }

    /// Whether there is anything worth reporting.
    pub fn has_problems(&self) -> bool {
        self.unannotated_total() > 0 || self.too_long > 0 || self.resume_errors > 0
    }
}

impl std::fmt::Display for AnnotateSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} stacks, {} with eval frames, {} annotated ({} read later, {} with the outermost eval frame bare), {} already annotated, {} unannotated, {} too long",
            self.stacks,
            self.with_eval_frames,
            self.annotated,
            self.read_later,
            self.race_outermost_bare,
            self.already_annotated,
            self.unannotated_total(),
            self.too_long
        )?;
        for (k, n) in &self.unannotated {
            writeln!(f, "  {n} unannotated: {k}")?;
        }
        for d in &self.details {
            writeln!(f, "  {d}")?;
        }
        if self.resume_errors > 0 {
            writeln!(f, "  {} resume errors", self.resume_errors)?;
        }
        if self.without_eval_frames() > 0 {
            writeln!(
                f,
                "  {} stacks without an eval-loop frame, left as they were (no Python code ran \
                 there, or the tracer did not name the loop: docs/annotate.md, Known limits)",
                self.without_eval_frames()
            )?;
        }
        if self.read_later > 0 {
            writeln!(
                f,
                "  {} stacks annotated [~ ... ]: their Python frames were read when the text arrived, \
                 and the thread may have run since the probe fired. For exact lines have the probe \
                 stop the target and pass --stopped, pipe gdb's output with its own `pipe` command \
                 (gdb -p PID -batch -ex 'pipe thread apply all bt | pystackd annotate'), or capture \
                 the frames at the probe with `pystackd trace` (docs/annotate.md)",
                self.read_later
            )?;
        }
        Ok(())
    }
}
