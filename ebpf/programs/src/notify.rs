//! Filesystem notification marks (inotify, fanotify, dnotify) placed from inside a domain.
//!
//! `path_notify` is the one hook every mark passes, with what the mark would watch. Refused to
//! a task in a domain:
//!
//! - permission events (`FAN_OPEN_PERM`, `FAN_ACCESS_PERM`, `FAN_OPEN_EXEC_PERM`,
//!   `FAN_PRE_ACCESS`): the listener decides whether another process's open or read goes on,
//!   so it could fail or stall processes outside the domain;
//! - marks on a whole mount, filesystem or mount namespace: they report every other
//!   process's file activity there, and (for fanotify) hand the listener a descriptor of every
//!   file opened;
//! - any mark on a protected file or directory.
//!
//! The kernel already refuses the first two to a task without `CAP_SYS_ADMIN` over the
//! machine, which the `capable` hook takes from every task in a domain; this is the second,
//! independent line. Inode marks with plain events on files the task may read stay allowed.

use core::ffi::c_void;

use aya_ebpf::{macros::lsm, programs::LsmContext};
use bulkhead_common::audit::hook;

use crate::{
    audit::{refuse, refuse_inode},
    hook_args::{hook_arg, verdict},
    kernel_layout::{dentry_inode, path_dentry},
    protected_inode::is_protected,
    task_domain::restricted_actor,
};

/// FS_OPEN_PERM | FS_ACCESS_PERM | FS_OPEN_EXEC_PERM | FS_PRE_ACCESS (7.x).
const PERMISSION_EVENTS: u64 = 0x0001_0000 | 0x0002_0000 | 0x0004_0000 | 0x0010_0000;
/// FSNOTIFY_OBJ_TYPE_INODE; the others are a mount, a filesystem, a mount namespace.
const OBJ_TYPE_INODE: u32 = 0;

#[lsm(hook = "path_notify")]
pub fn path_notify(ctx: LsmContext) -> i32 {
    let actor = match restricted_actor(verdict!(ctx, PathNotifyVerdict)) {
        Ok(actor) => actor,
        Err(verdict) => return verdict,
    };
    let mask = hook_arg!(ctx, PathNotifyMask);
    let obj_type = hook_arg!(ctx, PathNotifyObjType) as u32;
    if mask & PERMISSION_EVENTS != 0 || obj_type != OBJ_TYPE_INODE {
        return refuse(hook::PATH_NOTIFY, mask as u32, actor);
    }
    let path = hook_arg!(ctx, PathNotifyPath) as *const c_void;
    let dentry = path_dentry(path);
    if dentry.is_null() {
        return 0;
    }
    let inode = dentry_inode(dentry);
    if is_protected(inode) {
        return refuse_inode(hook::PATH_NOTIFY, mask as u32, actor, inode);
    }
    0
}
