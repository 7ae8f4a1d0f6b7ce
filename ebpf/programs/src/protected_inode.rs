//! Protected files and directories, marked in BPF inode storage.
//!
//! The agent resolves the node's protected paths in userspace and marks their inodes; the kernel
//! side never sees a path. A mark follows the inode, so every name for it (hard links, bind
//! mounts, symlinks, `/proc/self/fd` links) leads to the same protected object.

use core::{ffi::c_void, ptr};

use aya_ebpf::{
    bindings::BPF_LOCAL_STORAGE_GET_F_CREATE, helpers::generated::bpf_inode_storage_get,
};
use bulkhead_common::{InodeProtection, PROTECTED};

use crate::local_storage::{INODE_STORAGE, LocalStorage};

#[unsafe(link_section = ".maps")]
#[unsafe(export_name = "PROTECTED_INODE")]
static PROTECTED_INODE: LocalStorage<InodeProtection, INODE_STORAGE> = LocalStorage::new();

/// Is `inode` protected? A null inode (a negative dentry: the name does not exist yet) is not.
#[inline(always)]
pub fn is_protected(inode: *mut c_void) -> bool {
    if inode.is_null() {
        return false;
    }
    // SAFETY: `inode` is a BTF pointer from the hook or from `dentry->d_inode`; the helper
    // validates it.
    let value =
        unsafe { bpf_inode_storage_get(PROTECTED_INODE.as_map_ptr(), inode, ptr::null_mut(), 0) };
    !value.is_null()
}

/// Marks `inode` protected. Returns false when the kernel could not allocate the storage.
#[inline(always)]
pub fn protect(inode: *mut c_void) -> bool {
    let mut initial: InodeProtection = PROTECTED;
    // SAFETY: as in `is_protected`; `initial` lives on this program's stack for the call.
    let value = unsafe {
        bpf_inode_storage_get(
            PROTECTED_INODE.as_map_ptr(),
            inode,
            ptr::from_mut(&mut initial).cast(),
            BPF_LOCAL_STORAGE_GET_F_CREATE.into(),
        )
    };
    !value.is_null()
}
