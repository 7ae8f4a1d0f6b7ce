//! Protected files: turning the node's configured paths into marked inodes, and keeping the
//! marks on the right inodes as files are replaced.
//!
//! The kernel side only ever sees inodes (ebpf/programs/src/files.rs). Paths are resolved here,
//! in the agent: at start, whenever a watched directory changes, and on a fixed interval, so an
//! inode that appears under a protected name (a config tool's write-and-rename, a key file
//! created after the agent started) is marked within a bounded time.

pub mod guard;
pub mod name_trie;
mod scan;
pub mod watch;

use std::{io, os::fd::BorrowedFd};

pub use scan::{MAX_PROTECTED_INODES, Protector, ScanReport, raise_open_file_limit};

/// Where marks go: one of the kernel's inode-storage maps in the agent, a recorder in tests.
pub trait InodeMarker: Send {
    fn mark(&mut self, inode: BorrowedFd<'_>) -> io::Result<()>;
    fn unmark(&mut self, inode: BorrowedFd<'_>) -> io::Result<()>;
}

impl InodeMarker for crate::enforce::inode_marks::InodeMarks {
    fn mark(&mut self, inode: BorrowedFd<'_>) -> io::Result<()> {
        crate::enforce::inode_marks::InodeMarks::mark(self, inode).map_err(io::Error::other)
    }

    fn unmark(&mut self, inode: BorrowedFd<'_>) -> io::Result<()> {
        crate::enforce::inode_marks::InodeMarks::unmark(self, inode).map_err(io::Error::other)
    }
}
