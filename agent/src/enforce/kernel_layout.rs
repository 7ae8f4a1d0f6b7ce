//! The kernel struct fields (and one kernel property) the eBPF programs need, read from the
//! running kernel's BTF.
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
    pub dentry_d_parent: u16,
    /// `dentry.d_name.name`: the embedded qstr's offset plus its `name` member's.
    pub dentry_d_name: u16,
    pub file_f_mode: u16,
    /// How the SIGIO hook finds the file of an owner struct.
    pub fown_file: FownFile,
    /// `offsetof(struct user_namespace, level)` (an `int`), for the capability hook.
    pub user_ns_level: u64,
    /// How far a procfs inode's `struct proc_inode` keeps its `pid` pointer before the
    /// embedded `vfs_inode` (`offsetof(vfs_inode) - offsetof(pid)`): set on every inode of a
    /// task's `/proc/<pid>` tree, null on every other procfs inode.
    pub proc_inode_pid_back: u64,
    /// `offsetof(struct task_struct, bpf_storage)`; must be a `struct bpf_local_storage *`.
    pub task_bpf_storage: u16,
    /// `offsetof(struct socket, sk)`; must be a `struct sock *`.
    pub socket_sk: u16,
    /// `offsetof(struct unix_sock, path) + offsetof(struct path, dentry)`: the socket file a
    /// Unix socket is bound to, a `struct dentry *`.
    pub unix_sock_path_dentry: u16,
    /// `offsetof(struct unix_sock, peer)`; must be a `struct sock *`.
    pub unix_sock_peer: u16,
    /// `offsetof(struct inode, i_sb)` (a `struct super_block *`) and
    /// `offsetof(struct super_block, s_magic)` (an `unsigned long`).
    pub inode_sb: u16,
    pub sb_magic: u16,
    /// `offsetof(struct path, dentry)`; must be a `struct dentry *`.
    pub path_dentry: u16,
    /// `offsetof(struct inode, i_mode)` (two bytes) and `offsetof(struct super_block, s_dev)`
    /// (four).
    pub inode_mode: u16,
    /// `offsetof(struct inode, i_rdev)` (a `dev_t`, four bytes).
    pub inode_rdev: u16,
    /// `offsetof(struct file, f_inode)`; must be a `struct inode *`.
    pub file_inode: u16,
    pub sb_dev: u16,
    /// Where a task's storage elements and their maps are.
    pub storage: StorageLayout,
    /// Can the task-storage lookup LSM programs get fail while the element exists? Linux 6.1
    /// has one `bpf_task_storage_get` that gives up while the per-CPU busy counter is held;
    /// 6.2 split off `bpf_task_storage_get_recur` for tracing and gave LSM programs a lookup
    /// that cannot fail; 7.0 removed the counter. Told from BTF: the counter exists and the
    /// split does not.
    pub lookup_may_fail: bool,
    /// Offsets used only to describe audit events (never for a decision).
    pub describe: DescribeOffsets,
}

/// In `struct bpf_local_storage`: the list of elements (`list`, an hlist by each element's
/// `snode`), and in each element the map it belongs to (`sdata.smap`, whose `bpf_map` is its
/// first member, so its address is the map's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StorageLayout {
    pub list: u64,
    pub snode: u64,
    pub smap: u64,
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
    pub ipc_id: u64,
    pub ipc_key: u64,
    /// `key.serial`.
    pub key_serial: u64,
    /// `unix_sock.addr`, and `sun_path` inside a `struct unix_address`.
    pub unix_addr: u64,
    pub unix_address_path: u64,
}

/// `struct file`'s `f_owner`: embedded up to Linux 6.11 (the file is at `fown - offset`), a
/// pointer to a lazily allocated `struct fown_struct` from 6.12, which then points back to its
/// file (`fown->file` at `offset`). The programs key a file's owner record by the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FownFile {
    /// `bulkhead_common::FOWN_FILE_EMBEDDED` or `FOWN_FILE_BACK_POINTER`.
    pub mode: u64,
    pub offset: u64,
}

impl KernelLayout {
    pub fn from_kernel() -> anyhow::Result<Self> {
        Self::from_btf_file(Path::new(KERNEL_BTF))
    }

    pub fn from_btf_file(path: &Path) -> anyhow::Result<Self> {
        let btf = Btf::from_file(path)
            .with_context(|| format!("reading kernel BTF {}", path.display()))?;
        Self::from_btf(&btf)
    }

    pub fn from_btf(btf: &Btf) -> anyhow::Result<Self> {
        let dentry_d_inode = field(btf, "dentry", "d_inode", FieldShape::PointerTo("inode"))?;
        let dentry_d_parent = field(btf, "dentry", "d_parent", FieldShape::PointerTo("dentry"))?;
        let dentry_d_name = field(btf, "dentry", "d_name", FieldShape::Embedded("qstr"))?
            + field(btf, "qstr", "name", FieldShape::BytePointer)?;
        let fown_file = match field(btf, "file", "f_owner", FieldShape::Embedded("fown_struct")) {
            Ok(offset) => FownFile {
                mode: bulkhead_common::FOWN_FILE_EMBEDDED,
                offset: offset.into(),
            },
            Err(embedded) => {
                field(btf, "file", "f_owner", FieldShape::PointerTo("fown_struct"))
                    .map_err(|_| embedded)?;
                let back = field(btf, "fown_struct", "file", FieldShape::PointerTo("file"))
                    .context("file->f_owner is a pointer but fown_struct has no file pointer")?;
                FownFile {
                    mode: bulkhead_common::FOWN_FILE_BACK_POINTER,
                    offset: back.into(),
                }
            }
        };
        let user_ns_level = field(btf, "user_namespace", "level", FieldShape::Int)?;
        let proc_inode_pid_back = {
            let pid = field(btf, "proc_inode", "pid", FieldShape::PointerTo("pid"))?;
            let vfs_inode = field(
                btf,
                "proc_inode",
                "vfs_inode",
                FieldShape::Embedded("inode"),
            )?;
            match vfs_inode.checked_sub(pid) {
                Some(back) if back > 0 => u64::from(back),
                _ => bail!(
                    "kernel BTF: proc_inode.pid (at {pid}) does not come before vfs_inode (at {vfs_inode})"
                ),
            }
        };
        let task_bpf_storage = field(
            btf,
            "task_struct",
            "bpf_storage",
            FieldShape::PointerTo("bpf_local_storage"),
        )?;
        let storage = storage_layout(btf)?;
        let named = |name: &str| {
            btf.resolve_types_by_name(name)
                .is_ok_and(|types| !types.is_empty())
        };
        let lookup_may_fail =
            named("bpf_task_storage_busy") && !named("bpf_task_storage_get_recur");
        let any = |structure: &str, member: &str| {
            field(btf, structure, member, FieldShape::Any).map_or(0, u64::from)
        };
        let describe = DescribeOffsets {
            task_pid: any("task_struct", "pid"),
            task_tgid: any("task_struct", "tgid"),
            task_comm: any("task_struct", "comm"),
            inode_ino: any("inode", "i_ino"),
            inode_sb: any("inode", "i_sb"),
            sb_dev: any("super_block", "s_dev"),
            ipc_id: any("kern_ipc_perm", "id"),
            ipc_key: any("kern_ipc_perm", "key"),
            key_serial: any("key", "serial"),
            unix_addr: any("unix_sock", "addr"),
            // `name` is a `struct sockaddr_un`, whose `sun_path` follows the u16 family.
            unix_address_path: field(btf, "unix_address", "name", FieldShape::Any)
                .map_or(0, |name| u64::from(name) + 2),
        };
        let socket_sk = field(btf, "socket", "sk", FieldShape::PointerTo("sock"))?;
        let unix_path = field(btf, "unix_sock", "path", FieldShape::Embedded("path"))?;
        let path_dentry = field(btf, "path", "dentry", FieldShape::PointerTo("dentry"))?;
        let unix_peer = field(btf, "unix_sock", "peer", FieldShape::PointerTo("sock"))?;
        let inode_sb = field(btf, "inode", "i_sb", FieldShape::PointerTo("super_block"))?;
        let sb_magic = field(btf, "super_block", "s_magic", FieldShape::Word)?;
        let inode_mode = field(btf, "inode", "i_mode", FieldShape::Half)?;
        let inode_rdev = field(btf, "inode", "i_rdev", FieldShape::Int)?;
        let file_inode = field(btf, "file", "f_inode", FieldShape::PointerTo("inode"))?;
        let file_f_mode = field(btf, "file", "f_mode", FieldShape::Int)?;
        let sb_dev_load = field(btf, "super_block", "s_dev", FieldShape::Int)?;
        Ok(Self {
            describe,
            dentry_d_inode: load_offset("dentry.d_inode", dentry_d_inode)?,
            dentry_d_parent: load_offset("dentry.d_parent", dentry_d_parent)?,
            dentry_d_name: load_offset("dentry.d_name.name", dentry_d_name)?,
            fown_file,
            user_ns_level: user_ns_level.into(),
            proc_inode_pid_back,
            task_bpf_storage: load_offset("task_struct.bpf_storage", task_bpf_storage)?,
            socket_sk: load_offset("socket.sk", socket_sk)?,
            unix_sock_path_dentry: load_offset("unix_sock.path.dentry", unix_path + path_dentry)?,
            unix_sock_peer: load_offset("unix_sock.peer", unix_peer)?,
            inode_sb: load_offset("inode.i_sb", inode_sb)?,
            sb_magic: load_offset("super_block.s_magic", sb_magic)?,
            path_dentry: load_offset("path.dentry", path_dentry)?,
            inode_mode: load_offset("inode.i_mode", inode_mode)?,
            inode_rdev: load_offset("inode.i_rdev", inode_rdev)?,
            file_inode: load_offset("file.f_inode", file_inode)?,
            file_f_mode: load_offset("file.f_mode", file_f_mode)?,
            sb_dev: load_offset("super_block.s_dev", sb_dev_load)?,
            storage,
            lookup_may_fail,
        })
    }
}

impl KernelLayout {
    /// Every struct field the programs load directly: (placeholder offset in the object, the
    /// field's offset on this kernel, its name for errors).
    pub fn field_loads(&self) -> [(i16, u16, &'static str); 15] {
        use bulkhead_common::{
            DENTRY_D_INODE_PLACEHOLDER, DENTRY_D_NAME_PLACEHOLDER, DENTRY_D_PARENT_PLACEHOLDER,
            FILE_F_MODE_PLACEHOLDER, FILE_INODE_PLACEHOLDER, INODE_MODE_PLACEHOLDER,
            INODE_RDEV_PLACEHOLDER, INODE_SB_PLACEHOLDER, PATH_DENTRY_PLACEHOLDER,
            SB_DEV_PLACEHOLDER, SB_MAGIC_PLACEHOLDER, SOCKET_SK_PLACEHOLDER,
            TASK_BPF_STORAGE_PLACEHOLDER, UNIX_SOCK_PATH_DENTRY_PLACEHOLDER,
            UNIX_SOCK_PEER_PLACEHOLDER,
        };
        [
            (
                DENTRY_D_INODE_PLACEHOLDER,
                self.dentry_d_inode,
                "dentry->d_inode",
            ),
            (
                TASK_BPF_STORAGE_PLACEHOLDER,
                self.task_bpf_storage,
                "task->bpf_storage",
            ),
            (SOCKET_SK_PLACEHOLDER, self.socket_sk, "socket->sk"),
            (
                UNIX_SOCK_PATH_DENTRY_PLACEHOLDER,
                self.unix_sock_path_dentry,
                "unix_sock->path.dentry",
            ),
            (
                UNIX_SOCK_PEER_PLACEHOLDER,
                self.unix_sock_peer,
                "unix_sock->peer",
            ),
            (INODE_SB_PLACEHOLDER, self.inode_sb, "inode->i_sb"),
            (SB_MAGIC_PLACEHOLDER, self.sb_magic, "super_block->s_magic"),
            (PATH_DENTRY_PLACEHOLDER, self.path_dentry, "path->dentry"),
            (INODE_MODE_PLACEHOLDER, self.inode_mode, "inode->i_mode"),
            (SB_DEV_PLACEHOLDER, self.sb_dev, "super_block->s_dev"),
            (INODE_RDEV_PLACEHOLDER, self.inode_rdev, "inode->i_rdev"),
            (FILE_INODE_PLACEHOLDER, self.file_inode, "file->f_inode"),
            (
                DENTRY_D_PARENT_PLACEHOLDER,
                self.dentry_d_parent,
                "dentry->d_parent",
            ),
            (
                DENTRY_D_NAME_PLACEHOLDER,
                self.dentry_d_name,
                "dentry->d_name.name",
            ),
            (FILE_F_MODE_PLACEHOLDER, self.file_f_mode, "file->f_mode"),
        ]
    }
}

/// The local-storage layout, checked member by member: the programs walk it with probe reads,
/// so a changed shape must stop the agent rather than send the walk elsewhere.
fn storage_layout(btf: &Btf) -> anyhow::Result<StorageLayout> {
    let list = field(
        btf,
        "bpf_local_storage",
        "list",
        FieldShape::Embedded("hlist_head"),
    )?;
    let snode = field(
        btf,
        "bpf_local_storage_elem",
        "snode",
        FieldShape::Embedded("hlist_node"),
    )?;
    let sdata = field(
        btf,
        "bpf_local_storage_elem",
        "sdata",
        FieldShape::Embedded("bpf_local_storage_data"),
    )?;
    let smap = field(
        btf,
        "bpf_local_storage_data",
        "smap",
        FieldShape::PointerTo("bpf_local_storage_map"),
    )?;
    for (structure, member, shape) in [
        ("hlist_head", "first", FieldShape::PointerTo("hlist_node")),
        ("hlist_node", "next", FieldShape::PointerTo("hlist_node")),
        (
            "bpf_local_storage_map",
            "map",
            FieldShape::Embedded("bpf_map"),
        ),
    ] {
        let offset = field(btf, structure, member, shape)?;
        if offset != 0 {
            bail!("{structure}.{member} is not the first member in this kernel (offset {offset})");
        }
    }
    Ok(StorageLayout {
        list: list.into(),
        snode: snode.into(),
        smap: u64::from(sdata) + u64::from(smap),
    })
}

/// An offset the programs use in a direct load: it must fit the instruction's signed 16 bits.
fn load_offset(what: &str, offset: u32) -> anyhow::Result<u16> {
    u16::try_from(offset)
        .ok()
        .filter(|offset| i16::try_from(*offset).is_ok())
        .ok_or_else(|| anyhow!("{what} at offset {offset} does not fit an eBPF load"))
}

enum FieldShape {
    PointerTo(&'static str),
    Embedded(&'static str),
    /// A plain `int`.
    Int,
    /// An 8-byte integer (`unsigned long`, `u64`).
    Word,
    /// A 2-byte integer (`umode_t`).
    Half,
    /// A pointer to bytes (`const unsigned char *`).
    BytePointer,
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
    if let Some((candidate, bit_offset)) = find_member(btf, &definition.members, member)? {
        let candidate = &candidate;
        if candidate.bitfield_size().is_some_and(|bits| bits != 0) || bit_offset % 8 != 0 {
            bail!("{structure}.{member} is a bitfield in this kernel");
        }
        if matches!(shape, FieldShape::Any) {
            return Ok(bit_offset / 8);
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
            (FieldShape::Int, Type::Int(int)) => int.size() == 4,
            (FieldShape::Word, Type::Int(int)) => int.size() == 8,
            (FieldShape::Half, Type::Int(int)) => int.size() == 2,
            (FieldShape::BytePointer, Type::Ptr(ptr)) => matches!(
                skip_qualifiers(btf, btf.resolve_chained_type(ptr)?)?,
                Type::Int(int) if int.size() == 1
            ),
            _ => false,
        };
        if !ok {
            let expected = match shape {
                FieldShape::PointerTo(name) => format!("struct {name} *"),
                FieldShape::Embedded(name) => format!("struct {name}"),
                FieldShape::Int => "int".to_owned(),
                FieldShape::Word => "8-byte integer".to_owned(),
                FieldShape::Half => "2-byte integer".to_owned(),
                FieldShape::BytePointer => "pointer to bytes".to_owned(),
                FieldShape::Any => unreachable!("returned above"),
            };
            bail!("{structure}.{member} is not a {expected} in this kernel");
        }
        return Ok(bit_offset / 8);
    }
    bail!("kernel BTF: struct {structure} has no member {member}")
}

/// `member` among `members`, looking inside anonymous structs and unions as C does (7.x puts
/// `dentry.d_name` in one), with its bit offset from the start of the outer struct.
fn find_member(
    btf: &Btf,
    members: &[btf_rs::Member],
    member: &str,
) -> anyhow::Result<Option<(btf_rs::Member, u32)>> {
    for candidate in members {
        match btf.resolve_name(candidate).ok().as_deref() {
            Some(name) if name == member => {
                return Ok(Some((candidate.clone(), candidate.bit_offset())));
            }
            Some(name) if !name.is_empty() => continue,
            _ => {}
        }
        if let Type::Struct(inner) | Type::Union(inner) =
            skip_qualifiers(btf, btf.resolve_chained_type(candidate)?)?
            && let Some((found, offset)) = find_member(btf, &inner.members, member)?
        {
            return Ok(Some((found, offset + candidate.bit_offset())));
        }
    }
    Ok(None)
}

pub(super) fn skip_qualifiers(btf: &Btf, mut ty: Type) -> anyhow::Result<Type> {
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
        assert_eq!(layout.fown_file.offset % 8, 0);
        assert!(layout.fown_file.offset < 512);
        let d = layout.describe;
        for offset in [
            d.task_pid,
            d.task_tgid,
            d.task_comm,
            d.inode_ino,
            d.inode_sb,
            d.sb_dev,
            d.ipc_id,
            d.ipc_key,
            d.key_serial,
            d.unix_addr,
            d.unix_address_path,
        ] {
            assert!(offset > 0 && offset < 8192, "{d:?}");
        }
        assert_eq!(
            d.task_tgid,
            d.task_pid + 4,
            "pid and tgid are adjacent in task_struct"
        );
    }

    /// Each kernel of the matrix: the SIGIO owner struct is found from its file the way that
    /// kernel lays it out (embedded on 6.1, a back pointer from 6.12).
    #[test]
    fn finds_the_owner_layout_of_every_matrix_kernel() {
        use bulkhead_common::{FOWN_FILE_BACK_POINTER, FOWN_FILE_EMBEDDED};
        for (suite, mode) in [
            ("bookworm", FOWN_FILE_EMBEDDED),
            ("trixie", FOWN_FILE_BACK_POINTER),
            ("sid", FOWN_FILE_BACK_POINTER),
        ] {
            let Some((package, btf)) = crate::enforce::matrix_btf::matrix_btf(suite) else {
                continue;
            };
            let layout = KernelLayout::from_btf_file(&btf).expect("layout");
            assert_eq!(layout.fown_file.mode, mode, "{package}");
            if mode == FOWN_FILE_BACK_POINTER {
                // `struct file *file` is fown_struct's first member since 6.12.
                assert_eq!(layout.fown_file.offset, 0, "{package}");
            } else {
                assert!(layout.fown_file.offset > 0, "{package}");
            }
            assert!(layout.dentry_d_inode > 0, "{package}");
            assert!(
                layout.unix_sock_path_dentry > layout.unix_sock_peer.min(8),
                "{package}"
            );
            assert!(layout.describe.unix_addr > 0, "{package}");
            assert_eq!(layout.lookup_may_fail, suite == "bookworm", "{package}");
            // `pid` is proc_inode's first member and the inode its last on every kernel since
            // 4.x; what lies between differs (6.1 and 6.12 have no `pde` before `sysctl`).
            assert!(
                (64..1024).contains(&layout.proc_inode_pid_back),
                "{package}: {}",
                layout.proc_inode_pid_back
            );
        }
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
