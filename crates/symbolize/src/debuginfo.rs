//! Finding a binary's separate debug file the way gdb and perf do, in this order:
//!
//! 1. `<root>/.build-id/xx/rest.debug` for each debug root (build-id `xxrest...`);
//! 2. `.gnu_debuglink` NAME: `<dir of the binary>/NAME`, `<dir>/.debug/NAME`,
//!    `<root>/<dir>/NAME` (the CRC32 of the candidate must be the one recorded);
//! 3. `<root>/<path of the binary>.debug` and `<root>/<path of the binary>`;
//! 4. debuginfod, when configured and nothing local was found.
//!
//! A candidate whose build-id is not the binary's is refused (recorded in
//! [`DebugSearch::refused`], never used): a stale `-dbg` package left behind by an
//! upgrade names the wrong code.

use std::path::{Path, PathBuf};

use crate::debuginfod::Debuginfod;
use crate::elf::ElfFile;
use crate::error::{DebuginfodError, Error};

/// How the debug file was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DebugOrigin {
    BuildIdDir,
    DebugLink,
    DebugRootPath,
    Debuginfod,
}

/// The outcome of a search: the file used, if any, and every candidate refused.
#[derive(Debug, Default)]
pub struct DebugSearch {
    pub found: Option<(ElfFile, DebugOrigin)>,
    pub refused: Vec<Error>,
    /// Why debuginfod gave nothing (when it was asked).
    pub debuginfod_error: Option<DebuginfodError>,
}

/// Search for the debug file of `binary`. `target_path` is the binary's path as the
/// target process sees it (for `<root>/<path>` lookups); `binary.path` is the path
/// this process opened it by (`.gnu_debuglink` siblings are looked for next to it).
pub fn find_debug_file(
    binary: &ElfFile,
    target_path: Option<&Path>,
    debug_roots: &[PathBuf],
    debuginfod: Option<&Debuginfod>,
) -> DebugSearch {
    let mut search = DebugSearch::default();
    let try_candidate =
        |path: PathBuf, crc: Option<u32>, origin: DebugOrigin, search: &mut DebugSearch| -> bool {
            if search.found.is_some() {
                return true;
            }
            if !path.is_file() {
                return false;
            }
            // never the binary itself (a debug root of "/" or a link naming itself)
            if crate::elf::FileId::of(&path).ok() == Some(binary.id) {
                return false;
            }
            match check_candidate(binary, &path, crc) {
                Ok(f) => {
                    search.found = Some((f, origin));
                    true
                }
                Err(e) => {
                    search.refused.push(e);
                    false
                }
            }
        };

    if let Some(id) = &binary.build_id {
        let hex = id.hex();
        if hex.len() > 2 {
            for root in debug_roots {
                let p = root
                    .join(".build-id")
                    .join(&hex[..2])
                    .join(format!("{}.debug", &hex[2..]));
                if try_candidate(p, None, DebugOrigin::BuildIdDir, &mut search) {
                    return search;
                }
            }
        }
    }
    let target_dir = target_path.and_then(Path::parent);
    if let Some((name, crc)) = &binary.debuglink {
        // a debuglink is a file name, not a path: refuse traversal
        if !name.is_empty() && !name.contains('/') && name != ".." {
            let mut cands = Vec::new();
            if let Some(dir) = binary.path.parent() {
                cands.push(dir.join(name));
                cands.push(dir.join(".debug").join(name));
            }
            if let Some(dir) = target_dir {
                for root in debug_roots {
                    cands.push(join_under(root, dir).join(name));
                }
            }
            for c in cands {
                if try_candidate(c, Some(*crc), DebugOrigin::DebugLink, &mut search) {
                    return search;
                }
            }
        }
    }
    if let Some(tp) = target_path {
        for root in debug_roots {
            let base = join_under(root, tp);
            let mut with_ext = base.clone().into_os_string();
            with_ext.push(".debug");
            for c in [PathBuf::from(with_ext), base] {
                if try_candidate(c, None, DebugOrigin::DebugRootPath, &mut search) {
                    return search;
                }
            }
        }
    }
    if let (Some(client), Some(id)) = (debuginfod, &binary.build_id) {
        if !binary.has_debug_info {
            match client.fetch(id) {
                Ok(p) => {
                    try_candidate(p, None, DebugOrigin::Debuginfod, &mut search);
                }
                Err(e) => search.debuginfod_error = Some(e),
            }
        }
    }
    search
}

/// `root` + absolute `path` (`/usr/lib/debug` + `/usr/lib/x.so`).
fn join_under(root: &Path, path: &Path) -> PathBuf {
    let rel = path.strip_prefix("/").unwrap_or(path);
    root.join(rel)
}

/// Open a candidate and check it belongs to `binary`: same build-id when the binary
/// has one (gdb and perf refuse others), the debuglink CRC when given.
pub fn check_candidate(binary: &ElfFile, path: &Path, crc: Option<u32>) -> Result<ElfFile, Error> {
    let file = ElfFile::open(path)?;
    if let Some(expected) = &binary.build_id {
        if file.build_id.as_ref() != Some(expected) {
            return Err(Error::BuildIdMismatch {
                path: path.to_path_buf(),
                expected: expected.clone(),
                found: file.build_id.clone(),
            });
        }
    }
    if let Some(expected) = crc {
        let found = file.crc32();
        if found != expected {
            return Err(Error::CrcMismatch {
                path: path.to_path_buf(),
                expected,
                found,
            });
        }
    }
    Ok(file)
}
