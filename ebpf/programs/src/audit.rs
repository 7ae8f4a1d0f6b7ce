//! Every refusal goes through here: it decides between enforce and audit mode, and writes the
//! audit record into the ring buffer the agent reads.
//!
//! Target details (a task's pid and comm, an inode's number and device) are read with
//! `bpf_probe_read_kernel` at offsets the agent sets from the kernel's BTF. They only describe
//! the event; no decision depends on them, so a wrong offset could only garble a log line.

use crate::agent_set::{AgentSet, agent_set};
use core::ffi::c_void;

use aya_ebpf::{
    bindings::task_struct,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        bpf_probe_read_kernel, generated::bpf_ktime_get_boot_ns,
    },
    macros::map,
    maps::{Array, PerCpuArray, RingBuf},
};
use bulkhead_common::{
    DomainId,
    audit::{
        AUDIT_EVENTS_BYTES, AuditEvent, DECISION_AUDITED, DECISION_DENIED, MODE_AUDIT,
        TARGET_DEVICE, TARGET_FS_OBJECT, TARGET_INODE, TARGET_IPC, TARGET_KEY, TARGET_SOCKET,
        TARGET_TASK,
    },
};

use crate::EPERM;

#[map(name = "AUDIT_EVENTS")]
static AUDIT_EVENTS: RingBuf = RingBuf::with_byte_size(AUDIT_EVENTS_BYTES, 0);

/// Per CPU, so counting needs no atomics (which this target lacks); the agent adds them up.
#[map(name = "AUDIT_LOST")]
static AUDIT_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "SETTINGS")]
static SETTINGS: Array<u64> = Array::with_max_entries(1, 0);

// Offsets for describing targets, set by the agent from BTF; 0 = unknown, field left empty.
agent_set!(TASK_PID_OFFSET = 0);
agent_set!(TASK_TGID_OFFSET = 0);
agent_set!(TASK_COMM_OFFSET = 0);
agent_set!(INODE_INO_OFFSET = 0);
agent_set!(INODE_SB_OFFSET = 0);
agent_set!(SB_DEV_OFFSET = 0);
agent_set!(IPC_ID_OFFSET = 0);
agent_set!(IPC_KEY_OFFSET = 0);
agent_set!(KEY_SERIAL_OFFSET = 0);
agent_set!(UNIX_SOCK_ADDR_OFFSET = 0);
// Offset of `sun_path` in a `struct unix_address`: its `name` member plus the two bytes of
// `sun_family`.
agent_set!(UNIX_ADDRESS_PATH_OFFSET = 0);

/// Reads a `T` at `base + offset` of kernel memory, or `None` if unknown or unreadable.
#[inline(always)]
fn read_at<T>(base: u64, offset: &'static AgentSet) -> Option<T> {
    let offset = offset.get();
    if base == 0 || offset == 0 {
        return None;
    }
    // SAFETY: the helper checks the address; a failed read is an error, never a fault.
    unsafe { bpf_probe_read_kernel((base + offset) as *const T) }.ok()
}

/// The verdict for a refusal: -EPERM in enforce mode, 0 (allow) in audit mode.
#[inline(always)]
fn verdict_and_record(mut event: AuditEvent) -> i32 {
    let audit_only = SETTINGS.get(0).is_some_and(|mode| *mode == MODE_AUDIT);
    event.decision = if audit_only {
        DECISION_AUDITED
    } else {
        DECISION_DENIED
    };
    // SAFETY: helpers without arguments.
    event.boot_ns = unsafe { bpf_ktime_get_boot_ns() };
    let pid_tgid = bpf_get_current_pid_tgid();
    event.actor_pid = pid_tgid as u32;
    event.actor_tgid = (pid_tgid >> 32) as u32;
    event.actor_uid = bpf_get_current_uid_gid() as u32;
    event.actor_comm = bpf_get_current_comm().unwrap_or_default();
    if AUDIT_EVENTS.output::<AuditEvent>(&event, 0).is_err()
        && let Some(lost) = AUDIT_LOST.get_ptr_mut(0)
    {
        // SAFETY: this CPU's own slot; programs run with preemption disabled.
        unsafe { *lost += 1 };
    }
    if audit_only { 0 } else { -EPERM }
}

/// The record of a refusal by `hook` of `access` to a task in domain `actor`, its target yet to
/// be described.
#[inline(always)]
fn event(hook: u32, access: u32, actor: DomainId) -> AuditEvent {
    let mut event = AuditEvent::zeroed();
    event.hook = hook;
    event.access = access;
    event.actor_domain = actor;
    event
}

/// Puts an inode's number and device into the record.
#[inline(always)]
fn describe_inode(event: &mut AuditEvent, inode: *mut c_void) {
    let base = inode as u64;
    event.inode = read_at::<u64>(base, &INODE_INO_OFFSET).unwrap_or(0);
    let superblock = read_at::<u64>(base, &INODE_SB_OFFSET).unwrap_or(0);
    event.dev = u64::from(read_at::<u32>(superblock, &SB_DEV_OFFSET).unwrap_or(0));
}

/// A refusal with no object beyond the hook itself (bpf, lockdown, modules, mounts).
#[inline(always)]
pub fn refuse(hook: u32, access: u32, actor: DomainId) -> i32 {
    verdict_and_record(event(hook, access, actor))
}

/// A refusal to reach another task.
#[inline(always)]
pub fn refuse_task(
    hook: u32,
    access: u32,
    actor: DomainId,
    target: *mut task_struct,
    target_domain: DomainId,
) -> i32 {
    let mut event = event(hook, access, actor);
    event.target_kind = TARGET_TASK;
    event.target_domain = target_domain;
    let base = target as u64;
    event.target_pid = read_at::<u32>(base, &TASK_PID_OFFSET).unwrap_or(0);
    event.target_tgid = read_at::<u32>(base, &TASK_TGID_OFFSET).unwrap_or(0);
    event.target_comm = read_at::<[u8; 16]>(base, &TASK_COMM_OFFSET).unwrap_or([0; 16]);
    verdict_and_record(event)
}

/// A refusal to use a protected inode.
#[inline(always)]
pub fn refuse_inode(hook: u32, access: u32, actor: DomainId, inode: *mut c_void) -> i32 {
    let mut event = event(hook, access, actor);
    event.target_kind = TARGET_INODE;
    describe_inode(&mut event, inode);
    verdict_and_record(event)
}

/// A refusal to use a System V IPC object of another domain (or of none).
#[inline(always)]
pub fn refuse_ipc(
    hook: u32,
    access: u32,
    actor: DomainId,
    object: *mut c_void,
    owner: DomainId,
) -> i32 {
    let mut event = event(hook, access, actor);
    event.target_kind = TARGET_IPC;
    event.target_domain = owner;
    let base = object as u64;
    event.ipc_id = read_at::<u32>(base, &IPC_ID_OFFSET).unwrap_or(0);
    event.inode = u64::from(read_at::<u32>(base, &IPC_KEY_OFFSET).unwrap_or(0));
    verdict_and_record(event)
}

/// A refusal to connect or send to the Unix socket `unix` (a `struct unix_sock`, or null when
/// the hook gave none) of another domain (or of none). `socket_file` is the inode the socket is
/// bound to in the filesystem, or null.
#[inline(always)]
pub fn refuse_socket(
    hook: u32,
    access: u32,
    actor: DomainId,
    unix: *mut c_void,
    owner: DomainId,
    socket_file: *mut c_void,
) -> i32 {
    let mut event = event(hook, access, actor);
    event.target_kind = TARGET_SOCKET;
    event.target_domain = owner;
    if !socket_file.is_null() {
        describe_inode(&mut event, socket_file);
    }
    let address = read_at::<u64>(unix as u64, &UNIX_SOCK_ADDR_OFFSET).unwrap_or(0);
    event.target_comm = read_at::<[u8; 16]>(address, &UNIX_ADDRESS_PATH_OFFSET).unwrap_or([0; 16]);
    verdict_and_record(event)
}

/// A refusal to use a file of the filesystem with `magic` (procfs, cgroupfs, ..., tmpfs at
/// /dev/shm, mqueue, devpts); `owner` is the domain the file belongs to.
#[inline(always)]
pub fn refuse_fs_object(
    hook: u32,
    access: u32,
    actor: DomainId,
    inode: *mut c_void,
    magic: u64,
    owner: DomainId,
) -> i32 {
    refuse_described_file(
        event(hook, access, actor),
        TARGET_FS_OBJECT,
        inode,
        magic as u32,
        owner,
    )
}

/// A refusal to open the device file `inode`, which stands for the device `rdev`.
#[inline(always)]
pub fn refuse_device(
    hook: u32,
    access: u32,
    actor: DomainId,
    inode: *mut c_void,
    rdev: u32,
) -> i32 {
    refuse_described_file(
        event(hook, access, actor),
        TARGET_DEVICE,
        inode,
        rdev,
        bulkhead_common::NO_DOMAIN,
    )
}

/// A refusal about the file `inode`, told by `number` (a filesystem's magic or a device's
/// number, by `kind`) and belonging to `owner`.
#[inline(always)]
fn refuse_described_file(
    mut event: AuditEvent,
    kind: u32,
    inode: *mut c_void,
    number: u32,
    owner: DomainId,
) -> i32 {
    event.target_kind = kind;
    event.target_domain = owner;
    event.ipc_id = number;
    describe_inode(&mut event, inode);
    verdict_and_record(event)
}

/// A refusal to use the key at address `key` (0 when the hook's argument could not be read) of
/// another domain (or of none).
#[inline(always)]
pub fn refuse_key(hook: u32, access: u32, actor: DomainId, key: u64, owner: DomainId) -> i32 {
    let mut event = event(hook, access, actor);
    event.target_kind = TARGET_KEY;
    event.target_domain = owner;
    event.ipc_id = read_at::<u32>(key, &KEY_SERIAL_OFFSET).unwrap_or(0);
    verdict_and_record(event)
}
