//! One lock per domain: a mint's freshness check and the record of what it minted must be one
//! step for its domain (or two concurrent mints could both pass the check), but mints for
//! different domains have nothing to order between them and must not queue behind each other.

use std::{
    collections::HashSet,
    sync::{Condvar, Mutex, MutexGuard, PoisonError},
};

use bulkhead_common::DomainId;

#[derive(Default)]
pub struct DomainLocks {
    held: Mutex<HashSet<DomainId>>,
    released: Condvar,
}

/// Holds one domain's lock until dropped.
pub struct DomainGuard<'a> {
    locks: &'a DomainLocks,
    domain: DomainId,
}

impl DomainLocks {
    fn held(&self) -> MutexGuard<'_, HashSet<DomainId>> {
        // The set is changed in single inserts and removes: never half-updated.
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn lock(&self, domain: DomainId) -> DomainGuard<'_> {
        let mut held = self.held();
        while held.contains(&domain) {
            held = self
                .released
                .wait(held)
                .unwrap_or_else(PoisonError::into_inner);
        }
        held.insert(domain);
        DomainGuard {
            locks: self,
            domain,
        }
    }
}

impl Drop for DomainGuard<'_> {
    fn drop(&mut self) {
        self.locks.held().remove(&self.domain);
        self.locks.released.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
        time::Duration,
    };

    use super::*;

    /// Holders of one domain's lock never overlap; holders of different domains' locks do.
    #[test]
    fn one_domain_at_a_time_different_domains_together() {
        let locks = Arc::new(DomainLocks::default());
        let inside = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
        let most = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
        let together = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8u64)
            .map(|n| {
                let (locks, inside, most, together) = (
                    locks.clone(),
                    inside.clone(),
                    most.clone(),
                    together.clone(),
                );
                std::thread::spawn(move || {
                    let domain = n % 2;
                    for _ in 0..5 {
                        let _guard = locks.lock(domain);
                        let now = inside[domain as usize].fetch_add(1, Ordering::SeqCst) + 1;
                        most[domain as usize].fetch_max(now, Ordering::SeqCst);
                        if inside[1 - domain as usize].load(Ordering::SeqCst) > 0 {
                            together.fetch_add(1, Ordering::SeqCst);
                        }
                        std::thread::sleep(Duration::from_millis(2));
                        inside[domain as usize].fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(most[0].load(Ordering::SeqCst), 1);
        assert_eq!(most[1].load(Ordering::SeqCst), 1);
        assert!(
            together.load(Ordering::SeqCst) > 0,
            "domains never overlapped"
        );
    }
}
