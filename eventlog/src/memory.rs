//! How a tollbook process takes memory from the OS. It lives here because every binary
//! and benchmark links the event log, not because the log needs it: the server calls it
//! first thing, and the benchmarks too, so that they measure what the server runs.
//! Every one of them uses mimalloc (`#[global_allocator]`); without it, the options set
//! here are ignored and only the huge page setting counts.

/// Keeps freed memory for reuse instead of returning it to the OS at once, in small
/// pages: the read models are built from many small allocations, and with mimalloc's
/// defaults (purge after 10 ms, 2 MiB pages) a third of replay's CPU went to the kernel
/// zeroing pages it had just handed back (`perf`: `clear_page_erms`). RSS then stays
/// near its peak, which is the working set anyway.
///
/// Transparent huge pages are off for the whole process. mimalloc still asked for them
/// (`madvise(MADV_HUGEPAGE)` on its arenas), and a thread's first touch of fresh memory
/// then cleared 2 MiB at a time: right after a burst of writes, reads that landed on
/// blocking threads new to their size of buffer took 6-28 ms for 0.2 s, and 0.7-1.2 ms
/// with THP off (docs/benchmarks.md, "Reads right after a burst"). Replay and HTTP writes
/// measured the same either way.
pub fn tune_process() {
    // Indexes of `mi_option_t`, the same in mimalloc v2 and v3.
    const ALLOW_LARGE_OS_PAGES: libmimalloc_sys::mi_option_t = 6;
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: setting an option has no preconditions; mimalloc reads options atomically.
    unsafe {
        libmimalloc_sys::mi_option_set(ALLOW_LARGE_OS_PAGES, 0);
        libmimalloc_sys::mi_option_set(PURGE_DELAY, -1);
    }
    // The kernel checks the flag at every fault, in mappings made before it too. Where
    // it cannot be set (an old kernel, a sandbox), only latency right after bursts suffers.
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and touches no memory of ours.
    let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}
