//! A process's address space as the symbolizer needs it: file-backed mappings with
//! their file offsets, from a live process (`/proc/PID/maps` on Linux, `/proc/PID/map`
//! on illumos, through `pyframe_reader::platform`) or from a record kept after the
//! process exited.
//!
//! An address becomes an ELF virtual address in two steps: the mapping gives its file
//! offset (`addr - start + offset`), the PT_LOAD segment holding that offset gives the
//! virtual address (`p_vaddr + offset - p_offset`). This is right for PIE executables
//! and shared libraries (loaded at any base) as for fixed-address executables, and for
//! segments the loader mapped with extra alignment.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use crate::error::{Error, Result};
use crate::module::Module;

/// One mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    pub start: u64,
    pub end: u64,
    /// Offset in the mapped file.
    pub offset: u64,
    pub exec: bool,
    /// The file's path as the target sees it; `None` for anonymous memory.
    pub path: Option<String>,
    /// A path this process can open the file by (`/proc/PID/map_files/...`,
    /// `/proc/PID/root/...`); `None` to use `path`.
    pub open_path: Option<PathBuf>,
}

impl Region {
    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }
    /// A real file (not anonymous, `[vdso]`, `[heap]`, a deleted file...).
    pub fn is_file(&self) -> bool {
        matches!(&self.path, Some(p) if p.starts_with('/') && !p.ends_with(" (deleted)"))
    }
}

impl From<&pyframe_reader::platform::Mapping> for Region {
    fn from(m: &pyframe_reader::platform::Mapping) -> Region {
        Region {
            start: m.start,
            end: m.end,
            offset: m.offset,
            exec: m.exec,
            path: m.path.clone(),
            open_path: m.open_path.clone(),
        }
    }
}

/// The mappings of one process, sorted, each with its module resolved at most once.
pub struct ProcessMaps {
    pid: Option<u32>,
    regions: Vec<Region>,
    pub(crate) modules: Vec<OnceLock<Option<Arc<Module>>>>,
}

impl std::fmt::Debug for ProcessMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessMaps")
            .field("pid", &self.pid)
            .field("regions", &self.regions)
            .finish()
    }
}

impl ProcessMaps {
    /// The current mappings of live process `pid`.
    pub fn for_pid(pid: u32) -> Result<ProcessMaps> {
        let maps = pyframe_reader::platform::mappings(pid)
            .map_err(|source| Error::Mappings { pid, source })?;
        // the path each object file is opened by, checked to name the very file mapped
        // (once per file, and only object files: a mapping of data is never opened here)
        let code: std::collections::HashSet<&str> = maps
            .iter()
            .filter(|m| m.exec)
            .filter_map(|m| m.path.as_deref())
            .collect();
        // (keyed by the file as mapped too: a path can name two files mapped at once)
        type FileKey<'m> = (&'m str, Option<(u64, u64)>);
        let mut checked: std::collections::HashMap<FileKey, Option<PathBuf>> = Default::default();
        let regions = maps
            .iter()
            .map(|m| {
                let mut r = Region::from(m);
                if let Some(p) = m.path.as_deref().filter(|p| code.contains(p)) {
                    r.open_path = checked
                        .entry((p, m.mapped.as_ref().map(|f| (f.dev, f.inode))))
                        .or_insert_with(|| pyframe_reader::platform::checked_open_path(m))
                        .clone();
                }
                r
            })
            .collect();
        let mut pm = ProcessMaps::from_regions(regions);
        pm.pid = Some(pid);
        Ok(pm)
    }

    /// From a list of mappings (a record of an exited process, a test).
    pub fn from_regions(mut regions: Vec<Region>) -> ProcessMaps {
        regions.retain(|r| r.start < r.end);
        regions.sort_by_key(|r| r.start);
        let modules = regions.iter().map(|_| OnceLock::new()).collect();
        ProcessMaps {
            pid: None,
            regions,
            modules,
        }
    }

    /// A record of mappings kept after the process exited, each with the module that was
    /// mapped there (opened while the process ran: the very file, even if it has since
    /// been replaced or deleted, or was only reachable through the process's root).
    pub fn recorded(mut entries: Vec<(Region, Arc<Module>)>) -> ProcessMaps {
        entries.retain(|(r, _)| r.start < r.end);
        entries.sort_by_key(|(r, _)| r.start);
        let modules = entries
            .iter()
            .map(|(_, m)| OnceLock::from(Some(m.clone())))
            .collect();
        ProcessMaps {
            pid: None,
            regions: entries.into_iter().map(|(r, _)| r).collect(),
            modules,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.pid
    }
    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    /// The mapping holding `addr`, with its index.
    pub fn region(&self, addr: u64) -> Option<(usize, &Region)> {
        let idx = self.regions.partition_point(|r| r.start <= addr);
        let i = idx.checked_sub(1)?;
        let r = &self.regions[i];
        r.contains(addr).then_some((i, r))
    }
}
