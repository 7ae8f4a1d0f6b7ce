//! Which argument of which hook each program reads: the one place that knows.
//!
//! Hook prototypes change between kernels (an `idmap` put first, a parameter dropped, a new
//! `bool kernel` appended), and an LSM program finds the verdict of the LSMs before it in the
//! slot *after* the last parameter, so that slot moves too. A program compiled with fixed slots
//! would read the wrong value on another kernel, and when both slots hold integers the verifier
//! cannot notice. So the programs never name a slot. Each context read is a load at a
//! placeholder offset that encodes an [`ArgId`] ([`placeholder`]); before loading, the agent
//! reads each hook's prototype from the running kernel's BTF, finds the parameter every
//! [`ArgId`] describes by its type (and its name where types repeat), and rewrites each load to
//! that slot. A placeholder left unpatched lies far beyond any hook's arguments, so the
//! verifier refuses the program: a mistake stops the agent, it cannot read the wrong slot.

/// What a program needs from a hook's context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Param {
    /// A pointer to `struct <ty>`. `name` picks one when several parameters have that type.
    StructPtr {
        ty: &'static str,
        name: Option<&'static str>,
    },
    /// An integer, bool or enum parameter; `name` picks one when there are several.
    Integer { name: &'static str },
    /// The verdict of the LSMs that ran before (the slot after the last parameter); the hook
    /// must return `int`.
    Verdict,
}

/// Whether the hook is an LSM hook (`bpf_lsm_<hook>` in BTF) or a BTF tracepoint
/// (`btf_trace_<hook>`, whose first parameter is the tracepoint's private data, not a slot).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookKind {
    Lsm,
    Tracepoint,
}

/// One value read from one hook's context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HookArg {
    pub hook: &'static str,
    pub kind: HookKind,
    pub param: Param,
}

/// Placeholder load offsets are `ARG_PLACEHOLDER_BASE + 8 * id`: far beyond any hook's
/// arguments (at most 13 slots with the verdict, offset 96) and below i16::MAX, the largest
/// load offset.
pub const ARG_PLACEHOLDER_BASE: i16 = 0x6000;

/// Loads from here up are taken as placeholders (256 arguments' worth): one beyond the table
/// means the object and the agent disagree.
pub const ARG_PLACEHOLDER_END: i16 = ARG_PLACEHOLDER_BASE + 8 * 256;

/// The placeholder offset of argument `id`.
pub const fn placeholder(id: ArgId) -> i16 {
    ARG_PLACEHOLDER_BASE + 8 * id as i16
}

/// The argument a placeholder offset stands for, if it is one.
pub fn arg_of_placeholder(offset: i16) -> Option<usize> {
    let delta = offset.checked_sub(ARG_PLACEHOLDER_BASE)?;
    if delta < 0 || delta % 8 != 0 {
        return None;
    }
    let id = (delta / 8) as usize;
    (id < HOOK_ARGS.len()).then_some(id)
}

/// Arguments no program may load from its context: `key_ref_t` points to a struct the kernel
/// never defines, and before 7.0 the verifier refuses a context load of such a pointer. The
/// programs read these with `bpf_get_func_arg`, from the slot the agent writes into the named
/// global (unset, the slot is out of range and the read fails: the hook refuses).
pub const HELPER_READ_ARGS: &[(ArgId, &str)] =
    &[(ArgId::KeyPermissionKeyRef, "KEY_PERMISSION_KEY_REF_SLOT")];

const fn lsm(hook: &'static str, param: Param) -> HookArg {
    HookArg {
        hook,
        kind: HookKind::Lsm,
        param,
    }
}

const fn ptr(ty: &'static str) -> Param {
    Param::StructPtr { ty, name: None }
}

const fn named_ptr(ty: &'static str, name: &'static str) -> Param {
    Param::StructPtr {
        ty,
        name: Some(name),
    }
}

const fn int(name: &'static str) -> Param {
    Param::Integer { name }
}

const VERDICT: Param = Param::Verdict;

macro_rules! hook_args {
    ($($id:ident => $arg:expr,)*) => {
        /// Every context value a program reads; the discriminant is the index in [`HOOK_ARGS`].
        #[repr(u16)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum ArgId {
            $($id,)*
        }

        /// Indexed by [`ArgId`].
        pub const HOOK_ARGS: &[HookArg] = &[$($arg,)*];
    };
}

hook_args! {
    TaskFreeTask => lsm("task_free", ptr("task_struct")),
    TaskAllocTask => lsm("task_alloc", ptr("task_struct")),
    TaskAllocVerdict => lsm("task_alloc", VERDICT),
    PtraceAccessCheckChild => lsm("ptrace_access_check", ptr("task_struct")),
    PtraceAccessCheckMode => lsm("ptrace_access_check", int("mode")),
    PtraceAccessCheckVerdict => lsm("ptrace_access_check", VERDICT),
    TaskSetniceTarget => lsm("task_setnice", ptr("task_struct")),
    TaskSetniceNice => lsm("task_setnice", int("nice")),
    TaskSetniceVerdict => lsm("task_setnice", VERDICT),
    TaskSetioprioTarget => lsm("task_setioprio", ptr("task_struct")),
    TaskSetioprioIoprio => lsm("task_setioprio", int("ioprio")),
    TaskSetioprioVerdict => lsm("task_setioprio", VERDICT),
    TaskGetioprioTarget => lsm("task_getioprio", ptr("task_struct")),
    TaskGetioprioVerdict => lsm("task_getioprio", VERDICT),
    TaskSetrlimitTarget => lsm("task_setrlimit", ptr("task_struct")),
    TaskSetrlimitResource => lsm("task_setrlimit", int("resource")),
    TaskSetrlimitVerdict => lsm("task_setrlimit", VERDICT),
    TaskSetschedulerTarget => lsm("task_setscheduler", ptr("task_struct")),
    TaskSetschedulerVerdict => lsm("task_setscheduler", VERDICT),
    TaskGetschedulerTarget => lsm("task_getscheduler", ptr("task_struct")),
    TaskGetschedulerVerdict => lsm("task_getscheduler", VERDICT),
    TaskMovememoryTarget => lsm("task_movememory", ptr("task_struct")),
    TaskMovememoryVerdict => lsm("task_movememory", VERDICT),
    TaskGetpgidTarget => lsm("task_getpgid", ptr("task_struct")),
    TaskGetpgidVerdict => lsm("task_getpgid", VERDICT),
    TaskGetsidTarget => lsm("task_getsid", ptr("task_struct")),
    TaskGetsidVerdict => lsm("task_getsid", VERDICT),
    IpcPermissionObject => lsm("ipc_permission", ptr("kern_ipc_perm")),
    IpcPermissionFlag => lsm("ipc_permission", int("flag")),
    IpcPermissionVerdict => lsm("ipc_permission", VERDICT),
    ShmShmctlObject => lsm("shm_shmctl", ptr("kern_ipc_perm")),
    ShmShmctlCmd => lsm("shm_shmctl", int("cmd")),
    ShmShmctlVerdict => lsm("shm_shmctl", VERDICT),
    MsgQueueMsgctlObject => lsm("msg_queue_msgctl", ptr("kern_ipc_perm")),
    MsgQueueMsgctlCmd => lsm("msg_queue_msgctl", int("cmd")),
    MsgQueueMsgctlVerdict => lsm("msg_queue_msgctl", VERDICT),
    SemSemctlObject => lsm("sem_semctl", ptr("kern_ipc_perm")),
    SemSemctlCmd => lsm("sem_semctl", int("cmd")),
    SemSemctlVerdict => lsm("sem_semctl", VERDICT),
    ShmAllocSecurityObject => lsm("shm_alloc_security", ptr("kern_ipc_perm")),
    ShmAllocSecurityVerdict => lsm("shm_alloc_security", VERDICT),
    ShmFreeSecurityObject => lsm("shm_free_security", ptr("kern_ipc_perm")),
    MsgQueueAllocSecurityObject => lsm("msg_queue_alloc_security", ptr("kern_ipc_perm")),
    MsgQueueAllocSecurityVerdict => lsm("msg_queue_alloc_security", VERDICT),
    MsgQueueFreeSecurityObject => lsm("msg_queue_free_security", ptr("kern_ipc_perm")),
    SemAllocSecurityObject => lsm("sem_alloc_security", ptr("kern_ipc_perm")),
    SemAllocSecurityVerdict => lsm("sem_alloc_security", VERDICT),
    SemFreeSecurityObject => lsm("sem_free_security", ptr("kern_ipc_perm")),
    PtraceTracemeParent => lsm("ptrace_traceme", ptr("task_struct")),
    PtraceTracemeVerdict => lsm("ptrace_traceme", VERDICT),
    TaskKillTarget => lsm("task_kill", ptr("task_struct")),
    TaskKillSig => lsm("task_kill", int("sig")),
    TaskKillVerdict => lsm("task_kill", VERDICT),
    SocketPostCreateSock => lsm("socket_post_create", ptr("socket")),
    SocketPostCreateFamily => lsm("socket_post_create", int("family")),
    SocketPostCreateKern => lsm("socket_post_create", int("kern")),
    SocketPostCreateVerdict => lsm("socket_post_create", VERDICT),
    UnixStreamConnectOther => lsm("unix_stream_connect", named_ptr("sock", "other")),
    UnixStreamConnectVerdict => lsm("unix_stream_connect", VERDICT),
    UnixMaySendSock => lsm("unix_may_send", named_ptr("socket", "sock")),
    UnixMaySendOther => lsm("unix_may_send", named_ptr("socket", "other")),
    UnixMaySendVerdict => lsm("unix_may_send", VERDICT),
    KeyAllocKey => lsm("key_alloc", ptr("key")),
    KeyAllocVerdict => lsm("key_alloc", VERDICT),
    KeyPermissionKeyRef => lsm("key_permission", ptr("__key_reference_with_attributes")),
    KeyPermissionNeed => lsm("key_permission", int("need_perm")),
    KeyPermissionVerdict => lsm("key_permission", VERDICT),
    CredAllocBlankVerdict => lsm("cred_alloc_blank", VERDICT),
    FileFcntlFile => lsm("file_fcntl", ptr("file")),
    FileFcntlCmd => lsm("file_fcntl", int("cmd")),
    FileFcntlArg => lsm("file_fcntl", int("arg")),
    FileFcntlVerdict => lsm("file_fcntl", VERDICT),
    FileIoctlFile => lsm("file_ioctl", ptr("file")),
    FileIoctlCmd => lsm("file_ioctl", int("cmd")),
    FileIoctlVerdict => lsm("file_ioctl", VERDICT),
    FileIoctlCompatFile => lsm("file_ioctl_compat", ptr("file")),
    FileIoctlCompatCmd => lsm("file_ioctl_compat", int("cmd")),
    FileIoctlCompatVerdict => lsm("file_ioctl_compat", VERDICT),
    FileSetFownerFile => lsm("file_set_fowner", ptr("file")),
    FileFreeSecurityFile => lsm("file_free_security", ptr("file")),
    FileSendSigiotaskTarget => lsm("file_send_sigiotask", ptr("task_struct")),
    FileSendSigiotaskFown => lsm("file_send_sigiotask", ptr("fown_struct")),
    FileSendSigiotaskSig => lsm("file_send_sigiotask", int("sig")),
    FileSendSigiotaskVerdict => lsm("file_send_sigiotask", VERDICT),
    TaskToInodeTask => lsm("task_to_inode", ptr("task_struct")),
    TaskToInodeInode => lsm("task_to_inode", ptr("inode")),
    InodeAllocSecurityInode => lsm("inode_alloc_security", ptr("inode")),
    InodeAllocSecurityVerdict => lsm("inode_alloc_security", VERDICT),
    PathNotifyPath => lsm("path_notify", ptr("path")),
    PathNotifyMask => lsm("path_notify", int("mask")),
    PathNotifyObjType => lsm("path_notify", int("obj_type")),
    PathNotifyVerdict => lsm("path_notify", VERDICT),
    InodePermissionInode => lsm("inode_permission", ptr("inode")),
    InodePermissionMask => lsm("inode_permission", int("mask")),
    InodePermissionVerdict => lsm("inode_permission", VERDICT),
    FileOpenFile => lsm("file_open", ptr("file")),
    FileOpenVerdict => lsm("file_open", VERDICT),
    FilePermissionFile => lsm("file_permission", ptr("file")),
    FilePermissionMask => lsm("file_permission", int("mask")),
    FilePermissionVerdict => lsm("file_permission", VERDICT),
    MmapFileFile => lsm("mmap_file", ptr("file")),
    MmapFileVerdict => lsm("mmap_file", VERDICT),
    FileReceiveFile => lsm("file_receive", ptr("file")),
    FileReceiveVerdict => lsm("file_receive", VERDICT),
    InodeInitSecurityInode => lsm("inode_init_security", named_ptr("inode", "inode")),
    InodeInitSecurityDir => lsm("inode_init_security", named_ptr("inode", "dir")),
    InodeInitSecurityVerdict => lsm("inode_init_security", VERDICT),
    DInstantiateDentry => lsm("d_instantiate", ptr("dentry")),
    DInstantiateInode => lsm("d_instantiate", ptr("inode")),
    InodeCreateDir => lsm("inode_create", ptr("inode")),
    InodeCreateDentry => lsm("inode_create", ptr("dentry")),
    InodeCreateVerdict => lsm("inode_create", VERDICT),
    InodeMkdirDir => lsm("inode_mkdir", ptr("inode")),
    InodeMkdirDentry => lsm("inode_mkdir", ptr("dentry")),
    InodeMkdirVerdict => lsm("inode_mkdir", VERDICT),
    InodeMknodDir => lsm("inode_mknod", ptr("inode")),
    InodeMknodDentry => lsm("inode_mknod", ptr("dentry")),
    InodeMknodVerdict => lsm("inode_mknod", VERDICT),
    InodeSymlinkDir => lsm("inode_symlink", ptr("inode")),
    InodeSymlinkDentry => lsm("inode_symlink", ptr("dentry")),
    InodeSymlinkVerdict => lsm("inode_symlink", VERDICT),
    InodeFollowLinkInode => lsm("inode_follow_link", ptr("inode")),
    InodeFollowLinkVerdict => lsm("inode_follow_link", VERDICT),
    InodeUnlinkDir => lsm("inode_unlink", ptr("inode")),
    InodeUnlinkDentry => lsm("inode_unlink", ptr("dentry")),
    InodeUnlinkVerdict => lsm("inode_unlink", VERDICT),
    InodeRmdirDir => lsm("inode_rmdir", ptr("inode")),
    InodeRmdirDentry => lsm("inode_rmdir", ptr("dentry")),
    InodeRmdirVerdict => lsm("inode_rmdir", VERDICT),
    InodeRenameOldDir => lsm("inode_rename", named_ptr("inode", "old_dir")),
    InodeRenameOldDentry => lsm("inode_rename", named_ptr("dentry", "old_dentry")),
    InodeRenameNewDir => lsm("inode_rename", named_ptr("inode", "new_dir")),
    InodeRenameNewDentry => lsm("inode_rename", named_ptr("dentry", "new_dentry")),
    InodeRenameVerdict => lsm("inode_rename", VERDICT),
    InodeLinkOldDentry => lsm("inode_link", named_ptr("dentry", "old_dentry")),
    InodeLinkDir => lsm("inode_link", ptr("inode")),
    InodeLinkNewDentry => lsm("inode_link", named_ptr("dentry", "new_dentry")),
    InodeLinkVerdict => lsm("inode_link", VERDICT),
    InodeSetattrDentry => lsm("inode_setattr", ptr("dentry")),
    InodeSetattrVerdict => lsm("inode_setattr", VERDICT),
    InodeSetxattrDentry => lsm("inode_setxattr", ptr("dentry")),
    InodeSetxattrVerdict => lsm("inode_setxattr", VERDICT),
    InodeRemovexattrDentry => lsm("inode_removexattr", ptr("dentry")),
    InodeRemovexattrVerdict => lsm("inode_removexattr", VERDICT),
    BpfCmd => lsm("bpf", int("cmd")),
    BpfVerdict => lsm("bpf", VERDICT),
    LockedDownWhat => lsm("locked_down", int("what")),
    LockedDownVerdict => lsm("locked_down", VERDICT),
    KernelLoadDataId => lsm("kernel_load_data", int("id")),
    KernelLoadDataVerdict => lsm("kernel_load_data", VERDICT),
    KernelReadFileId => lsm("kernel_read_file", int("id")),
    KernelReadFileVerdict => lsm("kernel_read_file", VERDICT),
    SbMountVerdict => lsm("sb_mount", VERDICT),
    SbUmountFlags => lsm("sb_umount", int("flags")),
    SbUmountVerdict => lsm("sb_umount", VERDICT),
    MoveMountVerdict => lsm("move_mount", VERDICT),
    SbPivotrootVerdict => lsm("sb_pivotroot", VERDICT),
    CapableNs => lsm("capable", ptr("user_namespace")),
    CapableCap => lsm("capable", int("cap")),
    CapableOpts => lsm("capable", int("opts")),
    CapableVerdict => lsm("capable", VERDICT),
    SchedProcessExitTask => HookArg {
        hook: "sched_process_exit",
        kind: HookKind::Tracepoint,
        param: ptr("task_struct"),
    },
}
