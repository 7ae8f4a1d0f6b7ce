//! Python and the Airflow venv for the guest, as a second initramfs archive.
//!
//! The guest kernels have 9p and virtio-blk only as modules, so a shared or attached filesystem
//! would mean loading modules per kernel; an initramfs needs nothing from the kernel. The
//! archive is uncompressed (qemu copies it into guest memory as is; decompressing ~400 MB under
//! TCG would cost more than reading it) and cached per venv: it is rebuilt only when the
//! venv's constraints, the interpreter or this layout change. The kernel unpacks concatenated
//! archives in order, so the per-run archive is simply followed by this one.
//!
//! Guest layout: the host's interpreter and standard library at their host paths, the shared
//! libraries they and the venv's extensions load (from `ldd`), the venv at /opt/airflow-venv,
//! and an /etc/passwd with root (Python asks for the user's name).

use std::{
    collections::BTreeSet,
    fs,
    hash::{Hash, Hasher},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};

use crate::{
    cmd::{output, run},
    setup::{airflow_venv_dir, cache_dir},
};

/// Where the venv is in the guest.
pub const GUEST_VENV: &str = "/opt/airflow-venv";
/// Bumped when the layout below changes, so a cached archive of the old layout is not used.
const LAYOUT: u32 = 2;
/// Standard library parts no task and no test imports.
const STDLIB_LEFT_OUT: &[&str] = &["test", "idlelib", "tkinter", "turtledemo", "ensurepip"];

/// The archive for the current venv, built if missing. Fails, naming the fix, without a venv.
pub fn archive() -> anyhow::Result<PathBuf> {
    let venv = airflow_venv_dir();
    let stamp = fs::read(venv.join("bulkhead-constraints.txt")).with_context(|| {
        format!(
            "no Airflow venv at {} (run `cargo xtask setup`)",
            venv.display()
        )
    })?;
    let python = fs::canonicalize(venv.join("bin/python"))
        .context("the Airflow venv has no bin/python (run `cargo xtask setup`)")?;
    let mut hasher = std::hash::DefaultHasher::new();
    (LAYOUT, &stamp, &python).hash(&mut hasher);
    let dir = cache_dir().join("vm-python");
    let archive = dir.join(format!("python-{:016x}.cpio", hasher.finish()));
    if archive.is_file() {
        return Ok(archive);
    }
    eprintln!("vm: packing Python and the Airflow venv for the guest (once per venv) ...");
    let _ = fs::remove_dir_all(&dir);
    let staging = dir.join("staging");
    fs::create_dir_all(&staging)?;
    stage(&python, &venv, &staging)?;
    let partial = dir.join("python.cpio.partial");
    let script = format!(
        "cd '{}' && find . -print0 | cpio --null --create --format=newc --quiet > '{}'",
        staging.display(),
        partial.display()
    );
    run(Command::new("sh").args(["-c", &script])).context("packing the Python archive")?;
    fs::rename(&partial, &archive)?;
    let _ = fs::remove_dir_all(&staging);
    Ok(archive)
}

fn stage(python: &Path, venv: &Path, staging: &Path) -> anyhow::Result<()> {
    let at = |host: &Path| staging.join(host.strip_prefix("/").unwrap_or(host));
    let stdlib = PathBuf::from(
        output(Command::new(python).args([
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['stdlib'])",
        ]))?
        .trim(),
    );
    // The venv's bin/python3 -> /usr/bin/python3 -> python3.11: each link outside the venv
    // too, or the guest venv points at nothing.
    for path in links_outside(venv)? {
        copy_tree(&path, &at(&path))?;
    }
    copy_tree(python, &at(python))?;
    fs::create_dir_all(at(&stdlib))?;
    for entry in fs::read_dir(&stdlib)? {
        let entry = entry?;
        let name = entry.file_name();
        if STDLIB_LEFT_OUT.iter().any(|left| name == *left) {
            continue;
        }
        copy_tree(&entry.path(), &at(&stdlib).join(&name))?;
    }
    let guest_venv = at(Path::new(GUEST_VENV));
    copy_tree(venv, &guest_venv)?;

    let mut libraries = BTreeSet::new();
    libraries.extend(crate::initramfs::shared_libraries(python)?);
    for tree in [at(&stdlib), guest_venv] {
        for object in shared_objects(&tree)? {
            libraries.extend(crate::initramfs::shared_libraries(&object)?);
        }
    }
    for library in libraries {
        // Libraries the venv bundles (`*.libs/`) are already in place.
        if library.starts_with(staging) {
            continue;
        }
        let target = at(&library);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::copy(&library, &target).with_context(|| format!("copying {}", library.display()))?;
    }
    fs::create_dir_all(staging.join("etc"))?;
    fs::write(
        staging.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    fs::write(staging.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    Ok(())
}

/// The symbolic links outside the venv on the way from its bin/python3 to the interpreter.
fn links_outside(venv: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut links = Vec::new();
    let mut path = venv.join("bin/python3");
    for _ in 0..16 {
        let Ok(target) = fs::read_link(&path) else {
            return Ok(links);
        };
        let parent = path.parent().map(Path::to_owned).unwrap_or_default();
        path = parent.join(target);
        if !path.starts_with(venv) && fs::symlink_metadata(&path)?.file_type().is_symlink() {
            links.push(path.clone());
        }
    }
    bail!(
        "{} is a chain of more than 16 links",
        venv.join("bin/python3").display()
    )
}

/// `cp -a`: keeps the venv's symlinks (bin/python -> the interpreter) as they are.
fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent)?;
    }
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .context("running cp")?;
    if !status.success() {
        bail!("copying {} to {} failed", from.display(), to.display());
    }
    Ok(())
}

/// Every `*.so*` file below `dir`.
fn shared_objects(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let listing = output(
        Command::new("find")
            .arg(dir)
            .args(["-type", "f", "-name", "*.so*"]),
    )?;
    Ok(listing.lines().map(PathBuf::from).collect())
}
