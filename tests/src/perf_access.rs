//! perf_event_open against another process (its user stack and registers can be sampled) and
//! CPU-wide (every process on the CPU). Inside a domain both are refused: per-task events need
//! `ptrace_may_access` or CAP_PERFMON, CPU-wide ones CAP_PERFMON, and bulkhead refuses the
//! first across domains and the capability (with CAP_SYS_ADMIN) to domains altogether.
//!
//! `Denied` is EACCES, the kernel's answer to either refusal.

use crate::access::Outcome;

const PERF_TYPE_SOFTWARE: u32 = 1;
const PERF_COUNT_SW_CPU_CLOCK: u64 = 0;
/// `exclude_kernel` and `exclude_hv`: a user-space-only event, the least a caller can ask.
const EXCLUDE_KERNEL_AND_HV: u64 = (1 << 5) | (1 << 6);

/// Opens a user-space CPU-clock event on `pid` (-1: every process) on `cpu` (-1: any).
pub fn attempt(pid: i32, cpu: i32) -> Outcome {
    // struct perf_event_attr, zero-padded past the fields set (its size is passed in it).
    let mut attr = [0u64; 16];
    attr[0] = u64::from(PERF_TYPE_SOFTWARE) | ((std::mem::size_of_val(&attr) as u64) << 32);
    attr[1] = PERF_COUNT_SW_CPU_CLOCK;
    attr[5] = EXCLUDE_KERNEL_AND_HV;
    // SAFETY: `attr` outlives the call and is as large as it says.
    let fd = unsafe { libc::syscall(libc::SYS_perf_event_open, attr.as_ptr(), pid, cpu, -1, 0) };
    if fd >= 0 {
        // SAFETY: our own fd.
        unsafe { libc::close(fd as i32) };
        return Outcome::Allowed;
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EACCES) {
        Outcome::Denied
    } else {
        Outcome::Error(format!("perf_event_open: {err}"))
    }
}
