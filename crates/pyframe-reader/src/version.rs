//! Which CPython the target runs: `Py_Version` (3.11+), `_Py_DebugOffsets.version`
//! (3.13+), the file name, then a `PY_VERSION` literal in the binary.

use crate::binary::PythonBinary;
use crate::memory::{Memory, MemoryExt};

/// `_Py_DebugOffsets` starts `_PyRuntime` from 3.13 on with this cookie.
pub const DEBUG_COOKIE: &[u8; 8] = b"xdebugpy";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub major: u8,
    pub minor: u8,
    /// Full text, e.g. "3.10.13" or "3.14.0rc1"; "3.10" when only the minor is known.
    pub text: String,
    /// Free-threaded (`Py_GIL_DISABLED`) build, where the debug offsets say so.
    pub free_threaded: bool,
    /// Where the version came from, for diagnostics.
    pub source: &'static str,
}

/// Format `PY_VERSION_HEX`.
pub fn from_hex(hex: u64) -> Option<Version> {
    let major = ((hex >> 24) & 0xff) as u8;
    let minor = ((hex >> 16) & 0xff) as u8;
    let micro = (hex >> 8) & 0xff;
    let level = (hex >> 4) & 0xf;
    let serial = hex & 0xf;
    if major != 3 || hex >> 32 != 0 {
        return None;
    }
    let suffix = match level {
        0xa => format!("a{serial}"),
        0xb => format!("b{serial}"),
        0xc => format!("rc{serial}"),
        0xf => String::new(),
        _ => return None,
    };
    Some(Version {
        major,
        minor,
        text: format!("{major}.{minor}.{micro}{suffix}"),
        free_threaded: false,
        source: "",
    })
}

/// Detect the version of the interpreter whose `_PyRuntime` is at `runtime`.
pub fn detect(mem: &dyn Memory, bin: &PythonBinary, runtime: u64) -> Option<Version> {
    if let Some(addr) = bin.symbols.py_version {
        if let Some(v) = mem
            .read_u64(addr)
            .ok()
            .and_then(|h| from_hex(h & 0xffff_ffff))
        {
            return Some(Version {
                source: "Py_Version",
                ..v
            });
        }
    }
    if let Ok(head) = mem.read_array::<24>(runtime) {
        if &head[..8] == DEBUG_COOKIE {
            let hex = u64::from_le_bytes(head[8..16].try_into().unwrap());
            let free_threaded = u64::from_le_bytes(head[16..24].try_into().unwrap()) != 0;
            if let Some(v) = from_hex(hex) {
                return Some(Version {
                    free_threaded,
                    source: "_Py_DebugOffsets",
                    ..v
                });
            }
        }
    }
    // name, refined by a matching PY_VERSION literal when there is one
    if let Some((major, minor)) = bin.name_version {
        let prefix = format!("{major}.{minor}.");
        let text = bin
            .version_strings
            .iter()
            .find(|s| s.starts_with(&prefix))
            .cloned()
            .or_else(|| runtime_version_buffer(mem, bin, &prefix))
            .unwrap_or_else(|| format!("{major}.{minor}"));
        return Some(Version {
            major,
            minor,
            text,
            free_threaded: false,
            source: "file name",
        });
    }
    // a single unambiguous literal
    let mut minors: Vec<&String> = bin.version_strings.iter().collect();
    minors.dedup_by_key(|s| s.split('.').nth(1).map(str::to_string));
    if let [only] = minors.as_slice() {
        let minor = only.split('.').nth(1)?.parse().ok()?;
        return Some(Version {
            major: 3,
            minor,
            text: (*only).clone(),
            free_threaded: false,
            source: "version string",
        });
    }
    None
}

/// `Py_GetVersion()` formats `"3.X.Y (build info) [compiler]"` into a static buffer at
/// start-up (for `sys.version`); builds whose `PY_VERSION` literal was folded into that
/// format string have it nowhere else. Look for it in the module's data and bss.
fn runtime_version_buffer(mem: &dyn Memory, bin: &PythonBinary, prefix: &str) -> Option<String> {
    const CHUNK: usize = 1 << 16;
    const MAX_SCAN: u64 = 16 << 20;
    let mut scanned = 0u64;
    let mut buf = vec![0u8; CHUNK + 32];
    let needle = format!("\0{prefix}");
    for &(start, end) in &bin.writable {
        let mut a = start;
        while a < end && scanned < MAX_SCAN {
            let n = ((end - a) as usize).min(CHUNK + 32);
            if mem.read(a, &mut buf[..n]).is_ok() {
                let hay = &buf[..n];
                let mut i = 0;
                while let Some(p) = memchr::memmem::find(&hay[i..], needle.as_bytes()) {
                    let s = i + p + 1;
                    let tail = &hay[s..(s + 24).min(n)];
                    if let Some(sp) = tail.windows(2).position(|w| w == b" (") {
                        if let Ok(v) = std::str::from_utf8(&tail[..sp]) {
                            if crate::binary::is_py_version(v) {
                                return Some(v.to_string());
                            }
                        }
                    }
                    i = s;
                }
            }
            a += CHUNK as u64;
            scanned += CHUNK as u64;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex() {
        assert_eq!(from_hex(0x030a0df0).unwrap().text, "3.10.13");
        assert_eq!(from_hex(0x030e00c1).unwrap().text, "3.14.0rc1");
        assert_eq!(from_hex(0x030d00a3).unwrap().text, "3.13.0a3");
        assert!(from_hex(0x020700f0).is_none());
        assert!(from_hex(0).is_none());
    }
}
