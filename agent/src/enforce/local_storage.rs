//! Raw element commands on BPF local-storage maps (task and inode storage), whose userspace key
//! is a file descriptor: a pidfd for task storage, any fd (O_PATH included) for inode storage.
//!
//! aya 0.14 has no typed wrapper for these map types, so this issues the map commands with the
//! `bpf()` syscall directly.

use std::{
    io,
    marker::PhantomData,
    mem::MaybeUninit,
    os::fd::{AsFd, AsRawFd, BorrowedFd},
};

use aya::{Pod, maps::MapFd};

// Commands and flags from include/uapi/linux/bpf.h (stable kernel ABI).
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
pub const BPF_NOEXIST: u64 = 1;

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

/// A local-storage map whose values are a `V` (the size the map was created with).
pub struct FdKeyedMap<V: Pod> {
    fd: MapFd,
    _value: PhantomData<V>,
}

impl<V: Pod> FdKeyedMap<V> {
    pub fn new(fd: MapFd) -> Self {
        Self {
            fd,
            _value: PhantomData,
        }
    }

    /// The value stored for the object behind `key`, `None` when there is none.
    pub fn lookup(&self, key: BorrowedFd<'_>) -> io::Result<Option<V>> {
        let mut value = MaybeUninit::<V>::zeroed();
        match self.command(BPF_MAP_LOOKUP_ELEM, key, value.as_mut_ptr() as u64, 0) {
            // SAFETY: the kernel filled all size_of::<V>() bytes, and V is plain old data.
            Ok(()) => Ok(Some(unsafe { value.assume_init() })),
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Stores `value` for the object behind `key`. With [`BPF_NOEXIST`] the kernel checks and
    /// writes in one step and fails with EEXIST if a value is already there.
    pub fn update(&self, key: BorrowedFd<'_>, value: &V, flags: u64) -> io::Result<()> {
        self.command(
            BPF_MAP_UPDATE_ELEM,
            key,
            std::ptr::from_ref(value) as u64,
            flags,
        )
    }

    /// Removes the value for the object behind `key`; absent is not an error.
    pub fn delete(&self, key: BorrowedFd<'_>) -> io::Result<()> {
        match self.command(BPF_MAP_DELETE_ELEM, key, 0, 0) {
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            other => other,
        }
    }

    fn command(
        &self,
        cmd: libc::c_long,
        key: BorrowedFd<'_>,
        value: u64,
        flags: u64,
    ) -> io::Result<()> {
        let key: i32 = key.as_raw_fd();
        let mut attr = MapElemAttr {
            map_fd: self.fd.as_fd().as_raw_fd() as u32,
            key: std::ptr::from_ref(&key) as u64,
            value,
            flags,
            ..Default::default()
        };
        // SAFETY: `attr` is a correctly sized and initialised bpf_attr prefix; `key` points at
        // a live i32 and `value` at a live V, the sizes the map was created with (checked
        // against the object before loading: pins::check_compatible).
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
