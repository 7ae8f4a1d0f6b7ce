//! A real Airflow task, sealed through the integration (issue 14, item 5).
//!
//! `tests/airflow/run_task.py` runs Airflow's own pieces (migrated sqlite database, parsed DAG,
//! queued task instance, workload token from Airflow's generator with the executor's key, the
//! Execution API app trusting only the broker's keys, the task SDK's `supervise_task` choosing
//! the bulkhead coordinator from `[sdk] queue_to_coordinator`). The task
//! (`tests/airflow/dags/bulkhead_probe.py`) attacks its supervisor, the worker's airflow.cfg,
//! the keys and the broker, and has a control outside every domain repeat the reads while the
//! supervisor lives. Everything runs as root: no permission bit or dumpable flag refuses the
//! task anything, only its domain.

use std::{collections::BTreeMap, process::Command};

use serde_json::Value;

use crate::{
    fixtures::{EXECUTOR_KEY, PUBLIC, WORKLOAD_JWKS},
    harness::Suite,
};

const PYTHON: &str = "/opt/airflow-venv/bin/python";
/// tests/airflow and the integration package, included by xtask.
const TASK_DIR: &str = "/include/airflow";
const INTEGRATION_PARENT: &str = "/include";
const WORK: &str = "/tmp/airflow-test";
const LOG: &str = "/tmp/airflow-test.log";
/// Protected by tests/vm/node.toml; written by run_task.py after the agent started.
const AIRFLOW_CFG: &str = "/srv/bulkhead-test/airflow/airflow.cfg";
const BROKER_KEYS: &str = "/var/lib/bulkhead/keys";
/// In the supervisor's environment only; the control must find it, the task must not.
const MARKER: &str = "BULKHEAD_TEST_SUPERVISOR_SECRET";

pub fn add(suite: &mut Suite<'_>) {
    suite.add(
        "airflow:real-task-sealed-attacks-refused-outside-allowed",
        real_task,
    );
}

fn real_task() -> Result<(), String> {
    let log = std::fs::File::create(LOG).map_err(|e| format!("{LOG}: {e}"))?;
    let output = Command::new(PYTHON)
        .arg(format!("{TASK_DIR}/run_task.py"))
        .args(["--work", WORK, "--bulkhead", "/bin/bulkhead"])
        .args(["--socket", "/run/bulkhead/bulkhead.sock"])
        .args([
            "--executor-key",
            EXECUTOR_KEY,
            "--workload-jwks",
            WORKLOAD_JWKS,
        ])
        .args(["--airflow-cfg", AIRFLOW_CFG, "--broker-keys", BROKER_KEYS])
        .args(["--public-file", PUBLIC, "--marker", MARKER])
        .args(["--integration", INTEGRATION_PARENT])
        .env(MARKER, "supervisor-only-4f1c")
        .env("HOME", "/root")
        .stderr(log)
        .output()
        .map_err(|e| format!("cannot start {PYTHON}: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let Some(result) = stdout
        .lines()
        .find_map(|line| line.strip_prefix("BULKHEAD-AIRFLOW-RESULT "))
    else {
        return Err(format!(
            "run_task.py gave no result ({}); its log ends: {}",
            output.status,
            log_tail()
        ));
    };
    let result: Value =
        serde_json::from_str(result).map_err(|e| format!("result is not JSON: {e}"))?;
    println!(
        "BULKHEAD-NOTE airflow task through the coordinator, seconds (TCG): {}",
        result["seconds"]
    );
    let problems = judge(&result);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{}; log ends: {}", problems.join("; "), log_tail()))
    }
}

/// Every way the run falls short of the claim, so one failure shows all of them.
fn judge(result: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    if result["rc"] != 0 || result["state"] != "success" {
        problems.push(format!(
            "the task did not succeed: rc {} state {}",
            result["rc"], result["state"]
        ));
    }
    let xcom = &result["xcom"];
    if xcom["sealed_domain"]
        .as_str()
        .is_none_or(|d| d.parse::<u64>().is_err())
    {
        problems.push(format!(
            "the task ran in no domain: {}",
            xcom["sealed_domain"]
        ));
    }
    let report = &xcom["return_value"];
    for (name, outcome) in entries(&report["attacks"]) {
        // The broker answers a task asking for another's token as it answers for a task that
        // does not exist (not_found), so no one learns which tasks run.
        let refused = matches!(outcome.as_str(), "EPERM" | "EACCES")
            || outcome.starts_with("Forbidden:")
            || outcome.starts_with("NotFound:");
        if !refused {
            problems.push(format!("the task's {name} was not refused: {outcome}"));
        }
    }
    for (name, outcome) in entries(&report["controls"]) {
        if outcome != "allowed" {
            problems.push(format!("domain-side control {name} failed: {outcome}"));
        }
    }
    let outside = &report["outside"];
    let reads = entries(&outside["reads"]);
    if reads.is_empty() {
        problems.push(format!("the outside control reported nothing: {outside}"));
    }
    for (name, outcome) in reads {
        if outcome != "allowed" {
            problems.push(format!("outside control {name} failed: {outcome}"));
        }
    }
    let facts = &outside["facts"];
    if facts["marker-in-environ"] != true {
        problems.push("the outside control did not find the supervisor's marker".to_owned());
    }
    if facts["broker-execution-tokens"]
        .as_u64()
        .is_none_or(|n| n == 0)
    {
        problems.push(format!(
            "the outside control found no broker token in the supervisor's memory: {facts}"
        ));
    }
    for name in report["env_names"].as_array().into_iter().flatten() {
        let name = name.as_str().unwrap_or_default();
        if name == MARKER
            || name.starts_with("AIRFLOW__API_AUTH")
            || name.starts_with("AIRFLOW__SDK")
            || name.starts_with("AIRFLOW_CONN_")
            || name == "BULKHEAD_REGISTRATION"
        {
            problems.push(format!("the task's environment holds {name}"));
        }
    }
    problems.extend(judge_tokens(result));
    problems
}

/// The API server trusts only the broker's keys; still, every request must have carried an
/// execution token signed by one of them (no workload token, no reissued server token).
fn judge_tokens(result: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let kids: Vec<&str> = result["broker_kids"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let signed = entries(&result["signed_by"]);
    let requests: u64 = result["signed_by"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(_, n)| n.as_u64())
        .sum();
    // /run, rendered fields, heartbeat or XCom, the final state: at least three.
    if requests < 3 {
        problems.push(format!("the API saw only {requests} requests"));
    }
    for (signer, _) in signed {
        let (kid, scope) = signer.split_once('/').unwrap_or((&signer, ""));
        if !kids.contains(&kid) || scope != "execution" {
            problems.push(format!(
                "a request carried a token not minted by the broker: {signer}"
            ));
        }
    }
    if result["revoked_reasons"]
        .as_array()
        .is_none_or(Vec::is_empty)
    {
        problems.push("the task's tokens were not revoked at its end".to_owned());
    }
    // After the end: the broker knows the last token is revoked; Airflow's API refuses forged
    // tokens, and accepts the genuine one (the control: the request itself is good; Airflow
    // checks no revocation, which the README states).
    let after = &result["after_end"];
    if !after["broker-introspect"]
        .as_str()
        .is_some_and(|r| r.starts_with("revoked"))
    {
        problems.push(format!(
            "the broker does not call the last token revoked: {after}"
        ));
    }
    if after["api-genuine"] != 200 {
        problems.push(format!(
            "control: the API refused the genuine token: {after}"
        ));
    }
    for forged in ["api-edited-claims", "api-stranger-key"] {
        if !matches!(after[forged].as_u64(), Some(401 | 403)) {
            problems.push(format!(
                "the API did not refuse the {forged} token: {after}"
            ));
        }
    }
    problems
}

fn entries(map: &Value) -> BTreeMap<String, String> {
    map.as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_str().map_or_else(|| v.to_string(), str::to_owned),
            )
        })
        .collect()
}

fn log_tail() -> String {
    let text = std::fs::read_to_string(LOG).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(25)..].join(" | ")
}
