//! Per-task domain labels in BPF task storage.
//!
//! Task storage is keyed by the kernel's own `task_struct` pointer, which every hook already
//! holds, so the programs never read a struct field at a compiled-in offset and never key
//! anything by PID (which the kernel recycles).

use crate::agent_set::agent_set;
use core::ptr;

use aya_ebpf::{
    bindings::{BPF_LOCAL_STORAGE_GET_F_CREATE, task_struct},
    helpers::{
        bpf_probe_read_kernel,
        generated::{bpf_get_current_task_btf, bpf_task_storage_get},
    },
};
use bulkhead_common::{
    DomainId, NO_DOMAIN, TASK_BPF_STORAGE_PLACEHOLDER, TaskLabel, UNDECIDABLE, lifecycle::LIFE_NEW,
};

use crate::local_storage::{LocalStorage, TASK_STORAGE};

#[unsafe(link_section = ".maps")]
#[unsafe(export_name = "TASK_DOMAIN")]
static TASK_DOMAIN: LocalStorage<TaskLabel, TASK_STORAGE> = LocalStorage::new();

/// The label of `task`, or null when it has none, or when the lookup failed (on 6.1 the helper
/// gives up while the CPU's task-storage busy counter is held, for LSM programs and
/// tracepoints alike; see [`domain_of`], which tells the two apart). Points into the task's own storage, so the
/// lifecycle programs can update it in place.
#[inline(always)]
pub fn label_of(task: *mut task_struct) -> *mut TaskLabel {
    // SAFETY: `task` is a BTF pointer handed to the program by the kernel; the helper
    // validates it.
    unsafe { bpf_task_storage_get(TASK_DOMAIN.as_map_ptr(), task, ptr::null_mut(), 0) }.cast()
}

/// The domain of `task`: [`NO_DOMAIN`] when it is outside every domain, [`UNDECIDABLE`] when it
/// has a label that could not be read.
///
/// A task with no BPF local storage at all (`task->bpf_storage` null) has no label: that is
/// decided with one load and no helper call, which is the common case for every process
/// outside a domain. When the task has storage and the lookup still returns nothing, that
/// means either "its storage holds only other maps' data" or "the lookup failed" (Linux 6.1's
/// helper gives up while the CPU's task-storage busy counter is held, e.g. by a seal preempted
/// on this CPU); the task's storage elements are then searched for one of TASK_DOMAIN, and
/// when there is one, or the search cannot finish, the answer is UNDECIDABLE, never "outside".
///
/// A plain integer rather than `Option`: comparing two `Option<u64>` lets LLVM read the
/// undefined payload of a `None`, which the verifier rightly rejects (`!read_ok`).
#[inline(always)]
pub fn domain_of(task: *mut task_struct) -> DomainId {
    let storage = storage_of(task);
    if storage == 0 {
        return NO_DOMAIN;
    }
    let value = label_of(task);
    if !value.is_null() {
        // SAFETY: a non-null result points at this map's value, a TaskLabel.
        return unsafe { (*value).domain };
    }
    if LOOKUP_MAY_FAIL.get() == 0 {
        // 6.2+: the lookup LSM programs get cannot fail, so nothing found means no label.
        return NO_DOMAIN;
    }
    if holds_label_element(storage) {
        UNDECIDABLE
    } else {
        NO_DOMAIN
    }
}

// Set by the agent from BTF: 1 where the lookup can fail while the label exists (6.1).
agent_set!(LOOKUP_MAY_FAIL = 1);

/// `task->bpf_storage` as a number (0: the task has no BPF local storage). The load's offset is
/// a placeholder the agent patches from BTF, checked by the verifier like `dentry->d_inode`.
#[inline(always)]
fn storage_of(task: *mut task_struct) -> u64 {
    // SAFETY: `task` is a BTF pointer to a live task; the verifier checks the patched load.
    unsafe {
        task.cast::<u8>()
            .offset(TASK_BPF_STORAGE_PLACEHOLDER as isize)
            .cast::<u64>()
            .read_volatile()
    }
}

// Offsets into the kernel's local-storage structs, set by the agent from BTF; zero until set.
agent_set!(STORAGE_LIST_OFFSET = 0);
agent_set!(SELEM_SNODE_OFFSET = 0);
agent_set!(SELEM_SMAP_OFFSET = 0);

/// More elements than this on one task and the search gives up (undecidable).
const MAX_STORAGE_ELEMENTS: u32 = 16;

/// Does the local storage at `storage` hold an element of TASK_DOMAIN? True also when that
/// cannot be told (a read fails, the layout is unknown, too many elements): the caller then
/// refuses. Walks `storage->list` (an RCU hlist of `bpf_local_storage_elem` by `snode`; LSM
/// programs run under RCU) comparing each element's map with ours.
#[inline(always)]
fn holds_label_element(storage: u64) -> bool {
    let (list, snode, smap) = (
        STORAGE_LIST_OFFSET.get(),
        SELEM_SNODE_OFFSET.get(),
        SELEM_SMAP_OFFSET.get(),
    );
    if smap == 0 {
        return true;
    }
    let ours = TASK_DOMAIN.as_map_ptr() as u64;
    // SAFETY (all reads): the helper checks each address; a failed read is an error.
    let Ok(mut node) = (unsafe { bpf_probe_read_kernel((storage + list) as *const u64) }) else {
        return true;
    };
    for _ in 0..MAX_STORAGE_ELEMENTS {
        if node == 0 {
            return false;
        }
        let element = node - snode;
        match unsafe { bpf_probe_read_kernel((element + smap) as *const u64) } {
            Ok(map) if map == ours => return true,
            Ok(_) => {}
            Err(_) => return true,
        }
        // hlist_node.next is the node's first field (checked by the agent).
        match unsafe { bpf_probe_read_kernel(node as *const u64) } {
            Ok(next) => node = next,
            Err(_) => return true,
        }
    }
    true
}

/// The gate every restricting hook opens with. `Err(verdict)` when bulkhead has nothing to
/// add: an earlier LSM already refused (its verdict stands, a denial is never turned into an
/// allow), or the running task is outside every domain (bulkhead does not restrict it).
/// Otherwise `Ok` with the running task's domain, which may be [`UNDECIDABLE`]: restricted.
#[inline(always)]
pub fn restricted_actor(previous: i32) -> Result<DomainId, i32> {
    if previous != 0 {
        return Err(previous);
    }
    let domain = current_domain();
    if domain == NO_DOMAIN {
        return Err(0);
    }
    Ok(domain)
}

/// The domain of the task running the hook.
#[inline(always)]
pub fn current_domain() -> DomainId {
    // SAFETY: the helper takes no arguments and always returns the running task.
    domain_of(unsafe { bpf_get_current_task_btf() })
}

/// Label a task that is being created with its creator's `domain`, creating its storage.
/// Returns false when the kernel could not allocate the storage, in which case the caller must
/// refuse to let the task run.
#[inline(always)]
pub fn label_new_task(task: *mut task_struct, domain: DomainId) -> bool {
    let mut initial = TaskLabel {
        domain,
        life: LIFE_NEW,
    };
    // SAFETY: as in `label_of`; `initial` lives on this program's stack for the call.
    let value = unsafe {
        bpf_task_storage_get(
            TASK_DOMAIN.as_map_ptr(),
            task,
            ptr::from_mut(&mut initial).cast(),
            BPF_LOCAL_STORAGE_GET_F_CREATE.into(),
        )
    }
    .cast::<TaskLabel>();
    if value.is_null() {
        return false;
    }
    // The storage may have existed already (it never should for a task still being created);
    // overwrite so the child carries exactly its parent's domain and is not yet counted.
    // SAFETY: non-null map value pointer of type TaskLabel.
    unsafe {
        (*value).domain = domain;
        (*value).life = LIFE_NEW;
    }
    true
}
