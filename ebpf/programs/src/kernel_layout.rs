//! The only two kernel struct fields the programs need, located without compiled-in offsets.
//!
//! Rust eBPF has no CO-RE, so an offset baked in at build time would silently read the wrong
//! field on another kernel. Instead:
//!
//! - `dentry->d_inode` is read with a direct load whose offset is a placeholder; the agent
//!   rewrites that one instruction field with the offset from the running kernel's BTF before it
//!   loads the object. The verifier then checks the load against that same BTF, so a wrong
//!   offset cannot produce an `inode` pointer: the program fails to load instead (fail closed).
//! - `file->f_owner` only serves to compute a map key (the address of the file's
//!   `fown_struct`), so its offset is a global the agent sets, with a flag for the 6.12+ layout
//!   where the field is a pointer. The agent checks the field's type in BTF before setting it.

use core::ffi::c_void;

use aya_ebpf::helpers::bpf_probe_read_kernel;
use bulkhead_common::DENTRY_D_INODE_PLACEHOLDER;

/// `dentry->d_inode` (null for a negative dentry).
#[inline(always)]
pub fn dentry_inode(dentry: *const c_void) -> *mut c_void {
    // SAFETY: `dentry` is a BTF pointer to a live `struct dentry` handed to the hook; the
    // verifier turns this into a checked kernel load at the offset the agent patched in.
    unsafe {
        dentry
            .byte_add(DENTRY_D_INODE_PLACEHOLDER as usize)
            .cast::<*mut c_void>()
            .read_volatile()
    }
}

/// Set by the agent at load time from the kernel's BTF; zero until then.
#[unsafe(no_mangle)]
static FILE_F_OWNER_OFFSET: u64 = 0;

/// Set by the agent: 1 when `file->f_owner` is a pointer (Linux 6.12+), 0 when embedded.
#[unsafe(no_mangle)]
static FILE_F_OWNER_IS_PTR: u64 = 0;

/// The address of the file's `fown_struct` as a number, or 0 when unknown (offset not provided,
/// or no owner allocated yet on 6.12+). Only ever used as a map key, never dereferenced. (A
/// plain integer rather than `Option`: see task_domain.rs on what `Option` does to the
/// verifier.)
#[inline(always)]
pub fn file_owner_key(file: *const c_void) -> u64 {
    // SAFETY: reading globals of this object; volatile so the compiler cannot fold the
    // build-time zeros into the code.
    let (offset, is_pointer) = unsafe {
        (
            core::ptr::read_volatile(&FILE_F_OWNER_OFFSET),
            core::ptr::read_volatile(&FILE_F_OWNER_IS_PTR),
        )
    };
    if offset == 0 {
        return 0;
    }
    let field = file as u64 + offset;
    if is_pointer == 0 {
        return field;
    }
    // SAFETY: reads one pointer-sized value of kernel memory through the checked helper; a
    // failed read yields 0, "unknown".
    unsafe { bpf_probe_read_kernel(field as *const u64) }.unwrap_or(0)
}
