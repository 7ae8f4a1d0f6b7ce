//! `bulkhead exec`: have the agent seal this process into a new domain, then become CMD.
//!
//! Order matters: the seal completes before CMD is executed, so no instruction of CMD ever runs
//! outside the domain. If the agent is unreachable or refuses, CMD is not executed at all.

use std::{ffi::OsString, os::unix::process::CommandExt, path::Path, process::Command};

use crate::api::{
    client::Client,
    wire::{PATH_SEAL_SELF, SealSelfRequest, SealSelfResponse},
};

/// Exit status when bulkhead itself fails before CMD runs (as `env` and `timeout` use 125).
pub const EXIT_BULKHEAD_FAILED: i32 = 125;
/// Exit status when CMD was found but could not be executed.
pub const EXIT_CANNOT_EXECUTE: i32 = 126;
/// Exit status when CMD was not found.
pub const EXIT_NOT_FOUND: i32 = 127;

/// Seals and execs; returns only on failure, with the exit status to use. With a
/// `registration` (made by this process's parent with the token broker), the domain is the
/// registered task's and the label comes from the registration.
pub fn seal_and_exec(
    socket: &Path,
    label: Option<String>,
    registration: Option<String>,
    command: &[OsString],
) -> i32 {
    let Some((program, args)) = command.split_first() else {
        eprintln!("bulkhead exec: no command given");
        return EXIT_BULKHEAD_FAILED;
    };
    match thread_count() {
        Ok(1) => {}
        Ok(n) => {
            eprintln!("bulkhead exec: refusing to seal: this process has {n} threads, expected 1");
            return EXIT_BULKHEAD_FAILED;
        }
        Err(err) => {
            eprintln!("bulkhead exec: cannot count this process's threads: {err}");
            return EXIT_BULKHEAD_FAILED;
        }
    }
    let sealed: SealSelfResponse = match Client::new(socket).post(
        PATH_SEAL_SELF,
        &SealSelfRequest {
            label,
            registration,
        },
    ) {
        Ok(sealed) => sealed,
        Err(err) => {
            eprintln!(
                "bulkhead exec: not running {}: {err}",
                program.to_string_lossy()
            );
            return EXIT_BULKHEAD_FAILED;
        }
    };
    // The child learns its domain from the environment only for display; the kernel's label is
    // what is enforced.
    let err = Command::new(program)
        .args(args)
        .env("BULKHEAD_DOMAIN", sealed.domain.to_string())
        // Spent (a registration is taken once); the task has no use for it.
        .env_remove("BULKHEAD_REGISTRATION")
        .exec();
    eprintln!(
        "bulkhead exec: cannot execute {}: {err}",
        program.to_string_lossy()
    );
    if err.kind() == std::io::ErrorKind::NotFound {
        EXIT_NOT_FOUND
    } else {
        EXIT_CANNOT_EXECUTE
    }
}

/// This process's threads, from the kernel's `Threads:` line. A plain read rather than the
/// procfs crate's full stat parse: this runs on every task start (the agent counts again,
/// authoritatively, before it seals).
fn thread_count() -> std::io::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|count| count.trim().parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "no Threads: line in /proc/self/status",
            )
        })
}
