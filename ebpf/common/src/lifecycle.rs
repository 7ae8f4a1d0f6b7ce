//! Domain lifecycle: the programs count each domain's live tasks and tell the agent the moment
//! the last one has exited, so the daemon can end the domain (and revoke its tokens).
//!
//! Counting happens in LSM hooks, which the kernel never skips, and is taken back at the exit
//! tracepoint, which it can skip: after 6.12 tracepoints became preemptible (7.x), and a
//! tracepoint program preempted on a CPU makes the next task that exits on that CPU skip it (the
//! program's recursion guard; the kernel counts these as `recursion_misses`). So every count
//! has a second, LSM, place where it is taken back, `task_free`, which runs when the task's
//! memory is released (for a process, once it has been reaped):
//!
//! - A task created in a domain is counted by `task_alloc` in COUNTED_TASKS, keyed by its
//!   `task_struct` address, and uncounted by whichever of `sched_process_exit` and `task_free`
//!   comes first. A fork that fails after `task_alloc` is freed through `task_free` too.
//! - The process the agent seals is counted through its label (`LIFE_RUNNING`, written by the
//!   agent with the domain's count of 1), and uncounted by whichever of the same two swaps the
//!   label to `LIFE_EXITED` first.
//!
//! Every transition is an atomic swap on a map value, so a task is counted and uncounted
//! exactly once even while two program generations are attached during an upgrade. The
//! tracepoint's task-storage lookup can fail while the CPU's busy counter is held (tracing
//! programs get the recursion-checked lookup on every kernel), and so can the LSM lookup on
//! 6.1: a sealed process whose label cannot be read at both exit and free keeps its domain
//! live (tasks created inside the domain do not: their entries are keyed by address). A
//! domain's count cannot rise again after reaching zero: a task can only be created by a live
//! task of the same domain, which is itself still counted while it creates it.

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

/// Labelled at fork: the label carries no count (the task's count, if any, is in
/// COUNTED_TASKS).
pub const LIFE_NEW: u64 = 0;
/// Counted in DOMAIN_TASKS through this label. The agent writes this state when it seals a
/// process, together with the domain's count of 1.
pub const LIFE_RUNNING: u64 = 1;
/// Has exited and been uncounted; the label stays until the task is freed, so a zombie is
/// still judged by its domain.
pub const LIFE_EXITED: u64 = 2;

/// Name of the hash map from a `task_struct` address to the domain that task is counted in,
/// for the tasks created inside a domain; see the module docs.
pub const COUNTED_TASKS_MAP: &str = "COUNTED_TASKS";
/// Tasks created inside domains that can be running on the node at once (preallocated, 64
/// bytes each). A fork inside a domain beyond it is refused with EAGAIN, like the kernel's own
/// `threads-max`; bound each task's processes with the cgroup `pids` controller so one domain
/// cannot spend it for the others.
pub const COUNTED_TASKS_MAX: u32 = 131_072;
/// The COUNTED_TASKS value meaning "counted nowhere": the entry was just inserted and the
/// count is not given yet, or it was just taken back. Never a domain id (ids come from the
/// wall clock).
pub const NOT_COUNTED: u64 = u64::MAX;

/// The BTF tracepoints that keep the count, as (program name in the object, tracepoint).
pub const TRACE_PROGRAMS: &[(&str, &str)] = &[("count_exited_task", "sched_process_exit")];

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
