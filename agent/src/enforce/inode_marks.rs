//! The agent's side of the inode-storage maps that mark inodes for the programs:
//! PROTECTED_INODE (files no task in a domain may reach) and UNIX_REACHABLE (socket files
//! every domain may connect and send to). The key is any open file descriptor of the inode (an
//! O_PATH descriptor is enough, so marking never opens the file for reading and never connects
//! to a socket).

use std::os::fd::BorrowedFd;

use aya::maps::{InodeStorage, MapData, MapError};
use bulkhead_common::{PROTECTED, REACHABLE};

pub struct InodeMarks {
    map: InodeStorage<MapData, u64>,
    value: u64,
}

impl InodeMarks {
    pub fn protected(map: InodeStorage<MapData, u64>) -> Self {
        Self {
            map,
            value: PROTECTED,
        }
    }

    pub fn reachable(map: InodeStorage<MapData, u64>) -> Self {
        Self {
            map,
            value: REACHABLE,
        }
    }

    pub fn mark(&mut self, inode: BorrowedFd<'_>) -> Result<(), MapError> {
        self.map.insert(&inode, self.value, 0)
    }

    pub fn unmark(&mut self, inode: BorrowedFd<'_>) -> Result<(), MapError> {
        self.map.remove(&inode)
    }
}
