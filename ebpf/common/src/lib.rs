//! Names and value layouts that the eBPF programs and the agent must agree on.
//!
//! Anything that crosses the kernel/userspace boundary is defined here once, so the two sides
//! cannot drift apart silently.
#![no_std]

/// Name of the BPF task-storage map holding each task's domain id.
///
/// Kernel map names are limited to 15 characters.
pub const TASK_DOMAIN_MAP: &str = "TASK_DOMAIN";

/// A domain id as stored in task storage. Zero is never stored: a task without an entry has no
/// domain, so "no domain" cannot be forged by writing a value.
pub type DomainId = u64;

/// The value meaning "outside every domain"; never stored in the map.
pub const NO_DOMAIN: DomainId = 0;

/// The LSM hooks the agent attaches, as (program name in the object, kernel hook name).
///
/// `task_alloc` comes first: the agent attaches it before any hook that reads a domain, so there is
/// never a moment when a sealed task could fork an unlabelled child.
pub const LSM_PROGRAMS: &[(&str, &str)] = &[
    ("task_alloc", "task_alloc"),
    ("ptrace_access_check", "ptrace_access_check"),
    ("ptrace_traceme", "ptrace_traceme"),
];
