//! The supervisors that own domains, held as pidfds.
//!
//! A supervisor is recognised on a later connection only while the pidfd taken when it
//! registered still names a live process: then its PID cannot have been reused, so a caller
//! with that PID (and a live pidfd of its own) is the same process. When the supervisor exits,
//! its domains keep running but nobody can mint for them any more.

use std::{
    collections::HashMap,
    os::fd::{AsFd, OwnedFd},
    sync::Mutex,
};

use bulkhead_common::DomainId;

use crate::{
    domains::{DomainRecord, TaskBinding},
    peer::{Peer, pidfd_is_alive, pidfd_open},
};

struct Owner {
    pid: i32,
    pidfd: OwnedFd,
}

#[derive(Default)]
pub struct Owners {
    by_domain: Mutex<HashMap<DomainId, Owner>>,
}

impl Owners {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<DomainId, Owner>> {
        self.by_domain.lock().expect("owners lock poisoned")
    }

    pub fn insert(&self, domain: DomainId, owner: &Peer) -> std::io::Result<()> {
        let pidfd = owner.duplicate_pidfd()?;
        self.map().insert(
            domain,
            Owner {
                pid: owner.pid,
                pidfd,
            },
        );
        Ok(())
    }

    pub fn remove(&self, domain: DomainId) {
        self.map().remove(&domain);
    }

    /// Whether `caller` is the live supervisor that registered `domain`.
    pub fn is_owner(&self, domain: DomainId, caller: &Peer) -> bool {
        let owners = self.map();
        let Some(owner) = owners.get(&domain) else {
            return false;
        };
        owner.pid == caller.pid && pidfd_is_alive(owner.pidfd.as_fd()) && caller.is_alive()
    }

    /// After an agent restart: finds each registered domain's supervisor again, by PID and
    /// start time, through a fresh pidfd. A supervisor that is gone (or whose PID now names
    /// another process) is not restored. Returns how many were.
    pub fn restore(&self, live: &[DomainRecord]) -> usize {
        let mut restored = 0;
        for record in live {
            let Some(task) = &record.task else { continue };
            match reopen(task) {
                Some(pidfd) => {
                    self.map().insert(
                        record.id,
                        Owner {
                            pid: task.owner_pid,
                            pidfd,
                        },
                    );
                    restored += 1;
                }
                None => tracing::warn!(
                    domain = record.id,
                    owner_pid = task.owner_pid,
                    "the supervisor that registered this domain is gone; no tokens can be minted for it"
                ),
            }
        }
        restored
    }
}

fn reopen(task: &TaskBinding) -> Option<OwnedFd> {
    let pidfd = pidfd_open(task.owner_pid).ok()?;
    let stat = procfs::process::Process::new(task.owner_pid)
        .and_then(|process| process.stat())
        .ok()?;
    // Read after the pidfd was opened and confirmed alive after: the stat is the process the
    // pidfd names.
    (stat.starttime == task.owner_start && pidfd_is_alive(pidfd.as_fd())).then_some(pidfd)
}
