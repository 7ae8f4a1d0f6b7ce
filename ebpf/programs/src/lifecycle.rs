//! Counting each domain's running tasks, and announcing the moment the last one has exited.
//! The states and why the count cannot be fooled are described in bulkhead_common::lifecycle.
//!
//! These are BTF tracepoints, not LSM hooks: they observe and never decide. Whatever happens
//! here, no access check changes.

use aya_ebpf::{
    bindings::task_struct,
    helpers::generated::{bpf_get_current_task_btf, bpf_ktime_get_boot_ns},
    macros::{btf_tracepoint, map},
    maps::{HashMap, RingBuf},
    programs::BtfTracePointContext,
};
use bulkhead_common::lifecycle::{
    DOMAIN_EVENTS_BYTES, DOMAIN_TASKS_MAX, DomainEnded, LIFE_EXITED, LIFE_NEW, LIFE_RUNNING,
};

use crate::{atomic, hook_args::hook_arg, task_domain::label_of};

#[map(name = "DOMAIN_TASKS")]
static DOMAIN_TASKS: HashMap<u64, u64> = HashMap::with_max_entries(DOMAIN_TASKS_MAX, 0);

#[map(name = "DOMAIN_EVENTS")]
static DOMAIN_EVENTS: RingBuf = RingBuf::with_byte_size(DOMAIN_EVENTS_BYTES, 0);

/// A task was created successfully and is about to run for the first time (fork, vfork, clone,
/// threads, io_uring workers: every creation path ends in wake_up_new_task). A fork that fails
/// after task_alloc never gets here, so it is never counted.
#[btf_tracepoint(function = "sched_wakeup_new")]
pub fn count_started_task(ctx: BtfTracePointContext) -> i32 {
    let task = hook_arg!(ctx, SchedWakeupNewTask) as *mut task_struct;
    let label = label_of(task);
    if label.is_null() {
        return 0;
    }
    // SAFETY: non-null pointer into the task's storage.
    let domain = unsafe { (*label).domain };
    let Some(count) = DOMAIN_TASKS.get_ptr_mut(&domain) else {
        // The domain's entry exists while any of its tasks runs, and this task's creator is one
        // of them; a missing entry means the map was replaced under a live domain. Leave the
        // task uncounted: its exit will not count either.
        return 0;
    };
    // SAFETY: both pointers point into map values of the right type.
    unsafe {
        if atomic::swap(&raw mut (*label).life, LIFE_RUNNING) == LIFE_NEW {
            atomic::add(count, 1);
        }
    }
    0
}

/// A task of a domain is exiting (each thread exits separately). The one that takes the count
/// to zero deletes the domain's entry and tells the agent.
#[btf_tracepoint(function = "sched_process_exit")]
pub fn count_exited_task(_ctx: BtfTracePointContext) -> i32 {
    // SAFETY: the helper takes no arguments and returns the exiting task.
    let label = label_of(unsafe { bpf_get_current_task_btf() });
    if label.is_null() {
        return 0;
    }
    // SAFETY: non-null pointer into the task's storage.
    let (domain, was_running) = unsafe {
        (
            (*label).domain,
            atomic::swap(&raw mut (*label).life, LIFE_EXITED) == LIFE_RUNNING,
        )
    };
    if !was_running {
        return 0;
    }
    let Some(count) = DOMAIN_TASKS.get_ptr_mut(&domain) else {
        return 0;
    };
    // SAFETY: pointer into a map value of type u64.
    unsafe { atomic::add(count, u64::MAX) };
    // Read back rather than fetched (see atomic.rs). Two tasks exiting at once may both read
    // zero; only the one whose delete succeeds announces the end. The last decrement is always
    // seen by its own task, so the end is never missed. Nothing can add to a zero count again
    // (see the module docs), so the entry can go: its absence is the durable record that the
    // domain ended.
    // SAFETY: as above; the element stays allocated until deleted below.
    if unsafe { core::ptr::read_volatile(count) } != 0 || DOMAIN_TASKS.remove(&domain).is_err() {
        return 0;
    }
    let event = DomainEnded {
        domain,
        // SAFETY: helper without arguments.
        boot_ns: unsafe { bpf_ktime_get_boot_ns() },
    };
    // A full ring loses only the prompt notice: the agent also finds the entry gone.
    let _ = DOMAIN_EVENTS.output::<DomainEnded>(&event, 0);
    0
}
