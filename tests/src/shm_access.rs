//! POSIX shared memory (files in /dev/shm, as `shm_open` makes them) and POSIX message queues
//! from the helper's side: make one, or use one by name the way a task would.
//!
//! `Allowed` only when the call succeeded (and a read found the maker's bytes); `Denied` only
//! for EPERM, the errno of a bulkhead refusal on every path here. The objects are mode 0666
//! and the callers root, so the kernel's own checks pass, as the outside controls show.

use std::{ffi::CString, fs, io::Read};

use crate::access::{Outcome, in_forked_child, syscall_outcome};

/// What every test object holds: an allowed read must find it.
pub const CONTENT: &[u8] = b"bulkhead-shm-secret";
const SHM_DIR: &str = "/dev/shm";

fn shm_path(name: &str) -> String {
    format!("{SHM_DIR}/{name}")
}

fn queue_name(name: &str) -> Result<CString, String> {
    CString::new(format!("/{name}")).map_err(|err| err.to_string())
}

/// Makes a shared-memory file (`shm`) or a message queue (`mq`) called `name`, readable and
/// writable by all, holding [`CONTENT`]; it outlives this process.
pub fn create(kind: &str, name: &str) -> Result<(), String> {
    match kind {
        "shm" => {
            use std::os::unix::fs::PermissionsExt;
            let path = shm_path(name);
            fs::write(&path, CONTENT).map_err(|err| format!("creating {path}: {err}"))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o666))
                .map_err(|err| format!("chmod {path}: {err}"))
        }
        "mq" => {
            let queue = queue_name(name)?;
            // SAFETY: a NUL-terminated name; default attributes (a null pointer).
            let fd = unsafe {
                libc::mq_open(
                    queue.as_ptr(),
                    libc::O_CREAT | libc::O_EXCL | libc::O_RDWR,
                    0o666 as libc::mode_t,
                    std::ptr::null_mut::<libc::mq_attr>(),
                )
            };
            if fd < 0 {
                return Err(format!(
                    "mq_open {name}: {}",
                    std::io::Error::last_os_error()
                ));
            }
            // SAFETY: the buffer lives for the call; the descriptor is ours.
            let sent = unsafe { libc::mq_send(fd, CONTENT.as_ptr().cast(), CONTENT.len(), 0) };
            unsafe { libc::mq_close(fd) };
            if sent != 0 {
                return Err(format!(
                    "mq_send {name}: {}",
                    std::io::Error::last_os_error()
                ));
            }
            Ok(())
        }
        _ => Err(format!("unknown kind {kind}")),
    }
}

fn outcome(what: &str, rc: libc::c_long) -> Outcome {
    syscall_outcome(what, rc, libc::EPERM)
}

fn io_outcome(what: &str, result: std::io::Result<()>) -> Outcome {
    match result {
        Ok(()) => Outcome::Allowed,
        Err(err) if err.raw_os_error() == Some(libc::EPERM) => Outcome::Denied,
        Err(err) => Outcome::Error(format!("{what}: {err}")),
    }
}

/// Opens the queue `name` (without blocking) and, once open, receives the maker's message or
/// sends one: the open is the only step a hook sees.
fn mq_use(name: &str, receive: bool) -> Outcome {
    let queue = match queue_name(name) {
        Ok(queue) => queue,
        Err(err) => return Outcome::Error(err),
    };
    let flags = if receive {
        libc::O_RDONLY
    } else {
        libc::O_WRONLY
    };
    // SAFETY: a NUL-terminated name; no creation, so no mode or attributes.
    let fd = unsafe { libc::mq_open(queue.as_ptr(), flags | libc::O_NONBLOCK) };
    if fd < 0 {
        return outcome("mq_open", fd.into());
    }
    // The default queue's message size; a receive buffer must be at least that large.
    let mut buf = vec![0u8; 8192];
    // SAFETY: buffers that live for the calls; the descriptor is ours.
    let rc = unsafe {
        if receive {
            libc::mq_receive(fd, buf.as_mut_ptr().cast(), buf.len(), std::ptr::null_mut())
        } else {
            libc::mq_send(fd, CONTENT.as_ptr().cast(), CONTENT.len(), 0) as libc::ssize_t
        }
    };
    unsafe { libc::mq_close(fd) };
    match outcome(
        if receive { "mq_receive" } else { "mq_send" },
        rc as libc::c_long,
    ) {
        Outcome::Allowed if receive && &buf[..rc as usize] != CONTENT => {
            Outcome::Error(format!("received {:?}", &buf[..rc as usize]))
        }
        other => other,
    }
}

/// One operation on the object `name` of `kind`.
pub fn attempt(kind: &str, name: &str, op: &str) -> Outcome {
    let path = shm_path(name);
    match (kind, op) {
        ("shm", "read") => {
            let mut data = Vec::new();
            match fs::File::open(&path).and_then(|mut file| file.read_to_end(&mut data)) {
                Ok(_) if data == CONTENT => Outcome::Allowed,
                Ok(_) => Outcome::Error(format!("{path} held {data:?}")),
                Err(err) => io_outcome(&format!("reading {path}"), Err(err)),
            }
        }
        ("shm", "write") => io_outcome(
            &format!("opening {path} for writing"),
            fs::OpenOptions::new().write(true).open(&path).map(drop),
        ),
        // Truncating to its own length changes nothing but passes every check.
        ("shm", "truncate") => io_outcome(
            &format!("truncating {path}"),
            fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|file| file.set_len(CONTENT.len() as u64)),
        ),
        ("shm", "unlink") => io_outcome(&format!("unlinking {path}"), fs::remove_file(&path)),
        ("mq", "receive") => mq_use(name, true),
        ("mq", "send") => mq_use(name, false),
        // The system call itself: glibc's mq_unlink turns EPERM into EACCES.
        ("mq", "unlink") => match CString::new(name) {
            // SAFETY: a NUL-terminated name (the kernel takes it without the leading slash).
            Ok(queue) => outcome("mq_unlink", unsafe {
                libc::syscall(libc::SYS_mq_unlink, queue.as_ptr())
            }),
            Err(err) => Outcome::Error(err.to_string()),
        },
        _ => Outcome::Error(format!("unknown operation {kind} {op}")),
    }
}

/// The operations a task can try on an object of `kind`; removal last.
pub fn operations(kind: &str) -> &'static [&'static str] {
    match kind {
        "mq" => &["receive", "send", "unlink"],
        _ => &["read", "write", "truncate", "unlink"],
    }
}

/// Makes an object and uses it from a forked child (same domain) with every operation: all
/// must be allowed.
pub fn same_domain(kind: &str, name: &str) -> Outcome {
    if let Err(err) = create(kind, name) {
        return Outcome::Error(err);
    }
    in_forked_child(&format!("same-domain {kind}"), || {
        for op in operations(kind) {
            let outcome = attempt(kind, name, op);
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

/// Removes the object if it is still there (from outside any domain, after a test).
pub fn remove(kind: &str, name: &str) {
    match kind {
        "mq" => {
            if let Ok(queue) = queue_name(name) {
                // SAFETY: a NUL-terminated name.
                unsafe { libc::mq_unlink(queue.as_ptr()) };
            }
        }
        _ => {
            let _ = fs::remove_file(shm_path(name));
        }
    }
}
