//! Names and value layouts that the eBPF programs and the agent must agree on.
//!
//! Anything that crosses the kernel/userspace boundary is defined here once, so the two sides
//! cannot drift apart silently.
#![no_std]

/// Name of the BPF task-storage map holding each task's domain id.
///
/// Kernel map names are limited to 15 characters.
pub const TASK_DOMAIN_MAP: &str = "TASK_DOMAIN";

/// A domain id as stored in task storage. Zero is never stored: a task without an entry has no
/// domain, so "no domain" cannot be forged by writing a value.
pub type DomainId = u64;

/// The value TASK_DOMAIN holds for each task in a domain: which domain, and where the task is
/// in its life, so that the domain's live tasks are counted exactly once each (see
/// [`lifecycle`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskLabel {
    pub domain: DomainId,
    /// One of the `lifecycle::LIFE_*` values.
    pub life: u64,
}

// SAFETY: plain old data, `#[repr(C)]`, two u64 fields and no padding.
#[cfg(feature = "user")]
unsafe impl aya::Pod for TaskLabel {}

/// The value meaning "outside every domain"; never stored in the map.
pub const NO_DOMAIN: DomainId = 0;

/// Name of the BPF inode-storage map marking protected files and directories.
pub const PROTECTED_INODE_MAP: &str = "PROTECTED_INODE";

/// Value stored for a protected inode. Any entry present means protected; the value leaves room
/// for finer kinds of protection later.
pub type InodeProtection = u64;

/// The one protection kind so far: no process in a domain may reach the inode at all.
pub const PROTECTED: InodeProtection = 1;

/// Name of the hash map recording which domain set the owner (F_SETOWN and friends) of a file,
/// keyed by the address of the file's `fown_struct`. See ebpf/programs/src/file_owner.rs.
pub const FILE_OWNER_MAP: &str = "FILE_OWNER";

/// Upper bound on files whose owner was set from inside a domain, across all domains.
pub const FILE_OWNER_MAP_ENTRIES: u32 = 16384;

/// Placeholder load offset the programs use for `dentry->d_inode`. The agent replaces it in the
/// object, before loading, with the offset the running kernel's BTF gives; an unpatched load is
/// out of bounds of `struct dentry` and the verifier rejects the program.
pub const DENTRY_D_INODE_PLACEHOLDER: i16 = 0x7ead;

/// Name of the global holding `offsetof(struct file, f_owner)`, set by the agent from the
/// running kernel's BTF when it loads the object. Zero means "not set"; the programs then
/// refuse to let a task in a domain set a file owner at all.
pub const FILE_F_OWNER_OFFSET_GLOBAL: &str = "FILE_F_OWNER_OFFSET";

/// Name of the global saying whether `file->f_owner` is a pointer (Linux 6.12 and later: 1)
/// or an embedded struct (0).
pub const FILE_F_OWNER_IS_POINTER_GLOBAL: &str = "FILE_F_OWNER_IS_PTR";

pub mod audit;
pub mod lifecycle;

/// The LSM hooks the agent attaches, as (program name in the object, kernel hook name).
///
/// `task_alloc` comes first: the agent attaches it before any hook that reads a domain, so there is
/// never a moment when a sealed task could fork an unlabelled child. `inode_init_security`
/// comes before the file checks so files created in a protected directory are labelled from
/// the moment checks start.
pub const LSM_PROGRAMS: &[(&str, &str)] = &[
    ("task_alloc", "task_alloc"),
    ("inode_init_security", "inode_init_security"),
    ("ptrace_access_check", "ptrace_access_check"),
    ("ptrace_traceme", "ptrace_traceme"),
    ("task_kill", "task_kill"),
    ("file_fcntl", "file_fcntl"),
    ("file_ioctl", "file_ioctl"),
    ("file_set_fowner", "file_set_fowner"),
    ("file_send_sigiotask", "file_send_sigiotask"),
    ("file_free_security", "file_free_security"),
    ("inode_permission", "inode_permission"),
    ("inode_unlink", "inode_unlink"),
    ("inode_rmdir", "inode_rmdir"),
    ("inode_rename", "inode_rename"),
    ("inode_link", "inode_link"),
    ("inode_setattr", "inode_setattr"),
    ("inode_setxattr", "inode_setxattr"),
    ("inode_removexattr", "inode_removexattr"),
    ("bpf", "bpf"),
    ("locked_down", "locked_down"),
    ("kernel_load_data", "kernel_load_data"),
    ("kernel_read_file", "kernel_read_file"),
    ("sb_mount", "sb_mount"),
    ("sb_umount", "sb_umount"),
    ("move_mount", "move_mount"),
    ("sb_pivotroot", "sb_pivotroot"),
];
