//! POSIX shared memory and POSIX message queues belong to the domain of the task that created
//! them, or to no domain when their creator was in none.
//!
//! `shm_open` and `sem_open` make files in the tmpfs mounted at `/dev/shm`; `mq_open` makes
//! inodes in the IPC namespace's mqueue filesystem. Once such a file is open, reads, writes,
//! `mmap`, `mq_timedsend` and `mq_timedreceive` pass no hook that names it, so every check is
//! on the way to it: opening (`inode_permission`), and removing, renaming, linking or changing
//! it (the inode hooks in files.rs).
//!
//! The creator's domain goes into inode storage when the inode is allocated
//! (`inode_alloc_security`, once per in-memory inode, in the creator's context; tmpfs and
//! mqueue inodes live only in memory, so that is once per file). Not
//! `inode_init_security`: from 6.12 the kernel calls it only when an LSM that sets xattrs
//! (SELinux, Smack, EVM) is active. Directories are not judged: `/dev/shm` itself belongs to
//! no domain, and every domain must be able to create its files there.

use core::ffi::c_void;

use aya_ebpf::{macros::lsm, programs::LsmContext};
use bulkhead_common::{DomainId, NO_DOMAIN, UNDECIDABLE};

use crate::{
    EAGAIN, ENOMEM,
    agent_set::agent_set,
    audit::refuse_fs_object,
    hook_args::{hook_arg, verdict},
    kernel_layout::{inode_fs, inode_mode, inode_rdev},
    local_storage::{INODE_STORAGE, LocalStorage, inode_domain, set_inode_domain},
    may_reach,
    task_domain::current_domain,
};

const MQUEUE_MAGIC: u64 = 0x1980_0202;
const TMPFS_MAGIC: u64 = 0x0102_1994;
const DEVPTS_SUPER_MAGIC: u64 = 0x1cd1;
const S_IFMT: u16 = 0o170_000;
const S_IFDIR: u16 = 0o040_000;

// The kernel `dev_t` of the tmpfs mounted at /dev/shm, set by the agent; 0 (never a tmpfs
// device) until set, when only message queues are judged.
agent_set!(SHM_DEV = 0);

#[unsafe(link_section = ".maps")]
#[unsafe(export_name = "SHM_DOMAIN")]
static SHM_DOMAIN: LocalStorage<DomainId, INODE_STORAGE> = LocalStorage::new();

/// Is `inode` a POSIX shared-memory file or message queue (or a directory holding them), or a
/// pseudo-terminal slave?
#[inline(always)]
fn is_shared(inode: *mut c_void) -> bool {
    let (magic, dev) = inode_fs(inode);
    magic == MQUEUE_MAGIC
        || (magic == TMPFS_MAGIC && u64::from(dev) == SHM_DEV.get())
        || (magic == DEVPTS_SUPER_MAGIC && is_pty_slave(inode))
}

/// A devpts inode other than `ptmx`: the slave end of a terminal (devpts makes `ptmx` and its
/// root at mount time and every later inode for a new terminal). Its device number is set only
/// after `inode_alloc_security`, which therefore sees 0.
#[inline(always)]
fn is_pty_slave(inode: *mut c_void) -> bool {
    let rdev = inode_rdev(inode);
    rdev == 0 || (136..=143).contains(&(rdev >> 20))
}

/// A new inode made by a task in a domain, on one of those filesystems, is that domain's. One
/// whose domain cannot be recorded is not created: it would pass for one made outside.
#[lsm(hook = "inode_alloc_security")]
pub fn inode_alloc_security(ctx: LsmContext) -> i32 {
    let previous = verdict!(ctx, InodeAllocSecurityVerdict);
    if previous != 0 {
        return previous;
    }
    let domain = current_domain();
    if domain == NO_DOMAIN {
        return 0;
    }
    let inode = hook_arg!(ctx, InodeAllocSecurityInode) as *mut c_void;
    if !is_shared(inode) {
        return 0;
    }
    if domain == UNDECIDABLE {
        return -EAGAIN;
    }
    // The inode's security blob is allocated before this hook runs.
    if !set_inode_domain(&SHM_DOMAIN, inode, domain) {
        return -ENOMEM;
    }
    0
}

/// The verdict for a task of domain `actor` doing `access` through `hook` on `inode`, as far
/// as this module is concerned: `None` when it has nothing against it.
#[inline(always)]
pub fn check_shared(hook: u32, access: u32, actor: DomainId, inode: *mut c_void) -> Option<i32> {
    if inode.is_null() || !is_shared(inode) || inode_mode(inode) & S_IFMT == S_IFDIR {
        return None;
    }
    let owner = inode_domain(&SHM_DOMAIN, inode);
    if may_reach(actor, owner) {
        return None;
    }
    let (magic, _) = inode_fs(inode);
    Some(refuse_fs_object(hook, access, actor, inode, magic, owner))
}
