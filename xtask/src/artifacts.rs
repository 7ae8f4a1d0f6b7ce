//! Building what goes into the VM.

use std::{path::PathBuf, process::Command};

use crate::cmd::run;

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_owned()
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from)
}

/// Cargo profile of the binaries that go into the VM (see the workspace Cargo.toml).
const GUEST_PROFILE: &str = "guest";

/// Builds the agent (with its embedded eBPF object), the launcher and the VM suite; returns
/// their paths.
pub fn build_guest_binaries() -> anyhow::Result<Vec<PathBuf>> {
    run(Command::new(env!("CARGO"))
        .current_dir(workspace_root())
        .args([
            "build",
            "--package",
            "bulkhead",
            "--bin",
            "bulkhead",
            "--package",
            "bulkhead-tests",
            "--bin",
            "bulkhead-vm-suite",
            "--profile",
            GUEST_PROFILE,
        ]))?;
    build_static_launcher(GUEST_PROFILE)?;
    let dir = target_dir().join(GUEST_PROFILE);
    Ok(vec![
        dir.join("bulkhead"),
        dir.join("bulkhead-exec"),
        dir.join("bulkhead-vm-suite"),
    ])
}

/// `bulkhead-exec` linked statically (static-pie): on every task start, a dynamic loader
/// relocating libc costs more than the launcher's own work (see agent/src/bin/bulkhead_exec.rs).
/// Only this binary: the agent keeps glibc's dynamic loading (NSS and the like).
pub fn build_static_launcher(profile: &str) -> anyhow::Result<()> {
    run(Command::new(env!("CARGO"))
        .current_dir(workspace_root())
        .args([
            "rustc",
            "--package",
            "bulkhead",
            "--bin",
            "bulkhead-exec",
            "--profile",
            profile,
            "--",
            "-C",
            "target-feature=+crt-static",
        ]))
}
