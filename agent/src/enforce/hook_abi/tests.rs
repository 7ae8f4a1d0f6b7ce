//! Argument resolution against the prototypes of every kernel of the matrix, the host's own
//! kernel, and prototypes that must be refused.

use std::path::Path;

use bulkhead_common::hook_abi::ArgId;

use super::*;
use crate::enforce::{hook_prototypes::Parameter, matrix_btf::matrix_btf};

fn prototypes_of(kernel: &str) -> BTreeMap<&'static str, Prototype> {
    let (_, text) = KNOWN_PROTOTYPES
        .iter()
        .find(|(name, _)| *name == kernel)
        .expect("a matrix kernel");
    let parsed = parse_prototypes(text).expect("committed prototypes parse");
    hooks()
        .into_iter()
        .filter_map(|(hook, _)| {
            parsed
                .iter()
                .find(|p| p.hook == hook)
                .map(|p| (hook, p.clone()))
        })
        .collect()
}

fn slot(slots: &ArgSlots, id: ArgId) -> u8 {
    slots.slots[id as usize]
}

#[test]
fn every_matrix_kernel_resolves_and_is_tested() {
    for (kernel, _) in KNOWN_PROTOTYPES {
        let prototypes = prototypes_of(kernel);
        assert_eq!(
            prototypes.len(),
            hooks().len(),
            "{kernel}: a hook is missing"
        );
        let slots = resolve(&prototypes).unwrap_or_else(|e| panic!("{kernel}: {e}"));
        assert!(slots.untested.is_empty(), "{kernel}: {:?}", slots.untested);
    }
}

/// The differences the issue lists, slot by slot: each kernel gets its own positions.
#[test]
fn slots_follow_each_kernels_prototype() {
    let slots = |kernel| resolve(&prototypes_of(kernel)).unwrap();
    let (v6_1, v6_12, v7) = (slots("bookworm"), slots("trixie"), slots("sid"));
    // bpf(cmd, attr, size) vs bpf(cmd, attr, size, kernel): the verdict moves, `kernel` is
    // never read as the verdict.
    assert_eq!(slot(&v6_1, ArgId::BpfVerdict), 3);
    assert_eq!(slot(&v6_12, ArgId::BpfVerdict), 3);
    assert_eq!(slot(&v7, ArgId::BpfVerdict), 4);
    assert_eq!(slot(&v7, ArgId::BpfCmd), 0);
    // inode_init_security: 6 parameters, then 5.
    assert_eq!(slot(&v6_1, ArgId::InodeInitSecurityVerdict), 6);
    assert_eq!(slot(&v6_12, ArgId::InodeInitSecurityVerdict), 5);
    assert_eq!(slot(&v7, ArgId::InodeInitSecurityVerdict), 5);
    for slots in [&v6_1, &v6_12, &v7] {
        assert_eq!(slot(slots, ArgId::InodeInitSecurityInode), 0);
        assert_eq!(slot(slots, ArgId::InodeInitSecurityDir), 1);
    }
    // inode_setattr: an idmap first from 6.8.
    assert_eq!(slot(&v6_1, ArgId::InodeSetattrDentry), 0);
    assert_eq!(slot(&v6_1, ArgId::InodeSetattrVerdict), 2);
    assert_eq!(slot(&v6_12, ArgId::InodeSetattrDentry), 1);
    assert_eq!(slot(&v6_12, ArgId::InodeSetattrVerdict), 3);
    // task_alloc: clone_flags retyped, same position.
    for slots in [&v6_1, &v6_12, &v7] {
        assert_eq!(slot(slots, ArgId::TaskAllocTask), 0);
        assert_eq!(slot(slots, ArgId::TaskAllocVerdict), 2);
    }
}

/// Security trees put an idmap first in inode_permission and inode_link: found by type, the
/// arguments move with it, and the agent says the prototype is untested.
#[test]
fn an_idmap_put_first_moves_the_slots_and_is_reported_untested() {
    let mut prototypes = prototypes_of("sid");
    let idmap = Parameter {
        name: "idmap".into(),
        ty: ParamType::StructPtr("mnt_idmap".into()),
    };
    for hook in ["inode_permission", "inode_link"] {
        prototypes
            .get_mut(hook)
            .unwrap()
            .params
            .insert(0, idmap.clone());
    }
    let slots = resolve(&prototypes).unwrap();
    assert_eq!(slot(&slots, ArgId::InodePermissionInode), 1);
    assert_eq!(slot(&slots, ArgId::InodePermissionMask), 2);
    assert_eq!(slot(&slots, ArgId::InodePermissionVerdict), 3);
    assert_eq!(slot(&slots, ArgId::InodeLinkOldDentry), 1);
    assert_eq!(slot(&slots, ArgId::InodeLinkDir), 2);
    assert_eq!(slot(&slots, ArgId::InodeLinkVerdict), 4);
    let untested: Vec<&str> = slots.untested.iter().map(|p| p.hook.as_str()).collect();
    assert_eq!(untested, ["inode_permission", "inode_link"]);
}

/// Repeated types are told apart by name, whatever the order.
#[test]
fn repeated_types_are_told_apart_by_name() {
    let mut prototypes = prototypes_of("trixie");
    prototypes.get_mut("inode_rename").unwrap().params.reverse();
    let slots = resolve(&prototypes).unwrap();
    // old_dir, old_dentry, new_dir, new_dentry reversed.
    assert_eq!(slot(&slots, ArgId::InodeRenameOldDir), 3);
    assert_eq!(slot(&slots, ArgId::InodeRenameOldDentry), 2);
    assert_eq!(slot(&slots, ArgId::InodeRenameNewDir), 1);
    assert_eq!(slot(&slots, ArgId::InodeRenameNewDentry), 0);
}

/// Prototypes that match nothing the agent knows: every problem is reported in one error,
/// naming the hook, the prototype found and the known ones; nothing resolves.
#[test]
fn prototypes_that_match_nothing_are_all_reported() {
    let mut prototypes = prototypes_of("trixie");
    prototypes.remove("bpf");
    prototypes.remove("sched_process_exit");
    // Two `struct inode *` parameters neither of which is called `dir`.
    for param in &mut prototypes.get_mut("inode_init_security").unwrap().params {
        if param.name == "dir" {
            param.name = "parent".into();
        }
    }
    // A hook that stopped returning a verdict.
    prototypes.get_mut("task_kill").unwrap().returns = ParamType::Other("void".into());
    // A needed integer that disappeared.
    prototypes
        .get_mut("file_fcntl")
        .unwrap()
        .params
        .retain(|p| p.name != "cmd");
    let err = resolve(&prototypes).unwrap_err();
    assert_eq!(err.0.len(), 5, "{err}");
    let text = err.to_string();
    for expected in [
        "LSM hook bpf: not in this kernel's BTF",
        "BTF tracepoint sched_process_exit: not in this kernel's BTF",
        "inode_init_security: found `inode_init_security(inode: struct inode *, parent: struct inode *",
        "none (or more than one) is named `dir`",
        "task_kill: found `task_kill(",
        "a verdict is needed but the hook returns void",
        "file_fcntl: found `file_fcntl(file: struct file *, arg: long unsigned int) -> int`",
        "no integer parameter named `cmd`",
        "nothing was loaded or replaced",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    // The known prototypes are shown, with the kernels that have them.
    assert!(
        text.contains("known (bookworm, trixie): `bpf(cmd: int, attr: union bpf_attr *, size: unsigned int) -> int`"),
        "{text}"
    );
    assert!(text.contains("known (sid): `bpf(cmd: int"), "{text}");
}

/// A named pointer whose type is now unique must still carry its name: with one
/// `struct inode *` left, `dir` and `inode` must not share it.
#[test]
fn a_named_pointer_needs_its_name_even_when_unique() {
    let mut prototypes = prototypes_of("trixie");
    prototypes
        .get_mut("inode_init_security")
        .unwrap()
        .params
        .retain(|p| p.name != "dir");
    let err = resolve(&prototypes).unwrap_err();
    assert!(
        err.to_string()
            .contains("no struct inode * parameter named `dir`"),
        "{err}"
    );
}

#[test]
fn an_ambiguous_pointer_without_a_name_is_refused() {
    let mut prototypes = prototypes_of("bookworm");
    let extra = Parameter {
        name: "other".into(),
        ty: ParamType::StructPtr("task_struct".into()),
    };
    prototypes.get_mut("task_kill").unwrap().params.push(extra);
    let err = resolve(&prototypes).unwrap_err();
    assert!(
        err.to_string()
            .contains("2 parameters match struct task_struct *, nothing tells them apart"),
        "{err}"
    );
}

/// The running host's kernel is a fourth real BTF (the development machines run a newer
/// kernel than the matrix): the reader and the resolution must cope with it.
#[test]
fn the_host_kernel_resolves() {
    let path = Path::new(crate::enforce::kernel_layout::KERNEL_BTF);
    if !path.exists() {
        eprintln!("skipped: no {}", path.display());
        return;
    }
    let btf = Btf::from_file(path).unwrap();
    let prototypes = prototypes_from_btf(&btf).unwrap();
    resolve(&prototypes).unwrap_or_else(|e| panic!("{e}"));
}

/// The cached kernels of the matrix (`cargo xtask setup` extracts each one's BTF): the
/// committed prototypes must be exactly what each kernel's BTF says. `BULKHEAD_BLESS=1`
/// rewrites them from the BTF; `cargo xtask test` sets `BULKHEAD_REQUIRE_MATRIX_BTF=1`, so a
/// missing kernel fails there instead of being skipped.
#[test]
fn committed_prototypes_are_each_kernels_btf() {
    let bless = std::env::var_os("BULKHEAD_BLESS").is_some();
    for (kernel, committed) in KNOWN_PROTOTYPES {
        let Some((package, btf_path)) = matrix_btf(kernel) else {
            continue;
        };
        let btf = Btf::from_file(&btf_path).unwrap();
        let mut text = format!(
            "# Hook prototypes of {package} ({kernel}), from its BTF; checked by\n\
             # hook_abi::tests::committed_prototypes_are_each_kernels_btf.\n"
        );
        for proto in prototypes_from_btf(&btf).unwrap().values() {
            text.push_str(&format!("{proto}\n"));
        }
        let file = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/enforce/prototypes")
            .join(format!("{kernel}.txt"));
        if bless {
            std::fs::write(&file, &text).unwrap();
        } else {
            // The package line may name a newer build of the same prototypes.
            let body = |t: &str| -> Vec<String> {
                t.lines()
                    .filter(|l| !l.starts_with('#'))
                    .map(str::to_owned)
                    .collect()
            };
            assert_eq!(
                body(committed),
                body(&text),
                "{kernel} ({package}): prototypes differ from {}; rerun with BULKHEAD_BLESS=1",
                file.display()
            );
        }
    }
}
