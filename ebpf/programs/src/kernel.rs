//! Hooks guarding the kernel, and through it the agent's programs and pins, from tasks in a
//! domain, including tasks running as root there. None of these has a legitimate use inside a
//! task of a task runner; each would let root inside a domain undo the domain itself.

use aya_ebpf::{macros::lsm, programs::LsmContext};
use bulkhead_common::audit::hook;

use crate::{audit::refuse, task_domain::restricted_actor};

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
    // bpf(int cmd, union bpf_attr *attr, unsigned int size)
    deny_in_domain(hook::BPF, ctx.arg(0), ctx.arg(3))
}

/// Everything kernel lockdown guards: /dev/mem, /dev/kmem, /proc/kcore, ioperm/iopl, MSRs,
/// kexec, unsigned modules, debugfs, kprobes, perf and BPF reads of kernel memory, and more.
/// A domain is treated as lockdown=confidentiality whatever the machine's own setting.
#[lsm(hook = "locked_down")]
pub fn locked_down(ctx: LsmContext) -> i32 {
    // locked_down(enum lockdown_reason what)
    deny_in_domain(hook::LOCKED_DOWN, ctx.arg(0), ctx.arg(1))
}

/// init_module, kexec_load and other blobs loaded into the kernel from memory.
#[lsm(hook = "kernel_load_data")]
pub fn kernel_load_data(ctx: LsmContext) -> i32 {
    // kernel_load_data(enum kernel_load_data_id id, bool contents)
    deny_in_domain(hook::KERNEL_LOAD_DATA, ctx.arg(0), ctx.arg(2))
}

/// finit_module, kexec_file_load, firmware and policy files read by the kernel.
#[lsm(hook = "kernel_read_file")]
pub fn kernel_read_file(ctx: LsmContext) -> i32 {
    // kernel_read_file(struct file *file, enum kernel_read_file_id id, bool contents)
    deny_in_domain(hook::KERNEL_READ_FILE, ctx.arg(1), ctx.arg(3))
}

/// Mounting over, unmounting or moving mounts could hide or drop the agent's bpffs pins and
/// the protected files' paths.
#[lsm(hook = "sb_mount")]
pub fn sb_mount(ctx: LsmContext) -> i32 {
    // sb_mount(const char *dev_name, const struct path *path, const char *type,
    //          unsigned long flags, void *data)
    deny_in_domain(hook::SB_MOUNT, 0, ctx.arg(5))
}

#[lsm(hook = "sb_umount")]
pub fn sb_umount(ctx: LsmContext) -> i32 {
    // sb_umount(struct vfsmount *mnt, int flags)
    deny_in_domain(hook::SB_UMOUNT, ctx.arg(1), ctx.arg(2))
}

#[lsm(hook = "move_mount")]
pub fn move_mount(ctx: LsmContext) -> i32 {
    // move_mount(const struct path *from_path, const struct path *to_path)
    deny_in_domain(hook::MOVE_MOUNT, 0, ctx.arg(2))
}

#[lsm(hook = "sb_pivotroot")]
pub fn sb_pivotroot(ctx: LsmContext) -> i32 {
    // sb_pivotroot(const struct path *old_path, const struct path *new_path)
    deny_in_domain(hook::SB_PIVOTROOT, 0, ctx.arg(2))
}
