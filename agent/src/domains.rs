//! Domains: allocating them, sealing a caller into one, and remembering their labels.
//!
//! Sealing rules (DESIGN.md, "Domain semantics"):
//! - a process enters a domain once and can never leave or change it (the kernel refuses a
//!   second label atomically);
//! - only the thread the pidfd names is labelled, so a multi-threaded caller is refused: its
//!   other threads would stay outside. The count is checked before *and after* labelling; a
//!   thread that appeared in between makes us undo the label and refuse.

use std::{
    collections::HashMap,
    io,
    os::fd::BorrowedFd,
    sync::Mutex,
    time::{SystemTime, UNIX_EPOCH},
};

use bulkhead_common::DomainId;
use serde::Serialize;

use crate::{
    enforce::task_storage::{LabelError, TaskDomainMap},
    peer::{Peer, PeerError},
};

/// Reads and writes per-process domain labels in the kernel.
pub trait TaskLabels: Send + Sync {
    fn lookup(&self, pidfd: BorrowedFd<'_>) -> io::Result<Option<DomainId>>;
    fn label_new(&self, pidfd: BorrowedFd<'_>, domain: DomainId) -> Result<(), LabelError>;
    fn unlabel(&self, pidfd: BorrowedFd<'_>) -> io::Result<()>;
}

impl TaskLabels for TaskDomainMap {
    fn lookup(&self, pidfd: BorrowedFd<'_>) -> io::Result<Option<DomainId>> {
        TaskDomainMap::lookup(self, pidfd)
    }
    fn label_new(&self, pidfd: BorrowedFd<'_>, domain: DomainId) -> Result<(), LabelError> {
        TaskDomainMap::label_new(self, pidfd, domain)
    }
    fn unlabel(&self, pidfd: BorrowedFd<'_>) -> io::Result<()> {
        TaskDomainMap::unlabel(self, pidfd)
    }
}

/// The facts about a caller that sealing depends on, all from the kernel.
pub trait Caller {
    fn pid(&self) -> i32;
    fn uid(&self) -> u32;
    fn pidfd(&self) -> BorrowedFd<'_>;
    fn thread_count(&self) -> Result<u64, PeerError>;
}

impl Caller for Peer {
    fn pid(&self) -> i32 {
        self.pid
    }
    fn uid(&self) -> u32 {
        self.uid
    }
    fn pidfd(&self) -> BorrowedFd<'_> {
        Peer::pidfd(self)
    }
    fn thread_count(&self) -> Result<u64, PeerError> {
        Peer::thread_count(self)
    }
}

/// A human-readable name for a domain, shown in logs; not an identity (ids are).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Label(String);

pub const MAX_LABEL_LEN: usize = 64;

impl Label {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Label {
    type Error = String;

    /// Labels end up in log lines, so they are restricted to characters that cannot forge one.
    fn try_from(value: String) -> Result<Self, Self::Error> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':');
        if value.is_empty() || value.len() > MAX_LABEL_LEN || !value.chars().all(allowed) {
            return Err(format!(
                "a label is 1 to {MAX_LABEL_LEN} characters from A-Z a-z 0-9 . _ - :"
            ));
        }
        Ok(Self(value))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DomainRecord {
    pub id: DomainId,
    pub label: Option<Label>,
    /// Seconds since the Unix epoch.
    pub created: u64,
    pub sealed_pid: i32,
    pub sealed_uid: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the caller is already in domain {0}; a domain can be entered once and never left")]
    AlreadyInDomain(DomainId),
    #[error(
        "the caller has {0} threads; only a single-threaded process can be sealed, because only \
         the calling thread would be labelled"
    )]
    MultiThreaded(u64),
    #[error("cannot identify the caller: {0}")]
    Caller(#[from] PeerError),
    #[error("kernel refused: {0}")]
    Kernel(String),
}

pub struct Domains {
    labels: Box<dyn TaskLabels>,
    state: Mutex<State>,
}

struct State {
    last_id: DomainId,
    records: HashMap<DomainId, DomainRecord>,
}

impl Domains {
    pub fn new(labels: Box<dyn TaskLabels>) -> Self {
        Self {
            labels,
            state: Mutex::new(State {
                last_id: 0,
                records: HashMap::new(),
            }),
        }
    }

    /// Ids grow from the wall clock in nanoseconds, so they stay unique across agent restarts
    /// without stored state (a restart cannot reuse an id still held by a live task).
    fn allocate_id(state: &mut State) -> DomainId {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        state.last_id = now.max(state.last_id + 1);
        state.last_id
    }

    /// Seals `caller` into a new domain.
    pub fn seal(
        &self,
        caller: &dyn Caller,
        label: Option<Label>,
    ) -> Result<DomainRecord, SealError> {
        let threads = caller.thread_count()?;
        if threads != 1 {
            return Err(SealError::MultiThreaded(threads));
        }
        if let Some(existing) = self.lookup(caller)? {
            return Err(SealError::AlreadyInDomain(existing));
        }

        let mut state = self.state.lock().expect("domain state lock poisoned");
        let id = Self::allocate_id(&mut state);
        match self.labels.label_new(caller.pidfd(), id) {
            Ok(()) => {}
            Err(LabelError::AlreadyLabelled) => {
                // Lost a race with a concurrent seal of the same process.
                let existing = self.lookup(caller)?.unwrap_or(0);
                return Err(SealError::AlreadyInDomain(existing));
            }
            Err(LabelError::Kernel(err)) => return Err(SealError::Kernel(err.to_string())),
        }

        // A thread created between the first count and the label would run outside the
        // domain. Threads created after the label inherit it, so one recount suffices.
        match caller.thread_count() {
            Ok(1) => {}
            outcome => {
                if let Err(err) = self.labels.unlabel(caller.pidfd()) {
                    tracing::error!(pid = caller.pid(), error = %err, "could not undo a refused seal");
                }
                return Err(match outcome {
                    Ok(n) => SealError::MultiThreaded(n),
                    Err(err) => SealError::Caller(err),
                });
            }
        }

        let record = DomainRecord {
            id,
            label,
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            sealed_pid: caller.pid(),
            sealed_uid: caller.uid(),
        };
        state.records.insert(id, record.clone());
        Ok(record)
    }

    /// The domain the caller is in, if any.
    pub fn lookup(&self, caller: &dyn Caller) -> Result<Option<DomainId>, SealError> {
        self.labels
            .lookup(caller.pidfd())
            .map_err(|err| SealError::Kernel(err.to_string()))
    }

    pub fn record(&self, id: DomainId) -> Option<DomainRecord> {
        let state = self.state.lock().expect("domain state lock poisoned");
        state.records.get(&id).cloned()
    }

    pub fn count(&self) -> usize {
        self.state
            .lock()
            .expect("domain state lock poisoned")
            .records
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{
        cell::Cell,
        os::fd::{AsFd, AsRawFd, OwnedFd},
        sync::Arc,
    };

    /// Labels keyed by the pidfd's fd number: enough for a single-process fake.
    #[derive(Default, Clone)]
    struct FakeLabels(Arc<Mutex<HashMap<i32, DomainId>>>);

    impl TaskLabels for FakeLabels {
        fn lookup(&self, pidfd: BorrowedFd<'_>) -> io::Result<Option<DomainId>> {
            Ok(self.0.lock().unwrap().get(&pidfd.as_raw_fd()).copied())
        }
        fn label_new(&self, pidfd: BorrowedFd<'_>, domain: DomainId) -> Result<(), LabelError> {
            let mut map = self.0.lock().unwrap();
            if map.contains_key(&pidfd.as_raw_fd()) {
                return Err(LabelError::AlreadyLabelled);
            }
            map.insert(pidfd.as_raw_fd(), domain);
            Ok(())
        }
        fn unlabel(&self, pidfd: BorrowedFd<'_>) -> io::Result<()> {
            self.0.lock().unwrap().remove(&pidfd.as_raw_fd());
            Ok(())
        }
    }

    struct FakeCaller {
        fd: OwnedFd,
        /// Thread counts returned by successive calls.
        threads: Vec<u64>,
        calls: Cell<usize>,
    }

    impl FakeCaller {
        fn new(threads: &[u64]) -> Self {
            Self {
                fd: std::fs::File::open("/dev/null").unwrap().into(),
                threads: threads.to_vec(),
                calls: Cell::new(0),
            }
        }
    }

    impl Caller for FakeCaller {
        fn pid(&self) -> i32 {
            4242
        }
        fn uid(&self) -> u32 {
            1000
        }
        fn pidfd(&self) -> BorrowedFd<'_> {
            self.fd.as_fd()
        }
        fn thread_count(&self) -> Result<u64, PeerError> {
            let n = self.calls.get();
            self.calls.set(n + 1);
            Ok(*self.threads.get(n).unwrap_or(self.threads.last().unwrap()))
        }
    }

    fn domains() -> (FakeLabels, Domains) {
        let labels = FakeLabels::default();
        (labels.clone(), Domains::new(Box::new(labels)))
    }

    #[test]
    fn seals_a_single_threaded_caller_once() {
        let (labels, domains) = domains();
        let caller = FakeCaller::new(&[1]);
        let label = Label::try_from("etl:load".to_owned()).unwrap();
        let record = domains.seal(&caller, Some(label.clone())).unwrap();
        assert_eq!(domains.lookup(&caller).unwrap(), Some(record.id));
        assert_eq!(domains.record(record.id).unwrap().label, Some(label));
        assert_eq!(labels.0.lock().unwrap().len(), 1);

        let again = domains.seal(&caller, None).unwrap_err();
        assert!(matches!(again, SealError::AlreadyInDomain(id) if id == record.id));
        assert_eq!(
            domains.lookup(&caller).unwrap(),
            Some(record.id),
            "domain unchanged"
        );
        assert_eq!(domains.count(), 1);
    }

    #[test]
    fn refuses_a_multi_threaded_caller_and_changes_nothing() {
        let (labels, domains) = domains();
        let caller = FakeCaller::new(&[3]);
        assert!(matches!(
            domains.seal(&caller, None),
            Err(SealError::MultiThreaded(3))
        ));
        assert!(labels.0.lock().unwrap().is_empty());
        assert_eq!(domains.count(), 0);
    }

    #[test]
    fn a_thread_born_during_the_seal_undoes_it() {
        let (labels, domains) = domains();
        let caller = FakeCaller::new(&[1, 2]);
        assert!(matches!(
            domains.seal(&caller, None),
            Err(SealError::MultiThreaded(2))
        ));
        assert!(labels.0.lock().unwrap().is_empty(), "label rolled back");
        assert_eq!(domains.count(), 0);
    }

    #[test]
    fn ids_are_unique_and_increasing() {
        let (_labels, domains) = domains();
        // Both callers stay alive so their fake pidfds have distinct numbers.
        let (first, second) = (FakeCaller::new(&[1]), FakeCaller::new(&[1]));
        let a = domains.seal(&first, None).unwrap().id;
        let b = domains.seal(&second, None).unwrap().id;
        assert!(b > a && a != 0);
    }

    #[test]
    fn labels_are_restricted_to_log_safe_characters() {
        for bad in [
            "",
            "has space",
            "new\nline",
            "quote\"",
            &"x".repeat(65),
            "ünï",
        ] {
            assert!(Label::try_from(bad.to_owned()).is_err(), "{bad:?}");
        }
        for good in ["a", "dag.task-1_try:2", &"x".repeat(64)] {
            assert!(Label::try_from(good.to_owned()).is_ok(), "{good:?}");
        }
    }
}
