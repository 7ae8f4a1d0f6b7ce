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

use aya_ebpf::{macros::map, maps::HashMap};
use bulkhead_common::{DomainId, FILE_OWNER_MAP_ENTRIES};

#[map(name = "FILE_OWNER")]
static FILE_OWNER: HashMap<u64, DomainId> = HashMap::with_max_entries(FILE_OWNER_MAP_ENTRIES, 0);

/// Records `domain` as the owner-setter of the file whose owner key is `key`.
/// Returns false when the map has no room.
#[inline(always)]
pub fn record(key: u64, domain: DomainId) -> bool {
    FILE_OWNER.insert(&key, &domain, 0).is_ok()
}

/// Forgets the record (owner set again from outside a domain, or the file is freed).
#[inline(always)]
pub fn forget(key: u64) {
    // Absent keys are the common case; the error carries no information.
    let _ = FILE_OWNER.remove(&key);
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
