//! The process's peak resident set (Linux's VmHWM) from a chosen moment on: what `zfnet run
//! --jobs 1` reports for each stage, and what the memory tests of the stages assert.

use std::fs;

/// A measurement of the peak RSS, started by resetting the peak to the current RSS.
pub struct PeakRss {
    /// The RSS when the measurement started, when measuring.
    start: Option<u64>,
}

impl PeakRss {
    /// Resets the peak to the current RSS (writing 5 to `/proc/self/clear_refs`, Linux 4.0+)
    /// and remembers that RSS; with `measure` false, or where that fails, measures nothing.
    pub fn start(measure: bool) -> PeakRss {
        let reset = measure && fs::write("/proc/self/clear_refs", "5").is_ok();
        PeakRss {
            start: reset.then(|| status_bytes("VmRSS:")).flatten(),
        }
    }

    /// (peak, RSS at the start) in bytes, when measuring.
    pub fn bytes(&self) -> Option<(u64, u64)> {
        Some((status_bytes("VmHWM:")?, self.start?))
    }

    /// How many bytes the peak rose above the RSS at the start, when measuring.
    pub fn grown(&self) -> Option<u64> {
        self.bytes().map(|(peak, start)| peak.saturating_sub(start))
    }
}

/// A `kB` field of `/proc/self/status`, in bytes.
fn status_bytes(field: &str) -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}
