//! Acting on another task's scheduling, I/O priority, resource limits and memory placement,
//! and reading its scheduling settings and process group. Every setter writes back the value
//! the target already has (read first where a read is allowed), so a control that succeeds
//! leaves the supervisor and the agent as they were; the kernel runs the hook all the same.

use crate::access::{Access, Outcome, failed, last_error};

/// `ioprio_set`/`ioprio_get` "who": a single process.
const IOPRIO_WHO_PROCESS: libc::c_long = 1;

pub fn attempt(access: Access, pid: i32) -> Outcome {
    match access {
        Access::SetNice => set_nice(pid),
        Access::SetScheduler => set_scheduler(pid),
        Access::SetAffinity => set_affinity(pid),
        Access::GetScheduler => {
            // SAFETY: plain syscall on a pid.
            checked(
                access,
                "sched_getscheduler",
                unsafe { libc::sched_getscheduler(pid) } as libc::c_long,
            )
        }
        Access::GetAffinity => {
            let mut set = cpu_set();
            // SAFETY: `set` is a valid cpu_set_t of the size passed.
            let rc = unsafe {
                libc::sched_getaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &mut set)
            };
            checked(access, "sched_getaffinity", rc.into())
        }
        Access::SetIoprio => set_ioprio(pid),
        Access::GetIoprio => checked(access, "ioprio_get", ioprio_get(pid)),
        Access::SetRlimit => set_rlimit(pid),
        Access::MovePages => {
            // With no pages the call only checks the caller may move the target's memory.
            // SAFETY: null arrays with a count of zero are never read.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_move_pages,
                    pid,
                    0,
                    std::ptr::null::<u8>(),
                    std::ptr::null::<u8>(),
                    std::ptr::null::<u8>(),
                    0,
                )
            };
            checked(access, "move_pages", rc)
        }
        // SAFETY (both): plain syscalls on a pid.
        Access::GetPgid => checked(access, "getpgid", unsafe { libc::getpgid(pid) }.into()),
        Access::GetSid => checked(access, "getsid", unsafe { libc::getsid(pid) }.into()),
        other => Outcome::Error(format!("{} is not a task-control access", other.name())),
    }
}

/// A syscall result: non-negative is allowed, -1 is classified by errno.
fn checked(access: Access, what: &str, rc: libc::c_long) -> Outcome {
    if rc < 0 {
        failed(access, what, last_error())
    } else {
        Outcome::Allowed
    }
}

fn set_nice(pid: i32) -> Outcome {
    // getpriority passes no hook; -1 is a valid value, so errno tells an error.
    // SAFETY: errno is this thread's; getpriority on a pid.
    let nice = unsafe {
        *libc::__errno_location() = 0;
        libc::getpriority(libc::PRIO_PROCESS, pid as libc::id_t)
    };
    if nice == -1 && last_error().raw_os_error() != Some(0) {
        return Outcome::Error(format!("getpriority: {}", last_error()));
    }
    // SAFETY: plain syscall.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, pid as libc::id_t, nice) };
    checked(Access::SetNice, "setpriority", rc.into())
}

fn set_scheduler(pid: i32) -> Outcome {
    // The supervisor, the agent and the holder all run SCHED_OTHER (priority 0), which the
    // legacy call keeps with the nice value unchanged.
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is valid for the call.
    let rc = unsafe { libc::sched_setscheduler(pid, libc::SCHED_OTHER, &param) };
    checked(Access::SetScheduler, "sched_setscheduler", rc.into())
}

fn cpu_set() -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is plain data; all zeros is the empty set.
    unsafe { std::mem::zeroed() }
}

fn set_affinity(pid: i32) -> Outcome {
    // This helper's own mask: every CPU, as the targets have.
    let mut set = cpu_set();
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    if unsafe { libc::sched_getaffinity(0, size, &mut set) } != 0 {
        return Outcome::Error(format!("sched_getaffinity(self): {}", last_error()));
    }
    // SAFETY: as above.
    let rc = unsafe { libc::sched_setaffinity(pid, size, &set) };
    checked(Access::SetAffinity, "sched_setaffinity", rc.into())
}

fn ioprio_get(pid: i32) -> libc::c_long {
    // SAFETY: plain syscall.
    unsafe { libc::syscall(libc::SYS_ioprio_get, IOPRIO_WHO_PROCESS, pid) }
}

fn set_ioprio(pid: i32) -> Outcome {
    // Read where allowed; from inside a domain the read is refused too, and 0 (no class, the
    // default of every target) is written.
    let current = ioprio_get(pid).max(0);
    // SAFETY: plain syscall.
    let rc = unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, pid, current) };
    checked(Access::SetIoprio, "ioprio_set", rc)
}

fn set_rlimit(pid: i32) -> Outcome {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // Reading passes only task_prlimit, which gets credentials and no task.
    // SAFETY: `limit` is a valid out pointer.
    if unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut limit) } != 0 {
        return Outcome::Error(format!("prlimit read: {}", last_error()));
    }
    // SAFETY: `limit` is a valid in pointer.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &limit, std::ptr::null_mut()) };
    checked(Access::SetRlimit, "prlimit write", rc.into())
}
