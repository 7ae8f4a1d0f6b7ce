//! A task in a domain holding a descriptor of a protected file it could not open: inherited
//! from its supervisor, received over a Unix socket, or handed out by the kernel with a
//! fanotify event. The helper gets the descriptor number (or the socket's, or the fanotify
//! group's) as its argument, uses it one way, and reports `Allowed` only when the protected
//! contents came back; `Denied` is EPERM (or, for a received descriptor, the kernel dropping
//! it from the message, which it does when `file_receive` refuses).

use std::{fs::File, io::Read, os::fd::FromRawFd};

use crate::{access::Outcome, fixtures::SECRET_CONTENT};

/// The ways an inherited descriptor is used.
pub const HELD_OPS: [&str; 8] = [
    "read",
    "pread",
    "mmap",
    "sendfile",
    "splice",
    "copy-range",
    "ioctl-getflags",
    "lease",
];

/// `FS_IOC_GETFLAGS`, `_IOR('f', 1, long)`.
const FS_IOC_GETFLAGS: libc::c_ulong = 0x8008_6601;

fn last_error() -> std::io::Error {
    std::io::Error::last_os_error()
}

fn refused_or(what: &str, err: std::io::Error) -> Outcome {
    if err.raw_os_error() == Some(libc::EPERM) {
        Outcome::Denied
    } else {
        Outcome::Error(format!("{what}: {err}"))
    }
}

fn judge(bytes: &[u8]) -> Outcome {
    if bytes.starts_with(SECRET_CONTENT.as_bytes()) {
        Outcome::Allowed
    } else {
        Outcome::Error(format!(
            "read {:?}, not the protected contents",
            String::from_utf8_lossy(bytes)
        ))
    }
}

/// Uses the inherited descriptor `fd` of the protected file by `op`.
pub fn held(fd: i32, op: &str) -> Outcome {
    let len = SECRET_CONTENT.len();
    let mut buf = vec![0u8; len];
    // SAFETY (all arms): system calls on our own descriptors and buffers of the stated length.
    unsafe {
        let n = match op {
            "read" => libc::read(fd, buf.as_mut_ptr().cast(), len),
            "pread" => libc::pread(fd, buf.as_mut_ptr().cast(), len, 0),
            "mmap" => {
                let map = libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ,
                    libc::MAP_PRIVATE,
                    fd,
                    0,
                );
                if map == libc::MAP_FAILED {
                    return refused_or("mmap", last_error());
                }
                std::ptr::copy_nonoverlapping(map.cast::<u8>(), buf.as_mut_ptr(), len);
                libc::munmap(map, len);
                len as isize
            }
            "sendfile" | "splice" => {
                let mut pipe = [0; 2];
                if libc::pipe(pipe.as_mut_ptr()) != 0 {
                    return Outcome::Error(format!("pipe: {}", last_error()));
                }
                let mut offset: libc::loff_t = 0;
                let moved = if op == "sendfile" {
                    libc::sendfile(pipe[1], fd, &mut offset, len)
                } else {
                    libc::splice(fd, &mut offset, pipe[1], std::ptr::null_mut(), len, 0)
                };
                let result = if moved < 0 {
                    Err(last_error())
                } else {
                    Ok(libc::read(pipe[0], buf.as_mut_ptr().cast(), len))
                };
                libc::close(pipe[0]);
                libc::close(pipe[1]);
                match result {
                    Ok(n) => n,
                    Err(err) => return refused_or(op, err),
                }
            }
            "copy-range" => {
                let copy = match tempfile_fd() {
                    Ok(copy) => copy,
                    Err(err) => return Outcome::Error(err),
                };
                let mut offset: libc::loff_t = 0;
                let copied =
                    libc::copy_file_range(fd, &mut offset, copy, std::ptr::null_mut(), len, 0);
                let result = if copied < 0 {
                    Err(last_error())
                } else {
                    Ok(libc::pread(copy, buf.as_mut_ptr().cast(), len, 0))
                };
                libc::close(copy);
                match result {
                    Ok(n) => n,
                    Err(err) => return refused_or(op, err),
                }
            }
            // Requests that read no contents: success is all an allowed one can show.
            "ioctl-getflags" => {
                let mut flags: libc::c_long = 0;
                if libc::ioctl(fd, FS_IOC_GETFLAGS, &mut flags) != 0 {
                    return refused_or("FS_IOC_GETFLAGS", last_error());
                }
                return Outcome::Allowed;
            }
            "lease" => {
                if libc::fcntl(fd, libc::F_SETLEASE, libc::F_RDLCK) != 0 {
                    return refused_or("F_SETLEASE", last_error());
                }
                libc::fcntl(fd, libc::F_SETLEASE, libc::F_UNLCK);
                return Outcome::Allowed;
            }
            other => return Outcome::Error(format!("unknown held-descriptor op {other}")),
        };
        if n < 0 {
            return refused_or(op, last_error());
        }
        judge(&buf[..n as usize])
    }
}

/// A scratch file of our own, already unlinked, on the protected file's filesystem
/// (copy_file_range refuses to cross filesystems of different types with EXDEV).
fn tempfile_fd() -> Result<i32, String> {
    let dir = c"/srv/bulkhead-test";
    // SAFETY: a NUL-terminated literal.
    let fd = unsafe { libc::open(dir.as_ptr(), libc::O_TMPFILE | libc::O_RDWR, 0o600) };
    if fd < 0 {
        Err(format!("O_TMPFILE: {}", last_error()))
    } else {
        Ok(fd)
    }
}

/// Receives one descriptor over the Unix socket `socket` and reads it.
pub fn received(socket: i32) -> Outcome {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control = [0u8; 64];
    // SAFETY: a zeroed msghdr pointing at buffers that outlive the call.
    let (n, flags, fd) = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = control.len();
        let n = libc::recvmsg(socket, &mut msg, 0);
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        let fd = if n > 0 && !cmsg.is_null() && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
            Some(std::ptr::read_unaligned(
                libc::CMSG_DATA(cmsg).cast::<i32>(),
            ))
        } else {
            None
        };
        (n, msg.msg_flags, fd)
    };
    match (n, fd) {
        (n, _) if n < 0 => refused_or("recvmsg", last_error()),
        (_, Some(fd)) => read_whole(fd),
        // The kernel drops a descriptor `file_receive` refused and says so.
        (_, None) if flags & libc::MSG_CTRUNC != 0 => Outcome::Denied,
        (_, None) => Outcome::Error("no descriptor in the message".into()),
    }
}

/// Reads one event from the fanotify group `group` and the file its descriptor opens.
pub fn fanotify_event(group: i32) -> Outcome {
    match event_descriptor(group) {
        Ok(fd) => read_whole(fd),
        Err(outcome) => outcome,
    }
}

/// Reads one event from the fanotify group `group`: `Allowed` when the kernel opened the file
/// for it (the descriptor is closed unread), `Denied` when the open was refused.
pub fn fanotify_event_opened(group: i32) -> Outcome {
    match event_descriptor(group) {
        Ok(fd) => {
            // SAFETY: the descriptor is ours.
            drop(unsafe { File::from_raw_fd(fd) });
            Outcome::Allowed
        }
        Err(outcome) => outcome,
    }
}

/// The descriptor the kernel opened for the next event of `group`, or the outcome of the read
/// (`Denied` when the kernel refused to open the file for the listener).
fn event_descriptor(group: i32) -> Result<i32, Outcome> {
    let mut buf = [0u8; 4096];
    // SAFETY: a buffer of the stated length.
    let n = unsafe { libc::read(group, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(refused_or("reading the fanotify event", last_error()));
    }
    if (n as usize) < std::mem::size_of::<libc::fanotify_event_metadata>() {
        return Err(Outcome::Error(format!("fanotify read {n} bytes")));
    }
    // SAFETY: the buffer holds at least one event's metadata.
    let event: libc::fanotify_event_metadata =
        unsafe { std::ptr::read_unaligned(buf.as_ptr().cast()) };
    if event.fd < 0 {
        return Err(Outcome::Error(format!(
            "fanotify event without a descriptor ({})",
            event.fd
        )));
    }
    Ok(event.fd)
}

fn read_whole(fd: i32) -> Outcome {
    // SAFETY: the descriptor is ours to own from here.
    let mut file = unsafe { File::from_raw_fd(fd) };
    let mut bytes = Vec::new();
    match file.read_to_end(&mut bytes) {
        Ok(_) => judge(&bytes),
        Err(err) => refused_or("read", err),
    }
}
