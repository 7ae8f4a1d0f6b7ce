//! Fills the `dentry->d_inode` offset into the eBPF object before it is loaded.
//!
//! The programs read that field with a direct load whose offset is
//! [`DENTRY_D_INODE_PLACEHOLDER`]; every such instruction in an executable section gets the
//! offset of the running kernel instead (see kernel_layout.rs). The verifier re-checks each
//! patched load against the kernel's BTF, and an instruction left unpatched reads far outside
//! `struct dentry`, which the verifier rejects: a mistake here stops the load, it cannot weaken
//! enforcement.

use anyhow::{Context, bail};
use bulkhead_common::DENTRY_D_INODE_PLACEHOLDER;
use object::{Object, ObjectSection, SectionKind};

/// eBPF instruction: 8 bytes, opcode, dst/src registers, 16-bit offset, 32-bit immediate.
const INSN_SIZE: usize = 8;
/// BPF_LDX | BPF_MEM | BPF_DW: a 64-bit load from memory.
const LDX_MEM_DW: u8 = 0x79;

/// An owned, 8-byte aligned copy of an ELF object (the ELF parser needs the alignment).
pub struct AlignedObject {
    words: Vec<u64>,
    len: usize,
}

impl AlignedObject {
    pub fn new(bytes: &[u8]) -> Self {
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        as_bytes_mut(&mut words)[..bytes.len()].copy_from_slice(bytes);
        Self {
            words,
            len: bytes.len(),
        }
    }

    pub fn bytes(&self) -> &[u8] {
        &as_bytes(&self.words)[..self.len]
    }

    /// Replaces the placeholder offset of every `dentry->d_inode` load; returns how many.
    pub fn patch_dentry_inode_offset(&mut self, offset: u16) -> anyhow::Result<usize> {
        let placeholder = DENTRY_D_INODE_PLACEHOLDER.to_le_bytes();
        let ranges: Vec<(usize, usize)> = {
            let file = object::File::parse(self.bytes()).context("parsing the eBPF object")?;
            file.sections()
                .filter(|section| section.kind() == SectionKind::Text)
                .filter_map(|section| section.file_range())
                .map(|(start, size)| (start as usize, size as usize))
                .collect()
        };
        let len = self.len;
        let bytes = &mut as_bytes_mut(&mut self.words)[..len];
        let mut patched = 0;
        for (start, size) in ranges {
            let Some(section) = bytes.get_mut(start..start + size) else {
                bail!("eBPF object section at {start}+{size} lies outside the file");
            };
            for insn in section.chunks_exact_mut(INSN_SIZE) {
                if insn[0] == LDX_MEM_DW && insn[2..4] == placeholder {
                    insn[2..4].copy_from_slice(&offset.to_le_bytes());
                    patched += 1;
                }
            }
        }
        if patched == 0 {
            bail!("no dentry->d_inode load found in the eBPF object; was it built from this tree?");
        }
        Ok(patched)
    }
}

fn as_bytes(words: &[u64]) -> &[u8] {
    // SAFETY: u64 has no padding and any byte pattern is valid; the slice covers exactly the
    // words' memory.
    unsafe { std::slice::from_raw_parts(words.as_ptr().cast(), words.len() * 8) }
}

fn as_bytes_mut(words: &mut [u64]) -> &mut [u8] {
    // SAFETY: as in `as_bytes`, with exclusive access.
    unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast(), words.len() * 8) }
}

#[cfg(test)]
mod tests {
    use super::*;

    static OBJECT: &[u8] = super::super::EBPF_OBJECT;

    fn loads_at(object: &AlignedObject, offset: u16) -> usize {
        let file = object::File::parse(object.bytes()).unwrap();
        file.sections()
            .filter(|s| s.kind() == SectionKind::Text)
            .map(|s| {
                s.data()
                    .unwrap()
                    .chunks_exact(INSN_SIZE)
                    .filter(|i| i[0] == LDX_MEM_DW && i[2..4] == offset.to_le_bytes())
                    .count()
            })
            .sum()
    }

    #[test]
    fn patches_every_placeholder_and_nothing_else() {
        let mut object = AlignedObject::new(OBJECT);
        let before = loads_at(&object, DENTRY_D_INODE_PLACEHOLDER as u16);
        // One load per dentry the file hooks inspect; at least unlink, rmdir, rename (2), link,
        // setattr, setxattr, removexattr.
        assert!(before >= 8, "only {before} placeholder loads");
        let unrelated_before = loads_at(&object, 48);
        let patched = object.patch_dentry_inode_offset(48).unwrap();
        assert_eq!(patched, before);
        assert_eq!(loads_at(&object, DENTRY_D_INODE_PLACEHOLDER as u16), 0);
        assert_eq!(loads_at(&object, 48), unrelated_before + before);
        // The rest of the object is untouched.
        let changed = OBJECT
            .iter()
            .zip(object.bytes())
            .filter(|(a, b)| a != b)
            .count();
        assert!(changed <= 2 * patched, "{changed} bytes changed");
    }

    #[test]
    fn an_object_without_placeholders_is_refused() {
        let mut object = AlignedObject::new(OBJECT);
        object.patch_dentry_inode_offset(48).unwrap();
        let err = object.patch_dentry_inode_offset(48).unwrap_err();
        assert!(err.to_string().contains("no dentry->d_inode load"), "{err}");
    }
}
