//! Captured frames → file, line and function, read from the live process afterwards. Code
//! objects outlive the frames that ran them, so this is sound once the identity captured in
//! the probe matches the object now at that address; when it does not (the code was freed
//! and its memory reused, or the capture read garbage) the frame is reported as a mismatch,
//! never guessed.

use std::sync::Arc;

use protocol::Frame;
use pyframe_reader::code::{CodeCache, CodeInfo};
use pyframe_reader::layout::{FrameLayout, Layout, OB_TYPE};
use pyframe_reader::memory::{i32_at, u64_at};
use pyframe_reader::objects::{Kind, Types};
use pyframe_reader::{Memory, PythonProcess};

use crate::frames::{ident_of, Capture, CapturedFrame};

/// Why a captured frame was not resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("code object {code:#x} is no longer readable (freed)")]
    Unreadable { code: u64 },
    #[error("the object at {code:#x} is not a code object any more (freed and reused)")]
    NotCode { code: u64 },
    #[error("code object {code:#x} changed since the probe (identity {captured:#x}, now {now:#x}: freed and reused)")]
    Identity { code: u64, captured: u64, now: u64 },
    #[error("offset {offset} is outside code object {code:#x} ({units} code units)")]
    Offset { code: u64, offset: i64, units: u64 },
    #[error("code object {code:#x} could not be decoded: {detail}")]
    Decode { code: u64, detail: String },
}

/// One captured frame, resolved or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    Frame(Frame),
    Mismatch(Mismatch),
}

impl Resolved {
    pub fn frame(&self) -> Option<&Frame> {
        match self {
            Resolved::Frame(f) => Some(f),
            Resolved::Mismatch(_) => None,
        }
    }
}

/// Resolves captures of one process, keeping its decoded code objects between calls (a
/// trace resolves the same few code objects thousands of times).
pub struct Resolver {
    layout: Layout,
    types: Types,
    codes: CodeCache,
}

impl Resolver {
    pub fn new(layout: &Layout) -> Resolver {
        Resolver {
            layout: *layout,
            // type pointers are learned from `tp_name` on first use
            types: Types::default(),
            codes: CodeCache::default(),
        }
    }

    /// Resolve every frame of `capture`, innermost first, in the same order. The outermost
    /// frame of an untruncated capture, and every frame before 3.11, is marked `entry`.
    pub fn resolve(&mut self, mem: &dyn Memory, capture: &Capture) -> Vec<Resolved> {
        let verified = self.verify_batch(mem, &[capture]);
        self.resolve_with(&verified, capture)
    }

    /// Each distinct code object of `captures`, read and checked once (see
    /// [`Resolver::resolve_batch`]), to resolve any of them with [`Resolver::resolve_with`].
    pub fn verify_batch(&mut self, mem: &dyn Memory, captures: &[&Capture]) -> Verified {
        let mut codes: Vec<u64> = captures
            .iter()
            .flat_map(|c| c.frames.iter().map(|f| f.code))
            .collect();
        codes.sort_unstable();
        codes.dedup();
        let now = self.read_codes(mem, &codes);
        Verified { codes, now }
    }

    /// The frames of `capture` (whose code objects `verified` holds), innermost first.
    pub fn resolve_with(&self, verified: &Verified, capture: &Capture) -> Vec<Resolved> {
        let every_frame_entry = matches!(self.layout.frame, FrameLayout::Object(_));
        let n = capture.frames.len();
        capture
            .frames
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let entry = f.entry || every_frame_entry || (i + 1 == n && !capture.truncated);
                match verified.code(f) {
                    Err(m) => Resolved::Mismatch(m),
                    Ok(info) => Resolved::Frame(info.frame(f.offset, entry)),
                }
            })
            .collect()
    }

    /// [`Resolver::resolve`] of many captures at once (a profiler's firings of the last few
    /// milliseconds): each distinct code object is read and checked once, in one batched
    /// read, at one moment after every probe of the batch fired (what `resolve` does per
    /// frame). Same results, a few system calls per batch instead of two per frame.
    pub fn resolve_batch(&mut self, mem: &dyn Memory, captures: &[&Capture]) -> Vec<Vec<Resolved>> {
        let verified = self.verify_batch(mem, captures);
        captures
            .iter()
            .map(|c| self.resolve_with(&verified, c))
            .collect()
    }

    /// Per code object of `codes` (sorted): its identity now and what it decodes to.
    fn read_codes(
        &mut self,
        mem: &dyn Memory,
        codes: &[u64],
    ) -> Vec<Result<(u64, Arc<CodeInfo>), Mismatch>> {
        let size = (self.layout.code.size as usize).clamp(24, 256);
        let mut heads = vec![0u8; size * codes.len()];
        let all_read = {
            let mut reqs: Vec<(u64, &mut [u8])> =
                codes.iter().copied().zip(heads.chunks_mut(size)).collect();
            mem.read_many(&mut reqs).is_ok()
        };
        self.codes.begin_walk();
        let mut now = Vec::with_capacity(codes.len());
        let mut own = vec![0u8; size];
        for (i, &code) in codes.iter().enumerate() {
            // a batch with an unreadable object in it fails whole: then one at a time
            let head: &[u8] = if all_read {
                &heads[i * size..(i + 1) * size]
            } else if mem.read(code, &mut own).is_ok() {
                &own
            } else {
                now.push(Err(Mismatch::Unreadable { code }));
                continue;
            };
            if !self.types.check(
                mem,
                &self.layout,
                Kind::Code,
                u64_at(head, OB_TYPE as usize),
            ) {
                now.push(Err(Mismatch::NotCode { code }));
                continue;
            }
            let c = &self.layout.code;
            let ident = ident_of(
                u64_at(head, c.name as usize),
                i32_at(head, c.firstlineno as usize),
            );
            now.push(self.get(mem, code).map(|info| (ident, info)));
        }
        // a cached decoding whose object changed since it was decoded: decode those again
        if self.codes.verify_deferred(mem, &self.layout).is_err() {
            for (i, &code) in codes.iter().enumerate() {
                if let Ok((ident, _)) = now[i] {
                    now[i] = self.get(mem, code).map(|info| (ident, info));
                }
            }
        }
        now
    }

    fn get(&mut self, mem: &dyn Memory, code: u64) -> Result<Arc<CodeInfo>, Mismatch> {
        self.codes
            .get(mem, &self.layout, &mut self.types, code)
            .map_err(|e| Mismatch::Decode {
                code,
                detail: e.to_string(),
            })
    }
}

/// The code objects of a batch of captures, as [`Resolver::verify_batch`] read them.
pub struct Verified {
    codes: Vec<u64>,
    now: Vec<Result<(u64, Arc<CodeInfo>), Mismatch>>,
}

impl Verified {
    /// What `f`'s code object decodes to, if it is still the object the probe saw there
    /// and `f`'s position is inside it.
    pub fn code(&self, f: &CapturedFrame) -> Result<&Arc<CodeInfo>, Mismatch> {
        let Ok(at) = self.codes.binary_search(&f.code) else {
            return Err(Mismatch::Unreadable { code: f.code });
        };
        match &self.now[at] {
            Err(m) => Err(m.clone()),
            Ok((ident, _)) if *ident != f.ident => Err(Mismatch::Identity {
                code: f.code,
                captured: f.ident,
                now: *ident,
            }),
            Ok((_, info)) => match info.code_units {
                Some(units) if f.offset / 2 < -1 || f.offset / 2 > units as i64 => {
                    Err(Mismatch::Offset {
                        code: f.code,
                        offset: f.offset,
                        units,
                    })
                }
                _ => Ok(info),
            },
        }
    }
}

/// Resolve one capture against an attached process (a convenience over [`Resolver`] for
/// single use; keep a `Resolver` for many).
pub fn resolve(process: &PythonProcess, captured: &Capture) -> Vec<Resolved> {
    Resolver::new(process.layout()).resolve(process.memory(), captured)
}
