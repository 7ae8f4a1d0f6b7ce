//! Domain lifecycle: the programs count each domain's live tasks and tell the agent the moment
//! the last one has exited, so the daemon can end the domain (and revoke its tokens).
//!
//! Each task in a domain moves once through `LIFE_NEW` (labelled by `task_alloc`, not yet
//! running: the fork may still fail) to `LIFE_RUNNING` (counted, at `sched_wakeup_new`, which
//! only a successfully created task reaches) to `LIFE_EXITED` (uncounted, at
//! `sched_process_exit`). The transitions are atomic swaps on the task's own label, so a task is
//! counted and uncounted exactly once even while two program generations are attached during an
//! upgrade. A domain's count cannot rise again after reaching zero: a task can only be created
//! by a live task of the same domain, which is itself still counted while it creates it.

use crate::DomainId;

/// Name of the hash map from a domain id to its number of running tasks. The entry is created
/// (count 1) by the agent when it seals the domain's first process, and deleted by the program
/// that takes the count to zero: a missing entry means the domain has ended.
pub const DOMAIN_TASKS_MAP: &str = "DOMAIN_TASKS";
/// How many domains can be live at once on a node; a seal beyond it is refused.
pub const DOMAIN_TASKS_MAX: u32 = 16384;

/// Name of the ring buffer carrying [`DomainEnded`] records. Separate from the audit ring, so a
/// task flooding refusals cannot crowd out the end of a domain. If it is ever full the agent
/// still learns of the end by finding the DOMAIN_TASKS entry gone.
pub const DOMAIN_EVENTS_MAP: &str = "DOMAIN_EVENTS";
/// Size of that ring buffer in bytes (a power of two, a multiple of the page size).
pub const DOMAIN_EVENTS_BYTES: u32 = 64 * 1024;

/// Labelled at fork, not yet running: not counted.
pub const LIFE_NEW: u64 = 0;
/// Counted in DOMAIN_TASKS. The agent writes this state when it seals a process, together
/// with the domain's count of 1.
pub const LIFE_RUNNING: u64 = 1;
/// Has exited and been uncounted; the label stays until the task is freed, so a zombie is
/// still judged by its domain.
pub const LIFE_EXITED: u64 = 2;

/// The BTF tracepoints that keep the count, as (program name in the object, tracepoint).
pub const TRACE_PROGRAMS: &[(&str, &str)] = &[
    ("count_started_task", "sched_wakeup_new"),
    ("count_exited_task", "sched_process_exit"),
];

/// Written when the last task of a domain has exited.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DomainEnded {
    pub domain: DomainId,
    /// CLOCK_BOOTTIME of the exit, in nanoseconds.
    pub boot_ns: u64,
}

// SAFETY: plain old data, `#[repr(C)]`, two u64 fields and no padding.
#[cfg(feature = "user")]
unsafe impl aya::Pod for DomainEnded {}
