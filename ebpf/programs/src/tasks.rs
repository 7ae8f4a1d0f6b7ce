//! Hooks guarding tasks from each other: domain inheritance, ptrace and everything built on
//! ptrace_may_access(), and direct signals.
//!
//! Every int-returning hook first passes on the verdict of the LSM programs that ran before it
//! (the argument after the hook's own): a denial must never be turned into an allow.

use aya_ebpf::{bindings::task_struct, macros::lsm, programs::LsmContext};
use aya_log_ebpf::info;
use bulkhead_common::audit::hook;

use crate::{
    ENOMEM,
    audit::refuse_task,
    may_reach,
    task_domain::{current_domain, domain_of, label_new_task, restricted_actor},
};

/// Every new task (fork, vfork, clone, thread, posix_spawn, clone3, io_uring worker) inherits
/// its creator's domain here, before it can run. If the label cannot be stored the task is not
/// created: an unlabelled child of a domain would have escaped it.
#[lsm(hook = "task_alloc")]
pub fn task_alloc(ctx: LsmContext) -> i32 {
    // task_alloc(struct task_struct *task, unsigned long clone_flags)
    let previous: i32 = ctx.arg(2);
    let domain = match restricted_actor(previous) {
        Ok(domain) => domain,
        Err(verdict) => return verdict,
    };
    let child: *mut task_struct = ctx.arg(0);
    if label_new_task(child, domain) {
        0
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
    // ptrace_access_check(struct task_struct *child, unsigned int mode)
    check_reach(
        hook::PTRACE_ACCESS_CHECK,
        ctx.arg(1),
        ctx.arg(0),
        ctx.arg(2),
    )
}

/// kill, tkill, tgkill, sigqueue, rt_sigqueueinfo, pidfd_send_signal, including signal 0
/// probes. Signals the kernel sends itself (SIGCHLD to a parent, SIGKILL on OOM) do not pass
/// through this hook, so a task's exit still notifies its supervisor.
#[lsm(hook = "task_kill")]
pub fn task_kill(ctx: LsmContext) -> i32 {
    // task_kill(struct task_struct *p, struct kernel_siginfo *info, int sig,
    //           const struct cred *cred)
    check_reach(hook::TASK_KILL, ctx.arg(2), ctx.arg(0), ctx.arg(4))
}

/// PTRACE_TRACEME makes the parent the tracer of the current task. Both directions are refused
/// across a boundary: a parent in a domain would gain control of a task outside it, and a task
/// in a domain must not open a debugging channel to a parent outside it (its supervisor).
#[lsm(hook = "ptrace_traceme")]
pub fn ptrace_traceme(ctx: LsmContext) -> i32 {
    // ptrace_traceme(struct task_struct *parent)
    let previous: i32 = ctx.arg(1);
    if previous != 0 {
        return previous;
    }
    let current = current_domain();
    let parent: *mut task_struct = ctx.arg(0);
    let parent_domain = domain_of(parent);
    if current == parent_domain {
        return 0;
    }
    refuse_task(hook::PTRACE_TRACEME, 0, current, parent, parent_domain)
}
