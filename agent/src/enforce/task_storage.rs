//! The agent's side of the TASK_DOMAIN task-storage map: read and write a process's domain by
//! pidfd.
//!
//! aya 0.14 has no typed wrapper for task storage, so this issues the three map commands with
//! the `bpf()` syscall directly. The key is a pidfd, which names one process instance for its
//! whole life: a recycled PID can never be mistaken for it.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd},
};

use aya::maps::MapFd;
use bulkhead_common::DomainId;

// Commands and flags from include/uapi/linux/bpf.h (stable kernel ABI).
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_NOEXIST: u64 = 1;

/// The map-element member of `union bpf_attr` (uapi, stable layout).
#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    /// The process already carries a domain; domains are entered once and never changed.
    #[error("process is already in a domain")]
    AlreadyLabelled,
    #[error("bpf(BPF_MAP_UPDATE_ELEM) on the task-storage map failed: {0}")]
    Kernel(io::Error),
}

pub struct TaskDomainMap {
    fd: MapFd,
}

impl TaskDomainMap {
    pub fn new(fd: MapFd) -> Self {
        Self { fd }
    }

    /// The domain of the process behind `pidfd`, `None` when it is in none.
    pub fn lookup(&self, pidfd: BorrowedFd<'_>) -> io::Result<Option<DomainId>> {
        let key = pidfd.as_raw_fd();
        let mut value: DomainId = 0;
        match self.command(
            BPF_MAP_LOOKUP_ELEM,
            &key,
            std::ptr::from_mut(&mut value) as u64,
            0,
        ) {
            Ok(()) if value != 0 => Ok(Some(value)),
            Ok(()) => Ok(None),
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Puts the process behind `pidfd` into `domain`, only if it has no domain yet. The kernel
    /// performs the check and the write as one step (BPF_NOEXIST), so two concurrent requests
    /// cannot both succeed.
    pub fn label_new(&self, pidfd: BorrowedFd<'_>, domain: DomainId) -> Result<(), LabelError> {
        assert_ne!(domain, 0, "domain 0 means 'no domain' and is never stored");
        let key = pidfd.as_raw_fd();
        self.command(
            BPF_MAP_UPDATE_ELEM,
            &key,
            std::ptr::from_ref(&domain) as u64,
            BPF_NOEXIST,
        )
        .map_err(|err| match err.raw_os_error() {
            Some(libc::EEXIST) => LabelError::AlreadyLabelled,
            _ => LabelError::Kernel(err),
        })
    }

    /// Removes the label again. Only used to undo a seal that was refused part-way (the caller
    /// grew a thread), so the refused caller is left exactly as it was.
    pub fn unlabel(&self, pidfd: BorrowedFd<'_>) -> io::Result<()> {
        let key = pidfd.as_raw_fd();
        self.command(BPF_MAP_DELETE_ELEM, &key, 0, 0)
    }

    fn command(&self, cmd: libc::c_long, key: &i32, value: u64, flags: u64) -> io::Result<()> {
        let mut attr = MapElemAttr {
            map_fd: self.fd.as_fd().as_raw_fd() as u32,
            key: std::ptr::from_ref(key) as u64,
            value,
            flags,
            ..Default::default()
        };
        // SAFETY: `attr` is a correctly sized and initialised bpf_attr prefix; `key` and
        // `value` point at live locals of the sizes the map was created with (i32, u64).
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                std::ptr::from_mut(&mut attr),
                std::mem::size_of::<MapElemAttr>(),
            )
        };
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attr_layout_matches_uapi() {
        // union bpf_attr, map element commands: map_fd @0, key @8, value @16, flags @24.
        assert_eq!(std::mem::size_of::<MapElemAttr>(), 32);
        assert_eq!(std::mem::offset_of!(MapElemAttr, key), 8);
        assert_eq!(std::mem::offset_of!(MapElemAttr, value), 16);
        assert_eq!(std::mem::offset_of!(MapElemAttr, flags), 24);
    }
}
