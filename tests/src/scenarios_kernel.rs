//! Root inside a domain against the kernel (issue: complete enforcement, section 3). The
//! suite and its helpers run as root, so every denial here is bulkhead's, not Unix
//! permissions'.

use crate::{
    access::Outcome,
    harness::Suite,
    kernel_access::{self, OPS},
    refusal_records::{Names, label_for, refused_and_recorded},
    scenarios::{expect, run_helper},
};

pub fn add(suite: &mut Suite<'_>) {
    for op in OPS {
        let case = format!("deny:kernel-{op}:root-in-domain");
        suite.add(case.clone(), move || {
            make_probe_cgroup()?;
            refused_and_recorded(
                &label_for(&case),
                &["kernel", op],
                &[],
                &kernel_access::recorded_as(op),
            )
        });
        suite.add(format!("control-outside:kernel-{op}"), move || {
            make_probe_cgroup()?;
            expect(
                run_helper(false, "", &["kernel", op], &[]),
                Outcome::Allowed,
            )
        });
    }
    for op in crate::tty_access::OPS {
        let case = format!("deny:tty-{op}:own-terminal-in-domain");
        suite.add(case.clone(), move || {
            allow_legacy_tiocsti()?;
            refused_and_recorded(
                &label_for(&case),
                &["tty", op],
                &[],
                &[
                    ("file_ioctl", Names::Operation),
                    ("file_ioctl_compat", Names::Operation),
                ],
            )
        });
        suite.add(format!("control-outside:tty-{op}"), move || {
            allow_legacy_tiocsti()?;
            expect(run_helper(false, "", &["tty", op], &[]), Outcome::Allowed)
        });
    }
}

/// Device files: refused in a domain whatever path names them, allowed outside; the harmless
/// set and a terminal the domain makes itself stay usable in it; a terminal made outside is
/// refused to it.
pub fn add_devices(suite: &mut Suite<'_>) {
    let device = [("inode_permission", Names::Device)];
    for op in crate::device_access::OPS {
        let case = format!("deny:device-{op}:root-in-domain");
        suite.add(case.clone(), move || {
            refused_and_recorded(&label_for(&case), &["device", op], &[], &device)
        });
        suite.add(format!("control-outside:device-{op}"), move || {
            expect(
                run_helper(false, "", &["device", op], &[]),
                Outcome::Allowed,
            )
        });
    }
    suite.add("control-domain:device-harmless-set", || {
        expect(
            run_helper(true, "devices-harmless", &["device", "harmless"], &[]),
            Outcome::Allowed,
        )
    });
    suite.add("deny:device-pty-made-outside:root-in-domain", || {
        let (master, slave) = outside_pty()?;
        let case = "deny:device-pty-made-outside:root-in-domain";
        let result = refused_and_recorded(
            &label_for(case),
            &["device-open", &slave],
            &[],
            &[("inode_permission", Names::FsObject("devpts"))],
        );
        drop(master);
        result
    });
    suite.add("control-outside:device-pty-made-outside", || {
        let (master, slave) = outside_pty()?;
        let outcome = run_helper(false, "", &["device-open", &slave], &[]);
        drop(master);
        expect(outcome, Outcome::Allowed)
    });
}

/// A pseudo-terminal made here, outside any domain: its master (kept open while the test
/// runs) and its slave's path.
fn outside_pty() -> Result<(std::fs::File, String), String> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain libc calls; ptsname's buffer is copied at once.
    unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        if master < 0 || libc::grantpt(master) != 0 || libc::unlockpt(master) != 0 {
            return Err(format!("pty: {}", std::io::Error::last_os_error()));
        }
        let file = std::fs::File::from_raw_fd(master);
        let name = libc::ptsname(master);
        if name.is_null() {
            return Err("ptsname failed".into());
        }
        let slave = std::ffi::CStr::from_ptr(name)
            .to_string_lossy()
            .into_owned();
        Ok((file, slave))
    }
}

/// perf_event_open on the supervisor and on a process of another domain (by pid, any CPU), and
/// on every process of CPU 0, with `kernel.perf_event_paranoid` at 1 for the per-task cases: the
/// kernel then lets a task without CAP_PERFMON watch the processes `ptrace_may_access` allows
/// (Debian's default of 3 refuses every unprivileged event, which would hide whether bulkhead's
/// check or the kernel's refused). The same-domain control shows a task in a domain can still
/// watch its own child.
pub fn add_perf(suite: &mut Suite<'_>, supervisor: i32, other_domain: i32) {
    suite.add("control-same-domain:perf-open-own-child", || {
        with_perf_paranoid("1", || {
            expect(
                run_helper(true, "perf-same", &["perf-same-domain"], &[]),
                Outcome::Allowed,
            )
        })
    });
    for (what, pid, cpu) in [
        ("supervisor", supervisor, -1),
        ("other-domain", other_domain, -1),
        ("cpu-wide", -1, 0),
    ] {
        let pid_number = pid;
        let (pid, cpu) = (pid.to_string(), cpu.to_string());
        let args = move || ["perf".to_owned(), pid.clone(), cpu.clone()];
        let denied = args.clone();
        let case = format!("deny:perf-open-{what}:root-in-domain");
        // perf_event_open asks for CAP_PERFMON first (perfmon_capable), then, for one task,
        // ptrace_may_access: either record shows bulkhead's refusal.
        let mut recorded_as = vec![("capable", Names::Operation)];
        if pid_number > 0 {
            recorded_as.push(("ptrace_access_check", Names::Task(pid_number)));
        }
        suite.add(case.clone(), move || {
            let args = denied();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            with_perf_paranoid("1", || {
                refused_and_recorded(&label_for(&case), &args, &[], &recorded_as)
            })
        });
        suite.add(format!("control-outside:perf-open-{what}"), move || {
            let args = args();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            expect(run_helper(false, "", &args, &[]), Outcome::Allowed)
        });
    }
}

const PERF_PARANOID: &str = "/proc/sys/kernel/perf_event_paranoid";

/// Runs `test` with `kernel.perf_event_paranoid` set to `level`, then puts the old value back.
fn with_perf_paranoid(
    level: &str,
    test: impl FnOnce() -> Result<(), String>,
) -> Result<(), String> {
    let old = std::fs::read_to_string(PERF_PARANOID)
        .map_err(|err| format!("reading {PERF_PARANOID}: {err}"))?;
    std::fs::write(PERF_PARANOID, level).map_err(|err| format!("{PERF_PARANOID}: {err}"))?;
    let result = test();
    std::fs::write(PERF_PARANOID, old.trim())
        .map_err(|err| format!("restoring {PERF_PARANOID}: {err}"))?;
    result
}

/// The cgroup the cgroup ops write to, made outside any domain.
fn make_probe_cgroup() -> Result<(), String> {
    let dir = crate::kernel_access::PROBE_CGROUP;
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(err) => Err(format!("creating {dir}: {err}")),
    }
}

/// Where the kernel has the switch, let TIOCSTI reach the terminal on the caller's own
/// terminal (Debian 13 and later turn it off), so only bulkhead can refuse it.
fn allow_legacy_tiocsti() -> Result<(), String> {
    let path = crate::tty_access::LEGACY_TIOCSTI;
    if std::path::Path::new(path).exists() {
        std::fs::write(path, "1").map_err(|err| format!("{path}: {err}"))?;
    }
    Ok(())
}
