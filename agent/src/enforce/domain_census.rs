//! The agent's side of DOMAIN_TASKS, the kernel's count of each domain's running tasks (see
//! bulkhead_common::lifecycle). The agent only opens a count, for the process it seals, and
//! asks whether it still exists; the programs keep it from then on and delete it at zero.

use aya::maps::{HashMap, MapData, MapError};
use bulkhead_common::DomainId;

use super::local_storage::BPF_NOEXIST;

#[derive(Debug, thiserror::Error)]
pub enum CensusError {
    #[error(
        "the node already has {} live domains, the most DOMAIN_TASKS holds",
        bulkhead_common::lifecycle::DOMAIN_TASKS_MAX
    )]
    Full,
    #[error("DOMAIN_TASKS: {0}")]
    Kernel(#[from] MapError),
}

pub struct DomainCensus {
    map: HashMap<MapData, DomainId, u64>,
}

impl DomainCensus {
    pub fn new(map: HashMap<MapData, DomainId, u64>) -> Self {
        Self { map }
    }

    /// Starts counting a new domain with one running task, the process about to be sealed.
    pub fn open(&mut self, domain: DomainId) -> Result<(), CensusError> {
        self.map.insert(domain, 1, BPF_NOEXIST).map_err(|err| {
            if errno(&err) == Some(libc::E2BIG) {
                CensusError::Full
            } else {
                CensusError::Kernel(err)
            }
        })
    }

    /// Drops a count that was opened for a seal that did not happen.
    pub fn discard(&mut self, domain: DomainId) -> Result<(), MapError> {
        match self.map.remove(&domain) {
            Err(err) if errno(&err) == Some(libc::ENOENT) => Ok(()),
            other => other,
        }
    }

    /// How many tasks of the domain are running; None once the last one has exited.
    pub fn running_tasks(&self, domain: DomainId) -> Result<Option<u64>, MapError> {
        match self.map.get(&domain, 0) {
            Ok(count) => Ok(Some(count)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(err) => Err(err),
        }
    }
}

fn errno(err: &MapError) -> Option<i32> {
    match err {
        MapError::SyscallError(call) => call.io_error.raw_os_error(),
        _ => None,
    }
}
