//! Protected names, judged at the moment a name gets an inode (see bulkhead_common::names for
//! the trie the agent stores). `match_name` compares one directory entry's name with the
//! candidate nodes its parent directory guards.

use core::{ffi::c_void, ptr};

use aya_ebpf::{
    bindings::BPF_LOCAL_STORAGE_GET_F_CREATE,
    helpers::{bpf_probe_read_kernel_str_bytes, generated::bpf_inode_storage_get},
    macros::map,
    maps::{Array, PerCpuArray},
};
use bulkhead_common::names::{FNV_OFFSET, MAX_NAME_NODES, NAME_MAX, NameNode, fnv_step};

use crate::{
    kernel_layout::{dentry_name, inode_mode},
    local_storage::{INODE_STORAGE, LocalStorage},
};

#[map(name = "NAME_NODES")]
static NAME_NODES: Array<NameNode> = Array::with_max_entries(MAX_NAME_NODES as u32, 0);

#[unsafe(link_section = ".maps")]
#[unsafe(export_name = "GUARDED_DIR")]
static GUARDED_DIR: LocalStorage<u64, INODE_STORAGE> = LocalStorage::new();

/// Room for one name and the hash of each of its prefixes and suffixes, one per CPU (too large
/// for the 512-byte program stack). The match results are kept here too: values the verifier
/// does not track, so the node loop's paths merge instead of multiplying.
#[repr(C)]
struct NameScratch {
    len: u64,
    protect: u64,
    children: u64,
    name: [u8; NAME_MAX + 1],
    /// `prefix[n]`: the hash of the first `n` bytes.
    prefix: [u64; NAME_MAX + 1],
    /// `suffix[n]`: the hash of the last `n` bytes, hashed from the end.
    suffix: [u64; NAME_MAX + 1],
}

#[map(name = "NAME_SCRATCH")]
static NAME_SCRATCH: PerCpuArray<NameScratch> = PerCpuArray::with_max_entries(1, 0);

/// What a name matched among a directory's candidate nodes.
#[derive(Clone, Copy)]
pub struct NameMatch {
    /// A protected pattern ends at this name.
    pub protect: bool,
    /// A directory at this name guards these nodes (the name is on a protected pattern's way).
    pub children: u64,
}

impl NameMatch {
    /// Does the name stand anywhere on a protected pattern?
    #[inline(always)]
    pub fn on_pattern(&self) -> bool {
        self.protect || self.children != 0
    }
}

/// The candidate nodes `dir` guards; 0 when it guards none (most directories).
#[inline(always)]
pub fn guarded_children(dir: *mut c_void) -> u64 {
    if dir.is_null() {
        return 0;
    }
    // SAFETY: `dir` is a BTF inode pointer (a hook argument or read from a dentry); the helper
    // validates it.
    let value = unsafe { bpf_inode_storage_get(GUARDED_DIR.as_map_ptr(), dir, ptr::null_mut(), 0) }
        .cast::<u64>();
    if value.is_null() {
        return 0;
    }
    // SAFETY: a non-null result points to this map's u64 value.
    unsafe { value.read_volatile() }
}

/// Makes the directory `dir` guard `children` as well as what it guarded already. Returns
/// false when the kernel could not allocate the storage.
#[inline(always)]
pub fn guard(dir: *mut c_void, children: u64) -> bool {
    let mut initial = children;
    // SAFETY: as in `guarded_children`; `initial` lives on this program's stack for the call.
    let value = unsafe {
        bpf_inode_storage_get(
            GUARDED_DIR.as_map_ptr(),
            dir,
            ptr::from_mut(&mut initial).cast(),
            BPF_LOCAL_STORAGE_GET_F_CREATE.into(),
        )
    }
    .cast::<u64>();
    if value.is_null() {
        return false;
    }
    // SAFETY: as above. Not atomic: the only other writer of an existing entry is the agent,
    // which writes the same bits it derives from the same patterns.
    unsafe { value.write_volatile(value.read_volatile() | children) };
    true
}

const S_IFMT: u16 = 0o170_000;
const S_IFDIR: u16 = 0o040_000;

/// Is `inode` a directory?
#[inline(always)]
pub fn is_directory(inode: *const c_void) -> bool {
    !inode.is_null() && inode_mode(inode) & S_IFMT == S_IFDIR
}

/// Compares the name of `dentry` with the nodes in `candidates`. `None` when the name cannot
/// be read: the caller must treat it as protected.
#[inline(always)]
pub fn match_name(candidates: u64, dentry: *const c_void) -> Option<NameMatch> {
    if candidates == 0 {
        return Some(NameMatch {
            protect: false,
            children: 0,
        });
    }
    let scratch = NAME_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: the per-CPU value is this program's alone while it runs (LSM programs do not
    // nest on a CPU with themselves for the same hook; a nested hook rewrites the name before
    // reading it, and only hashes are left behind).
    let scratch = unsafe { &mut *scratch };
    let len = {
        // SAFETY: reads a kernel string through the checked helper into the scratch buffer.
        let name =
            unsafe { bpf_probe_read_kernel_str_bytes(dentry_name(dentry), &mut scratch.name) };
        name.ok()?.len() as u64
    };
    store(&mut scratch.len, len);
    store(&mut scratch.protect, 0);
    store(&mut scratch.children, 0);
    hash_prefixes(scratch);
    hash_suffixes(scratch);
    match_nodes(scratch, candidates);
    Some(NameMatch {
        protect: load(&scratch.protect) != 0,
        children: load(&scratch.children),
    })
}

/// The name's length, read back from memory each time: the verifier then knows only its
/// range, so every exit of a hashing loop reaches the next phase in the same state and is
/// verified once rather than once per possible length.
#[inline(always)]
fn name_len(scratch: &NameScratch) -> usize {
    (load(&scratch.len) as usize) & NAME_MAX
}

#[inline(always)]
fn hash_prefixes(scratch: &mut NameScratch) {
    let len = name_len(scratch);
    let mut hash = FNV_OFFSET;
    scratch.prefix[0] = hash;
    for i in 0..NAME_MAX {
        if i >= len {
            break;
        }
        hash = fnv_step(hash, scratch.name[i]);
        scratch.prefix[i + 1] = hash;
    }
}

#[inline(always)]
fn hash_suffixes(scratch: &mut NameScratch) {
    let len = name_len(scratch);
    let mut hash = FNV_OFFSET;
    scratch.suffix[0] = hash;
    for j in 0..NAME_MAX {
        if j >= len {
            break;
        }
        hash = fnv_step(hash, scratch.name[(len - 1 - j) & NAME_MAX]);
        scratch.suffix[j + 1] = hash;
    }
}

#[inline(always)]
fn match_nodes(scratch: &mut NameScratch, candidates: u64) {
    for id in 0..MAX_NAME_NODES as u32 {
        if candidates & (1u64 << id) == 0 {
            continue;
        }
        let Some(node) = NAME_NODES.get(id) else {
            continue;
        };
        let len = name_len(scratch);
        let prefix = scratch.prefix[node.prefix_len as usize & NAME_MAX];
        let suffix = scratch.suffix[node.suffix_len as usize & NAME_MAX];
        if !node.matches(len as u32, prefix, suffix) {
            continue;
        }
        if node.protect != 0 {
            store(&mut scratch.protect, 1);
        }
        let children = load(&scratch.children) | node.children;
        store(&mut scratch.children, children);
    }
}

#[inline(always)]
fn load(place: &u64) -> u64 {
    // SAFETY: a reference to a map value field.
    unsafe { ptr::from_ref(place).read_volatile() }
}

#[inline(always)]
fn store(place: &mut u64, value: u64) {
    // SAFETY: a reference to a map value field.
    unsafe { ptr::from_mut(place).write_volatile(value) }
}
