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
use bulkhead_common::audit::hook;

use crate::{
    audit::refuse_inode,
    kernel_layout::dentry_inode,
    protected_inode::{is_protected, protect},
    task_domain::restricted_actor,
};

/// Runs on every path component of every lookup on the machine, so a task outside any domain
/// leaves after exactly one map lookup (its own task storage).
#[lsm(hook = "inode_permission")]
pub fn inode_permission(ctx: LsmContext) -> i32 {
    // inode_permission(struct inode *inode, int mask)
    let previous: i32 = ctx.arg(2);
    let domain = match restricted_actor(previous) {
        Ok(domain) => domain,
        Err(verdict) => return verdict,
    };
    let inode: *mut c_void = ctx.arg(0);
    if !is_protected(inode) {
        return 0;
    }
    refuse_inode(hook::INODE_PERMISSION, ctx.arg(1), domain, inode)
}

/// A file or directory created inside a protected directory is protected from its first
/// moment, whoever creates it. Never changes the hook's result: its default (-EOPNOTSUPP, "no
/// security xattr from this module") must pass through untouched.
#[lsm(hook = "inode_init_security")]
pub fn inode_init_security(ctx: LsmContext) -> i32 {
    // inode_init_security(struct inode *inode, struct inode *dir, const struct qstr *qstr,
    //                     const char **name, void **value, size_t *len)
    let previous: i32 = ctx.arg(6);
    if is_protected(ctx.arg(1)) && !protect(ctx.arg(0)) {
        info!(
            &ctx,
            "bulkhead: no storage to protect a new file in a protected directory"
        );
        // Creation must not go ahead unprotected.
        return -crate::ENOMEM;
    }
    previous
}

/// Denies a task in a domain any operation that names one of `inodes` when one is protected.
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
    }
    0
}

#[lsm(hook = "inode_unlink")]
pub fn inode_unlink(ctx: LsmContext) -> i32 {
    // inode_unlink(struct inode *dir, struct dentry *dentry)
    let victim = dentry_inode(ctx.arg(1));
    deny_if_protected(hook::INODE_UNLINK, &[ctx.arg(0), victim], ctx.arg(2))
}

#[lsm(hook = "inode_rmdir")]
pub fn inode_rmdir(ctx: LsmContext) -> i32 {
    // inode_rmdir(struct inode *dir, struct dentry *dentry)
    let victim = dentry_inode(ctx.arg(1));
    deny_if_protected(hook::INODE_RMDIR, &[ctx.arg(0), victim], ctx.arg(2))
}

/// Both the file being moved and a protected file it would replace.
#[lsm(hook = "inode_rename")]
pub fn inode_rename(ctx: LsmContext) -> i32 {
    // inode_rename(struct inode *old_dir, struct dentry *old_dentry,
    //              struct inode *new_dir, struct dentry *new_dentry)
    let moved = dentry_inode(ctx.arg(1));
    let replaced = dentry_inode(ctx.arg(3));
    deny_if_protected(
        hook::INODE_RENAME,
        &[ctx.arg(0), moved, ctx.arg(2), replaced],
        ctx.arg(4),
    )
}

/// A new hard link to a protected file would still lead to the protected inode, but the task
/// could then keep a name for it where the administrator does not look.
#[lsm(hook = "inode_link")]
pub fn inode_link(ctx: LsmContext) -> i32 {
    // inode_link(struct dentry *old_dentry, struct inode *dir, struct dentry *new_dentry)
    let source = dentry_inode(ctx.arg(0));
    deny_if_protected(hook::INODE_LINK, &[source, ctx.arg(1)], ctx.arg(3))
}

/// chmod, chown, truncate, utimes.
#[lsm(hook = "inode_setattr")]
pub fn inode_setattr(ctx: LsmContext) -> i32 {
    // inode_setattr(struct dentry *dentry, struct iattr *attr)  (Linux 6.1)
    let inode = dentry_inode(ctx.arg(0));
    deny_if_protected(hook::INODE_SETATTR, &[inode], ctx.arg(2))
}

/// Extended attributes, which include POSIX ACLs (another way to change permissions).
#[lsm(hook = "inode_setxattr")]
pub fn inode_setxattr(ctx: LsmContext) -> i32 {
    // inode_setxattr(struct user_namespace *mnt_userns, struct dentry *dentry,
    //                const char *name, const void *value, size_t size, int flags)  (Linux 6.1)
    let inode = dentry_inode(ctx.arg(1));
    deny_if_protected(hook::INODE_SETXATTR, &[inode], ctx.arg(6))
}

#[lsm(hook = "inode_removexattr")]
pub fn inode_removexattr(ctx: LsmContext) -> i32 {
    // inode_removexattr(struct user_namespace *mnt_userns, struct dentry *dentry,
    //                   const char *name)  (Linux 6.1)
    let inode = dentry_inode(ctx.arg(1));
    deny_if_protected(hook::INODE_REMOVEXATTR, &[inode], ctx.arg(3))
}
