//! The files the suite attacks, created by `bulkhead-vm-suite prepare` before the agent starts
//! (the VM's /init runs it), and protected by tests/vm/node.toml.
//!
//! They live on a tmpfs of their own: tmpfs, like the disk filesystems of a real host, asks
//! the LSM to initialise new inodes, which is how a file created in a protected directory is
//! marked at once.

use std::{fs, os::unix::fs::PermissionsExt, path::Path};

pub const ROOT: &str = "/srv/bulkhead-test";
/// The same tmpfs, bind-mounted: a second path to every protected inode.
pub const BIND: &str = "/srv/bulkhead-bind";
/// A mount for the umount tests.
pub const SCRATCH_MOUNT: &str = "/srv/bulkhead-scratch";

pub const SECRET: &str = "/srv/bulkhead-test/secret.cfg";
pub const SECRET_CONTENT: &str = "jwt_secret = not-for-tasks\n";
pub const SECRET_EXEC: &str = "/srv/bulkhead-test/secret-exec.sh";
/// Hard link to SECRET made before the agent marked it.
pub const HARDLINK: &str = "/srv/bulkhead-test/hardlink.cfg";
pub const SYMLINK: &str = "/srv/bulkhead-test/symlink.cfg";
pub const SECRET_VIA_BIND: &str = "/srv/bulkhead-bind/secret.cfg";
/// Not protected: the domain-side control that file access works at all.
pub const PUBLIC: &str = "/srv/bulkhead-test/public.cfg";
pub const PUBLIC_CONTENT: &str = "log_level = info\n";
pub const KEYS_DIR: &str = "/srv/bulkhead-test/keys";
pub const KEY_IN_DIR: &str = "/srv/bulkhead-test/keys/sub/a.pem";
pub const GLOB_MATCH: &str = "/srv/bulkhead-test/glob/x.pem";
/// The directory of GLOB_MATCH; `*.pem` in it is protected, the directory itself is not.
pub const GLOB_DIR: &str = "/srv/bulkhead-test/glob";
pub const GLOB_OTHER: &str = "/srv/bulkhead-test/glob/readme.txt";
pub const VICTIMS_DIR: &str = "/srv/bulkhead-test/victims";
pub const REPLACED: &str = "/srv/bulkhead-test/replaced.cfg";
/// Protected, and replaced 200 times by write-and-rename while tasks read it (race tests).
pub const RACED: &str = "/srv/bulkhead-test/raced.cfg";
/// Protected and never created by the suite: no task in a domain may make it.
pub const ABSENT: &str = "/srv/bulkhead-test/absent.cfg";
/// Not protected, beside ABSENT: the domain-side control.
pub const ABSENT_BESIDE: &str = "/srv/bulkhead-test/absent-beside.cfg";
/// On the way of the protected pattern `way/*/key` and never created by the suite.
pub const ON_THE_WAY: &str = "/srv/bulkhead-test/way";
/// On the way of `appears/*/token`: created only by the race test, after the agent started.
pub const APPEARS: &str = "/srv/bulkhead-test/appears";
/// Not protected: where the race tests stage files before moving them into KEYS_DIR.
pub const STAGING: &str = "/srv/bulkhead-test/staging";
/// The executor's workload-token signing key (in the protected keys directory: a task that
/// could read it could forge workload tokens) and the JWKS the broker trusts for it.
pub const EXECUTOR_KEY: &str = "/srv/bulkhead-test/keys/executor.key";
pub const WORKLOAD_JWKS: &str = "/srv/bulkhead-test/workload-jwks.json";

/// Destructive operations each get their own protected victim, denied first, then done by the
/// outside-domain control.
pub fn victim(op: &str) -> String {
    format!("{VICTIMS_DIR}/{op}.cfg")
}

pub const VICTIM_OPS: [&str; 9] = [
    "unlink",
    "rename",
    "rename-over",
    "link",
    "chmod",
    "chown",
    "truncate",
    "setxattr",
    "write",
];

pub fn prepare() -> Result<(), String> {
    let run = |what: &str, result: std::io::Result<()>| {
        result.map_err(|err| format!("prepare: {what}: {err}"))
    };
    for dir in [ROOT, BIND, SCRATCH_MOUNT] {
        run(dir, fs::create_dir_all(dir))?;
    }
    mount("tmpfs", ROOT, Some("tmpfs"), libc::MS_NOSUID)?;
    for dir in [
        KEYS_DIR,
        "/srv/bulkhead-test/keys/sub",
        "/srv/bulkhead-test/glob",
        VICTIMS_DIR,
        STAGING,
    ] {
        run(dir, fs::create_dir_all(dir))?;
    }
    for (path, content) in [
        (SECRET, SECRET_CONTENT),
        (PUBLIC, PUBLIC_CONTENT),
        (KEY_IN_DIR, "key\n"),
        (GLOB_MATCH, "key\n"),
        (GLOB_OTHER, "readme\n"),
        (REPLACED, "v1\n"),
        (RACED, "generation-start\n"),
        (SECRET_EXEC, "#!/bin/sh\nexit 0\n"),
    ] {
        run(path, fs::write(path, content))?;
    }
    run(
        SECRET_EXEC,
        fs::set_permissions(SECRET_EXEC, fs::Permissions::from_mode(0o755)),
    )?;
    for op in VICTIM_OPS {
        let path = victim(op);
        run(&path, fs::write(&path, "victim\n"))?;
    }
    run(HARDLINK, fs::hard_link(SECRET, HARDLINK))?;
    run(SYMLINK, std::os::unix::fs::symlink(SECRET, SYMLINK))?;
    executor_keys()?;
    mount(ROOT, BIND, None, libc::MS_BIND)?;
    mount("tmpfs", SCRATCH_MOUNT, Some("tmpfs"), 0)?;
    Ok(())
}

/// The executor's key and its public JWKS, as an Airflow deployment would provide them.
fn executor_keys() -> Result<(), String> {
    use bulkhead::keys::{
        generate::{generate, write_new},
        material::{SigningAlgorithm, SigningKey},
    };
    let pem = generate(SigningAlgorithm::EdDSA, 2048).map_err(|e| e.to_string())?;
    let key =
        SigningKey::parse(pem.as_bytes(), SigningAlgorithm::EdDSA).map_err(|e| e.to_string())?;
    write_new(Path::new(EXECUTOR_KEY), pem.as_bytes()).map_err(|e| format!("{e:#}"))?;
    let jwks = serde_json::json!({ "keys": [key.public_jwk()] });
    fs::write(WORKLOAD_JWKS, jwks.to_string()).map_err(|e| format!("prepare: {WORKLOAD_JWKS}: {e}"))
}

fn mount(
    source: &str,
    target: &str,
    fstype: Option<&str>,
    flags: libc::c_ulong,
) -> Result<(), String> {
    nix::mount::mount(
        Some(Path::new(source)),
        target,
        fstype,
        nix::mount::MsFlags::from_bits_truncate(flags),
        None::<&str>,
    )
    .map_err(|err| format!("prepare: mount {source} on {target}: {err}"))
}
