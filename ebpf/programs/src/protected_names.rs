//! Protected names that do not exist yet, or get a new inode: marked in the kernel at the
//! moment the name gets its inode, for every caller, so no task ever finds a protected name
//! leading to unprotected contents (names.rs holds the matching).
//!
//! `d_instantiate` is where every new name meets its inode: create, mkdir, mknod, symlink and
//! link in every filesystem, and also a lookup that reads an inode back into the cache after it
//! was evicted. It runs before the dentry becomes positive, so the mark is in place before any
//! path walk can reach the inode through that name. Renames move an existing dentry and are
//! handled in `inode_rename` (files.rs).
//!
//! A task in a domain may not make a protected name itself (it would own the inode and could
//! keep it open, so what the administrator later writes there would be readable to it), nor a
//! symlink, hard link or rename at any name on a protected pattern's way (it could redirect
//! where the administrator's files land).

use core::ffi::c_void;

use aya_ebpf::{macros::lsm, programs::LsmContext};
use aya_log_ebpf::info;
use bulkhead_common::audit::hook;

use crate::{
    audit::refuse_inode,
    hook_args::{hook_arg, verdict},
    kernel_layout::{dentry_inode, dentry_parent},
    names::{NameMatch, guard, guarded_children, is_directory, match_name},
    protected_inode::{is_protected, protect},
    task_domain::restricted_actor,
};

#[lsm(hook = "d_instantiate")]
pub fn d_instantiate(ctx: LsmContext) -> i32 {
    let dentry = hook_arg!(ctx, DInstantiateDentry) as *const c_void;
    let inode = hook_arg!(ctx, DInstantiateInode) as *mut c_void;
    if inode.is_null() {
        return 0;
    }
    let parent = dentry_parent(dentry);
    // A filesystem's root is its own parent and has no name to judge.
    if parent.is_null() || parent.cast_const() == dentry {
        return 0;
    }
    let dir = dentry_inode(parent);
    if dir.is_null() {
        return 0;
    }
    // Everything below a protected directory is protected.
    if is_protected(dir) {
        mark_or_log(&ctx, inode);
        return 0;
    }
    let candidates = guarded_children(dir);
    if candidates == 0 {
        return 0;
    }
    // A name that cannot be read is taken as protected.
    let found = match_name(candidates, dentry).unwrap_or(NameMatch {
        protect: true,
        children: 0,
    });
    if found.protect {
        mark_or_log(&ctx, inode);
    }
    if found.children != 0 && is_directory(inode) && !guard(inode, found.children) {
        info!(
            &ctx,
            "bulkhead: no storage to guard a new directory on a protected path"
        );
    }
    0
}

/// The hook cannot refuse (it returns nothing); a failed allocation is logged, and the agent's
/// rescan marks the inode.
#[inline(always)]
fn mark_or_log(ctx: &LsmContext, inode: *mut c_void) {
    if !protect(inode) {
        info!(
            ctx,
            "bulkhead: no storage to protect a new inode at a protected name"
        );
    }
}

/// What a name in `dir` is on the protected patterns: `None` when the name cannot be read (the
/// caller refuses or protects).
#[inline(always)]
pub fn name_in(dir: *mut c_void, dentry: *const c_void) -> Option<NameMatch> {
    match_name(guarded_children(dir), dentry)
}

/// Refuses a task in a domain a new name in `dir`: a protected one always, and with
/// `on_the_way`, any name on a protected pattern's way.
#[inline(always)]
pub fn refuse_name_from_domain(
    hook: u32,
    previous: i32,
    dir: *mut c_void,
    dentry: *const c_void,
    on_the_way: bool,
) -> i32 {
    let domain = match restricted_actor(previous) {
        Ok(domain) => domain,
        Err(verdict) => return verdict,
    };
    let refused = match name_in(dir, dentry) {
        None => true,
        Some(found) => found.protect || (on_the_way && found.on_pattern()),
    };
    if refused {
        return refuse_inode(hook, 0, domain, dir);
    }
    0
}

/// A regular file (open with O_CREAT, creat, mknod S_IFREG).
#[lsm(hook = "inode_create")]
pub fn inode_create(ctx: LsmContext) -> i32 {
    refuse_name_from_domain(
        hook::INODE_CREATE,
        verdict!(ctx, InodeCreateVerdict),
        hook_arg!(ctx, InodeCreateDir) as *mut c_void,
        hook_arg!(ctx, InodeCreateDentry) as *const c_void,
        false,
    )
}

/// A directory may be made on a pattern's way (a task's own `/tmp/<x>` when `/tmp/*/secret`
/// is protected): it is guarded from its creation, so nothing protected can appear in it
/// unmarked.
#[lsm(hook = "inode_mkdir")]
pub fn inode_mkdir(ctx: LsmContext) -> i32 {
    refuse_name_from_domain(
        hook::INODE_MKDIR,
        verdict!(ctx, InodeMkdirVerdict),
        hook_arg!(ctx, InodeMkdirDir) as *mut c_void,
        hook_arg!(ctx, InodeMkdirDentry) as *const c_void,
        false,
    )
}

/// Device files, FIFOs and Unix sockets bound to a path.
#[lsm(hook = "inode_mknod")]
pub fn inode_mknod(ctx: LsmContext) -> i32 {
    refuse_name_from_domain(
        hook::INODE_MKNOD,
        verdict!(ctx, InodeMknodVerdict),
        hook_arg!(ctx, InodeMknodDir) as *mut c_void,
        hook_arg!(ctx, InodeMknodDentry) as *const c_void,
        false,
    )
}

/// A symlink on a pattern's way would send the administrator's files where the task reads.
#[lsm(hook = "inode_symlink")]
pub fn inode_symlink(ctx: LsmContext) -> i32 {
    refuse_name_from_domain(
        hook::INODE_SYMLINK,
        verdict!(ctx, InodeSymlinkVerdict),
        hook_arg!(ctx, InodeSymlinkDir) as *mut c_void,
        hook_arg!(ctx, InodeSymlinkDentry) as *const c_void,
        true,
    )
}

/// A symlink at a protected name is protected like any inode there, and following it is a way
/// to reach what it names: an administrator's new symlink at a protected name may point to a
/// file no scan has marked yet. Reading the link itself (`readlink`) is `inode_readlink`'s;
/// the name it holds is not the protected contents.
#[lsm(hook = "inode_follow_link")]
pub fn inode_follow_link(ctx: LsmContext) -> i32 {
    let domain = match restricted_actor(verdict!(ctx, InodeFollowLinkVerdict)) {
        Ok(domain) => domain,
        Err(verdict) => return verdict,
    };
    let link = hook_arg!(ctx, InodeFollowLinkInode) as *mut c_void;
    if is_protected(link) {
        return refuse_inode(hook::INODE_FOLLOW_LINK, 0, domain, link);
    }
    0
}
