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

/// A supervisor, held by a pidfd so that its PID keeps naming it.
pub struct Owner {
    pid: i32,
    pidfd: OwnedFd,
}

impl Owner {
    pub fn of(peer: &Peer) -> std::io::Result<Self> {
        Ok(Self {
            pid: peer.pid,
            pidfd: peer.duplicate_pidfd()?,
        })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn is_alive(&self) -> bool {
        pidfd_is_alive(self.pidfd.as_fd())
    }

    /// Whether `caller` is this supervisor: same PID while our pidfd still names a live
    /// process (so the PID was not reused), and the caller alive too.
    pub fn is(&self, caller: &Peer) -> bool {
        self.pid == caller.pid && self.is_alive() && caller.is_alive()
    }

    /// Whether `caller` is a child of this supervisor. The caller's parent PID is read while
    /// the caller is alive, and it names this supervisor only while our pidfd says the
    /// supervisor is alive (a dead supervisor's children are reparented, and its PID may be
    /// reused).
    pub fn is_parent_of(&self, caller: &Peer) -> bool {
        caller.parent_pid().is_ok_and(|ppid| ppid == self.pid) && self.is_alive()
    }
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
        self.insert_held(domain, Owner::of(owner)?);
        Ok(())
    }

    pub fn insert_held(&self, domain: DomainId, owner: Owner) {
        self.map().insert(domain, owner);
    }

    pub fn remove(&self, domain: DomainId) {
        self.map().remove(&domain);
    }

    /// Whether `caller` is the live supervisor that registered `domain`.
    pub fn is_owner(&self, domain: DomainId, caller: &Peer) -> bool {
        self.map()
            .get(&domain)
            .is_some_and(|owner| owner.is(caller))
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
