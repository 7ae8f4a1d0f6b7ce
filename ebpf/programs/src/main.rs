//! bulkhead's eBPF LSM programs.
//!
//! The access rule lives in one function, [`may_reach`], in the manner of Landlock's
//! `task_is_scoped`: every hook that lets one task reach another asks it.
#![no_std]
#![no_main]

mod task_domain;

use aya_ebpf::{bindings::task_struct, macros::lsm, programs::LsmContext};
use aya_log_ebpf::info;
use bulkhead_common::{DomainId, NO_DOMAIN};

use task_domain::{current_domain, domain_of, label};

const EPERM: i32 = 1;
const ENOMEM: i32 = 12;

/// May a task in domain `actor` reach a task in domain `target`?
///
/// Tasks outside every domain are not restricted by bulkhead; a task in a domain may only reach
/// tasks of its own domain.
#[inline(always)]
fn may_reach(actor: DomainId, target: DomainId) -> bool {
    actor == NO_DOMAIN || actor == target
}

/// Every new task (fork, vfork, clone, thread, posix_spawn, clone3, io_uring worker) inherits
/// its creator's domain here, before it can run. If the label cannot be stored the task is not
/// created: an unlabelled child of a domain would have escaped it.
#[lsm(hook = "task_alloc")]
pub fn task_alloc(ctx: LsmContext) -> i32 {
    // task_alloc(struct task_struct *task, unsigned long clone_flags); arg 2 is the verdict of
    // the LSM programs before this one, which must never be turned into an allow.
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    let domain = current_domain();
    if domain == NO_DOMAIN {
        return 0;
    }
    let child: *mut task_struct = ctx.arg(0);
    if label(child, domain) {
        0
    } else {
        info!(
            &ctx,
            "bulkhead: fork denied, no storage for child of domain {}", domain
        );
        -ENOMEM
    }
}

/// ptrace attach/seize, and every mm_access()/ptrace_may_access() user: /proc/<pid>/mem,
/// environ, auxv, fd/, cwd, root, exe, process_vm_readv/writev, pidfd_getfd, kcmp.
#[lsm(hook = "ptrace_access_check")]
pub fn ptrace_access_check(ctx: LsmContext) -> i32 {
    // ptrace_access_check(struct task_struct *child, unsigned int mode)
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    let actor = current_domain();
    if actor == NO_DOMAIN {
        return 0;
    }
    let target = domain_of(ctx.arg(0));
    if may_reach(actor, target) {
        return 0;
    }
    info!(
        &ctx,
        "bulkhead: ptrace_access_check denied, domain {} -> {}", actor, target
    );
    -EPERM
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
    let parent = domain_of(ctx.arg(0));
    if current == parent {
        return 0;
    }
    info!(
        &ctx,
        "bulkhead: ptrace_traceme denied, domain {} -> parent domain {}", current, parent
    );
    -EPERM
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that can reach this loop, so a panic path is a load
    // error, never a runtime hang.
    loop {}
}
