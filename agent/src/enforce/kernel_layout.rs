//! The two kernel struct fields the eBPF programs need, read from the running kernel's BTF.
//!
//! This is the agent's stand-in for CO-RE, which Rust eBPF lacks: the programs are built with
//! a placeholder, and the offsets are filled in here, at load time, from
//! `/sys/kernel/btf/vmlinux`. Each field's *type* is checked too, so a kernel where the field
//! changed shape is refused with a clear error instead of being enforced wrongly. (The one
//! known change, `file->f_owner` becoming a pointer in 6.12, is handled.)

use std::path::Path;

use anyhow::{Context, anyhow, bail};
use btf_rs::{Btf, Type};

pub const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Byte offsets of the fields the programs use, on the running kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelLayout {
    /// `offsetof(struct dentry, d_inode)`; the field must be a `struct inode *`.
    pub dentry_d_inode: u16,
    /// Where a file's owner record is: `file->f_owner`.
    pub file_f_owner: FileOwnerField,
    /// Offsets used only to describe audit events (never for a decision).
    pub describe: DescribeOffsets,
}

/// Where the audit records find a target task's pid, tgid and comm, and an inode's number and
/// device. A wrong value here garbles a log line, nothing more; zero means "leave it empty".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DescribeOffsets {
    pub task_pid: u64,
    pub task_tgid: u64,
    pub task_comm: u64,
    pub inode_ino: u64,
    pub inode_sb: u64,
    pub sb_dev: u64,
}

/// `struct file`'s `f_owner`: embedded up to Linux 6.11, a pointer to a lazily allocated
/// `struct fown_struct` from 6.12. Either way the programs key a file's owner record by the
/// address of its `fown_struct`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileOwnerField {
    pub offset: u64,
    pub is_pointer: bool,
}

impl KernelLayout {
    pub fn from_kernel() -> anyhow::Result<Self> {
        Self::from_btf_file(Path::new(KERNEL_BTF))
    }

    pub fn from_btf_file(path: &Path) -> anyhow::Result<Self> {
        let btf = Btf::from_file(path)
            .with_context(|| format!("reading kernel BTF {}", path.display()))?;
        let dentry_d_inode = field(&btf, "dentry", "d_inode", FieldShape::PointerTo("inode"))?;
        let file_f_owner = match field(&btf, "file", "f_owner", FieldShape::Embedded("fown_struct"))
        {
            Ok(offset) => FileOwnerField {
                offset: offset.into(),
                is_pointer: false,
            },
            Err(embedded) => {
                let offset = field(
                    &btf,
                    "file",
                    "f_owner",
                    FieldShape::PointerTo("fown_struct"),
                )
                .map_err(|_| embedded)?;
                FileOwnerField {
                    offset: offset.into(),
                    is_pointer: true,
                }
            }
        };
        let any = |structure: &str, member: &str| {
            field(&btf, structure, member, FieldShape::Any).map_or(0, u64::from)
        };
        let describe = DescribeOffsets {
            task_pid: any("task_struct", "pid"),
            task_tgid: any("task_struct", "tgid"),
            task_comm: any("task_struct", "comm"),
            inode_ino: any("inode", "i_ino"),
            inode_sb: any("inode", "i_sb"),
            sb_dev: any("super_block", "s_dev"),
        };
        Ok(Self {
            describe,
            dentry_d_inode: u16::try_from(dentry_d_inode)
                .ok()
                .filter(|offset| i16::try_from(*offset).is_ok())
                .ok_or_else(|| {
                    anyhow!("dentry.d_inode at offset {dentry_d_inode} does not fit an eBPF load")
                })?,
            file_f_owner,
        })
    }
}

enum FieldShape {
    PointerTo(&'static str),
    Embedded(&'static str),
    /// Only the offset matters (describing fields).
    Any,
}

/// Byte offset of `structure.member`, after checking the member has the expected shape.
fn field(btf: &Btf, structure: &str, member: &str, shape: FieldShape) -> anyhow::Result<u32> {
    let types = btf
        .resolve_types_by_name(structure)
        .with_context(|| format!("kernel BTF has no type named {structure}"))?;
    let Some(Type::Struct(definition)) = types
        .into_iter()
        .find(|ty| matches!(ty, Type::Struct(s) if !s.members.is_empty()))
    else {
        bail!("kernel BTF has no struct {structure}");
    };
    for candidate in &definition.members {
        if btf.resolve_name(candidate).ok().as_deref() != Some(member) {
            continue;
        }
        if candidate.bitfield_size().is_some_and(|bits| bits != 0)
            || candidate.bit_offset() % 8 != 0
        {
            bail!("{structure}.{member} is a bitfield in this kernel");
        }
        if matches!(shape, FieldShape::Any) {
            return Ok(candidate.bit_offset() / 8);
        }
        let ty = skip_qualifiers(btf, btf.resolve_chained_type(candidate)?)?;
        let ok = match (&shape, &ty) {
            (FieldShape::PointerTo(name), Type::Ptr(ptr)) => {
                let pointee = skip_qualifiers(btf, btf.resolve_chained_type(ptr)?)?;
                matches!(&pointee, Type::Struct(s) if btf.resolve_name(s).ok().as_deref() == Some(name))
            }
            (FieldShape::Embedded(name), Type::Struct(s)) => {
                btf.resolve_name(s).ok().as_deref() == Some(name)
            }
            _ => false,
        };
        if !ok {
            let expected = match shape {
                FieldShape::PointerTo(name) => format!("struct {name} *"),
                FieldShape::Embedded(name) => format!("struct {name}"),
                FieldShape::Any => unreachable!("returned above"),
            };
            bail!("{structure}.{member} is not a {expected} in this kernel");
        }
        return Ok(candidate.bit_offset() / 8);
    }
    bail!("kernel BTF: struct {structure} has no member {member}")
}

fn skip_qualifiers(btf: &Btf, mut ty: Type) -> anyhow::Result<Type> {
    // Typedefs, const, volatile and type tags wrap the type that matters.
    for _ in 0..16 {
        ty = match &ty {
            Type::Typedef(t) => btf.resolve_chained_type(t)?,
            Type::Const(t) | Type::Volatile(t) | Type::Restrict(t) => {
                btf.resolve_chained_type(t)?
            }
            Type::TypeTag(t) => btf.resolve_chained_type(t)?,
            _ => return Ok(ty),
        };
    }
    bail!("type chain too deep in kernel BTF")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host's own kernel BTF: whatever kernel runs the tests, both fields must be found
    /// with the expected shape and at plausible offsets (inside the struct, word aligned).
    #[test]
    fn finds_fields_in_the_running_kernel() {
        if !Path::new(KERNEL_BTF).exists() {
            eprintln!("skipped: no {KERNEL_BTF}");
            return;
        }
        let layout = KernelLayout::from_kernel().expect("layout");
        assert_eq!(layout.dentry_d_inode % 8, 0);
        assert!(layout.dentry_d_inode > 0 && layout.dentry_d_inode < 256);
        assert_eq!(layout.file_f_owner.offset % 8, 0);
        assert!(layout.file_f_owner.offset > 0 && layout.file_f_owner.offset < 512);
        let d = layout.describe;
        for offset in [
            d.task_pid,
            d.task_tgid,
            d.task_comm,
            d.inode_ino,
            d.inode_sb,
            d.sb_dev,
        ] {
            assert!(offset > 0 && offset < 8192, "{d:?}");
        }
        assert_eq!(
            d.task_tgid,
            d.task_pid + 4,
            "pid and tgid are adjacent in task_struct"
        );
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let err = KernelLayout::from_btf_file(Path::new("/nonexistent/vmlinux")).unwrap_err();
        assert!(
            format!("{err:#}").contains("/nonexistent/vmlinux"),
            "{err:#}"
        );
    }
}
