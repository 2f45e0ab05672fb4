//! Loading eBPF programs without a BPF toolchain (Linux only; empty elsewhere).
//!
//! `pystackd trace` renders its capture as bytecode itself (`capture::ebpf`) and needs
//! only the kernel's side: create maps, load a program, attach it to perf events, read
//! the ring buffer. No crate does exactly that: aya and libbpf load programs from ELF
//! objects (made by clang or a BPF linker, which this project does not want to need at
//! build or run time); libbpf-sys also builds C. The kernel ABI used here is small and
//! stable: `bpf(2)` commands MAP_CREATE, MAP_LOOKUP_ELEM and PROG_LOAD, `perf_event_open(2)`
//! (through `perf-event-open-sys`, its generated bindings) and the ring buffer's
//! documented memory layout. `btf` reads one struct offset out of the kernel's BTF.
#![cfg(target_os = "linux")]

pub mod btf;
mod perf;
mod ring;
mod sys;

pub use perf::{PerfEvent, Probe};
pub use ring::RingBuffer;
pub use sys::{possible_cpus, Map, MapKind, ProgKind, Program};

/// A kernel call that failed: what was asked, and the OS error (and for a program the
/// verifier refused, its log).
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}{}", log.as_deref().map(|l| format!("\nverifier log (last lines):\n{l}")).unwrap_or_default())]
pub struct Error {
    pub what: String,
    #[source]
    pub source: std::io::Error,
    pub log: Option<String>,
}

impl Error {
    fn last_os(what: impl Into<String>) -> Error {
        Error {
            what: what.into(),
            source: std::io::Error::last_os_error(),
            log: None,
        }
    }
    /// The OS error number.
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}

pub type Result<T> = std::result::Result<T, Error>;
