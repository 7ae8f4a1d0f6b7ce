//! Signals across the boundary (issue: complete enforcement, section 2).
//!
//! Direct signals against the supervisor, the agent and another domain; SIGIO through a file
//! owner against a process outside any domain and one in another domain; with controls from
//! outside any domain and within one domain, and the supervisor's own powers over its task.

use std::process::Command;

use crate::{
    access::Outcome,
    harness::Suite,
    refusal_records::{Names, is_refusal_by, label_for, refused_and_recorded},
    scenarios::{expect, run_helper, start_target, stop_target},
    scenarios_audit::{log_len, wait_for_record},
    signal_access::{DIRECT_OPS, owner_signal, signal_pending},
};

pub fn add(suite: &mut Suite<'_>, targets: &[(&'static str, i32)]) {
    for &(target, pid) in targets {
        for op in DIRECT_OPS {
            let pid_number = pid;
            let pid = pid.to_string();
            let args = ["signal".to_owned(), op.to_owned(), pid];
            let denied = args.clone();
            let case = format!("deny:signal-{op}:{target}");
            suite.add(case.clone(), move || {
                refused_and_recorded(
                    &label_for(&case),
                    &strs(&denied),
                    &[],
                    &[("task_kill", Names::Task(pid_number))],
                )
            });
            suite.add(format!("control-outside:signal-{op}:{target}"), move || {
                expect(run_helper(false, "", &strs(&args), &[]), Outcome::Allowed)
            });
        }
    }
    for op in DIRECT_OPS.into_iter().chain(OWNER_OPS) {
        suite.add(format!("control-same-domain:signal-{op}"), move || {
            expect(
                run_helper(true, "same", &["same-domain-signal", op], &[]),
                Outcome::Allowed,
            )
        });
    }
    for op in OWNER_OPS {
        for (target, sealed) in [("outside", false), ("other-domain", true)] {
            suite.add(format!("deny:signal-{op}:{target}"), move || {
                owner_signal_against(op, sealed, true, Outcome::Denied)
            });
            suite.add(format!("control-outside:signal-{op}:{target}"), move || {
                owner_signal_against(op, sealed, false, Outcome::Allowed)
            });
        }
    }
    suite.add(
        "signal:supervisor-stops-continues-kills-task",
        supervisor_controls_task,
    );
    suite.add("signal:task-exit-notifies-supervisor", || {
        expect(
            run_helper(false, "", &["sigchld-parent"], &[]),
            Outcome::Allowed,
        )
    });
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// Signals the kernel sends to a file's owner: SIGIO (F_SETOWN + O_ASYNC + F_SETSIG) and
/// SIGURG (F_SETOWN + out-of-band data). The attacker's F_SETOWN itself must succeed in a
/// domain (a failed setup is an error, not a denial); only the delivery is refused.
const OWNER_OPS: [&str; 2] = ["sigio", "sigurg"];

/// A fresh target that blocks the signal (so delivery is visible), attacked by a sealed or
/// unsealed process. Delivery is judged here, from outside any domain: an attacker in a domain
/// may not read the target's `/proc/<pid>/status` to see it.
fn owner_signal_against(
    op: &str,
    target_sealed: bool,
    attacker_sealed: bool,
    want: Outcome,
) -> Result<(), String> {
    let label = target_sealed.then_some("sigio-target");
    let (child, pid, _) = start_target(label, "sigio-target")?;
    let signal = owner_signal(op);
    let attacker = label_for(&format!("owner-{op}-{target_sealed}"));
    let before = signal_pending(pid, signal);
    let offset = log_len();
    let attempt = run_helper(
        attacker_sealed,
        &attacker,
        &["signal", op, &pid.to_string()],
        &[],
    );
    let after = signal_pending(pid, signal);
    stop_target(child);
    let delivered = match (before, attempt, after) {
        (Ok(false), Outcome::Allowed, Ok(after)) => after,
        // The attacker saw the signal not arrive (it could read the target): so must we.
        (Ok(false), Outcome::Denied, Ok(false)) => false,
        (before, attempt, after) => {
            return Err(format!(
                "pending before {before:?}, attacker {attempt:?}, pending after {after:?}"
            ));
        }
    };
    let outcome = if delivered {
        Outcome::Allowed
    } else {
        Outcome::Denied
    };
    expect(outcome.clone(), want)?;
    if outcome == Outcome::Denied {
        wait_for_record(offset, |record| {
            is_refusal_by(
                record,
                &attacker,
                &[("file_send_sigiotask", Names::Task(pid))],
            )
        })?;
    }
    Ok(())
}

/// The supervisor (outside any domain) must keep full control of its sealed task.
fn supervisor_controls_task() -> Result<(), String> {
    let (child, pid, _) = start_target(Some("stoppable"), "hold")?;
    let state = |want: char| -> Result<(), String> {
        for _ in 0..200 {
            let stat =
                std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| e.to_string())?;
            let state = stat
                .rsplit(") ")
                .next()
                .and_then(|rest| rest.chars().next());
            if state == Some(want) {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Err(format!("task {pid} never reached state {want}"))
    };
    let signal = |sig: &str| -> Result<(), String> {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &pid.to_string()])
            .status()
            .map_err(|e| e.to_string())?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("kill -{sig} {pid} failed: {status}"))
        }
    };
    signal("STOP")?;
    state('T')?;
    signal("CONT")?;
    state('S')?;
    signal("KILL")?;
    let mut child = child;
    let status = child.wait().map_err(|e| e.to_string())?;
    use std::os::unix::process::ExitStatusExt;
    match status.signal() {
        Some(libc::SIGKILL) => Ok(()),
        other => Err(format!(
            "task ended with {status} (signal {other:?}), expected SIGKILL"
        )),
    }
}
