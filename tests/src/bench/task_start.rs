//! What starting a task in a domain costs over starting it plainly: `bulkhead exec` and the
//! static launcher `bulkhead-exec` of /bin/true against a plain fork+exec of /bin/true, and a
//! supervisor's register + seal of a child by pid through the broker against the same plain
//! start.

use std::{
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use bulkhead::broker::claims::Scope;
use serde_json::json;

use super::{
    Profile, emit,
    workloads::{calibrate, fastest_batch},
};
use crate::{
    broker_helpers::register,
    scenarios::exe,
    scenarios_broker::{executor_key, sign_as_executor},
};

/// A task id Airflow would accept (a UUID), new for every registration of this boot.
pub fn next_sub() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("0196b3c4-0000-7000-8000-{n:012x}")
}

fn run_ok(command: &mut Command) -> Result<(), String> {
    let status = command
        .stdin(Stdio::null())
        .status()
        .map_err(|err| err.to_string())?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{command:?}: {status}"))
    }
}

fn sample(name: &str, round: usize, ns: f64, calibration: u128) {
    emit(json!({
        "kind": "start",
        "name": name,
        "state": "bulkhead",
        "placement": "outside",
        "round": round,
        "ns": ns,
        "calibration_ns": calibration as f64,
    }));
}

pub fn measure(round: usize, profile: &Profile) -> Result<(), String> {
    let count = profile.start_iterations as u32;
    let mut failure = None;
    let mut note = |result: Result<(), String>| {
        if let Err(err) = result {
            failure.get_or_insert(err);
        }
    };
    let (ns, calibration) = fastest_batch(count, || note(run_ok(&mut Command::new("/bin/true"))));
    sample("plain-fork-exec", round, ns, calibration);
    let (ns, calibration) = fastest_batch(count, || {
        note(run_ok(Command::new("bulkhead").args([
            "exec",
            "--",
            "/bin/true",
        ])))
    });
    sample("bulkhead-exec", round, ns, calibration);
    let (ns, calibration) = fastest_batch(count, || {
        note(run_ok(
            Command::new("bulkhead-exec").args(["--", "/bin/true"]),
        ))
    });
    sample("launcher-exec", round, ns, calibration);
    if let Some(err) = failure {
        return Err(err);
    }

    // The seal alone: the child is started (untimed) and waits; the supervisor's register
    // call, which seals it, is timed. The fastest of the registrations counts.
    let key = executor_key()?;
    let mut best: Option<(Duration, Duration)> = None;
    for _ in 0..count {
        let token = sign_as_executor(key.clone(), &next_sub(), Scope::Workload)?;
        let mut child = spawn_idle()?;
        let calibration = calibrate();
        let started = Instant::now();
        let registered = register(&token, child.id() as i32, Some("bench"));
        let sealing = started.elapsed();
        drop(child.stdin.take());
        let _ = child.wait();
        registered.map_err(|err| format!("register + seal: {err}"))?;
        if best.is_none_or(|(fastest, _)| sealing < fastest) {
            best = Some((sealing, calibration));
        }
    }
    let (sealing, calibration) = best.ok_or("no registration measured")?;
    sample(
        "register-seal",
        round,
        sealing.as_nanos() as f64,
        calibration.as_nanos(),
    );
    Ok(())
}

/// A child that has started and waits (`helper bench-idle`): returned only once it said so,
/// so its own start-up is not running while what follows is timed. Closing its stdin ends it.
pub fn spawn_idle() -> Result<Child, String> {
    use std::io::BufRead;
    let mut child = Command::new(exe())
        .args(["helper", "bench-idle"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|err| format!("bench-idle: {err}"))?;
    let mut line = String::new();
    let stdout = child.stdout.take().ok_or("bench-idle without stdout")?;
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|err| format!("bench-idle: {err}"))?;
    if line.trim() != "ready" {
        return Err(format!("bench-idle said {line:?}"));
    }
    Ok(child)
}

/// `helper bench-idle`: says it is ready, then waits until its stdin closes.
pub fn idle() -> i32 {
    use std::io::{Read, Write};
    println!("ready");
    let _ = std::io::stdout().flush();
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    0
}
