//! Registrations waiting for `bulkhead exec`.
//!
//! A supervisor that starts its task as `bulkhead exec --registration ID -- CMD` (rather than
//! forking a child and naming it) registers first, without a pid, and gets an id. The process
//! that presents the id is sealed into the task's domain only if the kernel says it is a child
//! of the supervisor that registered (see [`Owner::is_parent_of`]), only once, and only within
//! [`REGISTRATION_TTL`]. The id is random but is not what grants anything: a process that
//! learns it and is not that supervisor's child is refused, and the registration stays for the
//! right one.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use super::{mint::random_id, owners::Owner, service::BrokerError};
use crate::{domains::Label, peer::Peer};

/// How long a registration waits for its process: enough to fork and exec `bulkhead exec`.
pub const REGISTRATION_TTL: Duration = Duration::from_secs(60);
/// Registrations held at once; beyond that a registration is refused, so a supervisor that
/// registers without ever starting its tasks cannot grow the agent's memory.
pub const MAX_PENDING: usize = 1024;

/// What the domain will be bound to once its process presents the id.
pub struct Registration {
    pub sub: String,
    pub label: Option<Label>,
    pub owner: Owner,
    pub owner_start: u64,
    pub owner_uid: u32,
}

struct Waiting {
    registration: Registration,
    deadline: Instant,
}

pub struct PendingRegistrations {
    ttl: Duration,
    by_id: Mutex<HashMap<String, Waiting>>,
}

impl PendingRegistrations {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            by_id: Mutex::new(HashMap::new()),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Waiting>> {
        self.by_id
            .lock()
            .expect("pending registrations lock poisoned")
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Holds `registration` and returns its id. One waiting registration per task identity.
    pub fn add(&self, registration: Registration) -> Result<String, BrokerError> {
        let mut waiting = self.map();
        let now = Instant::now();
        // Expired ones and those whose supervisor is gone can never be taken.
        waiting.retain(|_, entry| entry.deadline > now && entry.registration.owner.is_alive());
        if waiting
            .values()
            .any(|entry| entry.registration.sub == registration.sub)
        {
            return Err(BrokerError::Conflict(format!(
                "task {} already has a registration waiting for its process",
                registration.sub
            )));
        }
        if waiting.len() >= MAX_PENDING {
            return Err(BrokerError::Busy(format!(
                "{MAX_PENDING} registrations are already waiting for their processes"
            )));
        }
        let id = random_id()?;
        waiting.insert(
            id.clone(),
            Waiting {
                registration,
                deadline: now + self.ttl,
            },
        );
        Ok(id)
    }

    /// Takes the registration `id` for `caller`, which must be a child of the supervisor that
    /// registered it. A refused caller leaves the registration for the right process.
    pub fn take_for(&self, id: &str, caller: &Peer) -> Result<Registration, BrokerError> {
        let mut waiting = self.map();
        let unknown = || {
            BrokerError::NotFound(format!(
                // The id is the caller's text and refusals are logged: not echoed.
                "no such registration is waiting: unknown, already taken, or older than {} s",
                self.ttl.as_secs()
            ))
        };
        let entry = waiting.get(id).ok_or_else(unknown)?;
        if entry.deadline <= Instant::now() {
            waiting.remove(id);
            return Err(unknown());
        }
        if !entry.registration.owner.is_parent_of(caller) {
            return Err(BrokerError::Forbidden(format!(
                "only a child of the supervisor that registered (pid {}) may take this \
                 registration",
                entry.registration.owner.pid()
            )));
        }
        Ok(waiting
            .remove(id)
            .expect("present under the same lock")
            .registration)
    }
}
