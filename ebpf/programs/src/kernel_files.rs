//! Writes to files that act on processes or on the kernel rather than hold data.
//!
//! - `/proc/<pid>/...` files belong to the domain of their task. Reading them is mostly
//!   guarded by `ptrace_may_access` (ptrace_access_check), but not all of it: `cmdline`,
//!   `status`, `stat`, `comm`, `cgroup`, `mountinfo`, `limits`, `sched` and the rest are
//!   world-readable, and many files act on the task through checks that never ask a task hook
//!   when written: `oom_score_adj` and `oom_adj` (which process the OOM killer takes),
//!   `coredump_filter`, `clear_refs`, `fail-nth`, `sched`, `autogroup`, `uid_map`/`gid_map`/
//!   `setgroups`, `timens_offsets`. The kernel tells every LSM which task a `/proc` inode
//!   belongs to (`task_to_inode`, when the inode is made and at every lookup that revalidates
//!   it, before the lookup's permission check), so the task's domain is copied into the inode's
//!   storage there. A task in a domain may reach only its own domain's `/proc/<pid>` trees:
//!   any other (of a task outside every domain or in another domain) is refused to it, for
//!   reading, writing and walking into alike, so it sees other processes only as the numbers in
//!   a listing of `/proc`. Procfs files of no task (`/proc/meminfo`, `/proc/sys`) stay readable,
//!   and none of them is writable (sysctls, `/proc/sysrq-trigger`).
//! - cgroup files (v1 and v2), sysfs, securityfs, tracefs, debugfs, configfs, pstore, efivarfs,
//!   the SELinux and Smack filesystems, bpffs, binfmt_misc, resctrl, fusectl and nfsd are the
//!   node's: writing `cgroup.procs` or
//!   `cgroup.threads` moves a process (no hook sees which), `cgroup.kill` sends SIGKILL without
//!   `task_kill`, `cgroup.freeze` and the controller files act on every process of a cgroup, and
//!   the rest configure the kernel. A task in a domain may not write any of them, nor create or
//!   remove entries in them.
//!
//! The check is in `inode_permission` (files.rs), which every open for writing, truncate, and
//! create or remove in a directory passes, and which cgroupfs calls again on the common ancestor
//! of a migration with the writer as `current`, even through a descriptor opened by someone
//! else.

use core::ffi::c_void;

use aya_ebpf::{bindings::task_struct, macros::lsm, programs::LsmContext};
use bulkhead_common::{DomainId, NO_DOMAIN};

use crate::{
    audit::refuse_fs_object,
    hook_args::hook_arg,
    kernel_layout::{inode_fs, proc_inode_has_pid},
    local_storage::{INODE_STORAGE, LocalStorage, inode_domain, set_inode_domain},
    may_reach,
    task_domain::domain_of,
};

const MAY_WRITE: u32 = 0x2;
const MAY_APPEND: u32 = 0x8;

const PROC_SUPER_MAGIC: u64 = 0x9fa0;
/// Filesystems whose files no task in a domain may write (include/uapi/linux/magic.h; configfs
/// defines its own).
const NODE_FILESYSTEMS: [u64; 16] = [
    0x0027_e0eb, // CGROUP_SUPER_MAGIC (v1)
    0x6367_7270, // CGROUP2_SUPER_MAGIC
    0x6265_6572, // SYSFS_MAGIC
    0x7363_6673, // SECURITYFS_MAGIC
    0x7472_6163, // TRACEFS_MAGIC
    0x6462_6720, // DEBUGFS_MAGIC
    0x6265_6570, // CONFIGFS_MAGIC
    0x6165_676c, // PSTOREFS_MAGIC
    0xde5e_81e4, // EFIVARFS_MAGIC
    0xf97c_ff8c, // SELINUX_MAGIC
    0x4341_5d53, // SMACK_MAGIC
    0xcafe_4a11, // BPF_FS_MAGIC
    // Handlers for every later exec on the node (an interpreter of the writer's choosing for
    // processes outside the domain, root's included), and `status` removes them all.
    0x4249_4e4d, // BINFMTFS_MAGIC
    0x0765_5821, // RDTGROUP_SUPER_MAGIC (resctrl: `tasks` moves any process)
    0x6573_5543, // FUSE_CTL_SUPER_MAGIC (aborts other processes' FUSE connections)
    0x6e66_7364, // NFSD_MAGIC (the NFS server's exports and threads)
];

#[unsafe(link_section = ".maps")]
#[unsafe(export_name = "PROC_DOMAIN")]
static PROC_DOMAIN: LocalStorage<DomainId, INODE_STORAGE> = LocalStorage::new();

/// Copies the task's domain into its `/proc` inode. Inodes of tasks outside every domain get
/// no storage: a task never leaves its domain, and a `/proc` inode belongs to one task for its
/// whole life, so an inode without an entry is one of a task outside every domain.
#[lsm(hook = "task_to_inode")]
pub fn task_to_inode(ctx: LsmContext) -> i32 {
    let task = hook_arg!(ctx, TaskToInodeTask) as *mut task_struct;
    let inode = hook_arg!(ctx, TaskToInodeInode) as *mut c_void;
    let domain = domain_of(task);
    if domain == NO_DOMAIN {
        return 0;
    }
    // Without storage the inode stays "outside every domain": refused to every domain, never
    // open to the wrong one. (An undecidable label is stored as such and refused likewise,
    // until a later lookup reads the real one.)
    let _ = set_inode_domain(&PROC_DOMAIN, inode, domain);
    0
}

/// The verdict for a task of domain `actor` asking `mask` on `inode`, as far as this module
/// is concerned: `None` when it has nothing against it.
#[inline(always)]
pub fn check(hook: u32, actor: DomainId, inode: *mut c_void, mask: u32) -> Option<i32> {
    let writes = mask & (MAY_WRITE | MAY_APPEND) != 0;
    let (magic, _) = inode_fs(inode);
    let owner = if magic == PROC_SUPER_MAGIC {
        match proc_owner(inode) {
            ProcOwner::Domain(owner) if may_reach(actor, owner) => return None,
            ProcOwner::NoTask if !writes => return None,
            ProcOwner::Domain(owner) => owner,
            ProcOwner::NoTask | ProcOwner::Unknown => NO_DOMAIN,
        }
    } else if writes && NODE_FILESYSTEMS.contains(&magic) {
        NO_DOMAIN
    } else {
        return None;
    };
    Some(refuse_fs_object(hook, mask, actor, inode, magic, owner))
}

/// Whose a procfs inode is.
enum ProcOwner {
    /// A file of a task's `/proc/<pid>` tree, of that task's domain (`NO_DOMAIN`: outside
    /// every domain).
    Domain(DomainId),
    /// A procfs file of no task: `/proc/meminfo`, `/proc/sys/...`, the `/proc/self` link.
    NoTask,
    /// Cannot be told (the layout was not set, or the read failed).
    Unknown,
}

/// Inodes of a task in a domain carry the domain (task_to_inode); the `pid` of the inode's
/// proc_inode tells the files of tasks outside every domain from the files of no task.
#[inline(always)]
fn proc_owner(inode: *mut c_void) -> ProcOwner {
    let owner = inode_domain(&PROC_DOMAIN, inode);
    if owner != NO_DOMAIN {
        return ProcOwner::Domain(owner);
    }
    match proc_inode_has_pid(inode) {
        Some(true) => ProcOwner::Domain(NO_DOMAIN),
        Some(false) => ProcOwner::NoTask,
        None => ProcOwner::Unknown,
    }
}
