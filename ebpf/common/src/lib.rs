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

/// The programs' answer when a task has a label they could not read (on Linux 6.1 the
/// task-storage lookup fails while another task-storage operation holds the CPU's busy
/// counter). Never a task's label and never a real id (ids come from the wall clock; it may be
/// recorded as the setter of a file owner, which then refuses), never equal to anything for
/// `may_reach`: a task whose domain is undecidable is restricted like a task in a domain of
/// its own.
pub const UNDECIDABLE: DomainId = u64::MAX;

/// Name of the BPF inode-storage map marking protected files and directories.
pub const PROTECTED_INODE_MAP: &str = "PROTECTED_INODE";

/// Value stored for a protected inode. Any entry present means protected; the value leaves room
/// for finer kinds of protection later.
pub type InodeProtection = u64;

/// The one protection kind so far: no process in a domain may reach the inode at all.
pub const PROTECTED: InodeProtection = 1;

/// Name of the hash map recording which domain set the owner (F_SETOWN and friends) of a file,
/// keyed by a per-file address. See ebpf/programs/src/file_owner.rs.
pub const FILE_OWNER_MAP: &str = "FILE_OWNER";
/// Name of the hash map from a System V IPC object (its `kern_ipc_perm` address) to the domain
/// of the task that created it; objects made outside every domain have no entry.
pub const IPC_OWNER_MAP: &str = "IPC_OWNER";
/// IPC objects created inside domains that can exist at once on the node (the kernel's own
/// defaults allow 4096 segments, 32000 queues and 32000 semaphore sets per IPC namespace). A
/// creation beyond it is refused with ENOSPC.
pub const IPC_OWNER_ENTRIES: u32 = 32768;

/// Name of the LRU hash map from a key or keyring (its `struct key` address) to the domain of
/// the task that created it; keys made outside every domain have no entry.
pub const KEY_OWNER_MAP: &str = "KEY_OWNER";
/// Keys and keyrings whose creator's domain is kept. Kernels from 6.12 have no hook when a key
/// is freed, so records of freed keys linger until evicted, least recently used first; a live
/// key whose record was evicted counts as made outside every domain (refused to all domains).
pub const KEY_OWNER_ENTRIES: u32 = 65536;

/// Name of the one-entry array counting FILE_OWNER's records (never fewer than there are), so
/// that freeing a file, which every process on the node does, skips the hash delete while no
/// task in a domain has set a file owner.
pub const FILE_OWNER_COUNT_MAP: &str = "FILE_OWNER_COUNT";

/// Upper bound on files whose owner was set from inside a domain, across all domains.
pub const FILE_OWNER_MAP_ENTRIES: u32 = 16384;

/// Placeholder load offset the programs use for `dentry->d_inode`. The agent replaces it in the
/// object, before loading, with the offset the running kernel's BTF gives; an unpatched load is
/// out of bounds of `struct dentry` and the verifier rejects the program.
pub const DENTRY_D_INODE_PLACEHOLDER: i16 = 0x7ead;

/// Placeholder load offset for `task_struct->bpf_storage`, patched like the one above.
pub const TASK_BPF_STORAGE_PLACEHOLDER: i16 = 0x7eb5;
/// Placeholder load offset for `socket->sk` (the `struct sock` of a socket), patched likewise.
pub const SOCKET_SK_PLACEHOLDER: i16 = 0x7ebd;
/// Placeholder load offset for `unix_sock->path.dentry` (the name a Unix socket is bound to in
/// the filesystem; null for an abstract or unnamed socket), patched likewise.
pub const UNIX_SOCK_PATH_DENTRY_PLACEHOLDER: i16 = 0x7ec5;
/// Placeholder load offset for `unix_sock->peer` (the socket a Unix socket is connected to).
pub const UNIX_SOCK_PEER_PLACEHOLDER: i16 = 0x7ecd;

/// Placeholder load offset for `inode->i_sb`, patched like the one above.
pub const INODE_SB_PLACEHOLDER: i16 = 0x7ed5;
/// Placeholder load offset for `super_block->s_magic` (an `unsigned long`), patched likewise.
pub const SB_MAGIC_PLACEHOLDER: i16 = 0x7edd;

/// Placeholder load offset for `path->dentry`, patched like the one above.
pub const PATH_DENTRY_PLACEHOLDER: i16 = 0x7ee5;

/// Placeholder load offsets for `inode->i_mode` (two bytes) and `super_block->s_dev` (four),
/// patched like the ones above.
pub const INODE_MODE_PLACEHOLDER: i16 = 0x7eed;
pub const SB_DEV_PLACEHOLDER: i16 = 0x7ef5;
/// Placeholder load offset for `inode->i_rdev` (a four-byte `dev_t`), patched likewise.
pub const INODE_RDEV_PLACEHOLDER: i16 = 0x7efd;
/// Placeholder load offset for `file->f_inode`, patched likewise.
pub const FILE_INODE_PLACEHOLDER: i16 = 0x7f05;
/// Placeholder load offset for `dentry->d_parent`, patched likewise.
pub const DENTRY_D_PARENT_PLACEHOLDER: i16 = 0x7f0d;
/// Placeholder load offset for `dentry->d_name.name` (the name's bytes, NUL-terminated),
/// patched likewise.
pub const DENTRY_D_NAME_PLACEHOLDER: i16 = 0x7f15;
/// Placeholder load offset for `file->f_mode` (a four-byte `fmode_t`), patched likewise.
pub const FILE_F_MODE_PLACEHOLDER: i16 = 0x7f1d;

/// Name of the global saying whether descriptors of protected files that a task in a domain
/// holds (inherited, received, or opened before the file was marked) may still be read,
/// written and mapped (1, `[protect] handed_over_descriptors = "allow"`) or are refused (0, the
/// default and the value until set).
pub const HANDED_OVER_DESCRIPTORS_GLOBAL: &str = "HANDED_OVER_DESCRIPTORS";

/// Name of the hash map of character devices (kernel `dev_t`, or a major with every minor as
/// [`device_any_minor`]) that tasks in domains may open; the agent fills it from
/// `[devices] allow` and the built-in harmless set before any program is attached.
pub const DEVICE_ALLOWED_MAP: &str = "DEVICE_ALLOWED";
/// Entries of DEVICE_ALLOWED.
pub const DEVICE_ALLOWED_ENTRIES: u32 = 256;

/// The kernel's `dev_t` of `major:minor` (12-bit major, 20-bit minor).
pub const fn kernel_dev(major: u32, minor: u32) -> u32 {
    (major << 20) | (minor & 0xf_ffff)
}

/// The DEVICE_ALLOWED key that stands for every minor of `major` (a minor no device has).
pub const fn device_any_minor(major: u32) -> u32 {
    kernel_dev(major, 0xf_ffff)
}

/// Name of the BPF inode-storage map holding, for each file a task in a domain creates in
/// POSIX shared memory (`/dev/shm`) or a POSIX message queue filesystem, that domain.
pub const SHM_DOMAIN_MAP: &str = "SHM_DOMAIN";
/// Name of the global holding the kernel `dev_t` of the tmpfs mounted at `/dev/shm` (0: none).
pub const SHM_DEV_GLOBAL: &str = "SHM_DEV";

/// Name of the BPF inode-storage map holding, for each `/proc/<pid>` inode of a task in a
/// domain, that task's domain; inodes of tasks outside every domain have no entry.
pub const PROC_INODE_DOMAIN_MAP: &str = "PROC_DOMAIN";

/// Name of the BPF socket-storage map holding the domain of the task that made each Unix
/// socket; a socket made outside every domain has no entry.
pub const SOCKET_DOMAIN_MAP: &str = "SOCKET_DOMAIN";
/// Name of the BPF inode-storage map marking the socket files (pathname Unix sockets) that
/// tasks in domains may connect and send to although they belong to no domain: the agent's own
/// API socket and the node's configured `sockets.reachable` paths.
pub const REACHABLE_SOCKET_MAP: &str = "UNIX_REACHABLE";
/// Value stored for a reachable socket file.
pub const REACHABLE: u64 = 1;

/// Names of the globals locating, in a task's local-storage header, the elements and the map
/// each belongs to (struct bpf_local_storage, bpf_local_storage_elem), set by the agent from
/// the running kernel's BTF. They are only read when a task has storage but the lookup of its
/// label returned nothing, to tell "no label" from "the lookup failed".
pub const STORAGE_LIST_OFFSET_GLOBAL: &str = "STORAGE_LIST_OFFSET";
pub const SELEM_SNODE_OFFSET_GLOBAL: &str = "SELEM_SNODE_OFFSET";
pub const SELEM_SMAP_OFFSET_GLOBAL: &str = "SELEM_SMAP_OFFSET";
/// Name of the global saying whether this kernel's task-storage lookup in LSM programs can
/// fail while the element exists (1: Linux 6.1's trylock; 0: 6.2+). Set by the agent from BTF;
/// 1 until set, so an unset object searches rather than trusting a failed lookup.
pub const LOOKUP_MAY_FAIL_GLOBAL: &str = "LOOKUP_MAY_FAIL";

/// Names of the globals saying how `file_send_sigiotask` finds the file of the owner struct it
/// is given, set by the agent from the running kernel's BTF: the mode, one of the two values
/// below (0, unset, finds no file and refuses the signal), and a field offset.
pub const FOWN_FILE_MODE_GLOBAL: &str = "FOWN_FILE_MODE";
pub const FOWN_FILE_OFFSET_GLOBAL: &str = "FOWN_FILE_OFFSET";
/// Up to Linux 6.11: `struct file` embeds its `fown_struct` at `f_owner`; file = fown - offset.
pub const FOWN_FILE_EMBEDDED: u64 = 1;
/// Linux 6.12+: `file->f_owner` points to a separate `fown_struct` with a `file` back pointer.
pub const FOWN_FILE_BACK_POINTER: u64 = 2;

/// Name of the global holding `offsetof(struct user_namespace, level)`, set by the agent from
/// the running kernel's BTF: the capability hook tells the initial user namespace (level 0)
/// from the ones a task makes itself.
pub const USER_NS_LEVEL_OFFSET_GLOBAL: &str = "USER_NS_LEVEL_OFFSET";

pub mod audit;
pub mod hook_abi;
pub mod lifecycle;
pub mod names;

/// The LSM hooks the agent attaches, as (program name in the object, kernel hook name).
///
/// `task_free` comes first, so every task `task_alloc` counts is sure to be uncounted. Then
/// `task_alloc`: the agent attaches it before any hook that reads a domain, so there is never
/// a moment when a sealed task could fork an unlabelled child. `inode_init_security` and
/// `d_instantiate` come before the file checks so files created in a protected directory or
/// at a protected name are labelled from the moment checks start.
pub const LSM_PROGRAMS: &[(&str, &str)] = &[
    ("count_freed_task", "task_free"),
    ("task_alloc", "task_alloc"),
    ("inode_init_security", "inode_init_security"),
    ("d_instantiate", "d_instantiate"),
    ("ptrace_access_check", "ptrace_access_check"),
    ("ptrace_traceme", "ptrace_traceme"),
    ("task_kill", "task_kill"),
    ("task_setnice", "task_setnice"),
    ("task_setioprio", "task_setioprio"),
    ("task_getioprio", "task_getioprio"),
    ("task_setrlimit", "task_setrlimit"),
    ("task_setscheduler", "task_setscheduler"),
    ("task_getscheduler", "task_getscheduler"),
    ("task_movememory", "task_movememory"),
    ("task_getpgid", "task_getpgid"),
    ("task_getsid", "task_getsid"),
    ("shm_free_security", "shm_free_security"),
    ("msg_queue_free_security", "msg_queue_free_security"),
    ("sem_free_security", "sem_free_security"),
    ("shm_alloc_security", "shm_alloc_security"),
    ("msg_queue_alloc_security", "msg_queue_alloc_security"),
    ("sem_alloc_security", "sem_alloc_security"),
    ("ipc_permission", "ipc_permission"),
    ("shm_shmctl", "shm_shmctl"),
    ("msg_queue_msgctl", "msg_queue_msgctl"),
    ("sem_semctl", "sem_semctl"),
    ("socket_post_create", "socket_post_create"),
    ("unix_stream_connect", "unix_stream_connect"),
    ("unix_may_send", "unix_may_send"),
    ("key_alloc", "key_alloc"),
    ("key_permission", "key_permission"),
    ("cred_alloc_blank", "cred_alloc_blank"),
    ("file_fcntl", "file_fcntl"),
    ("file_ioctl", "file_ioctl"),
    ("file_ioctl_compat", "file_ioctl_compat"),
    ("file_set_fowner", "file_set_fowner"),
    ("file_send_sigiotask", "file_send_sigiotask"),
    ("file_free_security", "file_free_security"),
    ("task_to_inode", "task_to_inode"),
    ("inode_alloc_security", "inode_alloc_security"),
    ("path_notify", "path_notify"),
    ("inode_permission", "inode_permission"),
    ("file_open", "file_open"),
    ("file_permission", "file_permission"),
    ("mmap_file", "mmap_file"),
    ("file_receive", "file_receive"),
    ("inode_create", "inode_create"),
    ("inode_mkdir", "inode_mkdir"),
    ("inode_mknod", "inode_mknod"),
    ("inode_symlink", "inode_symlink"),
    ("inode_follow_link", "inode_follow_link"),
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
    ("capable", "capable"),
];
