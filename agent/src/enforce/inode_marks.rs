//! The agent's side of the PROTECTED_INODE inode-storage map. The key is any open file
//! descriptor of the inode (an O_PATH descriptor is enough, so marking never reads the file).

use std::os::fd::BorrowedFd;

use aya::maps::{InodeStorage, MapData, MapError};
use bulkhead_common::{InodeProtection, PROTECTED};

pub struct ProtectedInodeMap {
    map: InodeStorage<MapData, InodeProtection>,
}

impl ProtectedInodeMap {
    pub fn new(map: InodeStorage<MapData, InodeProtection>) -> Self {
        Self { map }
    }

    pub fn protect(&mut self, inode: BorrowedFd<'_>) -> Result<(), MapError> {
        self.map.insert(&inode, PROTECTED, 0)
    }

    pub fn unprotect(&mut self, inode: BorrowedFd<'_>) -> Result<(), MapError> {
        self.map.remove(&inode)
    }
}
