//! Keeping freed memory for reuse: a forward pass allocates each layer's output afresh (tens
//! of MB per layer at 224x224), and glibc's malloc serves blocks above its mmap threshold
//! (32 MB at most) straight from the kernel and unmaps them on free, so every batch
//! page-faults and zeroes them again: 6-15% of a forward pass of the full ZF net at batch 16
//! (`perf`: clear_page_erms, exc_page_fault). Binaries that run the network call
//! [`keep_freed_memory_for_reuse`] once at start.

/// Serves every allocation from malloc's heap and never trims it, so that freed layer
/// buffers are reused by the next batch. The process keeps its peak heap until it exits
/// (a stage run is one batch job, so that is the memory it needed anyway). No-op outside
/// Linux with glibc.
pub fn keep_freed_memory_for_reuse() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes malloc's tuning parameters; called before heavy use.
    unsafe {
        // No mmap-backed chunks at all (a threshold cannot be set above 32 MB).
        libc::mallopt(libc::M_MMAP_MAX, 0);
        // Never give the top of the heap back to the kernel.
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
