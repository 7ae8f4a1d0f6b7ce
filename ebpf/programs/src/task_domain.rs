//! Per-task domain labels in BPF task storage.
//!
//! Task storage is keyed by the kernel's own `task_struct` pointer, which every hook already
//! holds, so the programs never read a struct field at a compiled-in offset and never key
//! anything by PID (which the kernel recycles).

use core::ptr;

use aya_ebpf::{
    bindings::{BPF_LOCAL_STORAGE_GET_F_CREATE, task_struct},
    helpers::generated::{bpf_get_current_task_btf, bpf_task_storage_get},
};
use bulkhead_common::{DomainId, NO_DOMAIN, TaskLabel, lifecycle::LIFE_NEW};

use crate::local_storage::{LocalStorage, TASK_STORAGE};

#[unsafe(link_section = ".maps")]
#[unsafe(export_name = "TASK_DOMAIN")]
static TASK_DOMAIN: LocalStorage<TaskLabel, TASK_STORAGE> = LocalStorage::new();

/// The label of `task`, or null when it is outside every domain. Points into the task's own
/// storage, so the lifecycle programs can update it in place.
#[inline(always)]
pub fn label_of(task: *mut task_struct) -> *mut TaskLabel {
    // SAFETY: `task` is a BTF pointer handed to the program by the kernel; the helper
    // validates it.
    unsafe { bpf_task_storage_get(TASK_DOMAIN.as_map_ptr(), task, ptr::null_mut(), 0) }.cast()
}

/// The domain of `task`, or [`NO_DOMAIN`] when it is outside every domain.
///
/// A plain integer rather than `Option`: comparing two `Option<u64>` lets LLVM read the
/// undefined payload of a `None`, which the verifier rightly rejects (`!read_ok`).
#[inline(always)]
pub fn domain_of(task: *mut task_struct) -> DomainId {
    let value = label_of(task);
    if value.is_null() {
        return NO_DOMAIN;
    }
    // SAFETY: a non-null result points at this map's value, a TaskLabel.
    unsafe { (*value).domain }
}

/// The gate every restricting hook opens with. `Err(verdict)` when bulkhead has nothing to
/// add: an earlier LSM already refused (its verdict stands, a denial is never turned into an
/// allow), or the running task is outside every domain (bulkhead does not restrict it).
/// Otherwise `Ok` with the running task's domain.
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
