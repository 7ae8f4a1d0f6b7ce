//! Hooks guarding tasks from each other: domain inheritance, ptrace and everything built on
//! ptrace_may_access(), direct signals, and another task's scheduling, resource limits and
//! process group.
//!
//! Every int-returning hook first passes on the verdict of the LSM programs that ran before it
//! (the argument after the hook's own): a denial must never be turned into an allow. Arguments
//! are read by what they are, not by position (hook_args.rs).

use aya_ebpf::{bindings::task_struct, macros::lsm, programs::LsmContext};
use aya_log_ebpf::info;
use bulkhead_common::{UNDECIDABLE, audit::hook};

use crate::{
    EAGAIN, ENOMEM,
    audit::refuse_task,
    hook_args::{hook_arg, verdict},
    lifecycle::count_new_task,
    may_reach,
    task_domain::{current_domain, domain_of, label_new_task, restricted_actor},
};

/// Every new task (fork, vfork, clone, thread, posix_spawn, clone3, io_uring worker) inherits
/// its creator's domain here, before it can run. If the label cannot be stored the task is not
/// created: an unlabelled child of a domain would have escaped it.
#[lsm(hook = "task_alloc")]
pub fn task_alloc(ctx: LsmContext) -> i32 {
    let child = hook_arg!(ctx, TaskAllocTask) as *mut task_struct;
    let domain = match restricted_actor(verdict!(ctx, TaskAllocVerdict)) {
        Ok(domain) => domain,
        Err(verdict) => return verdict,
    };
    if domain == UNDECIDABLE {
        // The creator's domain could not be read, so the child's cannot be set: no child.
        info!(
            &ctx,
            "bulkhead: fork refused, the creator's domain is undecidable"
        );
        return -EAGAIN;
    }
    if label_new_task(child, domain) {
        let verdict = count_new_task(child, domain);
        if verdict != 0 {
            info!(
                &ctx,
                "bulkhead: fork denied, no room to count a new task of domain {} (COUNTED_TASKS full or out of memory)",
                domain
            );
        }
        verdict
    } else {
        info!(
            &ctx,
            "bulkhead: fork denied, no storage for child of domain {}", domain
        );
        -ENOMEM
    }
}

/// The shared body of the hooks whose object is another task.
#[inline(always)]
fn check_reach(hook: u32, access: u32, target: *mut task_struct, previous: i32) -> i32 {
    let actor = match restricted_actor(previous) {
        Ok(actor) => actor,
        Err(verdict) => return verdict,
    };
    let target_domain = domain_of(target);
    if may_reach(actor, target_domain) {
        return 0;
    }
    refuse_task(hook, access, actor, target, target_domain)
}

/// ptrace attach/seize, and every mm_access()/ptrace_may_access() user: /proc/<pid>/mem,
/// environ, auxv, fd/, cwd, root, exe, process_vm_readv/writev, pidfd_getfd, kcmp.
#[lsm(hook = "ptrace_access_check")]
pub fn ptrace_access_check(ctx: LsmContext) -> i32 {
    check_reach(
        hook::PTRACE_ACCESS_CHECK,
        hook_arg!(ctx, PtraceAccessCheckMode) as u32,
        hook_arg!(ctx, PtraceAccessCheckChild) as *mut task_struct,
        verdict!(ctx, PtraceAccessCheckVerdict),
    )
}

/// kill, tkill, tgkill, sigqueue, rt_sigqueueinfo, pidfd_send_signal, including signal 0
/// probes. Signals the kernel sends itself (SIGCHLD to a parent, SIGKILL on OOM) do not pass
/// through this hook, so a task's exit still notifies its supervisor.
#[lsm(hook = "task_kill")]
pub fn task_kill(ctx: LsmContext) -> i32 {
    check_reach(
        hook::TASK_KILL,
        hook_arg!(ctx, TaskKillSig) as u32,
        hook_arg!(ctx, TaskKillTarget) as *mut task_struct,
        verdict!(ctx, TaskKillVerdict),
    )
}

/// PTRACE_TRACEME makes the parent the tracer of the current task. Both directions are refused
/// across a boundary: a parent in a domain would gain control of a task outside it, and a task
/// in a domain must not open a debugging channel to a parent outside it (its supervisor).
#[lsm(hook = "ptrace_traceme")]
pub fn ptrace_traceme(ctx: LsmContext) -> i32 {
    let previous = verdict!(ctx, PtraceTracemeVerdict);
    if previous != 0 {
        return previous;
    }
    let current = current_domain();
    let parent = hook_arg!(ctx, PtraceTracemeParent) as *mut task_struct;
    let parent_domain = domain_of(parent);
    if current == parent_domain && current != UNDECIDABLE {
        return 0;
    }
    refuse_task(hook::PTRACE_TRACEME, 0, current, parent, parent_domain)
}

// Scheduling, resource limits and process groups of another task. The kernel passes each of
// these hooks the target task (prlimit's own hook gets only credentials; writing a limit also
// passes task_setrlimit, which is the one used). Reading another task's settings is refused as
// well: a domain learns nothing about tasks outside it through them.

/// setpriority(2) on a process, process group or user.
#[lsm(hook = "task_setnice")]
pub fn task_setnice(ctx: LsmContext) -> i32 {
    check_reach(
        hook::TASK_SETNICE,
        hook_arg!(ctx, TaskSetniceNice) as u32,
        hook_arg!(ctx, TaskSetniceTarget) as *mut task_struct,
        verdict!(ctx, TaskSetniceVerdict),
    )
}

/// ioprio_set(2).
#[lsm(hook = "task_setioprio")]
pub fn task_setioprio(ctx: LsmContext) -> i32 {
    check_reach(
        hook::TASK_SETIOPRIO,
        hook_arg!(ctx, TaskSetioprioIoprio) as u32,
        hook_arg!(ctx, TaskSetioprioTarget) as *mut task_struct,
        verdict!(ctx, TaskSetioprioVerdict),
    )
}

/// ioprio_get(2).
#[lsm(hook = "task_getioprio")]
pub fn task_getioprio(ctx: LsmContext) -> i32 {
    check_reach(
        hook::TASK_GETIOPRIO,
        0,
        hook_arg!(ctx, TaskGetioprioTarget) as *mut task_struct,
        verdict!(ctx, TaskGetioprioVerdict),
    )
}

/// setrlimit(2) and prlimit(2) with a new limit.
#[lsm(hook = "task_setrlimit")]
pub fn task_setrlimit(ctx: LsmContext) -> i32 {
    check_reach(
        hook::TASK_SETRLIMIT,
        hook_arg!(ctx, TaskSetrlimitResource) as u32,
        hook_arg!(ctx, TaskSetrlimitTarget) as *mut task_struct,
        verdict!(ctx, TaskSetrlimitVerdict),
    )
}

/// sched_setscheduler, sched_setparam, sched_setattr (nice included), sched_setaffinity, and moving a task into a cpuset.
#[lsm(hook = "task_setscheduler")]
pub fn task_setscheduler(ctx: LsmContext) -> i32 {
    check_reach(
        hook::TASK_SETSCHEDULER,
        0,
        hook_arg!(ctx, TaskSetschedulerTarget) as *mut task_struct,
        verdict!(ctx, TaskSetschedulerVerdict),
    )
}

/// sched_getscheduler, sched_getparam, sched_getattr, sched_getaffinity, sched_rr_get_interval.
#[lsm(hook = "task_getscheduler")]
pub fn task_getscheduler(ctx: LsmContext) -> i32 {
    check_reach(
        hook::TASK_GETSCHEDULER,
        0,
        hook_arg!(ctx, TaskGetschedulerTarget) as *mut task_struct,
        verdict!(ctx, TaskGetschedulerVerdict),
    )
}

/// move_pages(2) and migrate_pages(2) on another process.
#[lsm(hook = "task_movememory")]
pub fn task_movememory(ctx: LsmContext) -> i32 {
    check_reach(
        hook::TASK_MOVEMEMORY,
        0,
        hook_arg!(ctx, TaskMovememoryTarget) as *mut task_struct,
        verdict!(ctx, TaskMovememoryVerdict),
    )
}

/// getpgid(2).
#[lsm(hook = "task_getpgid")]
pub fn task_getpgid(ctx: LsmContext) -> i32 {
    check_reach(
        hook::TASK_GETPGID,
        0,
        hook_arg!(ctx, TaskGetpgidTarget) as *mut task_struct,
        verdict!(ctx, TaskGetpgidVerdict),
    )
}

/// getsid(2).
#[lsm(hook = "task_getsid")]
pub fn task_getsid(ctx: LsmContext) -> i32 {
    check_reach(
        hook::TASK_GETSID,
        0,
        hook_arg!(ctx, TaskGetsidTarget) as *mut task_struct,
        verdict!(ctx, TaskGetsidVerdict),
    )
}
