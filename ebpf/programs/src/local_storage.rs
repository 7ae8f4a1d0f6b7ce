//! BTF definitions of BPF local-storage maps (task, inode and socket storage).
//!
//! aya-ebpf 0.2 ships no wrapper for either map type, so they are declared here the way libbpf
//! declares BTF-defined maps: the loader reads each attribute from the *type* of a pointer field
//! (an array's length encodes the number). The pointers are never dereferenced.
//!
//! Local storage is keyed by the kernel object itself (a `task_struct`, an `inode` or a `sock` the
//! hook already holds) and is freed with it, so nothing is keyed by a recyclable number (PID, inode
//! number) and no struct field is read at a compiled-in offset.

use core::{ffi::c_void, ptr};

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_LOCAL_STORAGE_GET_F_CREATE, bpf_map_type},
    helpers::generated::{bpf_inode_storage_get, bpf_sk_storage_get},
};
use bulkhead_common::{DomainId, NO_DOMAIN};

pub const TASK_STORAGE: usize = bpf_map_type::BPF_MAP_TYPE_TASK_STORAGE as usize;
pub const INODE_STORAGE: usize = bpf_map_type::BPF_MAP_TYPE_INODE_STORAGE as usize;
pub const SK_STORAGE: usize = bpf_map_type::BPF_MAP_TYPE_SK_STORAGE as usize;

#[repr(C)]
pub struct LocalStorage<V, const MAP_TYPE: usize> {
    r#type: *const [i32; MAP_TYPE],
    key: *const i32,
    value: *const V,
    // Local storage maps have no fixed size and must not be preallocated.
    max_entries: *const [i32; 0],
    map_flags: *const [i32; BPF_F_NO_PREALLOC as usize],
}

// SAFETY: the struct only carries type information for the loader; no code reads or writes
// through its fields, so sharing it between CPUs is sound.
unsafe impl<V, const MAP_TYPE: usize> Sync for LocalStorage<V, MAP_TYPE> {}

impl<V, const MAP_TYPE: usize> LocalStorage<V, MAP_TYPE> {
    pub const fn new() -> Self {
        Self {
            r#type: ptr::null(),
            key: ptr::null(),
            value: ptr::null(),
            max_entries: ptr::null(),
            map_flags: ptr::null(),
        }
    }

    /// The map argument the local-storage helpers expect.
    pub fn as_map_ptr(&'static self) -> *mut c_void {
        ptr::from_ref(self).cast_mut().cast()
    }
}

/// The signature of the storage helpers (`bpf_inode_storage_get`, `bpf_sk_storage_get`): map,
/// owner object, initial value, flags.
trait StorageGet: FnOnce(*mut c_void, *mut c_void, *mut c_void, u64) -> *mut c_void {}
impl<F: FnOnce(*mut c_void, *mut c_void, *mut c_void, u64) -> *mut c_void> StorageGet for F {}

/// The domain `get` finds stored for `object`, or [`NO_DOMAIN`] when none is.
#[inline(always)]
fn stored_domain(get: impl StorageGet, map: *mut c_void, object: *mut c_void) -> DomainId {
    let value = get(map, object, ptr::null_mut(), 0);
    if value.is_null() {
        return NO_DOMAIN;
    }
    // SAFETY: non-null map value pointer of type DomainId.
    unsafe { *value.cast::<DomainId>() }
}

/// Stores `domain` for `object`, creating the entry; false when the kernel could not allocate it.
#[inline(always)]
fn store_domain(
    get: impl StorageGet,
    map: *mut c_void,
    object: *mut c_void,
    domain: DomainId,
) -> bool {
    let mut initial = domain;
    let value = get(
        map,
        object,
        ptr::from_mut(&mut initial).cast(),
        BPF_LOCAL_STORAGE_GET_F_CREATE.into(),
    )
    .cast::<DomainId>();
    if value.is_null() {
        return false;
    }
    // The entry may have existed (a procfs inode is labelled again at every lookup, mostly with
    // the domain it already has): writing only a changed value keeps the cache line of a hot
    // inode shared between the cores that walk it.
    // SAFETY: non-null map value pointer of type DomainId.
    unsafe {
        if *value != domain {
            *value = domain;
        }
    }
    true
}

// SAFETY (the four helpers below): `inode` and `sk` are BTF pointers from a hook or read from
// one (`dentry->d_inode`, `socket->sk`), which the helpers validate; an initial value lives on
// the calling program's stack for the call.

/// The domain an inode-storage map of [`DomainId`]s holds for `inode`, or [`NO_DOMAIN`] when it
/// holds none.
#[inline(always)]
pub fn inode_domain(
    map: &'static LocalStorage<DomainId, INODE_STORAGE>,
    inode: *mut c_void,
) -> DomainId {
    stored_domain(
        |m, o, v, f| unsafe { bpf_inode_storage_get(m, o, v, f) },
        map.as_map_ptr(),
        inode,
    )
}

/// Records `domain` for `inode` in an inode-storage map of [`DomainId`]s, creating the entry.
/// Returns false when the kernel could not allocate it.
#[inline(always)]
pub fn set_inode_domain(
    map: &'static LocalStorage<DomainId, INODE_STORAGE>,
    inode: *mut c_void,
    domain: DomainId,
) -> bool {
    store_domain(
        |m, o, v, f| unsafe { bpf_inode_storage_get(m, o, v, f) },
        map.as_map_ptr(),
        inode,
        domain,
    )
}

/// The domain a socket-storage map of [`DomainId`]s holds for `sk`, or [`NO_DOMAIN`].
#[inline(always)]
pub fn sk_domain(map: &'static LocalStorage<DomainId, SK_STORAGE>, sk: *mut c_void) -> DomainId {
    stored_domain(
        |m, o, v, f| unsafe { bpf_sk_storage_get(m, o, v, f) },
        map.as_map_ptr(),
        sk,
    )
}

/// Records `domain` for `sk`, creating the entry; false when the kernel could not allocate it.
#[inline(always)]
pub fn set_sk_domain(
    map: &'static LocalStorage<DomainId, SK_STORAGE>,
    sk: *mut c_void,
    domain: DomainId,
) -> bool {
    store_domain(
        |m, o, v, f| unsafe { bpf_sk_storage_get(m, o, v, f) },
        map.as_map_ptr(),
        sk,
        domain,
    )
}
