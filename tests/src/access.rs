//! The cross-domain accesses the suite attempts, each done the way an attacker would.
//!
//! An attempt is `Allowed` only if it actually obtained the data (and, where the suite knows it,
//! the expected content); `Denied` only if it failed with the errno the kernel returns for an
//! LSM refusal on that path. Anything else is an `Error`, which fails every test, so a broken
//! harness can pass neither a denial test nor its control.

use crate::refusal_records::Names;
use std::{
    ffi::CString,
    fs,
    io::{self, Read},
    os::unix::fs::OpenOptionsExt,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    PtraceAttach,
    PtraceSeize,
    ProcMem,
    ProcEnviron,
    ProcAuxv,
    ProcFdOpen,
    ProcCwdReadlink,
    ProcCwdTraverse,
    ProcRootReadlink,
    ProcRootTraverse,
    ProcessVmReadv,
    PidfdGetfd,
    SetNice,
    SetScheduler,
    SetAffinity,
    GetScheduler,
    GetAffinity,
    SetIoprio,
    GetIoprio,
    SetRlimit,
    MovePages,
    GetPgid,
    GetSid,
    ProcOomScoreAdj,
    ProcCoredumpFilter,
    ProcClearRefs,
    ProcCmdline,
    ProcStatus,
    ProcListDir,
}

impl Access {
    /// Every access that targets another process by pid (PTRACE_TRACEME is tested separately:
    /// its target is always the parent).
    pub const ALL: [Access; 29] = [
        Access::PtraceAttach,
        Access::PtraceSeize,
        Access::ProcMem,
        Access::ProcEnviron,
        Access::ProcAuxv,
        Access::ProcFdOpen,
        Access::ProcCwdReadlink,
        Access::ProcCwdTraverse,
        Access::ProcRootReadlink,
        Access::ProcRootTraverse,
        Access::ProcessVmReadv,
        Access::PidfdGetfd,
        Access::SetNice,
        Access::SetScheduler,
        Access::SetAffinity,
        Access::GetScheduler,
        Access::GetAffinity,
        Access::SetIoprio,
        Access::GetIoprio,
        Access::SetRlimit,
        Access::MovePages,
        Access::GetPgid,
        Access::GetSid,
        Access::ProcOomScoreAdj,
        Access::ProcCoredumpFilter,
        Access::ProcClearRefs,
        Access::ProcCmdline,
        Access::ProcStatus,
        Access::ProcListDir,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Access::PtraceAttach => "ptrace-attach",
            Access::PtraceSeize => "ptrace-seize",
            Access::ProcMem => "proc-mem",
            Access::ProcEnviron => "proc-environ",
            Access::ProcAuxv => "proc-auxv",
            Access::ProcFdOpen => "proc-fd-open",
            Access::ProcCwdReadlink => "proc-cwd-readlink",
            Access::ProcCwdTraverse => "proc-cwd-traverse",
            Access::ProcRootReadlink => "proc-root-readlink",
            Access::ProcRootTraverse => "proc-root-traverse",
            Access::ProcessVmReadv => "process-vm-readv",
            Access::PidfdGetfd => "pidfd-getfd",
            Access::SetNice => "set-nice",
            Access::SetScheduler => "set-scheduler",
            Access::SetAffinity => "set-affinity",
            Access::GetScheduler => "get-scheduler",
            Access::GetAffinity => "get-affinity",
            Access::SetIoprio => "set-ioprio",
            Access::GetIoprio => "get-ioprio",
            Access::SetRlimit => "set-rlimit",
            Access::MovePages => "move-pages",
            Access::GetPgid => "getpgid",
            Access::GetSid => "getsid",
            Access::ProcOomScoreAdj => "proc-oom-score-adj-write",
            Access::ProcCoredumpFilter => "proc-coredump-filter-write",
            Access::ProcClearRefs => "proc-clear-refs-write",
            Access::ProcCmdline => "proc-cmdline",
            Access::ProcStatus => "proc-status",
            Access::ProcListDir => "proc-list-task-dir",
        }
    }

    pub fn from_name(name: &str) -> Option<Access> {
        Access::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The errno a bulkhead refusal produces on this path: EPERM everywhere. (The /proc paths
    /// gave EACCES when only mm_access() refused them; inode_permission now refuses the walk
    /// into another domain's `/proc/<pid>` first.)
    pub fn denial_errno(self) -> i32 {
        libc::EPERM
    }
}

impl Access {
    /// The audit records that show this access refused against the process `pid`: the hook
    /// that judges it and the object the record names. The system calls are judged by their
    /// task hooks (move_pages by ptrace_access_check, which its find_mm_struct asks before
    /// task_movememory); every `/proc/<pid>` path by `inode_permission` on the procfs file.
    pub fn recorded_as(self, pid: i32) -> Vec<(&'static str, Names)> {
        let task = |hook| vec![(hook, Names::Task(pid))];
        match self {
            Access::SetNice => task("task_setnice"),
            Access::SetScheduler | Access::SetAffinity => task("task_setscheduler"),
            Access::GetScheduler | Access::GetAffinity => task("task_getscheduler"),
            Access::SetIoprio => task("task_setioprio"),
            Access::GetIoprio => task("task_getioprio"),
            Access::SetRlimit => task("task_setrlimit"),
            Access::MovePages => vec![
                ("ptrace_access_check", Names::Task(pid)),
                ("task_movememory", Names::Task(pid)),
            ],
            Access::GetPgid => task("task_getpgid"),
            Access::GetSid => task("task_getsid"),
            // Every path into another domain's /proc/<pid> is refused at the walk, before
            // any ptrace check; pidfd_getfd and process_vm_readv take no path.
            Access::ProcessVmReadv
            | Access::PidfdGetfd
            | Access::PtraceAttach
            | Access::PtraceSeize => task("ptrace_access_check"),
            _ => vec![("inode_permission", Names::FsObject("proc"))],
        }
    }
}

/// What the suite knows about a target, so an allowed access can be checked for content.
pub struct Target {
    pub pid: i32,
    /// An address mapped readable in the target.
    pub addr: u64,
    /// The bytes expected at `addr`, when known.
    pub expect_mem: Option<Vec<u8>>,
    /// A string the target's initial environment contains.
    pub env_marker: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    Denied,
    Error(String),
}

impl Outcome {
    /// Exit status of a helper process reporting this outcome.
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Allowed => 0,
            Outcome::Denied => 10,
            Outcome::Error(_) => 20,
        }
    }
}

/// The outcome of a system call that returned `rc`: success is `Allowed`, a failure with
/// `denial` (the errno a bulkhead refusal gives on that path) `Denied`, any other an error.
pub(crate) fn syscall_outcome(what: &str, rc: libc::c_long, denial: i32) -> Outcome {
    if rc >= 0 {
        return Outcome::Allowed;
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(denial) {
        Outcome::Denied
    } else {
        Outcome::Error(format!("{what}: {err}"))
    }
}

/// Runs `attempts` in a forked child (the caller's domain, so the same-domain controls) and
/// decodes the outcome from its exit status.
pub(crate) fn in_forked_child(what: &str, attempts: impl FnOnce() -> Outcome) -> Outcome {
    // SAFETY: the child only makes system calls and exits.
    match unsafe { libc::fork() } {
        0 => {
            let outcome = attempts();
            if let Outcome::Error(message) = &outcome {
                eprintln!("{what}: {message}");
            }
            unsafe { libc::_exit(outcome.exit_code()) }
        }
        -1 => Outcome::Error(format!("fork: {}", io::Error::last_os_error())),
        child => {
            let mut status = 0;
            // SAFETY: waits for our own child.
            unsafe { libc::waitpid(child, &mut status, 0) };
            match libc::WEXITSTATUS(status) {
                0 => Outcome::Allowed,
                10 => Outcome::Denied,
                code => Outcome::Error(format!("{what}: child exit {code}")),
            }
        }
    }
}

/// Classifies a failed system call: the expected errno is a denial, anything else an error.
pub(crate) fn failed(access: Access, what: &str, err: io::Error) -> Outcome {
    if err.raw_os_error() == Some(access.denial_errno()) {
        Outcome::Denied
    } else {
        Outcome::Error(format!("{what}: {err}"))
    }
}

pub(crate) fn last_error() -> io::Error {
    io::Error::last_os_error()
}

pub fn attempt(access: Access, target: &Target) -> Outcome {
    let pid = target.pid;
    match access {
        Access::PtraceAttach => ptrace_attach(pid),
        Access::PtraceSeize => ptrace_seize(pid),
        Access::ProcMem => proc_mem(target),
        Access::ProcEnviron => read_proc(
            access,
            &format!("/proc/{pid}/environ"),
            Some(&target.env_marker),
        ),
        Access::ProcAuxv => read_proc(access, &format!("/proc/{pid}/auxv"), None),
        Access::ProcFdOpen => match fs::File::open(format!("/proc/{pid}/fd/2")) {
            Ok(_) => Outcome::Allowed,
            Err(err) => failed(access, "open /proc/pid/fd/2", err),
        },
        Access::ProcCwdReadlink => readlink(access, &format!("/proc/{pid}/cwd")),
        Access::ProcRootReadlink => readlink(access, &format!("/proc/{pid}/root")),
        Access::ProcCwdTraverse => traverse(access, &format!("/proc/{pid}/cwd/")),
        Access::ProcRootTraverse => traverse(access, &format!("/proc/{pid}/root/")),
        Access::ProcessVmReadv => process_vm_readv(target),
        Access::PidfdGetfd => pidfd_getfd(pid),
        Access::ProcOomScoreAdj => write_back(access, &format!("/proc/{pid}/oom_score_adj"), "0"),
        // Shown in hex without a prefix, parsed with the prefix's base: written back with one.
        Access::ProcCoredumpFilter => {
            let path = format!("/proc/{pid}/coredump_filter");
            match fs::read_to_string(&path) {
                Ok(value) => write_proc(access, &path, &format!("0x{}", value.trim())),
                Err(err) if err.raw_os_error() == Some(access.denial_errno()) => {
                    write_proc(access, &path, "0x33")
                }
                Err(err) => Outcome::Error(format!("reading {path}: {err}")),
            }
        }
        Access::ProcCmdline => read_proc(access, &format!("/proc/{pid}/cmdline"), None),
        Access::ProcStatus => read_proc(
            access,
            &format!("/proc/{pid}/status"),
            Some(&format!("Pid:\t{pid}\n")),
        ),
        Access::ProcListDir => list_dir(access, &format!("/proc/{pid}/task")),
        // Write-only; 5 resets the peak RSS count, the only request that changes no page.
        Access::ProcClearRefs => write_proc(access, &format!("/proc/{pid}/clear_refs"), "5"),
        _ => crate::task_control::attempt(access, pid),
    }
}

fn ptrace_attach(pid: i32) -> Outcome {
    // SAFETY: plain ptrace requests on a pid; no memory is passed.
    if unsafe { libc::ptrace(libc::PTRACE_ATTACH, pid, 0, 0) } != 0 {
        return failed(Access::PtraceAttach, "PTRACE_ATTACH", last_error());
    }
    // Consume the attach stop, then let the target go on as before.
    let mut status = 0;
    // SAFETY: status is a valid out pointer.
    unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
    // SAFETY: as above.
    unsafe { libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0) };
    Outcome::Allowed
}

fn ptrace_seize(pid: i32) -> Outcome {
    // SAFETY: as above. A seized tracee is not stopped; exiting detaches it.
    if unsafe { libc::ptrace(libc::PTRACE_SEIZE, pid, 0, 0) } != 0 {
        return failed(Access::PtraceSeize, "PTRACE_SEIZE", last_error());
    }
    Outcome::Allowed
}

/// PTRACE_TRACEME: make the parent this process's tracer.
pub fn ptrace_traceme() -> Outcome {
    // SAFETY: request without arguments.
    if unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) } != 0 {
        let err = last_error();
        return if err.raw_os_error() == Some(libc::EPERM) {
            Outcome::Denied
        } else {
            Outcome::Error(format!("PTRACE_TRACEME: {err}"))
        };
    }
    Outcome::Allowed
}

fn check_bytes(got: &[u8], target: &Target) -> Outcome {
    match &target.expect_mem {
        Some(expected) if got != &expected[..got.len().min(expected.len())] => {
            Outcome::Error(format!("read {got:02x?}, expected {expected:02x?}"))
        }
        _ => Outcome::Allowed,
    }
}

fn proc_mem(target: &Target) -> Outcome {
    use std::os::unix::fs::FileExt;
    let file = match fs::File::open(format!("/proc/{}/mem", target.pid)) {
        Ok(file) => file,
        Err(err) => return failed(Access::ProcMem, "open /proc/pid/mem", err),
    };
    let mut buf = [0u8; 8];
    match file.read_exact_at(&mut buf, target.addr) {
        Ok(()) => check_bytes(&buf, target),
        Err(err) => failed(Access::ProcMem, "pread /proc/pid/mem", err),
    }
}

/// Lists a directory, which must hold at least one entry.
fn list_dir(access: Access, path: &str) -> Outcome {
    match fs::read_dir(path) {
        Err(err) => failed(access, path, err),
        Ok(mut entries) => match entries.next() {
            Some(Ok(_)) => Outcome::Allowed,
            Some(Err(err)) => failed(access, path, err),
            None => Outcome::Error(format!("{path} listed as empty")),
        },
    }
}

fn read_proc(access: Access, path: &str, marker: Option<&str>) -> Outcome {
    let mut data = Vec::new();
    let read = fs::File::open(path).and_then(|mut file| file.read_to_end(&mut data));
    match read {
        Err(err) => failed(access, path, err),
        Ok(0) => Outcome::Error(format!("{path} read as empty")),
        Ok(_) => match marker {
            Some(marker) if !String::from_utf8_lossy(&data).contains(marker) => {
                Outcome::Error(format!("{path} lacks {marker}"))
            }
            _ => Outcome::Allowed,
        },
    }
}

/// Writes back the value a `/proc/<pid>` file holds, so an allowed write changes nothing; the
/// kernel runs every check all the same. Where reading is refused (a task in a domain may not
/// read another domain's `/proc/<pid>` either), the write is still tried, with `default` (the
/// kernel's default value), so the refusal shown is the write's own.
fn write_back(access: Access, path: &str, default: &str) -> Outcome {
    match fs::read_to_string(path) {
        Ok(value) => write_proc(access, path, value.trim()),
        Err(err) if err.raw_os_error() == Some(access.denial_errno()) => {
            write_proc(access, path, default)
        }
        Err(err) => Outcome::Error(format!("reading {path}: {err}")),
    }
}

fn write_proc(access: Access, path: &str, value: &str) -> Outcome {
    use std::io::Write;
    let written = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut file| file.write_all(value.as_bytes()));
    match written {
        Ok(()) => Outcome::Allowed,
        Err(err) => failed(access, path, err),
    }
}

fn readlink(access: Access, path: &str) -> Outcome {
    match fs::read_link(path) {
        Ok(_) => Outcome::Allowed,
        Err(err) => failed(access, path, err),
    }
}

fn traverse(access: Access, path: &str) -> Outcome {
    let opened = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(path);
    match opened.and_then(|_| fs::read_dir(path).map(|entries| entries.count())) {
        Ok(_) => Outcome::Allowed,
        Err(err) => failed(access, path, err),
    }
}

fn process_vm_readv(target: &Target) -> Outcome {
    let mut buf = [0u8; 8];
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: target.addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: one local iovec over `buf`; the remote one is only read by the kernel.
    let n = unsafe { libc::process_vm_readv(target.pid, &local, 1, &remote, 1, 0) };
    if n < 0 {
        return failed(Access::ProcessVmReadv, "process_vm_readv", last_error());
    }
    if n as usize != buf.len() {
        return Outcome::Error(format!("process_vm_readv read {n} bytes"));
    }
    check_bytes(&buf, target)
}

fn pidfd_getfd(pid: i32) -> Outcome {
    // SAFETY: plain syscalls; the returned fds are closed below.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        return Outcome::Error(format!("pidfd_open: {}", last_error()));
    }
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd as i32, 2, 0) };
    let outcome = if fd < 0 {
        failed(Access::PidfdGetfd, "pidfd_getfd", last_error())
    } else {
        unsafe { libc::close(fd as i32) };
        Outcome::Allowed
    };
    unsafe { libc::close(pidfd as i32) };
    outcome
}

/// C string for exec-family calls.
pub fn cstring(s: &str) -> CString {
    CString::new(s).expect("no NUL in argument")
}
