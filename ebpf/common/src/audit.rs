//! The audit record every denial produces, as the programs write it into the ring buffer and
//! the agent reads it back. One fixed-size `#[repr(C)]` struct: no parsing, no lengths.

/// Name of the ring buffer carrying [`AuditEvent`]s; pinned, so events written while no agent
/// runs wait for the next one.
pub const AUDIT_EVENTS_MAP: &str = "AUDIT_EVENTS";
/// Size of the ring buffer in bytes (a power of two, a multiple of the page size).
pub const AUDIT_EVENTS_BYTES: u32 = 256 * 1024;
/// Name of the one-entry array counting events lost because the ring buffer was full.
pub const AUDIT_LOST_MAP: &str = "AUDIT_LOST";
/// Name of the one-entry array holding the node's enforcement mode (see [`MODE_AUDIT`]).
pub const SETTINGS_MAP: &str = "SETTINGS";

/// `SETTINGS[0]` value: deny, and record the denial.
pub const MODE_ENFORCE: u64 = 0;
/// `SETTINGS[0]` value: record what would be denied, and allow it.
pub const MODE_AUDIT: u64 = 1;

/// What the hook decided.
pub const DECISION_DENIED: u32 = 1;
/// Audit mode: the hook would have denied, and allowed.
pub const DECISION_AUDITED: u32 = 2;

/// Which check produced the event. The agent names them with [`hook_name`].
pub mod hook {
    pub const PTRACE_ACCESS_CHECK: u32 = 1;
    pub const PTRACE_TRACEME: u32 = 2;
    pub const TASK_KILL: u32 = 3;
    pub const FILE_SEND_SIGIOTASK: u32 = 4;
    pub const INODE_PERMISSION: u32 = 5;
    pub const INODE_UNLINK: u32 = 6;
    pub const INODE_RMDIR: u32 = 7;
    pub const INODE_RENAME: u32 = 8;
    pub const INODE_LINK: u32 = 9;
    pub const INODE_SETATTR: u32 = 10;
    pub const INODE_SETXATTR: u32 = 11;
    pub const INODE_REMOVEXATTR: u32 = 12;
    pub const BPF: u32 = 13;
    pub const LOCKED_DOWN: u32 = 14;
    pub const KERNEL_LOAD_DATA: u32 = 15;
    pub const KERNEL_READ_FILE: u32 = 16;
    pub const SB_MOUNT: u32 = 17;
    pub const SB_UMOUNT: u32 = 18;
    pub const MOVE_MOUNT: u32 = 19;
    pub const SB_PIVOTROOT: u32 = 20;
    pub const CAPABLE: u32 = 21;
    pub const TASK_SETNICE: u32 = 22;
    pub const TASK_SETIOPRIO: u32 = 23;
    pub const TASK_GETIOPRIO: u32 = 24;
    pub const TASK_SETRLIMIT: u32 = 25;
    pub const TASK_SETSCHEDULER: u32 = 26;
    pub const TASK_GETSCHEDULER: u32 = 27;
    pub const TASK_MOVEMEMORY: u32 = 28;
    pub const TASK_GETPGID: u32 = 29;
    pub const TASK_GETSID: u32 = 30;
    pub const IPC_PERMISSION: u32 = 31;
    pub const SHM_SHMCTL: u32 = 32;
    pub const MSG_QUEUE_MSGCTL: u32 = 33;
    pub const SEM_SEMCTL: u32 = 34;
    pub const FILE_IOCTL: u32 = 35;
    pub const FILE_IOCTL_COMPAT: u32 = 36;
    pub const UNIX_STREAM_CONNECT: u32 = 37;
    pub const UNIX_MAY_SEND: u32 = 38;
    pub const KEY_PERMISSION: u32 = 39;
    pub const CRED_ALLOC_BLANK: u32 = 40;
    pub const PATH_NOTIFY: u32 = 41;
    pub const FILE_OPEN: u32 = 42;
    pub const FILE_PERMISSION: u32 = 43;
    pub const MMAP_FILE: u32 = 44;
    pub const FILE_RECEIVE: u32 = 45;
    pub const FILE_FCNTL: u32 = 46;
    pub const INODE_CREATE: u32 = 47;
    pub const INODE_MKDIR: u32 = 48;
    pub const INODE_MKNOD: u32 = 49;
    pub const INODE_SYMLINK: u32 = 50;
    pub const INODE_FOLLOW_LINK: u32 = 51;
}

/// The LSM hook name for a [`hook`] id.
pub fn hook_name(id: u32) -> &'static str {
    match id {
        hook::PTRACE_ACCESS_CHECK => "ptrace_access_check",
        hook::PTRACE_TRACEME => "ptrace_traceme",
        hook::TASK_KILL => "task_kill",
        hook::FILE_SEND_SIGIOTASK => "file_send_sigiotask",
        hook::INODE_PERMISSION => "inode_permission",
        hook::INODE_UNLINK => "inode_unlink",
        hook::INODE_RMDIR => "inode_rmdir",
        hook::INODE_RENAME => "inode_rename",
        hook::INODE_LINK => "inode_link",
        hook::INODE_SETATTR => "inode_setattr",
        hook::INODE_SETXATTR => "inode_setxattr",
        hook::INODE_REMOVEXATTR => "inode_removexattr",
        hook::BPF => "bpf",
        hook::LOCKED_DOWN => "locked_down",
        hook::KERNEL_LOAD_DATA => "kernel_load_data",
        hook::KERNEL_READ_FILE => "kernel_read_file",
        hook::SB_MOUNT => "sb_mount",
        hook::SB_UMOUNT => "sb_umount",
        hook::MOVE_MOUNT => "move_mount",
        hook::SB_PIVOTROOT => "sb_pivotroot",
        hook::CAPABLE => "capable",
        hook::TASK_SETNICE => "task_setnice",
        hook::TASK_SETIOPRIO => "task_setioprio",
        hook::TASK_GETIOPRIO => "task_getioprio",
        hook::TASK_SETRLIMIT => "task_setrlimit",
        hook::TASK_SETSCHEDULER => "task_setscheduler",
        hook::TASK_GETSCHEDULER => "task_getscheduler",
        hook::TASK_MOVEMEMORY => "task_movememory",
        hook::TASK_GETPGID => "task_getpgid",
        hook::TASK_GETSID => "task_getsid",
        hook::IPC_PERMISSION => "ipc_permission",
        hook::SHM_SHMCTL => "shm_shmctl",
        hook::MSG_QUEUE_MSGCTL => "msg_queue_msgctl",
        hook::SEM_SEMCTL => "sem_semctl",
        hook::FILE_IOCTL => "file_ioctl",
        hook::FILE_IOCTL_COMPAT => "file_ioctl_compat",
        hook::UNIX_STREAM_CONNECT => "unix_stream_connect",
        hook::UNIX_MAY_SEND => "unix_may_send",
        hook::KEY_PERMISSION => "key_permission",
        hook::CRED_ALLOC_BLANK => "cred_alloc_blank",
        hook::PATH_NOTIFY => "path_notify",
        hook::FILE_OPEN => "file_open",
        hook::FILE_PERMISSION => "file_permission",
        hook::MMAP_FILE => "mmap_file",
        hook::FILE_RECEIVE => "file_receive",
        hook::FILE_FCNTL => "file_fcntl",
        hook::INODE_CREATE => "inode_create",
        hook::INODE_MKDIR => "inode_mkdir",
        hook::INODE_MKNOD => "inode_mknod",
        hook::INODE_SYMLINK => "inode_symlink",
        hook::INODE_FOLLOW_LINK => "inode_follow_link",
        _ => "unknown",
    }
}

/// What the target of an event is.
pub const TARGET_NONE: u32 = 0;
pub const TARGET_TASK: u32 = 1;
pub const TARGET_INODE: u32 = 2;
/// A System V IPC object: `target_domain` is its creator's, `ipc_id` its id and `inode` its key.
pub const TARGET_IPC: u32 = 3;
/// A Unix socket: `target_domain` is its maker's; for a socket bound to a name in the
/// filesystem `inode` and `dev` are its socket file's, and `target_comm` holds the first bytes
/// of its address (an abstract name starts with a NUL byte).
pub const TARGET_SOCKET: u32 = 4;
/// A file judged by its filesystem and owner: one of procfs, cgroupfs, sysfs and the other
/// kernel filesystems, or a POSIX shared-memory file or message queue. `inode` and `dev` as for
/// TARGET_INODE, `ipc_id` the filesystem's magic number, `target_domain` the domain of the task
/// a `/proc/<pid>` file belongs to, or of the creator of a shared-memory file or queue.
pub const TARGET_FS_OBJECT: u32 = 5;
/// A key or keyring: `ipc_id` its serial number (as `keyctl` shows it), `target_domain` its
/// creator's domain.
pub const TARGET_KEY: u32 = 6;
/// A block or character device file: `ipc_id` its device number (kernel `dev_t`), `inode` and
/// `dev` the device file's (as for TARGET_INODE), `access` the permission mask asked;
/// `target_domain` is unused.
pub const TARGET_DEVICE: u32 = 7;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    /// CLOCK_BOOTTIME at the event, in nanoseconds.
    pub boot_ns: u64,
    pub actor_domain: u64,
    /// TARGET_TASK: the target's domain (0 = none).
    pub target_domain: u64,
    /// TARGET_INODE: inode number and the kernel's `dev_t` of its filesystem. TARGET_IPC: the
    /// object's key in `inode` (as a u32).
    pub inode: u64,
    pub dev: u64,
    pub hook: u32,
    pub decision: u32,
    pub target_kind: u32,
    /// Hook-specific: the permission mask, the signal, the bpf command, the lockdown reason.
    pub access: u32,
    pub actor_pid: u32,
    pub actor_tgid: u32,
    pub actor_uid: u32,
    pub target_pid: u32,
    pub target_tgid: u32,
    /// TARGET_IPC: the object's id (as `ipcs` shows it).
    pub ipc_id: u32,
    pub actor_comm: [u8; 16],
    pub target_comm: [u8; 16],
}

impl AuditEvent {
    pub const fn zeroed() -> Self {
        Self {
            boot_ns: 0,
            actor_domain: 0,
            target_domain: 0,
            inode: 0,
            dev: 0,
            hook: 0,
            decision: 0,
            target_kind: TARGET_NONE,
            access: 0,
            actor_pid: 0,
            actor_tgid: 0,
            actor_uid: 0,
            target_pid: 0,
            target_tgid: 0,
            ipc_id: 0,
            actor_comm: [0; 16],
            target_comm: [0; 16],
        }
    }
}

// SAFETY: plain old data, `#[repr(C)]`, no padding holes (sizes add up to a multiple of 8).
#[cfg(feature = "user")]
unsafe impl aya::Pod for AuditEvent {}
