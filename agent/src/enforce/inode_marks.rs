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

/// The protected names' node table (NAME_NODES) and the guarded directories (GUARDED_DIR),
/// both this generation's own: written before any program is attached.
pub struct NameMaps {
    pub nodes: aya::maps::Array<MapData, bulkhead_common::names::NameNode>,
    pub guarded: InodeStorage<MapData, u64>,
}

impl crate::protect::guard::GuardStore for NameMaps {
    fn set_nodes(&mut self, nodes: &[bulkhead_common::names::NameNode]) -> std::io::Result<()> {
        let empty = bulkhead_common::names::NameNode::default();
        for id in 0..bulkhead_common::names::MAX_NAME_NODES {
            let node = nodes.get(id).copied().unwrap_or(empty);
            self.nodes
                .set(id as u32, node, 0)
                .map_err(std::io::Error::other)?;
        }
        Ok(())
    }

    fn guard(&mut self, dir: BorrowedFd<'_>, children: u64) -> std::io::Result<()> {
        self.guarded
            .insert(&dir, children, 0)
            .map_err(std::io::Error::other)
    }

    fn unguard(&mut self, dir: BorrowedFd<'_>) -> std::io::Result<()> {
        self.guarded.remove(&dir).map_err(std::io::Error::other)
    }
}
