//! ioctl requests: the terminal and console requests that act on other processes through a
//! terminal they share are refused inside domains, and the requests that set a file's owner
//! reserve its record (signals.rs).
//!
//! Both entry points are hooked: `file_ioctl` for native calls and `file_ioctl_compat` for
//! 32-bit ones, so a 32-bit binary in a domain has no way around either.

use core::ffi::c_void;

use aya_ebpf::{macros::lsm, programs::LsmContext};
use bulkhead_common::audit::hook;

use crate::{
    audit::refuse,
    descriptors::check_held_request,
    hook_args::{hook_arg, verdict},
    signals::owner_ioctl,
    task_domain::restricted_actor,
};

/// Terminal and console requests refused inside domains, whatever the terminal. Each acts on
/// whoever else uses the terminal, through checks a task passes on a terminal it shares (its
/// controlling terminal is often its supervisor's session's) and with no hook that sees the
/// processes affected:
const REFUSED_TTY_REQUESTS: [u32; 30] = [
    0x5412,      // TIOCSTI: push a byte into the input queue, as if typed
    0x541c,      // TIOCLINUX: console requests, pasting the selection among them
    0x5410,      // TIOCSPGRP: take the foreground, and with it the keystrokes and ^C/^Z
    0x5423,      // TIOCSETD: change the line discipline under the other readers
    0x541d,      // TIOCCONS: redirect the console's output
    0x5437,      // TIOCVHANGUP: hang up the terminal, SIGHUP to its session
    0x4004_5436, // TIOCSIG: a pty master signals the slave's foreground group
    0x4b45,      // KDSKBMODE: keyboard mode (raw mode reads every key)
    0x4b47,      // KDSKBENT: keymap entry
    0x4b49,      // KDSKBSENT: function-key string (what a key types)
    0x4b4b,      // KDSKBDIACR: accent table
    0x4bfb,      // KDSKBDIACRUC: accent table (Unicode)
    0x4b4d,      // KDSETKEYCODE: scancode to keycode table
    0x4b63,      // KDSKBMETA: meta key handling
    0x4b65,      // KDSKBLED: keyboard flags
    0x4b4e,      // KDSIGACCEPT: which process keyboard signals go to
    0x4b3a,      // KDSETMODE: text or graphics
    0x4b72,      // KDFONTOP: console font
    0x4b61,      // PIO_FONT
    0x4b6c,      // PIO_FONTX
    0x4b6d,      // PIO_FONTRESET
    0x4b41,      // PIO_SCRNMAP
    0x4b6a,      // PIO_UNISCRNMAP
    0x4b67,      // PIO_UNIMAP
    0x5602,      // VT_SETMODE: take over console switching (and its signals)
    0x5606,      // VT_ACTIVATE: switch the console
    0x560f,      // VT_SETACTIVATE
    0x5605,      // VT_RELDISP
    0x560b,      // VT_LOCKSWITCH: keep everyone on this console
    0x5608,      // VT_DISALLOCATE
];

#[inline(always)]
fn check_ioctl(ctx: &LsmContext, hook: u32, file: *const c_void, cmd: u32, previous: i32) -> i32 {
    if REFUSED_TTY_REQUESTS.contains(&cmd) {
        // Refused whatever the terminal: the kernel's own checks (the caller's controlling
        // terminal, its session, or the console's owner) let a task act on a terminal it
        // shares.
        return match restricted_actor(previous) {
            Ok(actor) => refuse(hook, cmd, actor),
            Err(verdict) => verdict,
        };
    }
    if let Some(verdict) = check_held_request(hook, cmd, file, previous) {
        return verdict;
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
