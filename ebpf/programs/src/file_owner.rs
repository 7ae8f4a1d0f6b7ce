//! Which domain set a file's owner, for SIGIO and SIGURG.
//!
//! `F_SETOWN` (and `F_SETOWN_EX`, `FIOSETOWN`, `SIOCSPGRP`, leases, dnotify, `O_ASYNC`) makes
//! the kernel signal a chosen process later, when I/O happens on the file, in the context of
//! whichever task caused the I/O. `file_send_sigiotask` therefore cannot ask "who is current";
//! it must know who set the owner. The kernel keeps no LSM-visible record of that, so this map
//! does: key = a per-file address (the embedded owner struct's on 6.1, the file's on 6.12+;
//! kernel_layout.rs computes it from the file and from the owner struct the signal hook
//! gets), value = the setter's domain. Only setters
//! inside a domain get an entry; no entry means the owner was set from outside every domain,
//! which bulkhead does not restrict.
//!
//! Fail closed: an entry is reserved in `file_fcntl` / `file_ioctl`, which can refuse the call,
//! before the kernel sets the owner; if the map is full the task's fcntl fails with ENOMEM
//! rather than leaving an unrecorded owner.
//!
//! Freeing a file deletes its record so a later file at the same address cannot inherit it.
//! Every process on the node frees files, so the delete (a hash lookup under a bucket lock) is
//! skipped while `FILE_OWNER_COUNT` says there is no record at all; that costs one array load.
//! The count is raised before a record is added and lowered after one is removed, so it is
//! never below the number of records: a file with a record always finds it above zero.

use aya_ebpf::{
    bindings::{BPF_EXIST, BPF_NOEXIST},
    macros::map,
    maps::{Array, HashMap},
};
use bulkhead_common::{DomainId, FILE_OWNER_MAP_ENTRIES};

use crate::atomic;

#[map(name = "FILE_OWNER")]
static FILE_OWNER: HashMap<u64, DomainId> = HashMap::with_max_entries(FILE_OWNER_MAP_ENTRIES, 0);

#[map(name = "FILE_OWNER_COUNT")]
static FILE_OWNER_COUNT: Array<u64> = Array::with_max_entries(1, 0);

/// Records `domain` as the owner-setter of the file whose owner key is `key`, replacing an
/// earlier record of the same file. Returns false when the map has no room (or the count
/// cannot be kept, which never happens for a one-entry array).
#[inline(always)]
pub fn record(key: u64, domain: DomainId) -> bool {
    let Some(count) = FILE_OWNER_COUNT.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: `count` points into the array's one value.
    unsafe { atomic::add(count, 1) };
    if FILE_OWNER
        .insert(&key, &domain, u64::from(BPF_NOEXIST))
        .is_ok()
    {
        return true;
    }
    // Not added (already recorded, or no room): the raise is taken back, and an existing
    // record is replaced in place of the map (never through a value pointer, which a
    // concurrent delete could hand to another key).
    // SAFETY: as above.
    unsafe { atomic::add(count, u64::MAX) };
    FILE_OWNER
        .insert(&key, &domain, u64::from(BPF_EXIST))
        .is_ok()
}

/// Forgets the record (owner set again from outside a domain, or the file is freed).
#[inline(always)]
pub fn forget(key: u64) {
    // Absent keys are the common case (every owner set from outside a domain comes here), and
    // with no record at all there is no delete to make; only a removal lowers the count.
    if none_recorded() {
        return;
    }
    if FILE_OWNER.remove(&key).is_ok()
        && let Some(count) = FILE_OWNER_COUNT.get_ptr_mut(0)
    {
        // SAFETY: `count` points into the array's one value.
        unsafe { atomic::add(count, u64::MAX) };
    }
}

/// True when no file has an owner record, so there is nothing to forget.
#[inline(always)]
fn none_recorded() -> bool {
    // SAFETY: a plain load of the count; a stale read is a later count of a file that is
    // not this one (this file's record, if any, was counted before its last reference went).
    FILE_OWNER_COUNT
        .get(0)
        .is_some_and(|count| unsafe { core::ptr::read_volatile(count) } == 0)
}

/// The domain that set the owner, or `NO_DOMAIN` (0) when none did.
#[inline(always)]
pub fn setter_domain(key: u64) -> DomainId {
    // SAFETY: the value is copied out at once; a concurrent delete can at worst make us see the
    // value as it was a moment earlier, which is a record of a real setter.
    match unsafe { FILE_OWNER.get(&key) } {
        Some(domain) => *domain,
        None => bulkhead_common::NO_DOMAIN,
    }
}
