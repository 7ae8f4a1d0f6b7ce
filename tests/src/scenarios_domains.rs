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
    suite.add(
        "domain-end:every-domain-ends-after-exit-storms",
        every_domain_ends_after_exit_storms,
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
    Ok(listing_of(domain)?.is_some_and(|d| d["label"] == label))
}

/// The domain's entry in `bulkhead domains list`, if it is listed.
fn listing_of(domain: &str) -> Result<Option<Value>, String> {
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
        .find(|d| same_id(&d["id"], domain))
        .cloned())
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
    let [domain, grandchild] = words.as_slice() else {
        return Err(format!("linger printed {words:?}"));
    };
    // Longer than the agent's scan interval, so both ways of noticing had their chance.
    std::thread::sleep(Duration::from_secs(3));
    if let Some(early) = records_since(offset).into_iter().find(is_end_of(domain)) {
        return Err(format!("ended while a task still ran: {early}"));
    }
    let entry = listing_of(domain)?;
    if entry.as_ref().is_none_or(|d| d["label"] != "end-linger") {
        return Err(format!("live domain {domain} not listed: {entry:?}"));
    }
    // The helper and the middle child have exited and the threads were joined: the grandchild
    // alone is left, and the kernel's count must say so.
    if entry.as_ref().is_none_or(|d| d["tasks"] != 1) {
        return Err(format!(
            "live domain {domain} should count 1 task: {entry:?}"
        ));
    }
    let released = humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string();
    std::fs::write(go, "").map_err(|err| err.to_string())?;
    let record = wait_for_record(offset, is_end_of(domain)).map_err(|err| {
        // What the end is waiting for: the last task still running, or a count left behind.
        format!(
            "{err}; grandchild {grandchild}: {}; listing: {:?}",
            process_state(grandchild),
            listing_of(domain)
        )
    })?;
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

/// The state letter and name of a process from /proc, or why there is none.
fn process_state(pid: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or_else(
        |err| format!("no process ({err})"),
        |stat| stat.trim_end().chars().take(80).collect(),
    )
}

/// Forks refused by the pids controller are labelled by task_alloc and then abandoned by the
/// kernel; they must not keep the domain alive. (The helper checks they really failed.)
fn failed_forks_are_not_counted() -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let cgroup = "/sys/fs/cgroup/bulkhead-fork-fail";
    std::fs::write("/sys/fs/cgroup/cgroup.subtree_control", "+pids")
        .map_err(|err| format!("enabling the pids controller: {err}"))?;
    // Made and filled from outside any domain: a task in a domain may not write cgroup files.
    // The cgroup allows one task, the sealed helper itself, so each of its forks is refused.
    let _ = std::fs::create_dir(cgroup);
    std::fs::write(format!("{cgroup}/pids.max"), "1")
        .map_err(|err| format!("{cgroup}/pids.max: {err}"))?;
    let procs = std::ffi::CString::new(format!("{cgroup}/cgroup.procs")).expect("no NUL");
    let offset = log_len();
    let mut cmd = Command::new("bulkhead");
    cmd.args([
        "exec",
        "--label",
        "end-fork-fail",
        "--",
        &exe(),
        "helper",
        "fork-fail",
    ])
    .stdin(Stdio::null());
    // SAFETY: between fork and exec the child only makes system calls on memory prepared
    // before the fork (no allocation), moving itself into the cgroup while outside any domain.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(fd);
            Ok(())
        });
    }
    let output = cmd.output().map_err(|err| format!("fork-fail: {err}"));
    let words: Vec<String> = match output {
        Ok(output) if output.status.success() => String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
        Ok(output) => {
            let _ = std::fs::remove_dir(cgroup);
            return Err(format!(
                "fork-fail exited {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Err(err) => return Err(err),
    };
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

/// Many tasks of several domains exiting at once. On kernels where tracepoint programs can be
/// preempted (7.x), an exit can be skipped by the tracepoint's recursion guard; the count must
/// still reach zero, so every domain ends.
fn every_domain_ends_after_exit_storms() -> Result<(), String> {
    const DOMAINS: usize = 6;
    let offset = log_len();
    let storms: Vec<_> = (0..DOMAINS)
        .map(|_| {
            Command::new("bulkhead")
                .args(["exec", "--label", "exit-storm", "--", &exe(), "helper"])
                .args(["exit-storm", "48"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .spawn()
                .map_err(|err| err.to_string())
        })
        .collect::<Result<_, _>>()?;
    let mut domains = Vec::new();
    let mut refused = Vec::new();
    for storm in storms {
        let output = storm.wait_with_output().map_err(|err| err.to_string())?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let mut lines = stdout.lines();
        let (Some(domain), Some(count)) = (lines.next(), lines.next()) else {
            return Err(format!(
                "exit-storm printed {stdout:?} ({:?})",
                output.status
            ));
        };
        if !output.status.success() {
            return Err(format!("exit-storm failed: {:?}", output.status));
        }
        domains.push(domain.trim().to_owned());
        refused.push(count.trim().to_owned());
    }
    let mut unended = Vec::new();
    for domain in &domains {
        if let Err(err) = wait_for_record(offset, is_end_of(domain)) {
            unended.push(format!("{domain}: {err}; listing {:?}", listing_of(domain)));
        }
    }
    println!(
        "BULKHEAD-NOTE exit storms: tracepoint recursion misses so far: {}; threads refused per domain: {refused:?}",
        tracepoint_misses()
    );
    if unended.is_empty() {
        Ok(())
    } else {
        Err(format!("domains that never ended: {unended:?}"))
    }
}

/// Skipped runs of the agent's tracepoint programs, from the kernel's per-program counter.
fn tracepoint_misses() -> String {
    let Ok(status) = crate::scenarios_lifecycle::status() else {
        return "unknown (no agent status)".into();
    };
    let dir = format!("/proc/{}/fdinfo", status.pid);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return format!("unknown (cannot read {dir})");
    };
    let mut misses = Vec::new();
    for entry in entries.flatten() {
        let Ok(info) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let field = |name: &str| {
            info.lines()
                .find_map(|line| line.strip_prefix(name))
                .map(|value| value.trim().to_owned())
        };
        // BPF_PROG_TYPE_TRACING is 26.
        if field("prog_type:").as_deref() == Some("26")
            && let Some(count) = field("recursion_misses:")
        {
            misses.push(count);
        }
    }
    format!("{misses:?}")
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
