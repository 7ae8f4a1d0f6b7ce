//! Protected files reached without a path walk. `inode_permission` (files.rs) judges every
//! name a task in a domain walks to; these hooks judge the file itself, however it was got:
//!
//! - `file_open`: every open, including those the kernel makes on a task's behalf without a
//!   walk (the descriptor a fanotify listener receives with each event, `open_by_handle_at`);
//! - `file_permission`: every read and write through a descriptor (read, write, their vector
//!   and positioned forms, `splice`, `sendfile`, `copy_file_range`, `getdents`), so a
//!   descriptor opened before the file was marked, inherited from a supervisor or received
//!   over a socket is refused as well;
//! - `mmap_file`: mapping such a descriptor;
//! - `file_receive`: receiving one over a Unix socket (SCM_RIGHTS), refused at once.
//!
//! Mappings made before a file was marked stay (the kernel gives no hook on their page
//! faults). The node config can let descriptors a task already holds be used
//! (`[protect] handed_over_descriptors = "allow"`); opens stay refused either way.

use core::ffi::c_void;

use aya_ebpf::{macros::lsm, programs::LsmContext};
use bulkhead_common::audit::hook;

use crate::{
    agent_set::agent_set,
    audit::refuse_inode,
    files::judge_inode,
    hook_args::{hook_arg, verdict},
    kernel_layout::{file_inode, file_mode},
    protected_inode::is_protected,
    task_domain::restricted_actor,
};

// Set by the agent: 1 when descriptors a task holds may still be used
// (`handed_over_descriptors = "allow"`). 0, refuse, until set.
agent_set!(HANDED_OVER_DESCRIPTORS = 0);

/// Refuses a task in a domain `access` to `file` when its inode is protected.
#[inline(always)]
fn check_file(hook: u32, access: u32, file: *const c_void, previous: i32) -> i32 {
    let actor = match restricted_actor(previous) {
        Ok(actor) => actor,
        Err(verdict) => return verdict,
    };
    if file.is_null() {
        // An anonymous mapping: no file.
        return 0;
    }
    let inode = file_inode(file);
    if is_protected(inode) {
        return refuse_inode(hook, access, actor, inode);
    }
    0
}

/// The same for a descriptor the task already holds, unless the config lets those be used.
#[inline(always)]
fn check_held(hook: u32, access: u32, file: *const c_void, previous: i32) -> i32 {
    if HANDED_OVER_DESCRIPTORS.get() == 1 {
        return previous;
    }
    check_file(hook, access, file, previous)
}

/// Requests through a descriptor of a protected file the task holds that change or hold it
/// without reading or writing: ioctls (`FS_IOC_SETFLAGS` and `FS_IOC_FSSETXATTR` change its
/// attributes past `inode_setattr`, filesystem ioctls move its blocks), leases (`F_SETLEASE`
/// stalls the administrator's opens) and directory notifications (`F_NOTIFY`). Refused like
/// reads; `None` when this module has nothing against the request.
#[inline(always)]
pub fn check_held_request(hook: u32, cmd: u32, file: *const c_void, previous: i32) -> Option<i32> {
    if previous != 0 {
        return None;
    }
    let verdict = check_held(hook, cmd, file, previous);
    (verdict != 0).then_some(verdict)
}

/// An open the kernel makes without a path walk (a fanotify event's descriptor) never met
/// `inode_permission`, so the whole of its verdict is applied here: protected files, other
/// tasks' `/proc/<pid>` files, kernel filesystems, devices and other domains' shared memory.
/// For opens that did walk, it is the same verdict a second time.
#[lsm(hook = "file_open")]
pub fn file_open(ctx: LsmContext) -> i32 {
    let actor = match restricted_actor(verdict!(ctx, FileOpenVerdict)) {
        Ok(actor) => actor,
        Err(verdict) => return verdict,
    };
    let file = hook_arg!(ctx, FileOpenFile) as *const c_void;
    judge_inode(hook::FILE_OPEN, actor, file_inode(file), open_mask(file))
}

const FMODE_READ: u32 = 1 << 0;
const FMODE_WRITE: u32 = 1 << 1;
const MAY_WRITE: u32 = 1 << 1;
const MAY_READ: u32 = 1 << 2;
const MAY_OPEN: u32 = 1 << 5;

/// The MAY_* bits `inode_permission` would have been asked for this open.
#[inline(always)]
fn open_mask(file: *const c_void) -> u32 {
    let mode = file_mode(file);
    let mut mask = MAY_OPEN;
    if mode & FMODE_READ != 0 {
        mask |= MAY_READ;
    }
    if mode & FMODE_WRITE != 0 {
        mask |= MAY_WRITE;
    }
    mask
}

#[lsm(hook = "file_permission")]
pub fn file_permission(ctx: LsmContext) -> i32 {
    check_held(
        hook::FILE_PERMISSION,
        hook_arg!(ctx, FilePermissionMask) as u32,
        hook_arg!(ctx, FilePermissionFile) as *const c_void,
        verdict!(ctx, FilePermissionVerdict),
    )
}

#[lsm(hook = "mmap_file")]
pub fn mmap_file(ctx: LsmContext) -> i32 {
    check_held(
        hook::MMAP_FILE,
        0,
        hook_arg!(ctx, MmapFileFile) as *const c_void,
        verdict!(ctx, MmapFileVerdict),
    )
}

#[lsm(hook = "file_receive")]
pub fn file_receive(ctx: LsmContext) -> i32 {
    check_held(
        hook::FILE_RECEIVE,
        0,
        hook_arg!(ctx, FileReceiveFile) as *const c_void,
        verdict!(ctx, FileReceiveVerdict),
    )
}
