//! Device files. A block device is the disk under every file: reading it yields the contents of
//! protected files, and writing it changes any file, past every inode hook. Character devices
//! reach the node's hardware and consoles: input devices and `/dev/uinput` (keystrokes of
//! every session, typed or injected), virtual consoles and `/dev/vcs*` (what the console shows),
//! serial lines, SCSI generic and NVMe passthrough (the disks again), `/dev/watchdog`. Unix
//! permissions give root all of them, whatever path names them (root in a domain can `mknod`
//! one), so the check is on the inode's type and device number, at `inode_permission`, which
//! every open passes.
//!
//! A task in a domain may open no block device and only the character devices the agent lists
//! in DEVICE_ALLOWED: the harmless built-in set (`/dev/null`, `zero`, `full`, `random`,
//! `urandom`, `/dev/tty`, `/dev/ptmx`) and the node config's `[devices] allow`. Pseudo-terminal
//! slaves (`/dev/pts/N`) are judged by the domain of the task that made the terminal
//! (shared_memory.rs), so a task may use the terminals it makes but not a session's terminal
//! made outside it, whose input it could read. An empty list refuses every character device.

use core::ffi::c_void;

use aya_ebpf::{macros::map, maps::HashMap};
use bulkhead_common::{DEVICE_ALLOWED_ENTRIES, DomainId, device_any_minor};

use crate::{
    audit::refuse_device,
    kernel_layout::{inode_mode, inode_rdev},
};

const S_IFMT: u16 = 0o170_000;
const S_IFCHR: u16 = 0o020_000;
const S_IFBLK: u16 = 0o060_000;

/// The majors of Unix 98 pseudo-terminal slaves (`UNIX98_PTY_SLAVE_MAJOR` and the seven after
/// it, include/uapi/linux/major.h).
const PTY_SLAVE_MAJORS: core::ops::RangeInclusive<u32> = 136..=143;

#[map(name = "DEVICE_ALLOWED")]
static DEVICE_ALLOWED: HashMap<u32, u8> = HashMap::with_max_entries(DEVICE_ALLOWED_ENTRIES, 0);

/// Is the character device `rdev` one a task in a domain may open (as far as this module goes)?
#[inline(always)]
fn allowed_char_device(rdev: u32) -> bool {
    let major = rdev >> 20;
    if PTY_SLAVE_MAJORS.contains(&major) {
        return true;
    }
    // SAFETY (both): the values are only tested for presence.
    unsafe {
        DEVICE_ALLOWED.get(&rdev).is_some()
            || DEVICE_ALLOWED.get(&device_any_minor(major)).is_some()
    }
}

/// The verdict for a task of domain `actor` asking `mask` on `inode`, as far as this module
/// is concerned: `None` when it has nothing against it.
#[inline(always)]
pub fn check(hook: u32, actor: DomainId, inode: *mut c_void, mask: u32) -> Option<i32> {
    let kind = inode_mode(inode) & S_IFMT;
    if kind != S_IFBLK && kind != S_IFCHR {
        return None;
    }
    let rdev = inode_rdev(inode);
    if kind == S_IFCHR && allowed_char_device(rdev) {
        return None;
    }
    Some(refuse_device(hook, mask, actor, inode, rdev))
}
