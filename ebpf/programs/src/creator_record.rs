//! Who made an object the kernel gives its hooks without its maker: a map from the object's
//! address to its creator's domain, written when the object is allocated. Shared by System V
//! IPC objects (ipc.rs, a hash map emptied by the free hooks) and keys (keys.rs, an LRU map,
//! as keys are freed without a hook from 6.12).

use aya_ebpf::maps::{HashMap, LruHashMap};
use bulkhead_common::{DomainId, NO_DOMAIN, UNDECIDABLE};

use crate::{E2BIG, EAGAIN, ENOMEM, ENOSPC, task_domain::current_domain};

/// The two map kinds the records live in.
pub trait CreatorMap {
    fn record(&self, object: u64, domain: DomainId) -> Result<(), i32>;
    fn forget(&self, object: u64);
}

/// aya's hash and LRU hash maps have the same insert and remove but share no trait.
macro_rules! creator_map {
    ($map:ident) => {
        impl CreatorMap for $map<u64, DomainId> {
            #[inline(always)]
            fn record(&self, object: u64, domain: DomainId) -> Result<(), i32> {
                self.insert(&object, &domain, 0)
            }
            #[inline(always)]
            fn forget(&self, object: u64) {
                // An absent entry is the common case; the error carries no information.
                let _ = self.remove(&object);
            }
        }
    };
}

creator_map!(HashMap);
creator_map!(LruHashMap);

/// Why an object cannot be created.
pub enum NotRecorded {
    /// The creator's own domain cannot be read: `-EAGAIN`.
    Undecidable,
    /// No room for the record (`-ENOSPC`) or no memory (`-ENOMEM`); the creator's domain, for
    /// the caller's log line.
    NoRoom { domain: DomainId, errno: i32 },
}

impl NotRecorded {
    /// The hook's verdict: the object is not created.
    #[inline(always)]
    pub fn verdict(&self) -> i32 {
        match self {
            NotRecorded::Undecidable => -EAGAIN,
            NotRecorded::NoRoom { errno, .. } => *errno,
        }
    }
}

/// Records the current task's domain as the creator of `object`. An object made outside every
/// domain gets no entry, and one left at its address (by an object freed without a hook, or
/// whose allocation another LSM refused) is removed: it must not lend the new object a domain.
#[inline(always)]
pub fn record_creator(map: &impl CreatorMap, object: u64) -> Result<(), NotRecorded> {
    let domain = current_domain();
    if domain == NO_DOMAIN {
        map.forget(object);
        return Ok(());
    }
    if domain == UNDECIDABLE {
        return Err(NotRecorded::Undecidable);
    }
    map.record(object, domain)
        .map_err(|err| NotRecorded::NoRoom {
            domain,
            errno: if err == -E2BIG { -ENOSPC } else { -ENOMEM },
        })
}
