//! ioctl requests: the terminal requests that act on other processes through a tty are refused
//! inside domains, and the requests that set a file's owner reserve its record (signals.rs).
//!
//! Both entry points are hooked: `file_ioctl` for native calls and `file_ioctl_compat` for
//! 32-bit ones, so a 32-bit binary in a domain has no way around either.

use core::ffi::c_void;

use aya_ebpf::{macros::lsm, programs::LsmContext};
use bulkhead_common::audit::hook;

use crate::{
    audit::refuse,
    hook_args::{hook_arg, verdict},
    signals::owner_ioctl,
    task_domain::restricted_actor,
};

/// Pushes a byte into a terminal's input queue, as if typed: on a terminal shared with a
/// process outside the domain (the supervisor's session), commands typed into its shell.
const TIOCSTI: u32 = 0x5412;
/// Virtual-console requests, among them pasting the selection into the console's input.
const TIOCLINUX: u32 = 0x541c;

#[inline(always)]
fn check_ioctl(ctx: &LsmContext, hook: u32, file: *const c_void, cmd: u32, previous: i32) -> i32 {
    if matches!(cmd, TIOCSTI | TIOCLINUX) {
        // Refused whatever the terminal: the kernel's own check (the caller's controlling
        // terminal, or CAP_SYS_ADMIN) lets a task inject into a terminal it shares.
        return match restricted_actor(previous) {
            Ok(actor) => refuse(hook, cmd, actor),
            Err(verdict) => verdict,
        };
    }
    owner_ioctl(ctx, file, cmd, previous)
}

#[lsm(hook = "file_ioctl")]
pub fn file_ioctl(ctx: LsmContext) -> i32 {
    check_ioctl(
        &ctx,
        hook::FILE_IOCTL,
        hook_arg!(ctx, FileIoctlFile) as *const c_void,
        hook_arg!(ctx, FileIoctlCmd) as u32,
        verdict!(ctx, FileIoctlVerdict),
    )
}

#[lsm(hook = "file_ioctl_compat")]
pub fn file_ioctl_compat(ctx: LsmContext) -> i32 {
    check_ioctl(
        &ctx,
        hook::FILE_IOCTL_COMPAT,
        hook_arg!(ctx, FileIoctlCompatFile) as *const c_void,
        hook_arg!(ctx, FileIoctlCompatCmd) as u32,
        verdict!(ctx, FileIoctlCompatVerdict),
    )
}
