//! Unix sockets from the helper's side: serve a socket, or connect and send to one the way a
//! task would.
//!
//! An address is a path, or `@name` for the abstract namespace. Kinds: `stream`, `seqpacket`,
//! `dgram`. `Allowed` only when the call succeeded; `Denied` only for EPERM, the errno of a
//! bulkhead refusal on every Unix-socket path (the sockets are mode 0777 and the callers root,
//! so the kernel's own checks pass, as the outside controls show).

use std::{
    io::Read,
    mem::{size_of, zeroed},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use crate::access::{Outcome, in_forked_child, syscall_outcome};

fn kind_type(kind: &str) -> Result<libc::c_int, String> {
    match kind {
        "stream" => Ok(libc::SOCK_STREAM),
        "seqpacket" => Ok(libc::SOCK_SEQPACKET),
        "dgram" => Ok(libc::SOCK_DGRAM),
        _ => Err(format!("unknown socket kind {kind}")),
    }
}

/// The `sockaddr_un` of `name` and its length.
fn address(name: &str) -> Result<(libc::sockaddr_un, libc::socklen_t), String> {
    // SAFETY: sockaddr_un is plain data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    // An abstract name is a NUL byte followed by the name, not NUL-terminated.
    let (bytes, offset) = match name.strip_prefix('@') {
        Some(abstract_name) => (abstract_name.as_bytes(), 1),
        None => (name.as_bytes(), 0),
    };
    if offset + bytes.len() >= addr.sun_path.len() {
        return Err(format!("socket address {name} too long"));
    }
    for (slot, byte) in addr.sun_path[offset..].iter_mut().zip(bytes) {
        *slot = *byte as libc::c_char;
    }
    let len = size_of::<libc::sa_family_t>() + offset + bytes.len() + (1 - offset);
    Ok((addr, len as libc::socklen_t))
}

fn socket(kind: &str) -> Result<OwnedFd, String> {
    let ty = kind_type(kind)?;
    // SAFETY: plain system call; the descriptor is owned from here on.
    let fd = unsafe { libc::socket(libc::AF_UNIX, ty | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(format!("socket: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn outcome(what: &str, rc: libc::c_long) -> Outcome {
    syscall_outcome(what, rc, libc::EPERM)
}

fn connect(fd: &OwnedFd, name: &str) -> Result<Outcome, String> {
    let (addr, len) = address(name)?;
    // SAFETY: `addr` lives for the call and `len` is its length.
    let rc = unsafe { libc::connect(fd.as_raw_fd(), (&raw const addr).cast(), len) };
    Ok(outcome(&format!("connect {name}"), rc.into()))
}

fn send_to(fd: &OwnedFd, name: &str) -> Result<Outcome, String> {
    let (addr, len) = address(name)?;
    // SAFETY: the buffer and `addr` live for the call.
    let rc = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            b"x".as_ptr().cast(),
            1,
            libc::MSG_DONTWAIT,
            (&raw const addr).cast(),
            len,
        )
    };
    Ok(outcome(&format!("sendto {name}"), rc as libc::c_long))
}

fn send(fd: &OwnedFd, what: &str) -> Outcome {
    // SAFETY: the buffer lives for the call.
    let rc = unsafe { libc::send(fd.as_raw_fd(), b"x".as_ptr().cast(), 1, libc::MSG_DONTWAIT) };
    outcome(what, rc as libc::c_long)
}

/// A bound (and, but for datagrams, listening) socket of `kind` at `name`, mode 0777.
fn bind_listen(kind: &str, name: &str) -> Result<OwnedFd, String> {
    if !name.starts_with('@') {
        let _ = std::fs::remove_file(name);
    }
    let fd = socket(kind)?;
    let (addr, len) = address(name)?;
    // SAFETY: `addr` lives for the call.
    if unsafe { libc::bind(fd.as_raw_fd(), (&raw const addr).cast(), len) } != 0 {
        return Err(format!("bind {name}: {}", std::io::Error::last_os_error()));
    }
    if !name.starts_with('@') {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(name, std::fs::Permissions::from_mode(0o777))
            .map_err(|err| format!("chmod {name}: {err}"))?;
    }
    // SAFETY: plain system call on an owned descriptor.
    if kind != "dgram" && unsafe { libc::listen(fd.as_raw_fd(), 64) } != 0 {
        return Err(format!(
            "listen {name}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(fd)
}

/// Serves a socket of `kind` at `name` until stdin closes: prints `ready`, then accepts and
/// drains connections (or datagrams) so callers never block.
pub fn serve(kind: &str, name: &str) -> Result<(), String> {
    let fd = bind_listen(kind, name)?;
    println!("ready");
    let raw = fd.as_raw_fd();
    let stream = kind != "dgram";
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        loop {
            // SAFETY: `raw` stays open until the process exits (the main thread holds `fd`).
            let conn = if stream {
                unsafe { libc::accept(raw, std::ptr::null_mut(), std::ptr::null_mut()) }
            } else {
                raw
            };
            if conn < 0 {
                continue;
            }
            // SAFETY: reads into a local buffer; accepted connections are closed after.
            unsafe { libc::recv(conn, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if stream {
                unsafe { libc::close(conn) };
            }
        }
    });
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
    if !name.starts_with('@') {
        let _ = std::fs::remove_file(name);
    }
    drop(fd);
    Ok(())
}

/// One attempt on the socket at `name`: `connect` (any kind) or `send` (a datagram to the
/// address, without connecting).
pub fn attempt(op: &str, kind: &str, name: &str) -> Outcome {
    let result = socket(kind).and_then(|fd| match op {
        "connect" => connect(&fd, name),
        "send" => send_to(&fd, name),
        _ => Err(format!("unknown socket operation {op}")),
    });
    result.unwrap_or_else(Outcome::Error)
}

/// The operations a task can try on a socket of `kind`.
pub fn operations(kind: &str) -> &'static [&'static str] {
    match kind {
        "dgram" => &["connect", "send"],
        _ => &["connect"],
    }
}

/// Serves `name` in this process and reaches it from a forked child (same domain) with every
/// operation: all must be allowed.
pub fn same_domain(kind: &str, name: &str) -> Outcome {
    let listener = match bind_listen(kind, name) {
        Ok(fd) => fd,
        Err(err) => return Outcome::Error(err),
    };
    let outcome = in_forked_child(&format!("same-domain {kind}"), || {
        for op in operations(kind) {
            let outcome = attempt(op, kind, name);
            if outcome != Outcome::Allowed {
                return match outcome {
                    Outcome::Error(err) => Outcome::Error(format!("{op}: {err}")),
                    other => other,
                };
            }
        }
        Outcome::Allowed
    });
    drop(listener);
    if !name.starts_with('@') {
        let _ = std::fs::remove_file(name);
    }
    outcome
}

/// Sockets connected before the seal keep working after it, a new one to the same peer is
/// refused: run outside any domain; `outside` is a datagram socket served outside any domain.
/// Seals itself (through the agent) between the two.
pub fn handed_over(outside: &str, seal: impl FnOnce() -> Result<(), String>) -> Outcome {
    let mut pair = [0; 2];
    // SAFETY: `pair` has room for the two descriptors.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            0,
            pair.as_mut_ptr(),
        )
    } != 0
    {
        return Outcome::Error(format!("socketpair: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: fresh descriptors owned from here on.
    let (a, b) = unsafe { (OwnedFd::from_raw_fd(pair[0]), OwnedFd::from_raw_fd(pair[1])) };
    let connected = match socket("dgram").and_then(|fd| Ok((connect(&fd, outside)?, fd))) {
        Ok((Outcome::Allowed, fd)) => fd,
        Ok((other, _)) => return Outcome::Error(format!("connecting before the seal: {other:?}")),
        Err(err) => return Outcome::Error(err),
    };
    if let Err(err) = seal() {
        return Outcome::Error(err);
    }
    let checks = [
        (
            "send on a socketpair made before the seal",
            send(&a, "send pair"),
            Outcome::Allowed,
        ),
        (
            "send on a socket connected before the seal",
            send(&connected, "send"),
            Outcome::Allowed,
        ),
        (
            "sendto its own peer on a socket connected before the seal",
            send_to(&connected, outside).unwrap_or_else(Outcome::Error),
            Outcome::Allowed,
        ),
        (
            "sendto from a socket made after the seal",
            attempt("send", "dgram", outside),
            Outcome::Denied,
        ),
    ];
    drop(b);
    for (what, got, want) in checks {
        if got != want {
            return Outcome::Error(format!("{what}: expected {want:?}, got {got:?}"));
        }
    }
    Outcome::Allowed
}
