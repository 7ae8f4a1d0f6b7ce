//! Device files against root inside a domain: block devices (the disk under every protected
//! file), character devices of the node (virtual consoles and their screen memory), the same
//! through device nodes the attacker makes itself with `mknod`, and the slave of a terminal
//! made outside the domain (whose input a reader would take). The guest has no disk and no
//! driver for the block numbers used, so from outside any domain the open gets past the LSM
//! check and fails in the driver with ENXIO or ENODEV: that counts as `Allowed`.
//!
//! `Denied` is EPERM.

use std::{fs, io, os::unix::fs::OpenOptionsExt};

use crate::access::Outcome;

/// Ops that need nothing from the suite.
pub const OPS: [&str; 4] = [
    "block-node-made-by-caller",
    "char-console-node-made-by-caller",
    "vcs",
    "tty1",
];

/// Harmless devices a task in a domain keeps.
pub const HARMLESS: [&str; 6] = [
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/urandom",
    "/dev/random",
    "/dev/ptmx",
];

pub fn attempt(op: &str) -> Outcome {
    match op {
        // loop0's number: the attacker's own node for a disk.
        "block-node-made-by-caller" => made_node(libc::S_IFBLK, 7, 0),
        // tty1, the first virtual console.
        "char-console-node-made-by-caller" => made_node(libc::S_IFCHR, 4, 1),
        "vcs" => open_device("/dev/vcs"),
        "tty1" => open_device("/dev/tty1"),
        "harmless" => HARMLESS
            .iter()
            .map(|path| open_device(path))
            .find(|outcome| *outcome != Outcome::Allowed)
            .unwrap_or(Outcome::Allowed),
        other => Outcome::Error(format!("unknown device op {other}")),
    }
}

/// Makes a device node of `kind` and `major:minor` in /tmp, opens it, removes it.
fn made_node(kind: libc::mode_t, major: u32, minor: u32) -> Outcome {
    let path = format!("/tmp/bulkhead-node-{}", std::process::id());
    let _ = fs::remove_file(&path);
    let made = nix::sys::stat::mknod(
        path.as_str(),
        nix::sys::stat::SFlag::from_bits_truncate(kind),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(u64::from(major), u64::from(minor)),
    );
    if let Err(err) = made {
        return Outcome::Error(format!("mknod {path}: {err}"));
    }
    let outcome = open_device(&path);
    let _ = fs::remove_file(&path);
    outcome
}

/// Opens `path` for reading and writing, without making it a controlling terminal.
pub fn open_device(path: &str) -> Outcome {
    let opened = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(path);
    match opened {
        Ok(_) => Outcome::Allowed,
        Err(err) => classify(path, &err),
    }
}

fn classify(path: &str, err: &io::Error) -> Outcome {
    match err.raw_os_error() {
        Some(libc::EPERM) => Outcome::Denied,
        // The driver's answer: the LSM check was passed.
        Some(libc::ENXIO | libc::ENODEV | libc::EIO) => Outcome::Allowed,
        _ => Outcome::Error(format!("open {path}: {err}")),
    }
}
