//! Hooks guarding the node's protected files and directories from tasks in a domain.
//!
//! `inode_permission` carries most of the weight: the kernel calls it for every open (read,
//! write, exec, including a reopen through `/proc/self/fd`), for every directory a path walk
//! passes through, and on the parent directory of every create, link, unlink and rename. So a
//! protected directory can be neither listed, traversed nor changed, and a protected file cannot
//! be opened under any name. The remaining hooks cover operations on a protected file whose
//! parent directory is not protected: they never call `inode_permission` on the file itself.

use core::ffi::c_void;

use aya_ebpf::{macros::lsm, programs::LsmContext};
use aya_log_ebpf::info;
use bulkhead_common::{DomainId, audit::hook};

use crate::{
    audit::refuse_inode,
    devices,
    hook_args::{hook_arg, verdict},
    kernel_files,
    kernel_layout::dentry_inode,
    names::{NameMatch, guard, is_directory},
    protected_inode::{is_protected, protect},
    protected_names::name_in,
    shared_memory::check_shared,
    task_domain::restricted_actor,
};

/// Runs on every path component of every lookup on the machine, so a task outside any domain
/// leaves after exactly one map lookup (its own task storage). For a task in a domain it also
/// guards other tasks' `/proc/<pid>` files and writes to procfs, cgroupfs and the other kernel
/// filesystems (kernel_files.rs), device files (devices.rs), and
/// the opening of POSIX shared memory and message queues (shared_memory.rs).
#[lsm(hook = "inode_permission")]
pub fn inode_permission(ctx: LsmContext) -> i32 {
    let domain = match restricted_actor(verdict!(ctx, InodePermissionVerdict)) {
        Ok(domain) => domain,
        Err(verdict) => return verdict,
    };
    let inode = hook_arg!(ctx, InodePermissionInode) as *mut c_void;
    let mask = hook_arg!(ctx, InodePermissionMask) as u32;
    judge_inode(hook::INODE_PERMISSION, domain, inode, mask)
}

/// Everything a task in `domain` may not reach an inode for, whatever the way: protected,
/// another task's `/proc/<pid>` file or a write to a kernel filesystem (kernel_files.rs), a
/// device (devices.rs), another domain's shared memory (shared_memory.rs). `mask` holds the
/// kernel's MAY_* bits of the access.
#[inline(always)]
pub fn judge_inode(hook: u32, domain: DomainId, inode: *mut c_void, mask: u32) -> i32 {
    if is_protected(inode) {
        return refuse_inode(hook, mask, domain, inode);
    }
    kernel_files::check(hook, domain, inode, mask)
        .or_else(|| devices::check(hook, domain, inode, mask))
        .or_else(|| check_shared(hook, mask, domain, inode))
        .unwrap_or(0)
}

/// A file or directory created inside a protected directory is protected from its first
/// moment, whoever creates it. Never changes the hook's result: its default (-EOPNOTSUPP, "no
/// security xattr from this module") must pass through untouched.
#[lsm(hook = "inode_init_security")]
pub fn inode_init_security(ctx: LsmContext) -> i32 {
    // Two `struct inode *` parameters: told apart by name (6 parameters up to 6.5, 5 from 6.6).
    let previous = verdict!(ctx, InodeInitSecurityVerdict);
    let dir = hook_arg!(ctx, InodeInitSecurityDir) as *mut c_void;
    let inode = hook_arg!(ctx, InodeInitSecurityInode) as *mut c_void;
    if is_protected(dir) && !protect(inode) {
        info!(
            &ctx,
            "bulkhead: no storage to protect a new file in a protected directory"
        );
        // Creation must not go ahead unprotected.
        return -crate::ENOMEM;
    }
    previous
}

/// Denies a task in a domain any operation that names one of `inodes` when one is protected,
/// or is a shared-memory file or message queue of another domain (or of none).
#[inline(always)]
fn deny_if_protected(hook: u32, inodes: &[*mut c_void], previous: i32) -> i32 {
    let domain = match restricted_actor(previous) {
        Ok(domain) => domain,
        Err(verdict) => return verdict,
    };
    for inode in inodes {
        if is_protected(*inode) {
            return refuse_inode(hook, 0, domain, *inode);
        }
        if let Some(verdict) = check_shared(hook, 0, domain, *inode) {
            return verdict;
        }
    }
    0
}

#[lsm(hook = "inode_unlink")]
pub fn inode_unlink(ctx: LsmContext) -> i32 {
    let victim = dentry_inode(hook_arg!(ctx, InodeUnlinkDentry) as *const c_void);
    let dir = hook_arg!(ctx, InodeUnlinkDir) as *mut c_void;
    deny_if_protected(
        hook::INODE_UNLINK,
        &[dir, victim],
        verdict!(ctx, InodeUnlinkVerdict),
    )
}

#[lsm(hook = "inode_rmdir")]
pub fn inode_rmdir(ctx: LsmContext) -> i32 {
    let victim = dentry_inode(hook_arg!(ctx, InodeRmdirDentry) as *const c_void);
    let dir = hook_arg!(ctx, InodeRmdirDir) as *mut c_void;
    deny_if_protected(
        hook::INODE_RMDIR,
        &[dir, victim],
        verdict!(ctx, InodeRmdirVerdict),
    )
}

/// Both the file being moved and a protected file it would replace. Then, for every caller
/// (the administrator included): a file that takes over a protected name (renamed over it, the
/// way `sed -i`, editors and config tools replace a file, or moved to a name a pattern
/// protects) or moves into a protected directory is protected before the rename makes it
/// visible there, so no task ever finds that name leading to unprotected contents; a directory
/// moved onto a protected pattern's way guards the names below it from then on. A task in a
/// domain may not move anything onto a pattern's way. An exchange (RENAME_EXCHANGE) asks this
/// hook both ways.
#[lsm(hook = "inode_rename")]
pub fn inode_rename(ctx: LsmContext) -> i32 {
    let moved = dentry_inode(hook_arg!(ctx, InodeRenameOldDentry) as *const c_void);
    let new_dentry = hook_arg!(ctx, InodeRenameNewDentry) as *const c_void;
    let replaced = dentry_inode(new_dentry);
    let old_dir = hook_arg!(ctx, InodeRenameOldDir) as *mut c_void;
    let new_dir = hook_arg!(ctx, InodeRenameNewDir) as *mut c_void;
    let verdict = deny_if_protected(
        hook::INODE_RENAME,
        &[old_dir, moved, new_dir, replaced],
        verdict!(ctx, InodeRenameVerdict),
    );
    if verdict != 0 {
        return verdict;
    }
    let found = name_in(new_dir, new_dentry).unwrap_or(UNREADABLE_NAME);
    if found.on_pattern()
        && let Ok(domain) = restricted_actor(0)
    {
        return refuse_inode(hook::INODE_RENAME, 0, domain, new_dir);
    }
    let takes_protected_place = found.protect || is_protected(replaced) || is_protected(new_dir);
    let verdict = carry_protection(&ctx, takes_protected_place, moved);
    if verdict != 0 {
        return verdict;
    }
    if found.children != 0 && is_directory(moved) && !guard(moved, found.children) {
        info!(
            &ctx,
            "bulkhead: no storage to guard a directory moved onto a protected path; refused"
        );
        return -crate::ENOMEM;
    }
    0
}

/// A name that cannot be read is judged as a protected one.
const UNREADABLE_NAME: NameMatch = NameMatch {
    protect: true,
    children: 0,
};

/// A new hard link to a protected file would still lead to the protected inode, but the task
/// could then keep a name for it where the administrator does not look. A file linked into a
/// protected directory or to a protected name, by anyone, is protected before the new name
/// exists; a task in a domain may not link anything onto a protected pattern's way.
#[lsm(hook = "inode_link")]
pub fn inode_link(ctx: LsmContext) -> i32 {
    let source = dentry_inode(hook_arg!(ctx, InodeLinkOldDentry) as *const c_void);
    let dir = hook_arg!(ctx, InodeLinkDir) as *mut c_void;
    let new_dentry = hook_arg!(ctx, InodeLinkNewDentry) as *const c_void;
    let verdict = deny_if_protected(
        hook::INODE_LINK,
        &[source, dir],
        verdict!(ctx, InodeLinkVerdict),
    );
    if verdict != 0 {
        return verdict;
    }
    let found = name_in(dir, new_dentry).unwrap_or(UNREADABLE_NAME);
    if found.on_pattern()
        && let Ok(domain) = restricted_actor(0)
    {
        return refuse_inode(hook::INODE_LINK, 0, domain, dir);
    }
    carry_protection(&ctx, found.protect || is_protected(dir), source)
}

/// Protects `inode` when it is about to get a protected name. The operation does not go ahead
/// when the mark cannot be stored: the name would lead to unprotected contents. (Should the
/// operation fail later for another reason, the file stays protected: over-protection, never
/// the reverse.)
#[inline(always)]
fn carry_protection(ctx: &LsmContext, takes_protected_place: bool, inode: *mut c_void) -> i32 {
    if !takes_protected_place || inode.is_null() || is_protected(inode) || protect(inode) {
        return 0;
    }
    info!(
        ctx,
        "bulkhead: no storage to protect a file taking a protected name; refused"
    );
    -crate::ENOMEM
}

/// chmod, chown, truncate, utimes.
#[lsm(hook = "inode_setattr")]
pub fn inode_setattr(ctx: LsmContext) -> i32 {
    // 6.8+ puts a `struct mnt_idmap *` first; the dentry is found by its type.
    let inode = dentry_inode(hook_arg!(ctx, InodeSetattrDentry) as *const c_void);
    deny_if_protected(
        hook::INODE_SETATTR,
        &[inode],
        verdict!(ctx, InodeSetattrVerdict),
    )
}

/// Extended attributes, which include POSIX ACLs (another way to change permissions).
#[lsm(hook = "inode_setxattr")]
pub fn inode_setxattr(ctx: LsmContext) -> i32 {
    let inode = dentry_inode(hook_arg!(ctx, InodeSetxattrDentry) as *const c_void);
    deny_if_protected(
        hook::INODE_SETXATTR,
        &[inode],
        verdict!(ctx, InodeSetxattrVerdict),
    )
}

#[lsm(hook = "inode_removexattr")]
pub fn inode_removexattr(ctx: LsmContext) -> i32 {
    let inode = dentry_inode(hook_arg!(ctx, InodeRemovexattrDentry) as *const c_void);
    deny_if_protected(
        hook::INODE_REMOVEXATTR,
        &[inode],
        verdict!(ctx, InodeRemovexattrVerdict),
    )
}
