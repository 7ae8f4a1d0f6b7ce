//! System V IPC objects (shared memory segments, message queues, semaphore sets) belong to the
//! domain of the task that created them, or to no domain when their creator was in none. A
//! task in a domain may use only its own domain's objects.
//!
//! The kernel gives BPF no storage on IPC objects, so the creator's domain is kept in a hash
//! map keyed by the object's `kern_ipc_perm` address: written when the object is allocated
//! (the creating task is `current` there), removed when it is freed (after an RCU grace period,
//! before the memory can be reused). Every way to use an existing object passes
//! `ipc_permission` (get, attach, send, receive, semop, and the reading controls) except the
//! controls that check only ownership (IPC_RMID, IPC_SET, SHM_LOCK, the *_STAT_ANY reads),
//! which pass the per-type `*ctl` hook.

use core::ffi::c_void;

use aya_ebpf::{
    macros::{lsm, map},
    maps::HashMap,
    programs::LsmContext,
};
use aya_log_ebpf::info;
use bulkhead_common::{DomainId, IPC_OWNER_ENTRIES, NO_DOMAIN, audit::hook};

use crate::{
    audit::refuse_ipc,
    creator_record::{self, NotRecorded},
    hook_args::{hook_arg, verdict},
    may_reach,
    task_domain::restricted_actor,
};

#[map(name = "IPC_OWNER")]
static IPC_OWNER: HashMap<u64, DomainId> = HashMap::with_max_entries(IPC_OWNER_ENTRIES, 0);

/// Records who creates the object at `object` (creator_record.rs); an object whose creator
/// cannot be recorded is not created.
#[inline(always)]
fn record_creator(ctx: &LsmContext, object: *mut c_void, previous: i32) -> i32 {
    if previous != 0 {
        return previous;
    }
    match creator_record::record_creator(&IPC_OWNER, object as u64) {
        Ok(()) => 0,
        Err(NotRecorded::NoRoom { domain, errno }) => {
            info!(
                ctx,
                "bulkhead: IPC object of domain {} not created, its owner cannot be recorded",
                domain
            );
            errno
        }
        Err(undecidable) => undecidable.verdict(),
    }
}

/// A task in a domain may use an object of its own domain only. `object` is null for the
/// controls that name no object (IPC_INFO, SHM_INFO, MSG_INFO, SEM_INFO: node-wide limits and
/// totals), which are left to the kernel.
#[inline(always)]
fn check_object(hook: u32, access: u32, object: *mut c_void, previous: i32) -> i32 {
    let actor = match restricted_actor(previous) {
        Ok(actor) => actor,
        Err(verdict) => return verdict,
    };
    if object.is_null() {
        return 0;
    }
    // SAFETY: a value of this map is a DomainId.
    let owner = unsafe { IPC_OWNER.get(&(object as u64)) }
        .copied()
        .unwrap_or(NO_DOMAIN);
    if may_reach(actor, owner) {
        return 0;
    }
    refuse_ipc(hook, access, actor, object, owner)
}

/// A new segment: its creator's domain is recorded.
#[lsm(hook = "shm_alloc_security")]
pub fn shm_alloc_security(ctx: LsmContext) -> i32 {
    record_creator(
        &ctx,
        hook_arg!(ctx, ShmAllocSecurityObject) as *mut c_void,
        verdict!(ctx, ShmAllocSecurityVerdict),
    )
}

#[lsm(hook = "shm_free_security")]
pub fn shm_free_security(ctx: LsmContext) -> i32 {
    let _ = IPC_OWNER.remove(&hook_arg!(ctx, ShmFreeSecurityObject));
    0
}

/// A new message queue: its creator's domain is recorded.
#[lsm(hook = "msg_queue_alloc_security")]
pub fn msg_queue_alloc_security(ctx: LsmContext) -> i32 {
    record_creator(
        &ctx,
        hook_arg!(ctx, MsgQueueAllocSecurityObject) as *mut c_void,
        verdict!(ctx, MsgQueueAllocSecurityVerdict),
    )
}

#[lsm(hook = "msg_queue_free_security")]
pub fn msg_queue_free_security(ctx: LsmContext) -> i32 {
    let _ = IPC_OWNER.remove(&hook_arg!(ctx, MsgQueueFreeSecurityObject));
    0
}

/// A new semaphore set: its creator's domain is recorded.
#[lsm(hook = "sem_alloc_security")]
pub fn sem_alloc_security(ctx: LsmContext) -> i32 {
    record_creator(
        &ctx,
        hook_arg!(ctx, SemAllocSecurityObject) as *mut c_void,
        verdict!(ctx, SemAllocSecurityVerdict),
    )
}

#[lsm(hook = "sem_free_security")]
pub fn sem_free_security(ctx: LsmContext) -> i32 {
    let _ = IPC_OWNER.remove(&hook_arg!(ctx, SemFreeSecurityObject));
    0
}

/// shmget/msgget/semget of an existing key, shmat, msgsnd, msgrcv, semop/semtimedop, and the
/// controls that read or write contents (IPC_STAT, GETVAL, SETVAL, GETALL, SETALL, ...).
#[lsm(hook = "ipc_permission")]
pub fn ipc_permission(ctx: LsmContext) -> i32 {
    check_object(
        hook::IPC_PERMISSION,
        hook_arg!(ctx, IpcPermissionFlag) as u32,
        hook_arg!(ctx, IpcPermissionObject) as *mut c_void,
        verdict!(ctx, IpcPermissionVerdict),
    )
}

/// shmctl: every command, including IPC_RMID, IPC_SET, SHM_LOCK and SHM_STAT_ANY, which skip
/// `ipc_permission`.
#[lsm(hook = "shm_shmctl")]
pub fn shm_shmctl(ctx: LsmContext) -> i32 {
    check_object(
        hook::SHM_SHMCTL,
        hook_arg!(ctx, ShmShmctlCmd) as u32,
        hook_arg!(ctx, ShmShmctlObject) as *mut c_void,
        verdict!(ctx, ShmShmctlVerdict),
    )
}

/// msgctl: every command, including IPC_RMID, IPC_SET and MSG_STAT_ANY.
#[lsm(hook = "msg_queue_msgctl")]
pub fn msg_queue_msgctl(ctx: LsmContext) -> i32 {
    check_object(
        hook::MSG_QUEUE_MSGCTL,
        hook_arg!(ctx, MsgQueueMsgctlCmd) as u32,
        hook_arg!(ctx, MsgQueueMsgctlObject) as *mut c_void,
        verdict!(ctx, MsgQueueMsgctlVerdict),
    )
}

/// semctl: every command, including IPC_RMID, IPC_SET and SEM_STAT_ANY.
#[lsm(hook = "sem_semctl")]
pub fn sem_semctl(ctx: LsmContext) -> i32 {
    check_object(
        hook::SEM_SEMCTL,
        hook_arg!(ctx, SemSemctlCmd) as u32,
        hook_arg!(ctx, SemSemctlObject) as *mut c_void,
        verdict!(ctx, SemSemctlVerdict),
    )
}
