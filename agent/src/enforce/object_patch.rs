//! Fills what only the running kernel knows into the eBPF object before it is loaded: the
//! offsets of the struct fields the programs load directly (`dentry->d_inode`, `socket->sk`,
//! ...: kernel_layout.rs) and the context slot of every hook argument (hook_abi.rs).
//!
//! The programs read both with direct loads at placeholder offsets; every such instruction in
//! an executable section gets the running kernel's value instead. The verifier re-checks each
//! patched load against the kernel's BTF, and an instruction left unpatched reads far outside
//! `struct dentry` or beyond the hook's arguments, which the verifier rejects: a mistake here
//! stops the load, it cannot weaken enforcement.

use anyhow::{Context, bail};
#[cfg(test)]
use bulkhead_common::DENTRY_D_INODE_PLACEHOLDER;
use bulkhead_common::hook_abi::{
    ARG_PLACEHOLDER_BASE, ARG_PLACEHOLDER_END, HOOK_ARGS, arg_of_placeholder,
};
use object::{Object, ObjectSection, SectionKind};

use super::{hook_abi::ArgSlots, kernel_layout::KernelLayout};

/// eBPF instruction: 8 bytes, opcode, dst/src registers, 16-bit offset, 32-bit immediate.
const INSN_SIZE: usize = 8;
/// BPF_LDX | BPF_MEM | BPF_DW: a 64-bit load from memory.
const LDX_MEM_DW: u8 = 0x79;
/// BPF_LDX | BPF_MEM with any size: the low three bits are the class, 0x60 the mode.
const fn is_ldx_mem(opcode: u8) -> bool {
    opcode & 0x07 == 0x01 && opcode & 0xe0 == 0x60
}

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

    #[cfg(test)]
    fn patch_dentry_inode_offset(&mut self, offset: u16) -> anyhow::Result<usize> {
        self.patch_field(DENTRY_D_INODE_PLACEHOLDER, offset, "dentry->d_inode")
    }

    /// Replaces the placeholder offset of every load of each struct field the programs read
    /// directly; returns how many loads were rewritten.
    pub fn patch_field_loads(&mut self, layout: &KernelLayout) -> anyhow::Result<usize> {
        let mut patched = 0;
        for (placeholder, offset, what) in layout.field_loads() {
            patched += self.patch_field(placeholder, offset, what)?;
        }
        Ok(patched)
    }

    /// A field load may be of any width (`inode->i_mode` is two bytes); the agent checked the
    /// field's size against BTF, and the verifier checks the load against it again.
    fn patch_field(&mut self, placeholder: i16, offset: u16, what: &str) -> anyhow::Result<usize> {
        let patched = self.rewrite_loads(|_, opcode, current| {
            if is_ldx_mem(opcode) && current == placeholder {
                Ok(Some(offset as i16))
            } else {
                Ok(None)
            }
        })?;
        if patched == 0 {
            bail!("no {what} load found in the eBPF object; was it built from this tree?");
        }
        Ok(patched)
    }

    /// Rewrites every hook-argument placeholder load to the argument's slot on this kernel;
    /// returns how many loads were rewritten. A placeholder load that is not a 64-bit load,
    /// or one for an argument the table does not have, means the object and the agent
    /// disagree: refused.
    pub fn patch_hook_args(&mut self, slots: &ArgSlots) -> anyhow::Result<usize> {
        if slots.slots.len() != HOOK_ARGS.len() {
            bail!("argument slots resolved for another program set");
        }
        let patched = self.rewrite_loads(|section, opcode, offset| {
            let in_range = (ARG_PLACEHOLDER_BASE..ARG_PLACEHOLDER_END).contains(&offset);
            if !in_range {
                return Ok(None);
            }
            let Some(id) = arg_of_placeholder(offset) else {
                bail!("load at offset {offset:#x} is no argument this agent knows");
            };
            // A hook's argument read anywhere but in that hook's own program would get a slot
            // of another prototype, which the verifier might accept.
            let hook = section
                .strip_prefix("lsm/")
                .or_else(|| section.strip_prefix("tp_btf/"));
            if hook != Some(HOOK_ARGS[id].hook) {
                bail!(
                    "argument {:?} of {} is read in section {section}, not in its hook's program",
                    HOOK_ARGS[id].param,
                    HOOK_ARGS[id].hook
                );
            }
            if opcode != LDX_MEM_DW {
                bail!(
                    "argument {:?} of {} is read with opcode {opcode:#x}, not a 64-bit load",
                    HOOK_ARGS[id].param,
                    HOOK_ARGS[id].hook
                );
            }
            Ok(Some(i16::from(slots.slots[id]) * 8))
        })?;
        if patched == 0 {
            bail!("no hook argument load found in the eBPF object; was it built from this tree?");
        }
        Ok(patched)
    }

    /// Calls `rewrite(section, opcode, offset)` for every memory load in an executable section
    /// and puts in the offset it returns, if any.
    fn rewrite_loads(
        &mut self,
        mut rewrite: impl FnMut(&str, u8, i16) -> anyhow::Result<Option<i16>>,
    ) -> anyhow::Result<usize> {
        let ranges: Vec<(String, usize, usize)> = {
            let file = object::File::parse(self.bytes()).context("parsing the eBPF object")?;
            file.sections()
                .filter(|section| section.kind() == SectionKind::Text)
                .filter_map(|section| {
                    let (start, size) = section.file_range()?;
                    let name = section.name().unwrap_or_default().to_owned();
                    Some((name, start as usize, size as usize))
                })
                .collect()
        };
        let len = self.len;
        let bytes = &mut as_bytes_mut(&mut self.words)[..len];
        let mut patched = 0;
        for (name, start, size) in ranges {
            let Some(section) = bytes.get_mut(start..start + size) else {
                bail!("eBPF object section at {start}+{size} lies outside the file");
            };
            for insn in section.chunks_exact_mut(INSN_SIZE) {
                if !is_ldx_mem(insn[0]) {
                    continue;
                }
                let offset = i16::from_le_bytes([insn[2], insn[3]]);
                if let Some(new) = rewrite(&name, insn[0], offset)? {
                    insn[2..4].copy_from_slice(&new.to_le_bytes());
                    patched += 1;
                }
            }
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
    use bulkhead_common::hook_abi::HELPER_READ_ARGS;

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

    /// Every value the agent writes into the object (the globals `override_global` sets) must
    /// be in `.rodata.agent`: in plain `.rodata` an immutable static may be merged with
    /// identical constants elsewhere in the object, which the agent's value would then
    /// overwrite (this happened: see ebpf/programs/src/agent_set.rs). So no named global may
    /// be in any other read-only section.
    #[test]
    fn every_global_the_agent_sets_has_a_section_of_its_own() {
        use object::{ObjectSymbol, SymbolKind};
        let file = object::File::parse(OBJECT).unwrap();
        let section_of = |sym: &object::Symbol<'_, '_>| {
            sym.section_index()
                .and_then(|index| file.section_by_index(index).ok())
                .and_then(|section| section.name().ok().map(str::to_owned))
                .unwrap_or_default()
        };
        let misplaced: Vec<(String, String)> = file
            .symbols()
            .filter(|sym| sym.is_global() && sym.kind() == SymbolKind::Data)
            .map(|sym| (sym.name().unwrap_or_default().to_owned(), section_of(&sym)))
            .filter(|(_, section)| section.starts_with(".rodata") && section != ".rodata.agent")
            // aya-log's level: read-only, but never written by the agent.
            .filter(|(name, _)| name != "AYA_LOG_LEVEL")
            .collect();
        assert!(
            misplaced.is_empty(),
            "globals outside .rodata.agent: {misplaced:?}"
        );
        for name in [
            bulkhead_common::LOOKUP_MAY_FAIL_GLOBAL,
            bulkhead_common::hook_abi::HELPER_READ_ARGS[0].1,
        ] {
            let symbol = file.symbols().find(|sym| sym.name() == Ok(name));
            assert_eq!(
                symbol.as_ref().map(section_of).as_deref(),
                Some(".rodata.agent"),
                "{name}"
            );
        }
    }

    #[test]
    fn an_object_without_placeholders_is_refused() {
        let mut object = AlignedObject::new(OBJECT);
        object.patch_dentry_inode_offset(48).unwrap();
        let err = object.patch_dentry_inode_offset(48).unwrap_err();
        assert!(err.to_string().contains("no dentry->d_inode load"), "{err}");
    }

    fn placeholder_loads(object: &AlignedObject) -> Vec<usize> {
        let file = object::File::parse(object.bytes()).unwrap();
        let mut ids = Vec::new();
        for section in file.sections().filter(|s| s.kind() == SectionKind::Text) {
            for insn in section.data().unwrap().chunks_exact(INSN_SIZE) {
                let offset = i16::from_le_bytes([insn[2], insn[3]]);
                if is_ldx_mem(insn[0])
                    && let Some(id) = arg_of_placeholder(offset)
                {
                    ids.push(id);
                }
            }
        }
        ids
    }

    /// Every argument of the table is read by some program, only through its placeholder,
    /// and after patching every read sits at the slot the resolution gave.
    #[test]
    fn every_hook_argument_load_gets_its_slot() {
        let mut object = AlignedObject::new(OBJECT);
        let before = placeholder_loads(&object);
        for (id, arg) in HOOK_ARGS.iter().enumerate() {
            let by_helper = HELPER_READ_ARGS
                .iter()
                .any(|(helper_id, _)| *helper_id as usize == id);
            assert_eq!(
                before.contains(&id),
                !by_helper,
                "{:?} of {} must be read by a context load unless the helper reads it",
                arg.param,
                arg.hook
            );
        }
        let slots = ArgSlots {
            slots: (0..HOOK_ARGS.len()).map(|id| (id % 7) as u8).collect(),
            untested: Vec::new(),
        };
        let patched = object.patch_hook_args(&slots).unwrap();
        assert_eq!(patched, before.len());
        assert!(placeholder_loads(&object).is_empty());
        // Patching again finds nothing: the object is refused rather than loaded twice-patched.
        assert!(object.patch_hook_args(&slots).is_err());
    }

    #[test]
    fn slots_for_another_table_are_refused() {
        let mut object = AlignedObject::new(OBJECT);
        let short = ArgSlots {
            slots: vec![0; HOOK_ARGS.len() - 1],
            untested: Vec::new(),
        };
        assert!(object.patch_hook_args(&short).is_err());
        assert_eq!(
            placeholder_loads(&object).len(),
            placeholder_loads(&AlignedObject::new(OBJECT)).len()
        );
    }
}
