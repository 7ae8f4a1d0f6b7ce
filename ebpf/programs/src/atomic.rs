//! Atomic read-modify-write on map values. The bpf target declares no atomic types (no
//! `target_has_atomic`), but the BPF instruction set has atomic add (always) and exchange
//! (BPF_XCHG, Linux 5.12), so the compiler intrinsics are used directly.

use core::intrinsics::{AtomicOrdering, atomic_xadd, atomic_xchg};

/// Stores `value` at `place` and returns what was there, in one step.
///
/// # Safety
/// `place` must be a valid, aligned pointer into a map value.
#[inline(always)]
pub unsafe fn swap(place: *mut u64, value: u64) -> u64 {
    // SAFETY: upheld by the caller.
    unsafe { atomic_xchg::<u64, { AtomicOrdering::SeqCst }>(place, value) }
}

/// Adds `delta` (wrapping, so `u64::MAX` subtracts one). The previous value is not returned:
/// a fetching add needs the alu32 instruction set, which the bpf-linker default CPU lacks, and
/// callers can read the value back (see lifecycle.rs for why that is enough).
///
/// # Safety
/// `place` must be a valid, aligned pointer into a map value.
#[inline(always)]
pub unsafe fn add(place: *mut u64, delta: u64) {
    // SAFETY: upheld by the caller.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(place, delta) };
}
