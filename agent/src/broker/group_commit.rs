//! Group commit: concurrent callers that each need their own record durable share one
//! transaction, and each is answered only once the transaction holding its record committed.
//!
//! A durable commit (fsync) costs the same for one record as for many, and the state database
//! takes one write transaction at a time; with one commit per mint, concurrent supervisors
//! queue behind each other's fsyncs. Here the first caller to find no commit in flight leads:
//! it takes every record waiting so far, commits them together, and wakes the others; records
//! that arrive meanwhile wait for the next batch, which one of their callers leads. No thread
//! of its own, no timer: a lone caller commits at once.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};

/// What one commit did to the batch it held: every caller of the batch gets the same answer,
/// because the records were committed, or not, together.
type BatchOutcome = Result<(), String>;

/// One batch's outcome, shared by the callers whose records it holds; set once, by its leader.
type Batch = Arc<OnceLock<BatchOutcome>>;

struct Queue<T> {
    /// Records waiting for the next commit, and the batch they will be answered by.
    waiting: Vec<T>,
    batch: Batch,
    /// Is a batch being committed now?
    committing: bool,
}

/// Makes a batch of records durable in one transaction, or none of them.
type Commit<T> = Box<dyn Fn(&[T]) -> anyhow::Result<()> + Send + Sync>;

pub struct GroupCommit<T> {
    queue: Mutex<Queue<T>>,
    changed: Condvar,
    commit: Commit<T>,
}

impl<T: Send> GroupCommit<T> {
    /// `commit` must make every record of its slice durable in one transaction, or none.
    pub fn new(commit: impl Fn(&[T]) -> anyhow::Result<()> + Send + Sync + 'static) -> Self {
        Self {
            queue: Mutex::new(Queue {
                waiting: Vec::new(),
                batch: Batch::default(),
                committing: false,
            }),
            changed: Condvar::new(),
            commit: Box::new(commit),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue<T>> {
        // Nothing is left half-updated under the lock (the commit runs outside it), so a
        // poisoned lock is taken over rather than failing every later mint.
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Returns once `record` is durable (Ok) or its batch failed to commit (Err).
    pub fn submit(&self, record: T) -> anyhow::Result<()> {
        let mut queue = self.lock();
        queue.waiting.push(record);
        let mine = queue.batch.clone();
        loop {
            // The leader sets the outcome before it takes the lock to wake us, and we look
            // under the lock, so no wake-up is lost.
            if let Some(outcome) = mine.get() {
                return outcome.clone().map_err(anyhow::Error::msg);
            }
            if !queue.committing && Arc::ptr_eq(&queue.batch, &mine) {
                return self.lead(queue, mine);
            }
            queue = self
                .changed
                .wait(queue)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Commits the waiting batch (ours) outside the lock; later records start the next one.
    fn lead(&self, mut queue: MutexGuard<'_, Queue<T>>, mine: Batch) -> anyhow::Result<()> {
        queue.committing = true;
        let records = std::mem::take(&mut queue.waiting);
        queue.batch = Batch::default();
        drop(queue);
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (self.commit)(&records)))
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the commit panicked")))
                .map_err(|err| format!("{err:#}"));
        let _ = mine.set(outcome.clone());
        self.lock().committing = false;
        self.changed.notify_all();
        outcome.map_err(anyhow::Error::msg)
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

    /// Each caller returns only after a commit that held its record, and concurrent callers
    /// share commits.
    #[test]
    fn every_record_is_committed_before_its_caller_returns_and_commits_are_shared() {
        let committed = Arc::new(Mutex::new(Vec::<u32>::new()));
        let commits = Arc::new(AtomicUsize::new(0));
        let group = {
            let (committed, commits) = (committed.clone(), commits.clone());
            Arc::new(GroupCommit::new(move |records: &[u32]| {
                std::thread::sleep(Duration::from_millis(20));
                committed.lock().unwrap().extend_from_slice(records);
                commits.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }))
        };
        let callers: Vec<_> = (0..32u32)
            .map(|n| {
                let (group, committed) = (group.clone(), committed.clone());
                std::thread::spawn(move || {
                    group.submit(n).unwrap();
                    assert!(
                        committed.lock().unwrap().contains(&n),
                        "{n} not yet durable"
                    );
                })
            })
            .collect();
        for caller in callers {
            caller.join().unwrap();
        }
        let mut all = committed.lock().unwrap().clone();
        all.sort();
        assert_eq!(all, (0..32).collect::<Vec<_>>());
        let commits = commits.load(Ordering::SeqCst);
        assert!(
            commits < 32,
            "no commit was shared: {commits} for 32 records"
        );
    }

    /// A failed commit fails exactly the callers whose records it held; the next batch is
    /// committed normally.
    #[test]
    fn a_failed_commit_fails_its_batch_only() {
        let fail_next = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let group = {
            let fail_next = fail_next.clone();
            GroupCommit::new(move |_: &[u32]| {
                if fail_next.swap(false, Ordering::SeqCst) {
                    anyhow::bail!("disk full")
                }
                Ok(())
            })
        };
        let err = group.submit(1).unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
        group.submit(2).unwrap();
    }

    #[test]
    fn a_panicking_commit_is_a_failure_not_a_hang() {
        let group = GroupCommit::new(|records: &[u32]| {
            if records.contains(&1) {
                panic!("boom");
            }
            Ok(())
        });
        assert!(group.submit(1).is_err());
        group.submit(2).unwrap();
    }
}
