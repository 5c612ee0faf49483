//! How the process allocator (mimalloc, chosen by the binaries with
//! `#[global_allocator]`) keeps and returns memory.
//!
//! mimalloc returns a freed region to the system after a *purge delay*
//! (1 s by default in mimalloc v3). Under a sustained burst
//! that is the wrong trade: the same regions are freed and taken again
//! within milliseconds, and every purge makes the kernel zero them afresh
//! on the next touch (2 MiB at a time with transparent huge pages). In the
//! replication bench that zeroing was 8-12 % of all CPU samples; with the
//! delay below it left the profile and the CPU per change fell by about
//! 10 % (the same as never purging).
//! Memory is still given back: the idle trim ([`crate::idle`]) calls
//! [`release`], which purges everything freed at once, whatever the delay.

use std::ffi::{c_int, c_long};

// Links libmimalloc even into binaries whose global allocator is another
// one: the calls below then tune an allocator nobody uses, harmlessly.
extern crate mimalloc as _;

extern "C" {
    fn mi_option_set(option: c_int, value: c_long);
    fn mi_option_get(option: c_int) -> c_long;
    fn mi_collect(force: bool);
}

/// `mi_option_purge_delay`: its index in `mi_option_t`, the same in
/// mimalloc v2 and v3 (`mimalloc.h`); the unit test checks its default.
const MI_OPTION_PURGE_DELAY: c_int = 15;

/// How long (ms) freed memory stays with the process before mimalloc
/// purges it on its own. Long enough
/// that a burst reuses what it freed; the idle trim does not wait for it.
pub const PURGE_DELAY_MS: i64 = 10_000;

/// Sets the purge delay. Call it first thing in `main`, before the
/// threads start (mimalloc reads the option on each purge decision, so a
/// later call works too, it only changes what is freed afterwards).
pub fn tune() {
    // SAFETY: mi_option_set takes plain integers and may be called from
    // any thread at any time; the index is the purge delay's (see above).
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS as c_long) }
}

/// The purge delay in force, in ms.
pub fn purge_delay_ms() -> i64 {
    // SAFETY: as in `tune`: a plain read of an option.
    unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) as i64 }
}

/// Frees what it can of mimalloc's heaps and purges freed memory now,
/// whatever the purge delay (the idle trim's hook).
pub fn release() {
    // SAFETY: mi_collect takes no pointers and may be called from any
    // thread at any time.
    unsafe { mi_collect(true) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_index_is_mimallocs_and_tune_sets_it() {
        // mimalloc's default purge delay is 1,000 ms in v3 (10 ms in v2); a
        // wrong index would read another option (or, out of range, 0).
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            let default = purge_delay_ms();
            assert!(
                default == 1_000 || default == 10,
                "index 15 reads {default}: not the purge delay"
            );
        }
        tune();
        assert_eq!(purge_delay_ms(), PURGE_DELAY_MS);
        release();
    }
}
