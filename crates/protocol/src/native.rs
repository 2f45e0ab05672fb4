//! Native source locations (`--native-lines`): what DWARF says about a native address.

use serde::{Deserialize, Serialize};

/// One source-level frame of a native address, from DWARF: the functions inlined at the
/// address first (innermost first), the function holding the machine code last, as
/// `addr2line -f -i` and gdb's `bt` list them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NativeSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// The source file as DWARF names it (joined with the compilation directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
    /// Inlined into the next entry (every entry but the last).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inlined: bool,
}

impl NativeSource {
    /// `[@ file:line (function) ]`, `(function, inlined)` for an inlined one: the line
    /// printed under a native frame in text output.
    pub fn text(&self) -> String {
        let file = crate::escape_control(self.file.as_deref().unwrap_or("??"));
        let func = crate::escape_control(self.function.as_deref().unwrap_or("??"));
        let inl = if self.inlined { ", inlined" } else { "" };
        match self.line {
            Some(l) if l > 0 => format!("[@ {file}:{l} ({func}{inl}) ]"),
            _ => format!("[@ {file} ({func}{inl}) ]"),
        }
    }
}
