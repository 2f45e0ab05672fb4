//! `pystackd`: readable Python stacks in native stack traces of CPython processes.

mod annotate;
mod breakpoints;
mod cli;
mod client;
mod daemon;
mod exit;
mod family;
mod held;
// The daemon's OS layer (peer credentials, privilege, access rule, default paths):
// the only module of this crate with `cfg(target_os)`.
mod native;
mod platform;
mod pprof;
mod probe;
mod profile;
mod record;
mod sample;
mod stack;
mod stack_native;
mod top;
mod trace;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::run()
}

/// `pow` for the C ABI, from the `libm` crate (musl's algorithm): tokio's scheduler
/// statistics (`f64::powf`) were the binary's only use of the system's libm, and with it
/// defined here the linker (`--as-needed`) no longer makes the binary need libm.so.6,
/// which the dynamic loader otherwise maps and relocates at every start: about 6 % of a
/// one-shot `stack` (docs/benchmarks.md, session 27). A new use of another libm function
/// brings libm.so.6 back, slower but correct.
#[no_mangle]
pub extern "C" fn pow(x: f64, y: f64) -> f64 {
    libm::pow(x, y)
}

#[cfg(test)]
mod tests {
    #[test]
    fn pow_is_pow() {
        assert_eq!(super::pow(2.0, 10.0), 1024.0);
        assert_eq!(super::pow(2.0, 0.5), 2f64.sqrt());
        assert_eq!(super::pow(0.0, 0.0), 1.0);
        assert!(super::pow(-1.0, 0.5).is_nan());
        // what tokio computes: an EWMA weight, 0.1^(n/1000)
        assert!((super::pow(0.1, 0.5) - 0.316_227_766_016_837_94).abs() < 1e-15);
    }
}
