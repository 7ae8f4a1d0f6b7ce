//! Counting each domain's running tasks, and announcing the moment the last one has exited.
//! Where each count is given and taken back, and why it happens exactly once, is described in
//! bulkhead_common::lifecycle.
//!
//! None of this decides an access: the only refusal here is of a fork whose count cannot be
//! recorded (`count_new_task`), so that no task of a domain runs uncounted.

use aya_ebpf::{
    bindings::{BPF_NOEXIST, task_struct},
    helpers::generated::bpf_ktime_get_boot_ns,
    macros::{btf_tracepoint, lsm, map},
    maps::{HashMap, RingBuf},
    programs::{BtfTracePointContext, LsmContext},
};
use bulkhead_common::{
    DomainId, TaskLabel,
    lifecycle::{
        COUNTED_TASKS_MAX, DOMAIN_EVENTS_BYTES, DOMAIN_TASKS_MAX, DomainEnded, LIFE_EXITED,
        LIFE_RUNNING, NOT_COUNTED,
    },
};

use crate::{E2BIG, EAGAIN, EEXIST, ENOMEM, atomic, hook_args::hook_arg, task_domain::label_of};

#[map(name = "DOMAIN_TASKS")]
static DOMAIN_TASKS: HashMap<u64, u64> = HashMap::with_max_entries(DOMAIN_TASKS_MAX, 0);

/// `task_struct` address -> the domain the task is counted in (NOT_COUNTED for the moment
/// between the insert and the swap in `count_new_task`). Removed when the count is given back,
/// at the latest in `task_free`, before the kernel can reuse the address.
#[map(name = "COUNTED_TASKS")]
static COUNTED_TASKS: HashMap<u64, u64> = HashMap::with_max_entries(COUNTED_TASKS_MAX, 0);

#[map(name = "DOMAIN_EVENTS")]
static DOMAIN_EVENTS: RingBuf = RingBuf::with_byte_size(DOMAIN_EVENTS_BYTES, 0);

/// Called by `task_alloc` for a task being created by a task of `domain`, after labelling it.
/// Returns 0, or the verdict refusing the fork when the count cannot be recorded: EAGAIN when
/// COUNTED_TASKS is full (as for the kernel's own task limits), ENOMEM otherwise.
#[inline(always)]
pub fn count_new_task(task: *mut task_struct, domain: DomainId) -> i32 {
    let key = task as u64;
    // NOEXIST: another program generation may have counted this task in this same call.
    if let Err(err) = COUNTED_TASKS.insert(&key, &NOT_COUNTED, BPF_NOEXIST.into())
        && err != -EEXIST
    {
        return if err == -E2BIG { -EAGAIN } else { -ENOMEM };
    }
    let Some(counted) = COUNTED_TASKS.get_ptr_mut(&key) else {
        return -ENOMEM;
    };
    let Some(count) = DOMAIN_TASKS.get_ptr_mut(&domain) else {
        // The domain's entry exists while any of its counted tasks runs, and this task's
        // creator should be one of them. A labelled task of a domain that has ended (a thread
        // left over from a refused seal, or a map replaced under a live domain) may not add
        // uncounted tasks: refuse.
        let _ = COUNTED_TASKS.remove(&key);
        return -EAGAIN;
    };
    // SAFETY: both pointers point into map values of type u64.
    unsafe {
        if atomic::swap(counted, domain) == NOT_COUNTED {
            atomic::add(count, 1);
        }
    }
    0
}

/// A task is exiting (each thread exits separately): the prompt place to uncount it. The
/// kernel may skip this program (see the module docs); `count_freed_task` then does it.
#[btf_tracepoint(function = "sched_process_exit")]
pub fn count_exited_task(ctx: BtfTracePointContext) -> i32 {
    let task = hook_arg!(ctx, SchedProcessExitTask) as *mut task_struct;
    let label = label_of(task);
    if label.is_null() {
        // Outside every domain (one lookup, as on every hook), or a lookup that failed:
        // `count_freed_task` gives the count back then.
        return 0;
    }
    uncount_task(task, label);
    0
}

/// A task's memory is being released: after its exit, or after a fork that failed past
/// `task_alloc`. LSM programs are never skipped, so whatever count the task still holds is
/// taken back here, by the same swaps as at exit.
#[lsm(hook = "task_free")]
pub fn count_freed_task(ctx: LsmContext) -> i32 {
    let task = hook_arg!(ctx, TaskFreeTask) as *mut task_struct;
    // A null label is a task outside every domain, or (LSM programs on 6.1) a lookup that
    // failed while the CPU's task-storage busy counter was held: a count in COUNTED_TASKS is
    // still given back.
    uncount_task(task, label_of(task));
    0
}

/// Gives back whatever count `task` holds: its COUNTED_TASKS entry (a task created in a
/// domain) and its label's (the sealed process; `label` may be null). Each is taken with an
/// atomic swap, so whichever caller (exit or free, this generation or another) comes first
/// gives it back and the others find nothing. The entry is removed once taken: the task never
/// gets a count again.
#[inline(always)]
fn uncount_task(task: *mut task_struct, label: *mut TaskLabel) {
    uncount_entry(task as u64);
    if label.is_null() {
        return;
    }
    // SAFETY: non-null pointer into the task's storage.
    let (domain, was_counted) = unsafe {
        (
            (*label).domain,
            atomic::swap(&raw mut (*label).life, LIFE_EXITED) == LIFE_RUNNING,
        )
    };
    if was_counted {
        uncount(domain);
    }
}

#[inline(always)]
fn uncount_entry(key: u64) {
    let Some(counted) = COUNTED_TASKS.get_ptr_mut(&key) else {
        return;
    };
    // SAFETY: pointer into a map value of type u64.
    let domain = unsafe { atomic::swap(counted, NOT_COUNTED) };
    let _ = COUNTED_TASKS.remove(&key);
    if domain != NOT_COUNTED {
        uncount(domain);
    }
}

/// Takes one task off `domain`'s count. The one that takes it to zero deletes the domain's
/// entry and tells the agent.
#[inline(always)]
fn uncount(domain: DomainId) {
    let Some(count) = DOMAIN_TASKS.get_ptr_mut(&domain) else {
        return;
    };
    // SAFETY: pointer into a map value of type u64.
    unsafe { atomic::add(count, u64::MAX) };
    // Read back rather than fetched (see atomic.rs). Two tasks exiting at once may both read
    // zero; only the one whose delete succeeds announces the end. The last decrement is always
    // seen by its own caller, so the end is never missed. Nothing can add to a zero count again
    // (see the module docs), so the entry can go: its absence is the durable record that the
    // domain ended.
    // SAFETY: as above; the element stays allocated until deleted below.
    if unsafe { core::ptr::read_volatile(count) } != 0 || DOMAIN_TASKS.remove(&domain).is_err() {
        return;
    }
    let event = DomainEnded {
        domain,
        // SAFETY: helper without arguments.
        boot_ns: unsafe { bpf_ktime_get_boot_ns() },
    };
    // A full ring loses only the prompt notice: the agent also finds the entry gone.
    let _ = DOMAIN_EVENTS.output::<DomainEnded>(&event, 0);
}
