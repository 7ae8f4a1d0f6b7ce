//! Domain lifecycle (issue: complete enforcement, section 6): the agent ends a domain when,
//! and only when, its last task has exited, writes the record, and lists live domains to
//! operators. The restart cases (labels kept, ends while no agent ran) are in
//! scenarios_lifecycle.rs, which restarts the agent.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;

use crate::{
    access::Outcome,
    harness::Suite,
    scenarios::{exe, expect, run_helper},
    scenarios_audit::{log_len, records_since, wait_for_record},
};

pub fn add(suite: &mut Suite<'_>) {
    suite.add("domain-end:recorded-with-label", recorded_with_label);
    suite.add("domain-end:not-before-last-task", not_before_last_task);
    suite.add(
        "domain-end:failed-forks-are-not-counted",
        failed_forks_are_not_counted,
    );
    suite.add("domains:list-refused-inside-domain", list_refused_inside);
    suite.add("domains:list-allowed-outside-domain", list_allowed_outside);
}

/// Runs `helper ARGS` sealed with `label`; returns its stdout words, or why it failed.
pub fn sealed_helper(label: &str, args: &[&str]) -> Result<Vec<String>, String> {
    let output = Command::new("bulkhead")
        .args(["exec", "--label", label, "--", &exe(), "helper"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|err| err.to_string())?;
    if !output.status.success() {
        return Err(format!(
            "helper {args:?} exited {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect())
}

/// Domain ids are JSON numbers in records and decimal words in helper output.
fn same_id(value: &Value, domain: &str) -> bool {
    value.as_u64().is_some_and(|id| domain.parse() == Ok(id))
}

pub fn is_end_of(domain: &str) -> impl Fn(&Value) -> bool + '_ {
    move |record| record["type"] == "domain_ended" && same_id(&record["domain"], domain)
}

/// Whether `bulkhead domains list` (run outside any domain) shows `domain` with `label`.
pub fn listed(domain: &str, label: &str) -> Result<bool, String> {
    let output = Command::new("bulkhead")
        .args(["domains", "list"])
        .output()
        .map_err(|err| err.to_string())?;
    if !output.status.success() {
        return Err(format!(
            "bulkhead domains list: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let listing: Value =
        serde_json::from_slice(&output.stdout).map_err(|err| format!("listing: {err}"))?;
    Ok(listing["domains"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|d| same_id(&d["id"], domain) && d["label"] == label))
}

fn check_field(record: &Value, field: &str, want: Value) -> Result<(), String> {
    if record[field] == want {
        Ok(())
    } else {
        Err(format!(
            "{field} is {} in {record}, expected {want}",
            record[field]
        ))
    }
}

/// A one-process domain ends when it exits; the record carries the domain and its label.
fn recorded_with_label() -> Result<(), String> {
    let offset = log_len();
    let words = sealed_helper("end-single", &["flood", "0"])?;
    let domain = words.first().ok_or("no domain printed")?;
    let record = wait_for_record(offset, is_end_of(domain))?;
    check_field(&record, "label", "end-single".into())?;
    check_field(&record, "noticed", "event".into())?;
    check_field(&record, "sealed_uid", 0.into())
}

/// The sealed process exits at once but leaves a grandchild (which ran threads): the domain
/// stays live, listed, and unrecorded until that grandchild exits too.
fn not_before_last_task() -> Result<(), String> {
    let go = "/tmp/bulkhead-linger-go";
    let _ = std::fs::remove_file(go);
    let offset = log_len();
    let words = sealed_helper("end-linger", &["linger", go])?;
    let [domain, _grandchild] = words.as_slice() else {
        return Err(format!("linger printed {words:?}"));
    };
    // Longer than the agent's scan interval, so both ways of noticing had their chance.
    std::thread::sleep(Duration::from_secs(3));
    if let Some(early) = records_since(offset).into_iter().find(is_end_of(domain)) {
        return Err(format!("ended while a task still ran: {early}"));
    }
    if !listed(domain, "end-linger")? {
        return Err(format!("live domain {domain} not listed"));
    }
    let released = humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string();
    std::fs::write(go, "").map_err(|err| err.to_string())?;
    let record = wait_for_record(offset, is_end_of(domain))?;
    if record["time"]
        .as_str()
        .is_none_or(|t| t < released.as_str())
    {
        return Err(format!(
            "end stamped before the last task was released: {record}"
        ));
    }
    if listed(domain, "end-linger")? {
        return Err(format!("ended domain {domain} still listed"));
    }
    Ok(())
}

/// Forks refused by the pids controller are labelled by task_alloc and then abandoned by the
/// kernel; they must not keep the domain alive. (The helper checks they really failed.)
fn failed_forks_are_not_counted() -> Result<(), String> {
    let cgroup = "/sys/fs/cgroup/bulkhead-fork-fail";
    std::fs::write("/sys/fs/cgroup/cgroup.subtree_control", "+pids")
        .map_err(|err| format!("enabling the pids controller: {err}"))?;
    let offset = log_len();
    let words = sealed_helper("end-fork-fail", &["fork-fail", cgroup])?;
    let [domain, failed] = words.as_slice() else {
        return Err(format!("fork-fail printed {words:?}"));
    };
    if failed != "20" {
        return Err(format!(
            "only {failed} of 20 forks failed; the test proves nothing"
        ));
    }
    let ended = wait_for_record(offset, is_end_of(domain));
    let _ = std::fs::remove_dir(cgroup);
    ended.map(|_| ())
}

fn list_refused_inside() -> Result<(), String> {
    expect(
        run_helper(true, "list-inside", &["list-domains"], &[]),
        Outcome::Denied,
    )
}

fn list_allowed_outside() -> Result<(), String> {
    expect(
        run_helper(false, "", &["list-domains"], &[]),
        Outcome::Allowed,
    )
}
