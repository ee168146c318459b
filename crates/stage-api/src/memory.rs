//! The process's peak resident set (Linux's VmHWM) from a chosen moment on: what `zfnet run
//! --jobs 1` reports for each stage, and what the memory tests of the stages assert; and a
//! stage's computed need, checked against its `memory_limit_mb` before it reads its inputs.

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

/// The parts of a run's peak memory, in bytes, each with what it is: computed by a stage from
/// its inputs' headers and params before it reads anything large.
#[derive(Clone, Debug, Default)]
pub struct MemoryNeed {
    pub parts: Vec<(String, u64)>,
}

impl MemoryNeed {
    pub fn part(mut self, what: impl Into<String>, bytes: u64) -> Self {
        self.parts.push((what.into(), bytes));
        self
    }

    pub fn total(&self) -> u64 {
        self.parts
            .iter()
            .fold(0u64, |sum, (_, bytes)| sum.saturating_add(*bytes))
    }

    /// Refuses a need over `limit` bytes (a configuration error naming every part and, after
    /// "raise memory_limit_mb, or", `advice`).
    pub fn check(&self, limit: u64, advice: &str) -> crate::Result<()> {
        const MB: f64 = 1e6;
        if self.total() <= limit {
            return Ok(());
        }
        let parts: Vec<String> = self
            .parts
            .iter()
            .map(|(what, bytes)| format!("{what}: {:.0} MB", *bytes as f64 / MB))
            .collect();
        Err(crate::Error::Config(format!(
            "this run needs about {:.0} MB but memory_limit_mb is {:.0} ({}): raise \
             memory_limit_mb, or {advice}",
            self.total() as f64 / MB,
            limit as f64 / MB,
            parts.join("; ")
        )))
    }
}
