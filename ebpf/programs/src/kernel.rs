//! Hooks guarding the kernel, and through it the agent's programs and pins, from tasks in a
//! domain, including tasks running as root there. None of these has a legitimate use inside a
//! task of a task runner; each would let root inside a domain undo the domain itself.

use aya_ebpf::{macros::lsm, programs::LsmContext};
use bulkhead_common::audit::hook;

use crate::{
    EPERM,
    audit::refuse,
    hook_args::{hook_arg, verdict},
    kernel_layout::in_initial_user_ns,
    task_domain::restricted_actor,
};

// include/uapi/linux/capability.h (stable ABI).
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
// include/linux/security.h, kernel-internal (unchanged 6.1 to 7.2): if it ever moved, checks
// would still be refused, only with or without a record.
const CAP_OPT_NOAUDIT: u32 = 1 << 1;

#[inline(always)]
fn deny_in_domain(hook: u32, access: u32, previous: i32) -> i32 {
    let domain = match restricted_actor(previous) {
        Ok(domain) => domain,
        Err(verdict) => return verdict,
    };
    refuse(hook, access, domain)
}

/// Every bpf() command: loading programs, reading or writing maps (the domain map among
/// them), getting pinned objects, detaching links.
#[lsm(hook = "bpf")]
pub fn bpf(ctx: LsmContext) -> i32 {
    // Linux 7.x appends `bool kernel`, moving the verdict one slot on: read by name, not slot.
    deny_in_domain(
        hook::BPF,
        hook_arg!(ctx, BpfCmd) as u32,
        verdict!(ctx, BpfVerdict),
    )
}

/// Everything kernel lockdown guards: /dev/mem, /dev/kmem, /proc/kcore, ioperm/iopl, MSRs,
/// kexec, unsigned modules, debugfs, kprobes, perf and BPF reads of kernel memory, and more.
/// A domain is treated as lockdown=confidentiality whatever the machine's own setting.
#[lsm(hook = "locked_down")]
pub fn locked_down(ctx: LsmContext) -> i32 {
    deny_in_domain(
        hook::LOCKED_DOWN,
        hook_arg!(ctx, LockedDownWhat) as u32,
        verdict!(ctx, LockedDownVerdict),
    )
}

/// init_module, kexec_load and other blobs loaded into the kernel from memory.
#[lsm(hook = "kernel_load_data")]
pub fn kernel_load_data(ctx: LsmContext) -> i32 {
    deny_in_domain(
        hook::KERNEL_LOAD_DATA,
        hook_arg!(ctx, KernelLoadDataId) as u32,
        verdict!(ctx, KernelLoadDataVerdict),
    )
}

/// finit_module, kexec_file_load, firmware and policy files read by the kernel.
#[lsm(hook = "kernel_read_file")]
pub fn kernel_read_file(ctx: LsmContext) -> i32 {
    deny_in_domain(
        hook::KERNEL_READ_FILE,
        hook_arg!(ctx, KernelReadFileId) as u32,
        verdict!(ctx, KernelReadFileVerdict),
    )
}

/// Mounting over, unmounting or moving mounts could hide or drop the agent's bpffs pins and
/// the protected files' paths.
#[lsm(hook = "sb_mount")]
pub fn sb_mount(ctx: LsmContext) -> i32 {
    deny_in_domain(hook::SB_MOUNT, 0, verdict!(ctx, SbMountVerdict))
}

#[lsm(hook = "sb_umount")]
pub fn sb_umount(ctx: LsmContext) -> i32 {
    deny_in_domain(
        hook::SB_UMOUNT,
        hook_arg!(ctx, SbUmountFlags) as u32,
        verdict!(ctx, SbUmountVerdict),
    )
}

#[lsm(hook = "move_mount")]
pub fn move_mount(ctx: LsmContext) -> i32 {
    deny_in_domain(hook::MOVE_MOUNT, 0, verdict!(ctx, MoveMountVerdict))
}

#[lsm(hook = "sb_pivotroot")]
pub fn sb_pivotroot(ctx: LsmContext) -> i32 {
    deny_in_domain(hook::SB_PIVOTROOT, 0, verdict!(ctx, SbPivotrootVerdict))
}

/// CAP_SYS_ADMIN and CAP_PERFMON over the whole machine (the initial user namespace). Since
/// Linux 7.0, `mm_access()` lets any task that is `perfmon_capable()` (either capability) read
/// another task's /proc/<pid>/environ, auxv, maps, smaps, pagemap after ptrace_may_access()
/// refused it, and no hook there sees the target. Both capabilities also gate much of what the
/// other hooks here refuse anyway (bpf, mounts, kernel interfaces) and system-wide perf, which
/// only this hook refuses, so root inside a domain simply does not hold them against the
/// initial user namespace. Checks against any other user namespace are left to the kernel.
/// Checks the kernel marks NOAUDIT (probes that are expected to fail) are refused without a
/// record. The task judged is the running one, as for every hook here.
#[lsm(hook = "capable")]
pub fn capable(ctx: LsmContext) -> i32 {
    let domain = match restricted_actor(verdict!(ctx, CapableVerdict)) {
        Ok(domain) => domain,
        Err(verdict) => return verdict,
    };
    let cap = hook_arg!(ctx, CapableCap) as u32;
    if cap != CAP_SYS_ADMIN && cap != CAP_PERFMON {
        return 0;
    }
    if !in_initial_user_ns(hook_arg!(ctx, CapableNs)) {
        return 0;
    }
    if hook_arg!(ctx, CapableOpts) as u32 & CAP_OPT_NOAUDIT != 0 {
        return -EPERM;
    }
    refuse(hook::CAPABLE, cap, domain)
}
