//! Domains: allocating them, sealing a caller into one, remembering their labels across
//! restarts, and ending them when their last task has exited.
//!
//! Sealing rules (DESIGN.md, "Domain semantics"):
//! - a process enters a domain once and can never leave or change it (the kernel refuses a
//!   second label atomically);
//! - only the thread the pidfd names is labelled, so a multi-threaded caller is refused: its
//!   other threads would stay outside. The count is checked before *and after* labelling; a
//!   thread that appeared in between makes us undo the label and refuse.
//!
//! Lifecycle: a seal opens the domain's count of running tasks in the kernel (DOMAIN_TASKS) and
//! stores its record durably before the caller hears of it. The kernel deletes the count when
//! the last task exits; [`Domains::end`] then removes the record and announces the end to every
//! subscriber (the token broker revokes the domain's tokens there).

use std::{
    collections::{HashMap, VecDeque},
    io,
    os::fd::BorrowedFd,
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

use bulkhead_common::DomainId;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::{
    enforce::{
        domain_census::{CensusError, DomainCensus},
        task_storage::{LabelError, TaskDomainMap},
    },
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

/// The kernel's count of each domain's running tasks.
pub trait Census: Send {
    /// Opens the count of a new domain at one task.
    fn open(&mut self, domain: DomainId) -> Result<(), CensusError>;
    /// Drops a count opened for a seal that did not complete.
    fn discard(&mut self, domain: DomainId) -> io::Result<()>;
    /// The domain's running tasks (threads included); None once the last one has exited.
    fn running_tasks(&self, domain: DomainId) -> io::Result<Option<u64>>;
    /// False once the domain's last task has exited. A count of zero is ended too: the
    /// program that took it there failed to delete the entry (nothing can raise it again).
    fn is_live(&self, domain: DomainId) -> io::Result<bool> {
        Ok(self.running_tasks(domain)?.is_some_and(|tasks| tasks > 0))
    }
}

impl Census for DomainCensus {
    fn open(&mut self, domain: DomainId) -> Result<(), CensusError> {
        DomainCensus::open(self, domain)
    }
    fn discard(&mut self, domain: DomainId) -> io::Result<()> {
        DomainCensus::discard(self, domain).map_err(io::Error::other)
    }
    fn running_tasks(&self, domain: DomainId) -> io::Result<Option<u64>> {
        DomainCensus::running_tasks(self, domain).map_err(io::Error::other)
    }
}

/// Durable storage of live domains' records.
pub trait DomainStore: Send + Sync {
    fn put(&self, record: &DomainRecord) -> anyhow::Result<()>;
    fn remove(&self, id: DomainId) -> anyhow::Result<()>;
    fn load(&self) -> anyhow::Result<Vec<DomainRecord>>;
}

/// The state database is shared with the broker's ledger.
impl<T: DomainStore> DomainStore for Arc<T> {
    fn put(&self, record: &DomainRecord) -> anyhow::Result<()> {
        T::put(self, record)
    }
    fn remove(&self, id: DomainId) -> anyhow::Result<()> {
        T::remove(self, id)
    }
    fn load(&self) -> anyhow::Result<Vec<DomainRecord>> {
        T::load(self)
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String")]
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainRecord {
    pub id: DomainId,
    pub label: Option<Label>,
    /// Seconds since the Unix epoch.
    pub created: u64,
    pub sealed_pid: i32,
    pub sealed_uid: u32,
    /// The task this domain runs, when a supervisor registered it with the broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskBinding>,
}

/// A domain opened for a task by the broker: who the task is and which supervisor owns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskBinding {
    /// The task identity (`sub` of its tokens): in Airflow, the task instance UUID.
    pub sub: String,
    /// The supervisor that registered it, as PID plus start time (clock ticks since boot):
    /// only used to find the same process again after an agent restart, where the pair is
    /// confirmed through a fresh pidfd.
    pub owner_pid: i32,
    pub owner_start: u64,
    pub owner_uid: u32,
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
    #[error("{0}")]
    Capacity(String),
    #[error("the domain could not be recorded durably, so it was not opened: {0}")]
    Storage(String),
    #[error("task {0:?} already runs in live domain {1}")]
    AlreadyRegistered(String, DomainId),
}

/// How the agent learned that a domain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Noticed {
    /// The kernel's announcement, the moment the last task exited.
    Event,
    /// A scan found the domain's count gone: the announcement was lost (agent down, ring full).
    Scan,
}

/// A domain whose last task has exited. Its record is gone from the registry by now.
#[derive(Debug, Clone)]
pub struct EndedDomain {
    pub record: DomainRecord,
    /// When the last task exited (for [`Noticed::Event`]) or when the scan found it.
    pub ended: SystemTime,
    pub noticed: Noticed,
}

/// How many recently ended domains are remembered (with their labels).
const RECENTLY_ENDED: usize = 4096;

pub struct Domains {
    labels: Box<dyn TaskLabels>,
    store: Box<dyn DomainStore>,
    state: Mutex<State>,
    ends: broadcast::Sender<Arc<EndedDomain>>,
}

struct State {
    last_id: DomainId,
    records: HashMap<DomainId, DomainRecord>,
    census: Box<dyn Census>,
    /// Labels of recently ended domains, oldest first: audit records about a domain are often
    /// written just after it ended (rate-limit reports, refusals still in the ring), and a
    /// late duplicate end notice must be told from a domain never known here.
    recently_ended: HashMap<DomainId, Option<Label>>,
    ended_order: VecDeque<DomainId>,
}

/// What [`Domains::end`] did with a notice.
#[derive(Debug)]
pub enum EndOutcome {
    Ended(Arc<EndedDomain>),
    /// Already ended (the event and a scan both saw it).
    AlreadyEnded,
    /// Never known here: its record was lost, or it predates this state directory.
    Unknown,
}

impl Domains {
    /// The registry, with the live domains recorded in `store` (from earlier agents). Call
    /// [`Domains::reconcile`] next to end those whose tasks all exited while no agent ran.
    pub fn new(
        labels: Box<dyn TaskLabels>,
        census: Box<dyn Census>,
        store: Box<dyn DomainStore>,
    ) -> anyhow::Result<Self> {
        let records: HashMap<_, _> = store
            .load()?
            .into_iter()
            .map(|record| (record.id, record))
            .collect();
        let last_id = records.keys().copied().max().unwrap_or(0);
        // Lagging subscribers lose notices; they must then reconcile with `is_live`.
        let (ends, _) = broadcast::channel(1024);
        Ok(Self {
            labels,
            store,
            state: Mutex::new(State {
                last_id,
                records,
                census,
                recently_ended: HashMap::new(),
                ended_order: VecDeque::new(),
            }),
            ends,
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("domain state lock poisoned")
    }

    /// Ids grow from the wall clock in nanoseconds, and past every stored id, so they stay
    /// unique across agent restarts (a restart cannot reuse an id still held by a live task).
    fn allocate_id(state: &mut State) -> DomainId {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        state.last_id = now.max(state.last_id + 1);
        state.last_id
    }

    /// Seals `caller` into a new domain. On any error nothing is left behind: no label, no
    /// count, no record.
    pub fn seal(
        &self,
        caller: &dyn Caller,
        label: Option<Label>,
    ) -> Result<DomainRecord, SealError> {
        self.seal_with(caller, label, None)
    }

    /// Seals `process` into a new domain bound to a task; at most one live domain per task.
    pub fn seal_task(
        &self,
        process: &dyn Caller,
        label: Option<Label>,
        task: TaskBinding,
    ) -> Result<DomainRecord, SealError> {
        self.seal_with(process, label, Some(task))
    }

    fn seal_with(
        &self,
        caller: &dyn Caller,
        label: Option<Label>,
        task: Option<TaskBinding>,
    ) -> Result<DomainRecord, SealError> {
        let threads = caller.thread_count()?;
        if threads != 1 {
            return Err(SealError::MultiThreaded(threads));
        }
        if let Some(existing) = self.lookup(caller)? {
            return Err(SealError::AlreadyInDomain(existing));
        }

        let mut state = self.state();
        // Checked under the same lock that records the domain, so two registrations of one
        // task cannot both pass.
        if let Some(task) = &task
            && let Some(running) = state
                .records
                .values()
                .find(|record| record.task.as_ref().is_some_and(|t| t.sub == task.sub))
        {
            return Err(SealError::AlreadyRegistered(task.sub.clone(), running.id));
        }
        let id = Self::allocate_id(&mut state);
        state.census.open(id).map_err(|err| match err {
            CensusError::Full => SealError::Capacity(err.to_string()),
            CensusError::Kernel(_) => SealError::Kernel(err.to_string()),
        })?;
        if let Err(err) = self.label_caller(caller, id) {
            Self::discard_count(&mut state, id);
            return Err(err);
        }
        let record = DomainRecord {
            id,
            label,
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            sealed_pid: caller.pid(),
            sealed_uid: caller.uid(),
            task,
        };
        if let Err(err) = self.store.put(&record) {
            self.undo_label(caller);
            Self::discard_count(&mut state, id);
            return Err(SealError::Storage(format!("{err:#}")));
        }
        state.records.insert(id, record.clone());
        Ok(record)
    }

    /// Labels the caller and checks it is still single-threaded; undoes the label if not.
    fn label_caller(&self, caller: &dyn Caller, id: DomainId) -> Result<(), SealError> {
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
            Ok(1) => Ok(()),
            outcome => {
                self.undo_label(caller);
                Err(match outcome {
                    Ok(n) => SealError::MultiThreaded(n),
                    Err(err) => SealError::Caller(err),
                })
            }
        }
    }

    fn undo_label(&self, caller: &dyn Caller) {
        if let Err(err) = self.labels.unlabel(caller.pidfd()) {
            tracing::error!(pid = caller.pid(), error = %err, "could not undo a refused seal");
        }
    }

    fn discard_count(state: &mut State, id: DomainId) {
        if let Err(err) = state.census.discard(id) {
            tracing::error!(domain = id, error = %err, "could not discard the count of a refused seal");
        }
    }

    /// The domain the caller is in, if any.
    pub fn lookup(&self, caller: &dyn Caller) -> Result<Option<DomainId>, SealError> {
        self.labels
            .lookup(caller.pidfd())
            .map_err(|err| SealError::Kernel(err.to_string()))
    }

    pub fn record(&self, id: DomainId) -> Option<DomainRecord> {
        self.state().records.get(&id).cloned()
    }

    /// The label of a live or recently ended domain, for log and audit lines.
    pub fn label(&self, id: DomainId) -> Option<Label> {
        let state = self.state();
        match state.records.get(&id) {
            Some(record) => record.label.clone(),
            None => state.recently_ended.get(&id).cloned().flatten(),
        }
    }

    /// Whether the domain is live here. A domain that ended, or that this agent never opened,
    /// is not.
    pub fn is_live(&self, id: DomainId) -> bool {
        self.state().records.contains_key(&id)
    }

    /// The kernel's count of a live domain's running tasks, for people looking at the node;
    /// None if the domain is not live or the count cannot be read.
    pub fn running_tasks(&self, id: DomainId) -> Option<u64> {
        let state = self.state();
        if !state.records.contains_key(&id) {
            return None;
        }
        state.census.running_tasks(id).ok().flatten()
    }

    /// Every live domain, oldest first.
    pub fn live(&self) -> Vec<DomainRecord> {
        let mut records: Vec<_> = self.state().records.values().cloned().collect();
        records.sort_by_key(|record| record.id);
        records
    }

    /// The live domain bound to the task `sub`, if any (one live domain per task).
    pub fn task_domain(&self, sub: &str) -> Option<DomainId> {
        self.state()
            .records
            .values()
            .find(|record| record.task.as_ref().is_some_and(|task| task.sub == sub))
            .map(|record| record.id)
    }

    pub fn count(&self) -> usize {
        self.state().records.len()
    }

    /// Notices of ended domains, for the parts of the daemon that hold per-domain state. A
    /// receiver that lags (`RecvError::Lagged`) has missed notices and must compare what it
    /// holds with [`Domains::is_live`].
    pub fn subscribe_ends(&self) -> broadcast::Receiver<Arc<EndedDomain>> {
        self.ends.subscribe()
    }

    /// Ends a domain whose last task has exited: forgets it durably, then announces it.
    /// Idempotent, since the kernel's event and a scan may both report the same end.
    pub fn end(&self, id: DomainId, ended: SystemTime, noticed: Noticed) -> EndOutcome {
        let mut state = self.state();
        let Some(record) = state.records.remove(&id) else {
            return if state.recently_ended.contains_key(&id) {
                EndOutcome::AlreadyEnded
            } else {
                EndOutcome::Unknown
            };
        };
        if let Err(err) = self.store.remove(id) {
            // The record would come back at the next start, where the scan ends it again.
            tracing::error!(
                domain = id,
                error = format!("{err:#}"),
                "could not remove an ended domain from the state database; the next start will end it again"
            );
        }
        if state.ended_order.len() == RECENTLY_ENDED
            && let Some(oldest) = state.ended_order.pop_front()
        {
            state.recently_ended.remove(&oldest);
        }
        state.ended_order.push_back(id);
        state.recently_ended.insert(id, record.label.clone());
        drop(state);
        let ended = Arc::new(EndedDomain {
            record,
            ended,
            noticed,
        });
        // No subscriber is not an error: nothing holds per-domain state yet.
        let _ = self.ends.send(ended.clone());
        EndOutcome::Ended(ended)
    }

    /// Ends every live domain whose count the kernel no longer holds: those whose last task
    /// exited while no agent was reading, or whose announcement did not fit in the ring.
    pub fn reconcile(&self) -> Vec<Arc<EndedDomain>> {
        let gone: Vec<DomainId> = {
            let state = self.state();
            state
                .records
                .keys()
                .copied()
                .filter(|id| match state.census.is_live(*id) {
                    Ok(live) => !live,
                    Err(err) => {
                        tracing::warn!(domain = id, error = %err, "cannot read a domain's task count; checking again later");
                        false
                    }
                })
                .collect()
        };
        gone.into_iter()
            .filter_map(|id| match self.end(id, SystemTime::now(), Noticed::Scan) {
                EndOutcome::Ended(ended) => Some(ended),
                EndOutcome::AlreadyEnded | EndOutcome::Unknown => None,
            })
            .collect()
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

    /// Counts as the kernel would keep them: `exit_all` plays the last task exiting.
    #[derive(Default, Clone)]
    struct FakeCensus(Arc<Mutex<HashMap<DomainId, u64>>>);

    impl FakeCensus {
        fn exit_all(&self, id: DomainId) {
            self.0.lock().unwrap().remove(&id);
        }
    }

    impl Census for FakeCensus {
        fn open(&mut self, domain: DomainId) -> Result<(), CensusError> {
            let mut map = self.0.lock().unwrap();
            if map.len() >= 2 {
                return Err(CensusError::Full);
            }
            map.insert(domain, 1);
            Ok(())
        }
        fn discard(&mut self, domain: DomainId) -> io::Result<()> {
            self.0.lock().unwrap().remove(&domain);
            Ok(())
        }
        fn running_tasks(&self, domain: DomainId) -> io::Result<Option<u64>> {
            Ok(self.0.lock().unwrap().get(&domain).copied())
        }
    }

    #[derive(Default, Clone)]
    struct MemoryStore {
        records: Arc<Mutex<HashMap<DomainId, DomainRecord>>>,
        fail_puts: Arc<Mutex<bool>>,
    }

    impl DomainStore for MemoryStore {
        fn put(&self, record: &DomainRecord) -> anyhow::Result<()> {
            if *self.fail_puts.lock().unwrap() {
                anyhow::bail!("disk full");
            }
            self.records
                .lock()
                .unwrap()
                .insert(record.id, record.clone());
            Ok(())
        }
        fn remove(&self, id: DomainId) -> anyhow::Result<()> {
            self.records.lock().unwrap().remove(&id);
            Ok(())
        }
        fn load(&self) -> anyhow::Result<Vec<DomainRecord>> {
            Ok(self.records.lock().unwrap().values().cloned().collect())
        }
    }

    struct Fixture {
        labels: FakeLabels,
        census: FakeCensus,
        store: MemoryStore,
        domains: Domains,
    }

    fn fixture() -> Fixture {
        let (labels, census, store) = Default::default();
        restart(labels, census, store)
    }

    /// A new registry over the same kernel maps and state database, as after an agent restart.
    fn restart(labels: FakeLabels, census: FakeCensus, store: MemoryStore) -> Fixture {
        let domains = Domains::new(
            Box::new(labels.clone()),
            Box::new(census.clone()),
            Box::new(store.clone()),
        )
        .unwrap();
        Fixture {
            labels,
            census,
            store,
            domains,
        }
    }

    fn domains() -> (FakeLabels, Domains) {
        let Fixture {
            labels, domains, ..
        } = fixture();
        (labels, domains)
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

    #[test]
    fn a_seal_opens_the_count_and_stores_the_record_before_answering() {
        let f = fixture();
        let caller = FakeCaller::new(&[1]);
        let record = f
            .domains
            .seal(&caller, Some(Label::try_from("a".to_owned()).unwrap()))
            .unwrap();
        assert!(f.census.is_live(record.id).unwrap());
        assert_eq!(f.store.load().unwrap(), std::slice::from_ref(&record));
        assert_eq!(f.domains.live(), [record]);
    }

    #[test]
    fn a_refused_seal_leaves_no_count_no_label_no_record() {
        let f = fixture();
        let caller = FakeCaller::new(&[1, 2]);
        assert!(f.domains.seal(&caller, None).is_err());
        assert!(f.census.0.lock().unwrap().is_empty());
        assert!(f.labels.0.lock().unwrap().is_empty());
        assert!(f.store.load().unwrap().is_empty());
    }

    #[test]
    fn a_seal_that_cannot_be_stored_is_undone() {
        let f = fixture();
        *f.store.fail_puts.lock().unwrap() = true;
        let caller = FakeCaller::new(&[1]);
        let err = f.domains.seal(&caller, None).unwrap_err();
        assert!(matches!(err, SealError::Storage(_)), "{err}");
        assert!(f.census.0.lock().unwrap().is_empty(), "count discarded");
        assert!(f.labels.0.lock().unwrap().is_empty(), "label undone");
        assert_eq!(f.domains.count(), 0);
    }

    #[test]
    fn a_full_census_refuses_the_seal_clearly() {
        let f = fixture();
        let callers: Vec<_> = (0..3).map(|_| FakeCaller::new(&[1])).collect();
        f.domains.seal(&callers[0], None).unwrap();
        f.domains.seal(&callers[1], None).unwrap();
        let err = f.domains.seal(&callers[2], None).unwrap_err();
        assert!(matches!(err, SealError::Capacity(_)), "{err}");
        assert!(err.to_string().contains("live domains"), "{err}");
        assert_eq!(
            f.labels.0.lock().unwrap().len(),
            2,
            "third caller not labelled"
        );
    }

    #[test]
    fn labels_survive_a_restart() {
        let f = fixture();
        let caller = FakeCaller::new(&[1]);
        let label = Label::try_from("dag.task:1".to_owned()).unwrap();
        let record = f.domains.seal(&caller, Some(label.clone())).unwrap();
        let again = restart(f.labels, f.census, f.store);
        assert_eq!(again.domains.record(record.id).unwrap().label, Some(label));
        assert!(again.domains.reconcile().is_empty(), "still running");
        // New ids stay above every stored one, whatever the clock says.
        let second = FakeCaller::new(&[1]);
        assert!(again.domains.seal(&second, None).unwrap().id > record.id);
    }

    #[test]
    fn the_end_is_announced_once_and_forgotten_durably() {
        let f = fixture();
        let mut ends = f.domains.subscribe_ends();
        let caller = FakeCaller::new(&[1]);
        let label = Label::try_from("short-lived".to_owned()).unwrap();
        let record = f.domains.seal(&caller, Some(label)).unwrap();
        f.census.exit_all(record.id);
        let EndOutcome::Ended(ended) = f.domains.end(record.id, SystemTime::now(), Noticed::Event)
        else {
            panic!("not ended")
        };
        assert_eq!(ended.record, record);
        assert_eq!(ends.try_recv().unwrap().record.id, record.id);
        assert!(!f.domains.is_live(record.id));
        assert!(f.store.load().unwrap().is_empty());
        // The scan then finds nothing more to end, and a late duplicate is recognised.
        assert!(f.domains.reconcile().is_empty());
        assert!(matches!(
            f.domains.end(record.id, SystemTime::now(), Noticed::Event),
            EndOutcome::AlreadyEnded
        ));
        assert!(matches!(
            f.domains.end(12345, SystemTime::now(), Noticed::Event),
            EndOutcome::Unknown
        ));
        assert!(ends.try_recv().is_err(), "announced once");
        // Late audit records about it still get its label.
        assert_eq!(f.domains.label(record.id), record.label);
        assert!(record.label.is_some());
    }

    #[test]
    fn a_domain_that_ended_while_no_agent_ran_is_ended_by_the_scan() {
        let f = fixture();
        let (a, b) = (FakeCaller::new(&[1]), FakeCaller::new(&[1]));
        let gone = f.domains.seal(&a, None).unwrap();
        let alive = f.domains.seal(&b, None).unwrap();
        f.census.exit_all(gone.id);
        let again = restart(f.labels, f.census, f.store.clone());
        let mut ends = again.domains.subscribe_ends();
        let ended = again.domains.reconcile();
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].record, gone);
        assert_eq!(ended[0].noticed, Noticed::Scan);
        assert_eq!(ends.try_recv().unwrap().record.id, gone.id);
        assert_eq!(again.domains.live(), std::slice::from_ref(&alive));
        assert_eq!(f.store.load().unwrap(), [alive]);
    }
}
