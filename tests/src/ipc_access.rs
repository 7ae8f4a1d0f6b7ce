//! System V IPC from the helper's side: create an object, or use one by key and id the way a
//! task would (get, attach/send/semop, receive, read its status, remove it).
//!
//! `Allowed` only when the call succeeded (a receive from an empty queue, ENOMSG, has passed
//! every permission check and counts as allowed); `Denied` only for the errno a bulkhead
//! refusal gives on that path: EACCES where the kernel's `ipcperms()` turns any refusal into it
//! (every operation but removal), EPERM from the `*ctl` hooks. The objects are mode 0666 and
//! the attackers root, so the kernel's own checks pass (the outside controls show it).

use crate::access::{Outcome, in_forked_child};

fn outcome(what: &str, rc: libc::c_long) -> Outcome {
    if rc >= 0 {
        return Outcome::Allowed;
    }
    let err = std::io::Error::last_os_error();
    let refusal = if what.ends_with("IPC_RMID") {
        libc::EPERM
    } else {
        libc::EACCES
    };
    if err.raw_os_error() == Some(refusal) {
        Outcome::Denied
    } else {
        Outcome::Error(format!("{what}: {err}"))
    }
}

/// Creates a new object of `kind` (shm, msg, sem) under `key`, readable and writable by all so
/// that only bulkhead can refuse; returns its id.
pub fn create(kind: &str, key: i32) -> Result<i32, String> {
    let flags = libc::IPC_CREAT | libc::IPC_EXCL | 0o666;
    // SAFETY: plain system calls with no pointers.
    let id = unsafe {
        match kind {
            "shm" => libc::shmget(key, 4096, flags),
            "msg" => libc::msgget(key, flags),
            "sem" => libc::semget(key, 1, flags),
            _ => return Err(format!("unknown IPC kind {kind}")),
        }
    };
    if id < 0 {
        return Err(format!(
            "creating {kind} {key:#x}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(id)
}

/// One operation on the object `id` (created under `key`).
pub fn attempt(kind: &str, key: i32, id: i32, op: &str) -> Outcome {
    match (kind, op) {
        // SAFETY (all): system calls on an IPC id with buffers that live for the call.
        ("shm", "get") => outcome("shmget", unsafe { libc::shmget(key, 0, 0) }.into()),
        ("shm", "use") => {
            let addr = unsafe { libc::shmat(id, std::ptr::null(), libc::SHM_RDONLY) };
            if addr as isize == -1 {
                return outcome("shmat", -1);
            }
            unsafe { libc::shmdt(addr) };
            Outcome::Allowed
        }
        ("shm", "stat") => {
            let mut buf: libc::shmid_ds = unsafe { std::mem::zeroed() };
            outcome(
                "shmctl IPC_STAT",
                unsafe { libc::shmctl(id, libc::IPC_STAT, &mut buf) }.into(),
            )
        }
        ("shm", "rmid") => outcome(
            "shmctl IPC_RMID",
            unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) }.into(),
        ),
        ("msg", "get") => outcome("msgget", unsafe { libc::msgget(key, 0) }.into()),
        ("msg", "use") => {
            let message: [libc::c_long; 2] = [1, 0];
            outcome(
                "msgsnd",
                unsafe { libc::msgsnd(id, message.as_ptr().cast(), 1, libc::IPC_NOWAIT) }.into(),
            )
        }
        ("msg", "receive") => {
            let mut message: [libc::c_long; 2] = [0, 0];
            let rc =
                unsafe { libc::msgrcv(id, message.as_mut_ptr().cast(), 8, 0, libc::IPC_NOWAIT) };
            if rc < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOMSG) {
                return Outcome::Allowed;
            }
            outcome("msgrcv", rc as libc::c_long)
        }
        ("msg", "stat") => {
            let mut buf: libc::msqid_ds = unsafe { std::mem::zeroed() };
            outcome(
                "msgctl IPC_STAT",
                unsafe { libc::msgctl(id, libc::IPC_STAT, &mut buf) }.into(),
            )
        }
        ("msg", "rmid") => outcome(
            "msgctl IPC_RMID",
            unsafe { libc::msgctl(id, libc::IPC_RMID, std::ptr::null_mut()) }.into(),
        ),
        ("sem", "get") => outcome("semget", unsafe { libc::semget(key, 0, 0) }.into()),
        ("sem", "use") => {
            let mut op = libc::sembuf {
                sem_num: 0,
                sem_op: 1,
                sem_flg: libc::IPC_NOWAIT as i16,
            };
            outcome("semop", unsafe { libc::semop(id, &mut op, 1) }.into())
        }
        ("sem", "stat") => {
            // struct semid_ds is smaller than this; semctl writes through the pointer.
            let mut buf = [0u64; 32];
            outcome(
                "semctl IPC_STAT",
                unsafe { libc::semctl(id, 0, libc::IPC_STAT, buf.as_mut_ptr()) }.into(),
            )
        }
        ("sem", "rmid") => outcome(
            "semctl IPC_RMID",
            unsafe { libc::semctl(id, 0, libc::IPC_RMID) }.into(),
        ),
        _ => Outcome::Error(format!("unknown IPC operation {kind} {op}")),
    }
}

/// The operations a task can try on an object of each kind.
pub fn operations(kind: &str) -> &'static [&'static str] {
    match kind {
        "msg" => &["get", "use", "receive", "stat", "rmid"],
        _ => &["get", "use", "stat", "rmid"],
    }
}

/// Creates an object and uses it from a forked child (same domain) with every operation,
/// removing it last: all must be allowed.
pub fn same_domain(kind: &str, key: i32) -> Outcome {
    let id = match create(kind, key) {
        Ok(id) => id,
        Err(err) => return Outcome::Error(err),
    };
    in_forked_child(&format!("same-domain {kind}"), || {
        for op in operations(kind) {
            let outcome = attempt(kind, key, id, op);
            if outcome != Outcome::Allowed {
                return match outcome {
                    Outcome::Error(err) => Outcome::Error(format!("{op}: {err}")),
                    other => other,
                };
            }
        }
        Outcome::Allowed
    })
}
