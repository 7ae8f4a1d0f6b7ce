//! The audit trail and the enforce/audit switch (issue: complete enforcement, section 4).

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    SUPERVISOR_MARKER,
    access::Outcome,
    fixtures::SECRET,
    harness::Suite,
    scenarios::{expect, run_helper},
};

pub const AUDIT_LOG: &str = "/var/log/bulkhead/audit.jsonl";
const CONFIG: &str = "/etc/bulkhead/node.toml";

pub fn add(suite: &mut Suite<'_>) {
    suite.add("audit:task-denial-recorded", task_denial_recorded);
    suite.add("audit:file-denial-recorded-with-path", file_denial_recorded);
    suite.add("audit:rate-limited-per-domain", rate_limited_per_domain);
    suite.add("audit:mode-switch-by-reload", mode_switch_by_reload);
    suite.add(
        "audit:bad-reload-changes-nothing",
        bad_reload_changes_nothing,
    );
}

/// Audit records (parsed) appended after `offset` bytes of the log.
pub fn records_since(offset: usize) -> Vec<Value> {
    // Only the tail is read: the log holds every earlier case's records by the end of a run.
    let mut tail = Vec::new();
    if let Ok(mut log) = std::fs::File::open(AUDIT_LOG) {
        use std::io::{Read, Seek, SeekFrom};
        if log.seek(SeekFrom::Start(offset as u64)).is_ok() {
            let _ = log.read_to_end(&mut tail);
        }
    }
    String::from_utf8_lossy(&tail)
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

pub fn log_len() -> usize {
    std::fs::metadata(AUDIT_LOG).map_or(0, |m| m.len() as usize)
}

/// Waits up to 10 s for a record matching `want` after `offset`.
pub fn wait_for_record(offset: usize, want: impl Fn(&Value) -> bool) -> Result<Value, String> {
    // Generous: the slowest emulated kernel (7.2 under TCG) can take seconds to get a record
    // through the ring, the agent and the file; a record that never comes still fails.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(found) = records_since(offset).into_iter().find(|r| want(r)) {
            return Ok(found);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no matching audit record; last records: {:?}",
                records_since(offset)
                    .iter()
                    .rev()
                    .take(3)
                    .collect::<Vec<_>>()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn task_denial_recorded() -> Result<(), String> {
    let offset = log_len();
    let me = std::process::id();
    // A system call on the supervisor by pid, judged by a task hook (a /proc path would be
    // refused at the walk, with a file record).
    let args = [
        "probe",
        "process-vm-readv",
        &me.to_string(),
        &format!("{:x}", crate::helper::secret_addr()),
        "-",
        SUPERVISOR_MARKER,
    ];
    expect(
        run_helper(true, "audited-task", &args, &[]),
        Outcome::Denied,
    )?;
    let record = wait_for_record(offset, |r| {
        r["hook"] == "ptrace_access_check" && r["actor"]["label"] == "audited-task"
    })?;
    let checks = [
        (record["type"] == "access", "type"),
        (record["decision"] == "denied", "decision"),
        (record["actor"]["domain"].is_u64(), "actor.domain"),
        (record["actor"]["uid"] == 0, "actor.uid"),
        (
            record["actor"]["comm"]
                .as_str()
                .is_some_and(|c| !c.is_empty()),
            "actor.comm",
        ),
        (record["target"]["pid"] == me, "target.pid"),
        (record["target"]["domain"].is_null(), "target.domain"),
        (
            record["target"]["comm"]
                .as_str()
                .is_some_and(|c| !c.is_empty()),
            "target.comm",
        ),
        (
            record["time"].as_str().is_some_and(|t| t.starts_with("20")),
            "time",
        ),
    ];
    for (ok, field) in checks {
        if !ok {
            return Err(format!("{field} wrong in {record}"));
        }
    }
    Ok(())
}

fn file_denial_recorded() -> Result<(), String> {
    let offset = log_len();
    expect(
        run_helper(true, "audited-file", &["file", "read", SECRET], &[]),
        Outcome::Denied,
    )?;
    let record = wait_for_record(offset, |r| {
        r["hook"] == "inode_permission" && r["actor"]["label"] == "audited-file"
    })?;
    let ino = std::fs::metadata(SECRET).map_err(|e| e.to_string())?;
    use std::os::unix::fs::MetadataExt;
    if record["file"]["inode"] != ino.ino() || record["file"]["path"] != SECRET {
        return Err(format!("file fields wrong in {record}"));
    }
    Ok(())
}

/// 1000 refusals in one domain: the log keeps about the burst (100 in the suite's config) and
/// reports the rest as dropped; a second domain's single refusal still gets through.
fn rate_limited_per_domain() -> Result<(), String> {
    let offset = log_len();
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let output = Command::new("bulkhead")
        .args(["exec", "--label", "noisy", "--"])
        .arg(&exe)
        .args(["helper", "flood", "1000"])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| e.to_string())?;
    if !output.status.success() {
        return Err("flood helper failed".into());
    }
    let noisy: u64 = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .map_err(|e| format!("flood domain: {e}"))?;
    expect(
        run_helper(true, "quiet", &["file", "read", SECRET], &[]),
        Outcome::Denied,
    )?;
    wait_for_record(offset, |r| r["actor"]["label"] == "quiet")?;
    let report = wait_for_record(offset, |r| {
        r["type"] == "rate_limited" && r["domain"] == noisy
    })?;
    // The agent reports drops once a second, so on a slow guest the flood's drops can span
    // several reports: wait (bounded) until every refusal is accounted for.
    let count = || {
        let records = records_since(offset);
        let logged = records
            .iter()
            .filter(|r| r["type"] == "access" && r["actor"]["domain"] == noisy)
            .count() as u64;
        let dropped: u64 = records
            .iter()
            .filter(|r| r["type"] == "rate_limited" && r["domain"] == noisy)
            .filter_map(|r| r["dropped"].as_u64())
            .sum();
        (logged, dropped)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let (mut logged, mut dropped) = count();
    while logged + dropped < 1000 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
        (logged, dropped) = count();
    }
    println!(
        "BULKHEAD-NOTE rate limit: 1000 refusals in one domain -> {logged} logged, {dropped} reported dropped"
    );
    if !(100..=400).contains(&logged) || logged + dropped != 1000 || report["label"] != "noisy" {
        return Err(format!(
            "logged {logged}, dropped {dropped}, report {report}"
        ));
    }
    Ok(())
}

fn agent_pid() -> Result<i32, String> {
    let status: bulkhead::api::wire::StatusResponse = bulkhead::api::client::Client::new(
        std::path::Path::new(bulkhead::config::DEFAULT_SOCKET_PATH),
    )
    .get(bulkhead::api::wire::PATH_STATUS)
    .map_err(|e| e.to_string())?;
    Ok(status.pid as i32)
}

/// Rewrites the node config and sends SIGHUP; returns the original text.
fn reload_with(text: &str) -> Result<(), String> {
    std::fs::write(CONFIG, text).map_err(|e| e.to_string())?;
    // SAFETY: plain kill(2).
    if unsafe { libc::kill(agent_pid()?, libc::SIGHUP) } != 0 {
        return Err("SIGHUP failed".into());
    }
    Ok(())
}

/// Polls a sealed read of the secret until it gives `want`.
fn wait_for_outcome(want: Outcome) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = run_helper(true, "mode-probe", &["file", "read", SECRET], &[]);
        if got == want {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("still {got:?}, expected {want:?}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn mode_switch_by_reload() -> Result<(), String> {
    let original = std::fs::read_to_string(CONFIG).map_err(|e| e.to_string())?;
    let audit = format!("{original}\n[audit]\nmode = \"audit\"\n");
    let run = || -> Result<(), String> {
        let offset = log_len();
        reload_with(&audit)?;
        wait_for_outcome(Outcome::Allowed)?;
        wait_for_record(offset, |r| {
            r["decision"] == "audit-allowed" && r["actor"]["label"] == "mode-probe"
        })?;
        Ok(())
    };
    let result = run();
    reload_with(&original)?;
    result?;
    wait_for_outcome(Outcome::Denied)
}

fn bad_reload_changes_nothing() -> Result<(), String> {
    let original = std::fs::read_to_string(CONFIG).map_err(|e| e.to_string())?;
    // Valid TOML asking for audit mode, plus one bad key: nothing may change.
    let bad = format!("{original}\n[audit]\nmode = \"audit\"\nbogus = 1\n");
    reload_with(&bad)?;
    std::thread::sleep(Duration::from_secs(1));
    let result = wait_for_outcome(Outcome::Denied);
    reload_with(&original)?;
    result
}
