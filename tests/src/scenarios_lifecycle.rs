//! Fail-closed lifecycle (issue: complete enforcement, section 5): enforcement outlives the
//! agent, a restarted agent adopts the live domains and replaces the programs without a gap,
//! and `bulkhead uninstall` removes everything. These tests restart the agent, so they run
//! last; the uninstall test leaves no agent behind and must be the very last.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use bulkhead::api::{
    client::Client,
    wire::{PATH_STATUS, StatusResponse},
};

use crate::{
    AGENT_MARKER,
    access::Outcome,
    fixtures::SECRET,
    harness::Suite,
    scenarios::expect,
    scenarios_audit::{log_len, records_since, wait_for_record},
    scenarios_domains::{is_end_of, listed, sealed_helper},
};

pub(crate) const CONFIG: &str = "/etc/bulkhead/node.toml";
const AGENT_LOG: &str = "/tmp/agent.log";
const PIN_DIR: &str = "/sys/fs/bpf/bulkhead";

pub fn add(suite: &mut Suite<'_>) {
    suite.add(
        "lifecycle:attack-loop-across-kill-restart-upgrade",
        attack_across_restarts,
    );
    suite.add(
        "lifecycle:domains-survive-restart-and-end-once",
        domains_across_restarts,
    );
    suite.add("lifecycle:uninstall-detaches-everything", uninstall);
}

pub(crate) fn status() -> Result<StatusResponse, String> {
    Client::new(std::path::Path::new(bulkhead::config::DEFAULT_SOCKET_PATH))
        .get(PATH_STATUS)
        .map_err(|err| err.to_string())
}

/// Is `pid` still running? A zombie is not: agents this suite started are its children and
/// are never reaped.
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit(") ")
                .next()
                .and_then(|rest| rest.chars().next())
        })
        .is_some_and(|state| state != 'Z' && state != 'X')
}

pub(crate) fn wait_gone(pid: i32) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while running(pid) {
        if Instant::now() > deadline {
            return Err(format!("agent {pid} did not exit"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Starts `bulkhead run` as /init does and waits until it answers; returns its pid.
pub(crate) fn start_agent() -> Result<u32, String> {
    let log = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(AGENT_LOG)
        .map_err(|err| err.to_string())?;
    let (key, value) = AGENT_MARKER.split_once('=').expect("marker");
    let child: Child = Command::new("bulkhead")
        .args(["run", "--config", CONFIG])
        .env(key, value)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|err| err.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|err| format!("starting the agent: {err}"))?;
    let pid = child.id();
    // The agent outlives this test; the suite never waits on it.
    std::mem::forget(child);
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Ok(status) = status()
            && status.pid == pid
        {
            return Ok(pid);
        }
        if !running(pid as i32) || Instant::now() > deadline {
            return Err(format!(
                "restarted agent {pid} never answered; see {AGENT_LOG}"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn signal(pid: i32, sig: i32) -> Result<(), String> {
    // SAFETY: plain kill(2).
    if unsafe { libc::kill(pid, sig) } == 0 {
        Ok(())
    } else {
        Err(format!(
            "kill({pid}, {sig}): {}",
            std::io::Error::last_os_error()
        ))
    }
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()
}

fn attack_across_restarts() -> Result<(), String> {
    let stop = "/tmp/bulkhead-attack-stop";
    let _ = std::fs::remove_file(stop);
    let exe = std::env::current_exe().map_err(|err| err.to_string())?;
    let sup = std::process::id().to_string();
    let attacker = Command::new("bulkhead")
        .args(["exec", "--label", "attack-loop", "--"])
        .arg(&exe)
        .args(["helper", "attack-loop", &sup, stop])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| err.to_string())?;
    let log_before = std::fs::read_to_string(AGENT_LOG).unwrap_or_default().len();
    std::thread::sleep(Duration::from_millis(500));

    // When the first agent was killed, how much of the audit log it had written by the time
    // it was gone, and when the next one was started.
    let mut down = (String::new(), 0, String::new());
    let mut run = || -> Result<(), String> {
        // 1. The agent dies without warning; the pinned programs must keep refusing.
        let first = status()?.pid as i32;
        down.0 = now_rfc3339();
        signal(first, libc::SIGKILL)?;
        wait_gone(first)?;
        down.1 = log_len();
        std::thread::sleep(Duration::from_secs(1));
        down.2 = now_rfc3339();
        // 2. A new agent adopts the pinned maps and swaps in its own programs.
        let second = start_agent()? as i32;
        // 3. A graceful stop and another start: a program upgrade.
        signal(second, libc::SIGTERM)?;
        wait_gone(second)?;
        start_agent()?;
        Ok(())
    };
    let restarted = run();
    std::fs::write(stop, "").map_err(|err| err.to_string())?;
    let output = attacker.wait_with_output().map_err(|err| err.to_string())?;
    restarted?;
    let summary = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    println!("BULKHEAD-NOTE attack loop across SIGKILL, restart and upgrade: {summary}");
    if !output.status.success() {
        return Err(format!(
            "attack loop: {summary} {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let log = std::fs::read_to_string(AGENT_LOG).map_err(|err| err.to_string())?;
    let new_lines = &log[log_before.min(log.len())..];
    let adopted = new_lines.matches("adopted_live_domains=true").count();
    let replaced = new_lines.matches("replaced_generations=1").count();
    if adopted != 2 || replaced != 2 {
        return Err(format!(
            "expected two adoptions replacing one generation each, log shows {adopted} and {replaced}"
        ));
    }
    // Refusals made while no agent ran were kept in the pinned ring and written by the next:
    // stamped after the kill and before the next start, and in the log only after the killed
    // agent was gone (what it wrote while dying is before that point).
    let (from, written_after, to) = down;
    let while_down = records_since(written_after)
        .into_iter()
        .filter(|r| r["type"] == "access")
        .filter(|r| {
            r["time"]
                .as_str()
                .is_some_and(|t| *t > *from.as_str() && *t < *to.as_str())
        })
        .count();
    println!(
        "BULKHEAD-NOTE audit records of refusals made while no agent ran, written after restart: {while_down}"
    );
    if while_down == 0 {
        return Err(format!("no audit record stamped between {from} and {to}"));
    }
    let generations = std::fs::read_dir(format!("{PIN_DIR}/links"))
        .map_err(|err| err.to_string())?
        .count();
    if generations != 1 {
        return Err(format!("{generations} link generations pinned, expected 1"));
    }
    Ok(())
}

/// Domains and their labels survive a SIGKILL and restart and a program upgrade, while one of
/// them forks and exits tasks throughout (two program generations are attached at once during
/// each replacement, and must not count a task twice). Each then ends exactly once: one while
/// the agent runs, one while no agent runs, recorded by the next from the pinned ring.
fn domains_across_restarts() -> Result<(), String> {
    let (go, stop) = ("/tmp/bulkhead-survivor-go", "/tmp/bulkhead-churn-stop");
    let _ = std::fs::remove_file(go);
    let _ = std::fs::remove_file(stop);
    let offset = log_len();
    let words = sealed_helper("survivor", &["linger", go])?;
    let [survivor, grandchild] = words.as_slice() else {
        return Err(format!("linger printed {words:?}"));
    };
    let grandchild: i32 = grandchild.parse().map_err(|_| "grandchild pid")?;
    let exe = std::env::current_exe().map_err(|err| err.to_string())?;
    let mut churn = Command::new("bulkhead")
        .args(["exec", "--label", "churn", "--"])
        .arg(&exe)
        .args(["helper", "fork-churn", stop])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|err| err.to_string())?;
    let mut churn_out = std::io::BufReader::new(churn.stdout.take().expect("piped"));
    let mut churn_domain = String::new();
    std::io::BufRead::read_line(&mut churn_out, &mut churn_domain)
        .map_err(|err| err.to_string())?;
    let churn_domain = churn_domain.trim().to_owned();

    let restarts = || -> Result<(), String> {
        let first = status()?.pid as i32;
        signal(first, libc::SIGKILL)?;
        wait_gone(first)?;
        let second = start_agent()? as i32;
        signal(second, libc::SIGTERM)?;
        wait_gone(second)?;
        start_agent()?;
        Ok(())
    };
    let restarted = restarts();
    let both_listed =
        listed(survivor, "survivor").and_then(|s| Ok((s, listed(&churn_domain, "churn")?)));
    // The churn domain may end (legitimately) as soon as its forker sees the stop file, and
    // a busy guest can let the agent record that before the check below: only an end stamped
    // before the stop is early.
    let stopped_at = now_rfc3339();
    std::fs::write(stop, "").map_err(|err| err.to_string())?;
    let mut forks = String::new();
    let _ = std::io::Read::read_to_string(&mut churn_out, &mut forks);
    let _ = churn.wait();
    restarted?;
    println!(
        "BULKHEAD-NOTE fork churn across two program replacements: {}",
        forks.trim()
    );
    if both_listed? != (true, true) {
        return Err("a live domain or its label was lost across the restarts".into());
    }
    if let Some(early) = records_since(offset).into_iter().find(|r| {
        is_end_of(survivor)(r)
            || (is_end_of(&churn_domain)(r)
                && r["time"].as_str().is_none_or(|t| t < stopped_at.as_str()))
    }) {
        return Err(format!("a domain ended while its tasks ran: {early}"));
    }
    // The churn domain ends once its forker stops, and only once.
    wait_for_record(offset, is_end_of(&churn_domain))?;
    std::thread::sleep(Duration::from_millis(2500));
    let churn_ends = records_since(offset)
        .into_iter()
        .filter(is_end_of(&churn_domain))
        .count();
    if churn_ends != 1 {
        return Err(format!("{churn_ends} end records for the churn domain"));
    }

    // The survivor's last task exits while no agent runs.
    let agent = status()?.pid as i32;
    signal(agent, libc::SIGKILL)?;
    wait_gone(agent)?;
    std::fs::write(go, "").map_err(|err| err.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while running(grandchild) {
        if Instant::now() > deadline {
            return Err("the survivor's last task did not exit".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let restarted_at = now_rfc3339();
    start_agent()?;
    let record = wait_for_record(offset, is_end_of(survivor))?;
    if record["noticed"] != "event" || record["label"] != "survivor" {
        return Err(format!("unexpected end record {record}"));
    }
    if record["time"]
        .as_str()
        .is_none_or(|t| t > restarted_at.as_str())
    {
        return Err(format!(
            "end stamped after the restart ({restarted_at}), not when the task exited: {record}"
        ));
    }
    Ok(())
}

/// After `bulkhead uninstall` a process sealed before it is free again (the control that the
/// programs really are gone) and nothing is left in bpffs.
fn uninstall() -> Result<(), String> {
    let go = "/tmp/bulkhead-uninstall-go";
    let _ = std::fs::remove_file(go);
    let exe = std::env::current_exe().map_err(|err| err.to_string())?;
    let mut sealed = Command::new("bulkhead")
        .args(["exec", "--label", "before-uninstall", "--"])
        .arg(&exe)
        .args(["helper", "file-when", go, "read", SECRET])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|err| err.to_string())?;
    // Only once it is sealed may the agent go away.
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(sealed.stdout.take().expect("piped")),
        &mut ready,
    )
    .map_err(|err| err.to_string())?;
    if ready.trim() != "ready" {
        return Err(format!("sealed reader did not start: {ready:?}"));
    }
    // Refused while the agent runs.
    let refused = Command::new("bulkhead")
        .args(["uninstall", "--config", CONFIG])
        .stderr(Stdio::null())
        .status()
        .map_err(|err| err.to_string())?;
    if refused.success() {
        return Err("uninstall went ahead with the agent running".into());
    }
    let agent = status()?.pid as i32;
    signal(agent, libc::SIGTERM)?;
    wait_gone(agent)?;
    let done = Command::new("bulkhead")
        .args(["uninstall", "--config", CONFIG])
        .status()
        .map_err(|err| err.to_string())?;
    std::fs::write(go, "").map_err(|err| err.to_string())?;
    let code = sealed.wait().map_err(|err| err.to_string())?.code();
    if !done.success() {
        return Err(format!("uninstall failed: {done}"));
    }
    if std::path::Path::new(PIN_DIR).exists() {
        return Err(format!("{PIN_DIR} still exists"));
    }
    let outcome = match code {
        Some(0) => Outcome::Allowed,
        Some(10) => Outcome::Denied,
        other => Outcome::Error(format!("reader exited {other:?}")),
    };
    expect(outcome, Outcome::Allowed)?;
    ended_by_scan_after_uninstall()
}

/// The state database still records the domain sealed before the uninstall; the kernel's
/// counts went with the pins. An agent started afterwards must end it by scanning (there was
/// never an announcement to read), then it is stopped and removed again.
fn ended_by_scan_after_uninstall() -> Result<(), String> {
    let offset = log_len();
    let agent = start_agent()? as i32;
    let found = wait_for_record(offset, |r| {
        r["type"] == "domain_ended" && r["label"] == "before-uninstall"
    });
    signal(agent, libc::SIGTERM)?;
    wait_gone(agent)?;
    let removed = Command::new("bulkhead")
        .args(["uninstall", "--config", CONFIG])
        .stdout(Stdio::null())
        .status()
        .map_err(|err| err.to_string())?;
    let record = found?;
    if record["noticed"] != "scan" {
        return Err(format!("expected an end noticed by scan: {record}"));
    }
    if !removed.success() {
        return Err(format!("second uninstall failed: {removed}"));
    }
    Ok(())
}
