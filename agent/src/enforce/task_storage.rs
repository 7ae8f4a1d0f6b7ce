//! The agent's side of the TASK_DOMAIN task-storage map: read and write a process's domain by
//! pidfd. A pidfd names one process instance for its whole life: a recycled PID can never be
//! mistaken for it.

use std::{io, os::fd::BorrowedFd};

use aya::maps::MapFd;
use bulkhead_common::{DomainId, TaskLabel, lifecycle::LIFE_RUNNING};

use super::local_storage::{BPF_NOEXIST, FdKeyedMap};

#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    /// The process already carries a domain; domains are entered once and never changed.
    #[error("process is already in a domain")]
    AlreadyLabelled,
    #[error("bpf(BPF_MAP_UPDATE_ELEM) on the task-storage map failed: {0}")]
    Kernel(io::Error),
}

pub struct TaskDomainMap {
    map: FdKeyedMap<TaskLabel>,
}

impl TaskDomainMap {
    pub fn new(fd: MapFd) -> Self {
        Self {
            map: FdKeyedMap::new(fd),
        }
    }

    /// The domain of the process behind `pidfd`, `None` when it is in none.
    pub fn lookup(&self, pidfd: BorrowedFd<'_>) -> io::Result<Option<DomainId>> {
        Ok(self
            .map
            .lookup(pidfd)?
            .map(|label| label.domain)
            .filter(|domain| *domain != 0))
    }

    /// Puts the process behind `pidfd` into `domain`, only if it has no domain yet. The kernel
    /// performs the check and the write as one step (BPF_NOEXIST), so two concurrent requests
    /// cannot both succeed. The process is written as already counted among the domain's
    /// running tasks: the caller opens the domain's count at 1 for it.
    pub fn label_new(&self, pidfd: BorrowedFd<'_>, domain: DomainId) -> Result<(), LabelError> {
        assert_ne!(domain, 0, "domain 0 means 'no domain' and is never stored");
        self.map
            .update(
                pidfd,
                &TaskLabel {
                    domain,
                    life: LIFE_RUNNING,
                },
                BPF_NOEXIST,
            )
            .map_err(|err| match err.raw_os_error() {
                Some(libc::EEXIST) => LabelError::AlreadyLabelled,
                _ => LabelError::Kernel(err),
            })
    }

    /// Removes the label again. Only used to undo a seal that was refused part-way (the caller
    /// grew a thread), so the refused caller is left exactly as it was.
    pub fn unlabel(&self, pidfd: BorrowedFd<'_>) -> io::Result<()> {
        self.map.delete(pidfd)
    }
}
