//! Naming an out-of-memory failure: the process's allocator, which says "out of memory", with
//! the stages that were running, before Rust's allocation-failure handler ends the process.
//!
//! A failed host allocation cannot unwind into the orchestrator's "stage failed" path (Rust
//! aborts), and Linux's out-of-memory killer leaves no message at all; what this can catch is
//! an allocation the kernel refuses outright (larger than memory and swap, or past a `ulimit
//! -v`), which is how a stage asking for far more than the machine has fails.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::Mutex;

/// [`System`], plus a message on failure.
pub struct ReportingAllocator;

/// The stages running now, as the message names them (kept by `zfnet run`'s event printer).
static RUNNING_STAGES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Records that `stage` started (`true`) or ended (`false`).
pub fn stage_running(stage: &str, running: bool) {
    let mut stages = RUNNING_STAGES.lock().unwrap_or_else(|e| e.into_inner());
    if running {
        stages.push(stage.to_owned());
    } else {
        stages.retain(|name| name != stage);
    }
}

// SAFETY: every call is forwarded to `System` unchanged; the report allocates nothing.
unsafe impl GlobalAlloc for ReportingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let pointer = unsafe { System.alloc(layout) };
        if pointer.is_null() {
            report(layout.size());
        }
        pointer
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let pointer = unsafe { System.alloc_zeroed(layout) };
        if pointer.is_null() {
            report(layout.size());
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(pointer, layout) }
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let new_pointer = unsafe { System.realloc(pointer, layout, new_size) };
        if new_pointer.is_null() {
            report(new_size);
        }
        new_pointer
    }
}

/// Writes the message to stderr from a stack buffer (allocating now would fail again).
fn report(bytes: usize) {
    let mut buffer = [0u8; 1024];
    let capacity = buffer.len();
    let mut cursor: &mut [u8] = &mut buffer;
    let _ = write!(
        cursor,
        "\nzfnet: out of memory: an allocation of {} MB failed",
        bytes.div_ceil(1 << 20)
    );
    if let Ok(stages) = RUNNING_STAGES.try_lock()
        && !stages.is_empty()
    {
        let _ = write!(cursor, " while running");
        for stage in stages.iter() {
            let _ = write!(cursor, " `{stage}`");
        }
    }
    let _ = writeln!(
        cursor,
        ". This is not a bug: the stage needs more memory than this machine (or its ulimit) \
         allows. Lower the stage's batch size (or its `memory_limit_mb`, where it has one), \
         or run it on a machine with more memory."
    );
    let written = capacity - cursor.len();
    let _ = std::io::stderr().write_all(&buffer[..written]);
}
