//! Builds the VM's initramfs: busybox-static, our binaries with the shared libraries they load,
//! the node config, optional included files, and /init.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, bail};

use crate::cmd::output;

const INIT: &str = include_str!("guest/init.sh");
const BUSYBOX: &str = "/bin/busybox";

pub struct Contents<'a> {
    /// Executables placed in /bin under their own names.
    pub binaries: Vec<PathBuf>,
    pub node_config: &'a Path,
    /// Files or directories made available under /include/<basename>.
    pub includes: &'a [PathBuf],
    /// Script run by `bulkhead.mode=run`.
    pub run_script: Option<String>,
    /// Archives unpacked after this one (the kernel takes concatenated archives): the
    /// cached Python payload.
    pub extra_archives: Vec<PathBuf>,
}

pub fn build(contents: &Contents<'_>, out: &Path) -> anyhow::Result<PathBuf> {
    let root = out.join("rootfs");
    let _ = fs::remove_dir_all(&root);
    for dir in [
        "bin",
        "etc/bulkhead",
        "include",
        "lib",
        "lib64",
        "proc",
        "sys",
        "dev",
        "tmp",
        "run",
    ] {
        fs::create_dir_all(root.join(dir))?;
    }
    copy_file(Path::new(BUSYBOX), &root.join("bin/busybox"))
        .context("busybox-static is missing (run `cargo xtask setup`)")?;
    write_executable(&root.join("init"), INIT)?;

    let mut libraries = BTreeSet::new();
    for binary in &contents.binaries {
        let name = binary.file_name().context("binary without a name")?;
        copy_file(binary, &root.join("bin").join(name))?;
        libraries.extend(shared_libraries(binary)?);
    }
    for library in &libraries {
        copy_file(
            library,
            &root.join(library.strip_prefix("/").unwrap_or(library)),
        )?;
    }
    copy_file(contents.node_config, &root.join("etc/bulkhead/node.toml"))?;
    for include in contents.includes {
        let name = include
            .file_name()
            .with_context(|| format!("--include {} has no file name", include.display()))?;
        copy_tree(include, &root.join("include").join(name))
            .with_context(|| format!("including {}", include.display()))?;
    }
    if let Some(script) = &contents.run_script {
        fs::write(root.join("vm-run.sh"), script)?;
    }

    let own = out.join("initramfs.cpio.gz");
    pack(&root, &own)?;
    if contents.extra_archives.is_empty() {
        return Ok(own);
    }
    let image = out.join("initramfs.img");
    let mut joined = fs::File::create(&image)?;
    for part in std::iter::once(&own).chain(&contents.extra_archives) {
        let written = std::io::copy(&mut fs::File::open(part)?, &mut joined)
            .with_context(|| format!("appending {}", part.display()))?;
        // The kernel looks for an uncompressed archive's magic only at 4-byte aligned offsets
        // and skips zeros between archives; unpadded, it takes the cpio for a bad compressed
        // stream and unpacks nothing of it.
        let pad = (4 - written % 4) % 4;
        std::io::Write::write_all(&mut joined, &[0u8; 3][..pad as usize])?;
    }
    Ok(image)
}

/// Shared libraries (and the dynamic loader) a binary needs, from `ldd`.
pub fn shared_libraries(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let listing = output(Command::new("ldd").arg(binary)).unwrap_or_default();
    Ok(listing
        .lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

fn pack(root: &Path, image: &Path) -> anyhow::Result<()> {
    let script = format!(
        "cd '{}' && find . -print0 | cpio --null --create --format=newc --quiet | gzip -1 > '{}'",
        root.display(),
        image.display()
    );
    let status = Command::new("sh")
        .args(["-c", &script])
        .stderr(Stdio::inherit())
        .status()
        .context("running cpio")?;
    if !status.success() {
        bail!("packing the initramfs failed ({status}); is cpio installed (`cargo xtask setup`)?");
    }
    Ok(())
}

fn copy_file(from: &Path, to: &Path) -> anyhow::Result<()> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    let meta = fs::metadata(from)?;
    if meta.is_dir() {
        fs::create_dir_all(to)?;
        for entry in fs::read_dir(from)? {
            let entry = entry?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
        Ok(())
    } else {
        copy_file(from, to)
    }
}

fn write_executable(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::write(path, text)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))?;
    Ok(())
}
