//! Protected names matched in the kernel.
//!
//! The agent turns the node's protected patterns into a trie of path components (at most
//! [`MAX_NAME_NODES`] nodes, each a literal or `prefix*suffix`) and stores it in the
//! NAME_NODES array. Every directory on a protected pattern's way (from `/` down) carries, in
//! GUARDED_DIR inode storage, the set of nodes its entries are compared with; a directory
//! created or instantiated under a guarded one at a matching name is given the set of that
//! node's children. So the programs judge a new name with one parent lookup and a few
//! comparisons, at the moment the name gets an inode, and never see a path.
//!
//! Names are compared by FNV-1a hashes of the node's literal prefix and suffix, so the programs
//! hash the name once (every prefix forwards, every suffix backwards) instead of looping over
//! each pattern's bytes. The lengths are compared exactly; a hash collision can only make a
//! name match that should not, which protects more, never less.

/// Node ids are bits of a u64: a guarded directory's value is the set of its candidate nodes.
pub const MAX_NAME_NODES: usize = 64;

/// The longest name a directory entry can have (the kernel's NAME_MAX); a literal or a prefix
/// and suffix longer than this could match nothing.
pub const NAME_MAX: usize = 255;

/// Name of the array holding the trie's nodes, indexed by node id.
pub const NAME_NODES_MAP: &str = "NAME_NODES";
/// Name of the inode-storage map holding each guarded directory's candidate nodes (a u64 set
/// of node ids).
pub const GUARDED_DIR_MAP: &str = "GUARDED_DIR";

pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
pub const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// One FNV-1a step.
#[inline(always)]
pub const fn fnv_step(hash: u64, byte: u8) -> u64 {
    (hash ^ byte as u64).wrapping_mul(FNV_PRIME)
}

/// FNV-1a of `bytes` in order (a name's prefix).
pub fn prefix_hash(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(FNV_OFFSET, |hash, byte| fnv_step(hash, *byte))
}

/// FNV-1a of `bytes` from the last byte backwards (a name's suffix), so the programs can
/// hash every suffix of a name in one backward pass.
pub fn suffix_hash(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .rev()
        .fold(FNV_OFFSET, |hash, byte| fnv_step(hash, *byte))
}

/// One component of the protected patterns, as the programs compare a new name with it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NameNode {
    pub prefix_hash: u64,
    pub suffix_hash: u64,
    pub prefix_len: u32,
    pub suffix_len: u32,
    /// 1: a literal, the name must be exactly `prefix_len` bytes; 0: `prefix*suffix`.
    pub exact: u32,
    /// 1: a pattern ends here, an inode at a matching name is protected.
    pub protect: u32,
    /// The nodes a directory at a matching name guards.
    pub children: u64,
}

// SAFETY: plain old data, `#[repr(C)]`, no padding (8 + 8 + 4 * 4 + 8 bytes).
#[cfg(feature = "user")]
unsafe impl aya::Pod for NameNode {}

impl NameNode {
    /// Does a name of `len` bytes match this node, given the hash of the name's first
    /// `self.prefix_len` bytes (`prefix`) and of its last `self.suffix_len` bytes (`suffix`)?
    /// The caller may pass anything for a hash whose length exceeds `len`: the length test
    /// comes first and fails.
    #[inline(always)]
    pub fn matches(&self, len: u32, prefix: u64, suffix: u64) -> bool {
        if self.exact != 0 {
            return len == self.prefix_len && prefix == self.prefix_hash;
        }
        // Both lengths are at most NAME_MAX (checked by the agent), so the sum cannot wrap.
        len >= self.prefix_len.saturating_add(self.suffix_len)
            && prefix == self.prefix_hash
            && suffix == self.suffix_hash
    }
}
