//! bulkhead's eBPF LSM programs.
//!
//! The task-to-task rule lives in one function, [`may_reach`], in the manner of Landlock's
//! `task_is_scoped`: every hook that lets one task reach another asks it, and so does every
//! hook that lets a task use an object another task made. Hooks are grouped by what they
//! guard: other tasks (tasks.rs), signals through file owners (signals.rs), System V IPC
//! objects (ipc.rs), POSIX shared memory and message queues (shared_memory.rs), Unix sockets (sockets.rs), keys (keys.rs), terminals (ioctls.rs), protected files
//! (files.rs), procfs and cgroupfs writes (kernel_files.rs), notification marks (notify.rs), and the kernel itself (kernel.rs). lifecycle.rs counts each domain's live tasks.
#![no_std]
#![no_main]
// Fetching atomics on map values (see atomic.rs).
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod agent_set;
mod atomic;
mod audit;
mod creator_record;
mod descriptors;
mod devices;
mod file_owner;
mod files;
mod hook_args;
mod ioctls;
mod ipc;
mod kernel;
mod kernel_files;
mod kernel_layout;
mod keys;
mod lifecycle;
mod local_storage;
mod names;
mod notify;
mod protected_inode;
mod protected_names;
mod shared_memory;
mod signals;
mod sockets;
mod task_domain;
mod tasks;

use bulkhead_common::{DomainId, NO_DOMAIN, UNDECIDABLE};

const EPERM: i32 = 1;
const E2BIG: i32 = 7;
const EAGAIN: i32 = 11;
const ENOMEM: i32 = 12;
const EEXIST: i32 = 17;
const ENOSPC: i32 = 28;

/// May a task in domain `actor` reach a task in domain `target`?
///
/// Tasks outside every domain are not restricted by bulkhead; a task in a domain may only reach
/// tasks of its own domain. A domain that could not be read ([`UNDECIDABLE`]) is nobody's.
#[inline(always)]
fn may_reach(actor: DomainId, target: DomainId) -> bool {
    actor == NO_DOMAIN || (actor == target && actor != UNDECIDABLE)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that can reach this loop, so a panic path is a load
    // error, never a runtime hang.
    loop {}
}
