//! The kernel struct fields the programs need, located without compiled-in offsets.
//!
//! Rust eBPF has no CO-RE, so an offset baked in at build time would silently read the wrong
//! field on another kernel. Instead:
//!
//! - `dentry->d_inode` is read with a direct load whose offset is a placeholder; the agent
//!   rewrites that one instruction field with the offset from the running kernel's BTF before it
//!   loads the object. The verifier then checks the load against that same BTF, so a wrong
//!   offset cannot produce an `inode` pointer: the program fails to load instead (fail closed).
//! - The file of a `fown_struct` only serves as a map key, so how to find it (subtract the
//!   offset of the embedded `file->f_owner`, or read the 6.12+ `fown->file` back pointer) is a
//!   pair of globals the agent sets after checking both fields' types in BTF.

use crate::agent_set::agent_set;
use core::ffi::c_void;

use aya_ebpf::helpers::bpf_probe_read_kernel;
use bulkhead_common::{
    DENTRY_D_INODE_PLACEHOLDER, DENTRY_D_NAME_PLACEHOLDER, DENTRY_D_PARENT_PLACEHOLDER,
    FILE_F_MODE_PLACEHOLDER, FILE_INODE_PLACEHOLDER, FOWN_FILE_BACK_POINTER, FOWN_FILE_EMBEDDED,
    INODE_MODE_PLACEHOLDER, INODE_RDEV_PLACEHOLDER, INODE_SB_PLACEHOLDER, PATH_DENTRY_PLACEHOLDER,
    SB_DEV_PLACEHOLDER, SB_MAGIC_PLACEHOLDER, SOCKET_SK_PLACEHOLDER,
    UNIX_SOCK_PATH_DENTRY_PLACEHOLDER, UNIX_SOCK_PEER_PLACEHOLDER,
};

/// The pointer field at placeholder offset `PLACEHOLDER` of the BTF object at `base`.
#[inline(always)]
fn pointer_field<const PLACEHOLDER: i16>(base: *const c_void) -> *mut c_void {
    // SAFETY: `base` is a BTF pointer to a live kernel struct (a hook argument, or a pointer
    // read from one); the verifier turns this into a checked kernel load at the offset the
    // agent patched in, and refuses the program if that offset is not the field's.
    unsafe {
        base.byte_add(PLACEHOLDER as usize)
            .cast::<*mut c_void>()
            .read_volatile()
    }
}

/// `dentry->d_inode` (null for a negative dentry).
#[inline(always)]
pub fn dentry_inode(dentry: *const c_void) -> *mut c_void {
    pointer_field::<DENTRY_D_INODE_PLACEHOLDER>(dentry)
}

/// `dentry->d_parent` (the dentry itself for a filesystem's root).
#[inline(always)]
pub fn dentry_parent(dentry: *const c_void) -> *mut c_void {
    pointer_field::<DENTRY_D_PARENT_PLACEHOLDER>(dentry)
}

/// `dentry->d_name.name`, the address of the name's NUL-terminated bytes, to be read with
/// `bpf_probe_read_kernel_str` (the verifier gives a load of a byte pointer no type).
#[inline(always)]
pub fn dentry_name(dentry: *const c_void) -> *const u8 {
    pointer_field::<DENTRY_D_NAME_PLACEHOLDER>(dentry)
        .cast_const()
        .cast()
}

/// The scalar field at placeholder offset `PLACEHOLDER` of the BTF object at `base`.
#[inline(always)]
fn scalar_field<T, const PLACEHOLDER: i16>(base: *const c_void) -> T {
    // SAFETY: as in `pointer_field`; the agent checked the field's size is `T`'s.
    unsafe {
        base.byte_add(PLACEHOLDER as usize)
            .cast::<T>()
            .read_volatile()
    }
}

/// Which filesystem an inode is on: `inode->i_sb->s_magic` and `->s_dev` (the kernel's
/// `dev_t`), or zeros if it has no superblock.
#[inline(always)]
pub fn inode_fs(inode: *const c_void) -> (u64, u32) {
    let superblock = pointer_field::<INODE_SB_PLACEHOLDER>(inode);
    if superblock.is_null() {
        return (0, 0);
    }
    (
        scalar_field::<u64, SB_MAGIC_PLACEHOLDER>(superblock),
        scalar_field::<u32, SB_DEV_PLACEHOLDER>(superblock),
    )
}

/// `inode->i_mode`.
#[inline(always)]
pub fn inode_mode(inode: *const c_void) -> u16 {
    scalar_field::<u16, INODE_MODE_PLACEHOLDER>(inode)
}

/// `file->f_inode`.
#[inline(always)]
pub fn file_inode(file: *const c_void) -> *mut c_void {
    pointer_field::<FILE_INODE_PLACEHOLDER>(file)
}

/// `file->f_mode`: how the file is open (`FMODE_READ`, `FMODE_WRITE`, ...).
#[inline(always)]
pub fn file_mode(file: *const c_void) -> u32 {
    scalar_field::<u32, FILE_F_MODE_PLACEHOLDER>(file)
}

/// `inode->i_rdev`: the device a device file stands for (the kernel's `dev_t`).
#[inline(always)]
pub fn inode_rdev(inode: *const c_void) -> u32 {
    scalar_field::<u32, INODE_RDEV_PLACEHOLDER>(inode)
}

/// `path->dentry`.
#[inline(always)]
pub fn path_dentry(path: *const c_void) -> *mut c_void {
    pointer_field::<PATH_DENTRY_PLACEHOLDER>(path)
}

/// `socket->sk`, the socket's `struct sock` (null only before it is set up or after release).
#[inline(always)]
pub fn socket_sk(socket: *const c_void) -> *mut c_void {
    pointer_field::<SOCKET_SK_PLACEHOLDER>(socket)
}

/// `unix_sock->path.dentry`: the socket file a Unix socket is bound to, or null when it is
/// abstract, unnamed or not bound. `unix` must come from `bpf_skc_to_unix_sock`.
#[inline(always)]
pub fn unix_bound_dentry(unix: *const c_void) -> *mut c_void {
    pointer_field::<UNIX_SOCK_PATH_DENTRY_PLACEHOLDER>(unix)
}

/// `unix_sock->peer`: the socket a Unix socket is connected to, or null.
#[inline(always)]
pub fn unix_peer(unix: *const c_void) -> *mut c_void {
    pointer_field::<UNIX_SOCK_PEER_PLACEHOLDER>(unix)
}

// How to get from a `struct fown_struct *` to its file, set by the agent from the kernel's
// BTF: [`FOWN_FILE_EMBEDDED`] (up to 6.11 the owner is embedded in `struct file` at
// `FOWN_FILE_OFFSET`) or [`FOWN_FILE_BACK_POINTER`] (6.12+ allocates it separately and keeps a
// `file` pointer in it at `FOWN_FILE_OFFSET`). Zero until set: no file can be found.
agent_set!(FOWN_FILE_MODE = 0);
agent_set!(FOWN_FILE_OFFSET = 0);

fn fown_layout() -> (u64, u64) {
    (FOWN_FILE_MODE.get(), FOWN_FILE_OFFSET.get())
}

/// A file's owner record key, computed from the file, or 0 when the layout is unknown. Where
/// the owner struct is embedded (6.1) the key is its address, `file + offset`, as agents before
/// the kernel matrix keyed it, so records pinned by such an agent stay valid across an
/// upgrade. Where it is allocated only once an owner is set (6.12+, after the fcntl and ioctl
/// hooks that must reserve the record), the key is the file's own address. Only ever a map
/// key, never dereferenced.
#[inline(always)]
pub fn file_key(file: *const c_void) -> u64 {
    match fown_layout() {
        (FOWN_FILE_EMBEDDED, offset) => file as u64 + offset,
        (FOWN_FILE_BACK_POINTER, _) => file as u64,
        _ => 0,
    }
}

/// The same key computed from an owner struct (what `file_send_sigiotask` is given), or 0 when
/// it cannot be found.
#[inline(always)]
pub fn fown_file_key(fown: u64) -> u64 {
    if fown == 0 {
        return 0;
    }
    match fown_layout() {
        (FOWN_FILE_EMBEDDED, _) => fown,
        (FOWN_FILE_BACK_POINTER, offset) => {
            // SAFETY: reads one pointer of kernel memory through the checked helper; a failed
            // read yields 0, "unknown".
            unsafe { bpf_probe_read_kernel((fown + offset) as *const u64) }.unwrap_or(0)
        }
        _ => 0,
    }
}

// Set by the agent: `offsetof(struct user_namespace, level)`. Zero until set.
agent_set!(USER_NS_LEVEL_OFFSET = 0);

/// Is `ns` the initial user namespace (nesting level 0)? When the level cannot be read, it
/// is taken to be: the caller then refuses (fail closed).
#[inline(always)]
pub fn in_initial_user_ns(ns: u64) -> bool {
    let offset = USER_NS_LEVEL_OFFSET.get();
    if ns == 0 || offset == 0 {
        return true;
    }
    // SAFETY: reads one int of kernel memory through the checked helper.
    match unsafe { bpf_probe_read_kernel((ns + offset) as *const i32) } {
        Ok(level) => level == 0,
        Err(_) => true,
    }
}

// Set by the agent: how far before a procfs inode its `struct proc_inode` keeps the `pid`
// pointer (`offsetof(vfs_inode) - offsetof(pid)`). Zero until set.
agent_set!(PROC_INODE_PID_BACK = 0);

/// Does the procfs inode `inode` belong to a task's `/proc/<pid>` tree (its proc_inode has a
/// pid)? `None` when that cannot be read: the caller refuses.
#[inline(always)]
pub fn proc_inode_has_pid(inode: *const c_void) -> Option<bool> {
    let back = PROC_INODE_PID_BACK.get();
    if back == 0 || (inode as u64) < back {
        return None;
    }
    // SAFETY: reads one pointer of kernel memory through the checked helper; procfs inodes are
    // always the `vfs_inode` of a proc_inode (fs/proc/inode.c allocates nothing else).
    unsafe { bpf_probe_read_kernel((inode as u64 - back) as *const u64) }
        .ok()
        .map(|pid| pid != 0)
}
