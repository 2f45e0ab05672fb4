//! One ELF file, memory-mapped: its build-id, `.gnu_debuglink`, PT_LOAD segments and
//! the byte slices the symbol table and DWARF readers borrow from it.
//!
//! Headers are checked by `object` against the file's length, so a truncated or
//! corrupt file is an [`Error::BadElf`], never a read out of bounds.

use std::fmt;
use std::fs::File;
use std::ops::Deref;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use object::{Object, ObjectSection, ObjectSegment};

use crate::error::{Error, Result};

/// A GNU build-id (`NT_GNU_BUILD_ID` note): the identity of a binary and of its
/// separate debug file.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BuildId(pub Vec<u8>);

impl BuildId {
    /// From a hex string (`readelf -n`, `file`, debuginfod URLs).
    pub fn from_hex(s: &str) -> Option<BuildId> {
        if s.len() % 2 != 0 || s.is_empty() {
            return None;
        }
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()
            .map(BuildId)
    }
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Display for BuildId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

impl fmt::Debug for BuildId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BuildId({})", self.hex())
    }
}

/// What backs a [`Bytes`]: a mapped file, or an inflated compressed section.
pub(crate) enum Backing {
    Map(Mmap),
    Heap(Vec<u8>),
}

impl Backing {
    fn as_slice(&self) -> &[u8] {
        match self {
            Backing::Map(m) => m,
            Backing::Heap(v) => v,
        }
    }
}

/// A cheaply clonable, stable slice of a mapped file or of an owned buffer: the
/// reader type of the DWARF parser (`gimli::EndianReader` needs a `CloneStableDeref`).
#[derive(Clone)]
pub struct Bytes {
    owner: Arc<Backing>,
    start: usize,
    len: usize,
}

impl Bytes {
    pub(crate) fn whole(owner: Arc<Backing>) -> Bytes {
        let len = owner.as_slice().len();
        Bytes {
            owner,
            start: 0,
            len,
        }
    }
    pub(crate) fn empty() -> Bytes {
        Bytes::whole(Arc::new(Backing::Heap(Vec::new())))
    }
    pub(crate) fn is_heap(&self) -> bool {
        matches!(*self.owner, Backing::Heap(_))
    }
    /// A sub-slice; `None` when out of range.
    pub(crate) fn slice(&self, start: u64, len: u64) -> Option<Bytes> {
        let start = usize::try_from(start).ok()?;
        let len = usize::try_from(len).ok()?;
        let end = start.checked_add(len)?;
        if end > self.len {
            return None;
        }
        Some(Bytes {
            owner: self.owner.clone(),
            start: self.start + start,
            len,
        })
    }
}

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.owner.as_slice()[self.start..self.start + self.len]
    }
}

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bytes({} bytes)", self.len)
    }
}

// SAFETY: the bytes live in an `Arc`ed mapping or Vec that is never mutated or moved
// while a `Bytes` holds it, so the address `deref` returns is stable across moves and
// clones of the `Bytes`.
unsafe impl gimli::StableDeref for Bytes {}
unsafe impl gimli::CloneStableDeref for Bytes {}

/// Identity of a file on disk, so that the same file reached through different paths
/// (`/proc/A/root/usr/lib/x.so`, `/proc/B/map_files/...`) is opened once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
}

impl FileId {
    pub fn of(path: &Path) -> Result<FileId> {
        let md = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        Ok(FileId::from_metadata(&md))
    }
    fn from_metadata(md: &std::fs::Metadata) -> FileId {
        FileId {
            dev: md.dev(),
            ino: md.ino(),
            size: md.size(),
            mtime_ns: md
                .mtime()
                .saturating_mul(1_000_000_000)
                .saturating_add(md.mtime_nsec()),
        }
    }
}

/// One PT_LOAD program header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub vaddr: u64,
    pub memsz: u64,
    pub offset: u64,
    pub filesz: u64,
    pub exec: bool,
}

/// A parsed (headers only) ELF file.
pub struct ElfFile {
    pub path: PathBuf,
    pub id: FileId,
    pub(crate) data: Bytes,
    pub build_id: Option<BuildId>,
    /// `.gnu_debuglink`: file name and CRC32 of the separate debug file.
    pub debuglink: Option<(String, u32)>,
    pub segments: Vec<Segment>,
    /// Has a `.symtab` with entries (not stripped).
    pub has_symtab: bool,
    /// Has a `.debug_info` section with contents (not NOBITS).
    pub has_debug_info: bool,
}

impl fmt::Debug for ElfFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ElfFile")
            .field("path", &self.path)
            .field("build_id", &self.build_id)
            .field("debuglink", &self.debuglink)
            .field("segments", &self.segments)
            .field("has_symtab", &self.has_symtab)
            .field("has_debug_info", &self.has_debug_info)
            .finish()
    }
}

impl ElfFile {
    /// Map and check `path`.
    pub fn open(path: &Path) -> Result<ElfFile> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let md = file.metadata().map_err(|e| Error::io(path, e))?;
        if !md.is_file() {
            return Err(Error::bad_elf(path, "not a regular file"));
        }
        // SAFETY: the mapping is read-only; a file truncated under us would raise
        // SIGBUS, a risk every ELF reader that maps (gdb, perf, addr2line) shares.
        // Installed binaries and debug files are replaced, not rewritten, by packagers.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        Self::from_backing(path, FileId::from_metadata(&md), Backing::Map(map))
    }

    /// Parse an ELF image held in memory (tests, downloaded files).
    pub fn from_vec(path: &Path, data: Vec<u8>) -> Result<ElfFile> {
        let id = FileId {
            dev: 0,
            ino: 0,
            size: data.len() as u64,
            mtime_ns: 0,
        };
        Self::from_backing(path, id, Backing::Heap(data))
    }

    fn from_backing(path: &Path, id: FileId, backing: Backing) -> Result<ElfFile> {
        let data = Bytes::whole(Arc::new(backing));
        let obj = object::File::parse(&*data).map_err(|e| Error::bad_elf(path, e))?;
        if obj.format() != object::BinaryFormat::Elf {
            return Err(Error::bad_elf(path, "not ELF"));
        }
        let build_id = obj
            .build_id()
            .map_err(|e| Error::bad_elf(path, format!("build-id note: {e}")))?
            .filter(|b| !b.is_empty())
            .map(|b| BuildId(b.to_vec()));
        let debuglink = obj
            .gnu_debuglink()
            .ok()
            .flatten()
            .map(|(name, crc)| (String::from_utf8_lossy(name).into_owned(), crc));
        let mut segments = Vec::new();
        for seg in obj.segments() {
            let (offset, filesz) = seg.file_range();
            let exec = match seg.flags() {
                object::SegmentFlags::Elf { p_flags } => p_flags & object::elf::PF_X != 0,
                _ => false,
            };
            segments.push(Segment {
                vaddr: seg.address(),
                memsz: seg.size(),
                offset,
                filesz,
                exec,
            });
        }
        let has_symtab = obj.section_by_name(".symtab").is_some_and(|s| s.size() > 0);
        let has_debug_info = obj.section_by_name(".debug_info").is_some_and(|s| {
            s.kind() != object::SectionKind::UninitializedData
                && s.compressed_file_range()
                    .is_ok_and(|r| r.compressed_size > 0)
        }) || obj.section_by_name(".zdebug_info").is_some();
        drop(obj);
        Ok(ElfFile {
            path: path.to_path_buf(),
            id,
            data,
            build_id,
            debuglink,
            segments,
            has_symtab,
            has_debug_info,
        })
    }

    /// Re-parse the headers (cheap: `object` parses lazily) to read sections.
    pub(crate) fn object(&self) -> Result<object::File<'_>> {
        object::File::parse(&*self.data).map_err(|e| Error::bad_elf(&self.path, e))
    }

    /// Bytes of the file that are mapped (counted against the cache budget).
    pub fn mapped_len(&self) -> u64 {
        self.data.len() as u64
    }

    /// The contents of a section, inflated when compressed (`SHF_COMPRESSED` or
    /// `.zdebug_*`); `None` when absent or NOBITS. Refuses to inflate more than `limit`.
    pub(crate) fn section(&self, name: &str, limit: u64) -> Result<Option<Bytes>> {
        let obj = self.object()?;
        let section = match obj.section_by_name(name) {
            Some(s) => s,
            None => return Ok(None),
        };
        if section.kind() == object::SectionKind::UninitializedData {
            return Ok(None);
        }
        let range = section
            .compressed_file_range()
            .map_err(|e| Error::bad_elf(&self.path, format!("section {name}: {e}")))?;
        if range.format == object::CompressionFormat::None {
            return self
                .data
                .slice(range.offset, range.compressed_size)
                .map(Some)
                .ok_or_else(|| {
                    Error::bad_elf(&self.path, format!("section {name} is out of the file"))
                });
        }
        if range.uncompressed_size > limit {
            return Err(Error::SectionTooLarge {
                path: self.path.clone(),
                section: name.to_string(),
                size: range.uncompressed_size,
                limit,
            });
        }
        let data = section
            .uncompressed_data()
            .map_err(|e| Error::bad_elf(&self.path, format!("section {name}: {e}")))?;
        Ok(Some(Bytes::whole(Arc::new(Backing::Heap(
            data.into_owned(),
        )))))
    }

    /// The ELF virtual address (link-time, as in the symbol table and DWARF) of a file
    /// offset, through the PT_LOAD segment that holds it. `prefer_exec` picks the
    /// executable segment when two hold the offset. An offset in the page-rounded
    /// tail or head of a segment (the loader maps whole pages: padding after `.text`,
    /// headers before it) maps through the segment whose pages hold it.
    pub fn vaddr_of_offset(&self, offset: u64, prefer_exec: bool) -> Option<u64> {
        const PAGE: u64 = 4096;
        let mut exact: Option<&Segment> = None;
        let mut paged: Option<&Segment> = None;
        for s in &self.segments {
            let better = |b: Option<&Segment>| {
                b.is_none() || (prefer_exec && s.exec && !b.is_some_and(|b| b.exec))
            };
            if offset >= s.offset && offset - s.offset < s.filesz {
                if better(exact) {
                    exact = Some(s);
                }
            } else {
                let lo = s.offset & !(PAGE - 1);
                let hi = s.offset.saturating_add(s.filesz).saturating_add(PAGE - 1) & !(PAGE - 1);
                if offset >= lo && offset < hi && better(paged) {
                    paged = Some(s);
                }
            }
        }
        exact
            .or(paged)
            .map(|s| s.vaddr.wrapping_add(offset.wrapping_sub(s.offset)))
    }

    /// The file offset of an ELF virtual address, through the PT_LOAD segment whose file
    /// bytes hold it (`None` for addresses only in memory, such as `.bss`).
    pub fn offset_of_vaddr(&self, vaddr: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|s| vaddr >= s.vaddr && vaddr - s.vaddr < s.filesz)
            .map(|s| s.offset + (vaddr - s.vaddr))
    }

    /// `len` bytes of the file from `offset`, `None` past its end.
    pub fn bytes_at(&self, offset: u64, len: usize) -> Option<&[u8]> {
        let start = usize::try_from(offset).ok()?;
        self.data.get(start..start.checked_add(len)?)
    }

    /// CRC32 of the whole file (the `.gnu_debuglink` check).
    pub fn crc32(&self) -> u32 {
        let mut h = crc32fast::Hasher::new();
        h.update(&self.data);
        h.finalize()
    }
}
