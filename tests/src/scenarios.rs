//! The suite's test cases (issue: foundation, section 8).
//!
//! Matrix: every access against every target (the supervisor, the agent, a process in another
//! domain) from a fresh domain must be denied; the same access from outside any domain must
//! succeed, and from within the target's own domain must succeed. Then inheritance through
//! every way of creating a task, and the sealing rules.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
};

use bulkhead::api::{
    client::Client,
    wire::{PATH_STATUS, StatusResponse},
};

use crate::{
    AGENT_MARKER, HOLDER_MARKER, SUPERVISOR_MARKER,
    access::{Access, Outcome},
    harness::Suite,
    helper::{SECRET, secret_addr},
    refusal_records::{label_for, refused_and_recorded},
};

/// A process the suite attacks, described by what an allowed access must find.
struct TargetInfo {
    name: &'static str,
    pid: i32,
    addr: u64,
    expect_mem: Option<String>,
    env_marker: &'static str,
}

pub(crate) fn exe() -> String {
    std::env::current_exe()
        .expect("own path")
        .to_string_lossy()
        .into_owned()
}

/// Runs `helper ARGS...` either sealed into a fresh domain (through `bulkhead exec`) or
/// directly outside any domain, and decodes its exit status.
pub(crate) fn run_helper(
    sealed: bool,
    label: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Outcome {
    let exe = exe();
    let mut cmd = if sealed {
        let mut cmd = Command::new("bulkhead");
        cmd.args(["exec", "--label", label, "--", &exe, "helper"]);
        cmd
    } else {
        let mut cmd = Command::new(&exe);
        cmd.arg("helper");
        cmd
    };
    cmd.args(args).stdin(Stdio::null());
    for (key, value) in env {
        cmd.env(key, value);
    }
    outcome_of(&mut cmd)
}

/// How a helper run ended: exit 0 allowed, 10 denied, anything else an error with its stderr.
pub(crate) fn outcome_of(cmd: &mut Command) -> Outcome {
    let output = match cmd.output() {
        Ok(output) => output,
        Err(err) => return Outcome::Error(format!("cannot start helper: {err}")),
    };
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    match output.status.code() {
        Some(0) => Outcome::Allowed,
        Some(10) => Outcome::Denied,
        code => Outcome::Error(format!("helper exit {code:?}: {stderr}")),
    }
}

pub(crate) fn expect(outcome: Outcome, want: Outcome) -> Result<(), String> {
    if outcome == want {
        Ok(())
    } else {
        Err(format!("expected {want:?}, got {outcome:?}"))
    }
}

fn probe_args(access: Access, target: &TargetInfo) -> Vec<String> {
    vec![
        "probe".into(),
        access.name().into(),
        target.pid.to_string(),
        format!("{:x}", target.addr),
        target.expect_mem.clone().unwrap_or_else(|| "-".into()),
        target.env_marker.into(),
    ]
}

fn as_strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// Starts `helper hold` sealed into a fresh domain and reads back its pid and secret address.
fn start_holder(label: &str) -> Result<(Child, i32, u64), String> {
    start_target(Some(label), "hold")
}

/// Starts a target helper (`hold` or `sigio-target`), sealed into a fresh domain when `label`
/// is given, else outside any domain, and reads back its pid and secret address. The target
/// lives until its stdin is closed.
pub(crate) fn start_target(label: Option<&str>, role: &str) -> Result<(Child, i32, u64), String> {
    let exe = exe();
    let mut cmd = match label {
        Some(label) => {
            let mut cmd = Command::new("bulkhead");
            cmd.args(["exec", "--label", label, "--", &exe]);
            cmd
        }
        None => Command::new(&exe),
    };
    let mut child = cmd
        .args(["helper", role])
        .env(
            HOLDER_MARKER.split_once('=').unwrap().0,
            HOLDER_MARKER.split_once('=').unwrap().1,
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|err| format!("starting holder: {err}"))?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped"))
        .read_line(&mut line)
        .map_err(|err| format!("reading holder: {err}"))?;
    let mut words = line.split_whitespace();
    let pid = words.next().and_then(|p| p.parse().ok());
    let addr = words.next().and_then(|a| u64::from_str_radix(a, 16).ok());
    match (pid, addr) {
        (Some(pid), Some(addr)) => Ok((child, pid, addr)),
        _ => Err(format!("holder printed {line:?}")),
    }
}

/// First readable mapping of `pid`, read from outside any domain.
fn first_readable_mapping(pid: i32) -> Result<u64, String> {
    let maps =
        std::fs::read_to_string(format!("/proc/{pid}/maps")).map_err(|err| err.to_string())?;
    maps.lines()
        .find(|line| {
            line.split_whitespace()
                .nth(1)
                .is_some_and(|perms| perms.starts_with('r'))
        })
        .and_then(|line| line.split('-').next())
        .and_then(|start| u64::from_str_radix(start, 16).ok())
        .ok_or_else(|| format!("no readable mapping in /proc/{pid}/maps"))
}

pub fn run(filter: Option<&str>) -> usize {
    let setup = || -> Result<_, String> {
        if !std::env::vars().any(|(k, v)| format!("{k}={v}") == SUPERVISOR_MARKER) {
            return Err(format!(
                "the suite must start with {SUPERVISOR_MARKER} in its environment"
            ));
        }
        let socket = std::path::PathBuf::from(bulkhead::config::DEFAULT_SOCKET_PATH);
        let status: StatusResponse = Client::new(&socket)
            .get(PATH_STATUS)
            .map_err(|err| err.to_string())?;
        let agent_pid = status.pid as i32;
        let agent_addr = first_readable_mapping(agent_pid)?;
        let (holder, holder_pid, holder_addr) = start_holder("other-domain")?;
        Ok((agent_pid, agent_addr, holder, holder_pid, holder_addr))
    };
    let (agent_pid, agent_addr, mut holder, holder_pid, holder_addr) = match setup() {
        Ok(values) => values,
        Err(err) => {
            let mut suite = Suite::new();
            suite.add("setup", move || Err(err));
            return suite.run(None);
        }
    };
    let secret = String::from_utf8(SECRET.to_vec()).expect("ascii");
    let targets = [
        TargetInfo {
            name: "supervisor",
            pid: std::process::id() as i32,
            addr: secret_addr(),
            expect_mem: Some(secret.clone()),
            env_marker: SUPERVISOR_MARKER,
        },
        TargetInfo {
            name: "agent",
            pid: agent_pid,
            addr: agent_addr,
            expect_mem: None,
            env_marker: AGENT_MARKER,
        },
        TargetInfo {
            name: "other-domain",
            pid: holder_pid,
            addr: holder_addr,
            expect_mem: Some(secret),
            env_marker: HOLDER_MARKER,
        },
    ];

    let mut suite = Suite::new();
    for target in &targets {
        for access in Access::ALL {
            let args = probe_args(access, target);
            let denied_args = args.clone();
            let case = format!("deny:{}:{}", access.name(), target.name);
            let recorded_as = access.recorded_as(target.pid);
            suite.add(case.clone(), move || {
                refused_and_recorded(&label_for(&case), &as_strs(&denied_args), &[], &recorded_as)
            });
            suite.add(
                format!("control-outside:{}:{}", access.name(), target.name),
                move || {
                    expect(
                        run_helper(false, "", &as_strs(&args), &[]),
                        Outcome::Allowed,
                    )
                },
            );
        }
    }
    // The launcher seals as `bulkhead exec` does: the same reads of the supervisor from a
    // process it started are refused (their controls from outside are above).
    for access in [Access::ProcEnviron, Access::ProcMem, Access::PtraceAttach] {
        let args = probe_args(access, &targets[0]);
        suite.add(
            format!("launcher:deny:{}:supervisor", access.name()),
            move || {
                expect(
                    outcome_of(
                        Command::new("bulkhead-exec")
                            .args(["--label", "launcher", "--", &exe(), "helper"])
                            .args(&args)
                            .stdin(Stdio::null()),
                    ),
                    Outcome::Denied,
                )
            },
        );
    }
    let (same_key, same_value) = HOLDER_MARKER.split_once('=').unwrap();
    for access in Access::ALL {
        suite.add(
            format!("control-same-domain:{}", access.name()),
            move || {
                let marker = [
                    ("BULKHEAD_SAME_MARKER", HOLDER_MARKER),
                    (same_key, same_value),
                ];
                expect(
                    run_helper(true, "same", &["same-domain", access.name()], &marker),
                    Outcome::Allowed,
                )
            },
        );
    }
    suite.add("deny:ptrace-traceme:parent-outside", || {
        expect(
            run_helper(true, "traceme", &["traceme"], &[]),
            Outcome::Denied,
        )
    });
    suite.add("control-outside:ptrace-traceme", || {
        expect(run_helper(false, "", &["traceme"], &[]), Outcome::Allowed)
    });
    suite.add("control-same-domain:ptrace-traceme", || {
        expect(
            run_helper(true, "traceme", &["same-domain-traceme"], &[]),
            Outcome::Allowed,
        )
    });

    let sup = std::process::id().to_string();
    for method in [
        "fork",
        "vfork",
        "thread",
        "posix-spawn",
        "clone3",
        "double-fork",
    ] {
        let sup = sup.clone();
        suite.add(format!("inherit:{method}"), move || {
            expect(
                run_helper(true, "inherit", &["inherit", method, &sup], &[]),
                Outcome::Allowed,
            )
        });
    }
    // Control for the inheritance checker itself: a child of an unsealed process must be seen
    // in no domain and allowed to read the supervisor, or the checks above prove nothing.
    let sup_control = sup.clone();
    suite.add("control-outside:inherit-fork", move || {
        expect(
            run_helper(false, "", &["inherit", "fork", &sup_control], &[]),
            Outcome::Allowed,
        )
    });
    suite.add("seal:reseal-refused-domain-unchanged", || {
        expect(
            run_helper(true, "reseal", &["reseal"], &[]),
            Outcome::Allowed,
        )
    });
    suite.add("seal:multi-threaded-refused", || {
        expect(
            run_helper(false, "", &["seal-multithreaded"], &[]),
            Outcome::Allowed,
        )
    });
    suite.add("seal:exec-refused-without-agent-runs-nothing", || {
        exec_without_agent_runs_nothing()
    });

    crate::scenarios_signals::add(&mut suite, &targets_for_signals(&targets));
    crate::scenarios_ipc::add(&mut suite);
    crate::scenarios_sockets::add(&mut suite);
    crate::scenarios_keys::add(&mut suite);
    crate::scenarios_shm::add(&mut suite);
    suite.add(
        "bench:hook-cost-outside-and-inside-domains",
        crate::bench_hooks::hook_cost,
    );
    crate::scenarios_files::add(&mut suite);
    crate::scenarios_names::add(&mut suite);
    crate::scenarios_descriptors::add(&mut suite);
    crate::scenarios_races::add(&mut suite);
    crate::scenarios_kernel::add(&mut suite);
    crate::scenarios_kernel::add_devices(&mut suite);
    crate::scenarios_kernel::add_perf(&mut suite, std::process::id() as i32, holder_pid);
    crate::scenarios_agent_files::add(&mut suite);
    crate::scenarios_audit::add(&mut suite);
    crate::scenarios_domains::add(&mut suite);
    crate::scenarios_broker::add(&mut suite);
    crate::scenarios_airflow::add(&mut suite);
    crate::scenarios_lookup::add(&mut suite);
    // Restarts the agent and finally removes it: last.
    crate::scenarios_lifecycle::add(&mut suite);

    let failed = suite.run(filter);
    drop(holder.stdin.take());
    let _ = holder.wait();
    failed
}

fn targets_for_signals(targets: &[TargetInfo]) -> Vec<(&'static str, i32)> {
    targets.iter().map(|t| (t.name, t.pid)).collect()
}

/// Ends a target started by `start_target`.
pub(crate) fn stop_target(mut child: Child) {
    drop(child.stdin.take());
    let _ = child.wait();
}

/// `bulkhead exec` pointed at a socket nobody serves must not run CMD.
fn exec_without_agent_runs_nothing() -> Result<(), String> {
    let marker = "/tmp/bulkhead-exec-ran";
    let _ = std::fs::remove_file(marker);
    let status = Command::new("bulkhead")
        .args([
            "exec",
            "--socket",
            "/run/nobody.sock",
            "--",
            "touch",
            marker,
        ])
        .stderr(Stdio::null())
        .status()
        .map_err(|err| err.to_string())?;
    if status.code() != Some(125) {
        return Err(format!("expected exit 125, got {status}"));
    }
    if std::path::Path::new(marker).exists() {
        return Err("CMD ran although the agent was unreachable".into());
    }
    Ok(())
}
