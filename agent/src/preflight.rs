//! Checks that this host can enforce domains before anything is loaded.
//!
//! Each failure says what is missing and how a person fixes it; the agent refuses to start
//! rather than run without enforcement.

use std::path::{Path, PathBuf};

/// bpffs's filesystem magic (include/uapi/linux/magic.h).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreflightError {
    #[error("bulkhead must run as root (effective uid 0); it runs as uid {0}")]
    NotRoot(u32),
    #[error(
        "cannot read the active LSM list at {path}: {reason}. Mount securityfs \
         (`mount -t securityfs securityfs /sys/kernel/security`)"
    )]
    LsmListUnreadable { path: PathBuf, reason: String },
    #[error(
        "the BPF LSM is not active (active LSMs: {active}). The kernel needs CONFIG_BPF_LSM=y \
         and `bpf` in its `lsm=` boot parameter, e.g. lsm={active},bpf"
    )]
    BpfLsmInactive { active: String },
    #[error(
        "kernel BTF is missing at {0}: the kernel needs CONFIG_DEBUG_INFO_BTF=y so the programs \
         can attach without compiled-in struct offsets"
    )]
    NoBtf(PathBuf),
    #[error("bpffs is not mounted at {0}: `mount -t bpf bpf {0}`")]
    NoBpffs(PathBuf),
    #[error("cannot read kernel BTF {path}: {reason}")]
    BtfUnreadable { path: PathBuf, reason: String },
    #[error("{0}")]
    Hooks(crate::enforce::hook_abi::HookProblems),
}

/// Where the checks look; tests point it at a fake tree.
pub struct Host {
    pub root: PathBuf,
    pub euid: u32,
}

impl Host {
    pub fn running() -> Self {
        Self {
            root: PathBuf::from("/"),
            euid: nix::unistd::geteuid().as_raw(),
        }
    }

    fn path(&self, absolute: &str) -> PathBuf {
        self.root.join(absolute.trim_start_matches('/'))
    }

    /// Runs every check, stopping at the first failure.
    pub fn check(&self) -> Result<(), PreflightError> {
        if self.euid != 0 {
            return Err(PreflightError::NotRoot(self.euid));
        }
        self.check_bpf_lsm_active()?;
        let btf = self.path("/sys/kernel/btf/vmlinux");
        if !btf.is_file() {
            return Err(PreflightError::NoBtf(btf));
        }
        let bpffs = self.path("/sys/fs/bpf");
        if !is_bpffs(&bpffs) {
            return Err(PreflightError::NoBpffs(bpffs));
        }
        check_hooks(&btf)
    }

    fn check_bpf_lsm_active(&self) -> Result<(), PreflightError> {
        let path = self.path("/sys/kernel/security/lsm");
        let active = std::fs::read_to_string(&path)
            .map_err(|err| PreflightError::LsmListUnreadable {
                path: path.clone(),
                reason: err.to_string(),
            })?
            .trim()
            .to_owned();
        if active.split(',').any(|lsm| lsm == "bpf") {
            Ok(())
        } else {
            Err(PreflightError::BpfLsmInactive { active })
        }
    }
}

/// Every hook the programs use must be in this kernel with a prototype that gives each needed
/// argument: all problems are reported together, before anything is loaded.
fn check_hooks(btf_path: &Path) -> Result<(), PreflightError> {
    use crate::enforce::hook_abi;
    let unreadable = |reason: String| PreflightError::BtfUnreadable {
        path: btf_path.to_owned(),
        reason,
    };
    let btf = btf_rs::Btf::from_file(btf_path).map_err(|err| unreadable(err.to_string()))?;
    let prototypes =
        hook_abi::prototypes_from_btf(&btf).map_err(|err| unreadable(format!("{err:#}")))?;
    hook_abi::resolve(&prototypes)
        .map(|_| ())
        .map_err(PreflightError::Hooks)
}

fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|fs| fs.filesystem_type().0 == BPF_FS_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_host(lsm: Option<&str>, btf: bool) -> (tempfile::TempDir, Host) {
        let dir = tempfile::tempdir().unwrap();
        if let Some(lsm) = lsm {
            let security = dir.path().join("sys/kernel/security");
            std::fs::create_dir_all(&security).unwrap();
            std::fs::write(security.join("lsm"), format!("{lsm}\n")).unwrap();
        }
        if btf {
            let btf_dir = dir.path().join("sys/kernel/btf");
            std::fs::create_dir_all(&btf_dir).unwrap();
            std::fs::write(btf_dir.join("vmlinux"), b"btf").unwrap();
        }
        let host = Host {
            root: dir.path().to_owned(),
            euid: 0,
        };
        (dir, host)
    }

    #[test]
    fn non_root_is_refused_first() {
        let (_dir, mut host) = fake_host(Some("lockdown,bpf"), true);
        host.euid = 1000;
        assert_eq!(host.check(), Err(PreflightError::NotRoot(1000)));
    }

    #[test]
    fn missing_securityfs_is_explained() {
        let (_dir, host) = fake_host(None, true);
        let err = host.check().unwrap_err();
        assert!(matches!(err, PreflightError::LsmListUnreadable { .. }));
        assert!(err.to_string().contains("mount -t securityfs"));
    }

    #[test]
    fn bpf_missing_from_lsm_list_names_the_fix() {
        let (_dir, host) = fake_host(Some("lockdown,capability,landlock,yama,apparmor"), true);
        let err = host.check().unwrap_err();
        assert_eq!(
            err,
            PreflightError::BpfLsmInactive {
                active: "lockdown,capability,landlock,yama,apparmor".into()
            }
        );
        assert!(
            err.to_string()
                .contains("lsm=lockdown,capability,landlock,yama,apparmor,bpf")
        );
    }

    #[test]
    fn lsm_named_like_bpf_is_not_bpf() {
        let (_dir, host) = fake_host(Some("lockdown,bpfish"), true);
        assert!(matches!(
            host.check(),
            Err(PreflightError::BpfLsmInactive { .. })
        ));
    }

    #[test]
    fn unreadable_btf_is_refused_with_its_path() {
        // fake_host writes three bytes, not BTF.
        let (_dir, host) = fake_host(Some("lockdown,bpf"), true);
        let err = check_hooks(&host.path("/sys/kernel/btf/vmlinux")).unwrap_err();
        assert!(matches!(err, PreflightError::BtfUnreadable { .. }), "{err}");
        assert!(err.to_string().contains("sys/kernel/btf/vmlinux"), "{err}");
    }

    /// Every matrix kernel's real BTF passes the hook check.
    #[test]
    fn matrix_kernels_pass_the_hook_check() {
        for suite in ["bookworm", "trixie", "sid"] {
            if let Some((package, btf)) = crate::enforce::matrix_btf::matrix_btf(suite) {
                check_hooks(&btf).unwrap_or_else(|err| panic!("{package}: {err}"));
            }
        }
    }

    #[test]
    fn missing_btf_is_refused() {
        let (_dir, host) = fake_host(Some("lockdown,bpf"), false);
        assert!(matches!(host.check(), Err(PreflightError::NoBtf(_))));
    }

    #[test]
    fn a_plain_directory_is_not_bpffs() {
        let (dir, host) = fake_host(Some("bpf"), true);
        std::fs::create_dir_all(dir.path().join("sys/fs/bpf")).unwrap();
        assert!(matches!(host.check(), Err(PreflightError::NoBpffs(_))));
    }
}
