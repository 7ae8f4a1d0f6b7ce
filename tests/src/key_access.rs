//! Keys and keyrings from the helper's side: make a key, or use one by serial number the way a
//! task would (read, describe, update, set permissions, link, search, revoke).
//!
//! `Allowed` only when the call succeeded; `Denied` only for the errno a bulkhead refusal gives
//! on that path: EPERM, but ENOKEY for read and search (the kernel reports any failed lookup
//! there as a missing key) and ENOMEM for KEYCTL_SESSION_TO_PARENT (any refusal of its
//! `cred_alloc_blank` looks like a failed allocation). The keys give their owner's uid every
//! permission and the callers are root of that uid, so the kernel's own checks pass, as the
//! outside controls show.

use crate::access::{Outcome, in_forked_child, syscall_outcome};

const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
const KEYCTL_UPDATE: libc::c_long = 2;
const KEYCTL_REVOKE: libc::c_long = 3;
const KEYCTL_SETPERM: libc::c_long = 5;
const KEYCTL_DESCRIBE: libc::c_long = 6;
const KEYCTL_LINK: libc::c_long = 8;
const KEYCTL_SEARCH: libc::c_long = 10;
const KEYCTL_READ: libc::c_long = 11;
const KEYCTL_SESSION_TO_PARENT: libc::c_long = 18;
const KEY_SPEC_SESSION_KEYRING: libc::c_long = -3;
pub const KEY_SPEC_USER_KEYRING: libc::c_long = -4;
/// Possessor and owner may do everything: view, read, write, search, link, setattr.
const ALL_TO_POSSESSOR_AND_OWNER: libc::c_long = 0x3f3f_0000;

/// The payload of every test key: an allowed read must return it.
pub const PAYLOAD: &[u8] = b"bulkhead-key-secret";

fn keyctl(args: [libc::c_long; 5]) -> libc::c_long {
    // SAFETY: keyctl with integer arguments and, where a command takes one, a pointer to a
    // buffer that outlives the call.
    unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            args[0],
            args[1],
            args[2],
            args[3],
            args[4],
        )
    }
}

/// Adds a `user` key called `name` to `keyring`; returns its serial.
pub fn add(name: &str, keyring: libc::c_long) -> Result<i32, String> {
    let description = std::ffi::CString::new(name).map_err(|err| err.to_string())?;
    // SAFETY: NUL-terminated strings and a payload buffer that live for the call.
    let serial = unsafe {
        libc::syscall(
            libc::SYS_add_key,
            c"user".as_ptr(),
            description.as_ptr(),
            PAYLOAD.as_ptr(),
            PAYLOAD.len(),
            keyring,
        )
    };
    if serial < 0 {
        return Err(format!(
            "add_key {name}: {}",
            std::io::Error::last_os_error()
        ));
    }
    if keyctl([KEYCTL_SETPERM, serial, ALL_TO_POSSESSOR_AND_OWNER, 0, 0]) < 0 {
        return Err(format!(
            "setperm {serial}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(serial as i32)
}

/// A new session keyring of this process (made in its domain, if it is in one).
pub fn join_new_session() -> Result<(), String> {
    if keyctl([KEYCTL_JOIN_SESSION_KEYRING, 0, 0, 0, 0]) < 0 {
        return Err(format!(
            "joining a new session keyring: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

fn outcome(what: &str, rc: libc::c_long) -> Outcome {
    let refusal = match what {
        "keyctl read" | "keyctl search" => libc::ENOKEY,
        "keyctl session-to-parent" => libc::ENOMEM,
        _ => libc::EPERM,
    };
    syscall_outcome(what, rc, refusal)
}

/// One operation on the key `serial` (called `name`).
pub fn attempt(op: &str, serial: i32, name: &str) -> Outcome {
    let serial = libc::c_long::from(serial);
    match op {
        "read" => {
            let mut buf = [0u8; 64];
            let rc = keyctl([KEYCTL_READ, serial, buf.as_mut_ptr() as libc::c_long, 64, 0]);
            match outcome("keyctl read", rc) {
                Outcome::Allowed if &buf[..rc as usize] != PAYLOAD => {
                    Outcome::Error(format!("read {:?}", &buf[..rc as usize]))
                }
                other => other,
            }
        }
        "describe" => {
            let mut buf = [0u8; 256];
            let rc = keyctl([
                KEYCTL_DESCRIBE,
                serial,
                buf.as_mut_ptr() as libc::c_long,
                256,
                0,
            ]);
            outcome("keyctl describe", rc)
        }
        "update" => outcome(
            "keyctl update",
            keyctl([
                KEYCTL_UPDATE,
                serial,
                PAYLOAD.as_ptr() as libc::c_long,
                PAYLOAD.len() as libc::c_long,
                0,
            ]),
        ),
        "setperm" => outcome(
            "keyctl setperm",
            keyctl([KEYCTL_SETPERM, serial, ALL_TO_POSSESSOR_AND_OWNER, 0, 0]),
        ),
        "link" => match join_new_session() {
            Ok(()) => outcome(
                "keyctl link",
                keyctl([KEYCTL_LINK, serial, KEY_SPEC_SESSION_KEYRING, 0, 0]),
            ),
            Err(err) => Outcome::Error(err),
        },
        // Searched for in the user keyring, where the outside maker puts its keys.
        "search" => {
            let Ok(description) = std::ffi::CString::new(name) else {
                return Outcome::Error("key name with a NUL".into());
            };
            let rc = keyctl([
                KEYCTL_SEARCH,
                KEY_SPEC_USER_KEYRING,
                c"user".as_ptr() as libc::c_long,
                description.as_ptr() as libc::c_long,
                0,
            ]);
            match outcome("keyctl search", rc) {
                Outcome::Allowed if rc != serial => {
                    Outcome::Error(format!("search found {rc}, expected {serial}"))
                }
                other => other,
            }
        }
        "revoke" => outcome("keyctl revoke", keyctl([KEYCTL_REVOKE, serial, 0, 0, 0])),
        _ => Outcome::Error(format!("unknown key operation {op}")),
    }
}

/// The operations tried on a key of another domain (reached by serial number).
pub const OPS: [&str; 6] = ["read", "describe", "update", "setperm", "link", "revoke"];

/// Makes a key in a new session keyring of this process and uses it from a forked child (same
/// domain, same keyring) with every operation: all must be allowed.
pub fn same_domain(name: &str) -> Outcome {
    let serial = match join_new_session().and_then(|()| add(name, KEY_SPEC_SESSION_KEYRING)) {
        Ok(serial) => serial,
        Err(err) => return Outcome::Error(err),
    };
    in_forked_child("same-domain key", || {
        for op in OPS {
            let outcome = attempt(op, serial, name);
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

/// KEYCTL_SESSION_TO_PARENT from a forked child with a session keyring of its own, against
/// this process (single-threaded, as the kernel requires of the parent).
pub fn session_to_parent() -> Outcome {
    in_forked_child("session-to-parent", || match join_new_session() {
        Ok(()) => outcome(
            "keyctl session-to-parent",
            keyctl([KEYCTL_SESSION_TO_PARENT, 0, 0, 0, 0]),
        ),
        Err(err) => Outcome::Error(err),
    })
}

/// Serves a key of this process's domain until stdin closes: prints its serial.
pub fn serve(name: &str) -> Result<(), String> {
    use std::io::Read;
    join_new_session()?;
    let serial = add(name, KEY_SPEC_SESSION_KEYRING)?;
    println!("{serial}");
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
    Ok(())
}
