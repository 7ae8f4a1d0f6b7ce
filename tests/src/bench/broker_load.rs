//! The broker under concurrent supervisors: status, mint, introspect and register from 1 to 64
//! clients at once, each on its own connection per request as the integration's client does;
//! throughput and latency percentiles per operation, and the agent's memory after the load.
//!
//! A mint is followed by a revoke of the client's domain (in the wall time, not in the mint's
//! latency): the broker hands a domain a new token only when its last one is nearly spent, so a
//! loop of mints alone would measure refusals.

use std::{
    process::Child,
    time::{Duration, Instant},
};

use bulkhead::{
    api::wire::{
        MintRequest, MintResponse, PATH_REVOKE, PATH_STATUS, PATH_TOKENS, RevokeRequest,
        RevokeResponse, StatusResponse,
    },
    broker::claims::Scope,
};
use serde_json::json;

use super::{
    Profile, emit,
    task_start::{next_sub, spawn_idle},
    workloads::calibrate,
};
use crate::{
    broker_helpers::{client, introspect, register},
    scenarios_broker::{executor_key, sign_as_executor},
};

const OPERATIONS: [&str; 4] = ["status", "mint", "introspect", "register"];

/// A sealed child of this process, released (and so its domain ended) when dropped.
struct Task {
    child: Child,
    domain: u64,
}

impl Drop for Task {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// Registers a new child; returns the registration's latency with the task.
fn registered_task() -> Result<(Duration, Task), String> {
    let token = sign_as_executor(executor_key()?, &next_sub(), Scope::Workload)?;
    let child = spawn_idle()?;
    let started = Instant::now();
    let registered = register(&token, child.id() as i32, Some("bench"));
    let latency = started.elapsed();
    let mut task = Task { child, domain: 0 };
    task.domain = registered
        .map_err(|err| format!("register: {err}"))?
        .domain
        .ok_or("registered by pid without a domain")?;
    Ok((latency, task))
}

fn mint(domain: u64) -> Result<MintResponse, String> {
    client()
        .post(
            PATH_TOKENS,
            &MintRequest {
                domain: Some(domain),
                sub: None,
            },
        )
        .map_err(|err| format!("mint: {err}"))
}

fn revoke(domain: u64) -> Result<(), String> {
    client()
        .post::<_, RevokeResponse>(
            PATH_REVOKE,
            &RevokeRequest {
                jti: None,
                domain: Some(domain),
            },
        )
        .map(drop)
        .map_err(|err| format!("revoke: {err}"))
}

fn timed(f: impl FnOnce() -> Result<(), String>) -> Result<Duration, String> {
    let started = Instant::now();
    f()?;
    Ok(started.elapsed())
}

/// One client's loop until `deadline`; the latency of each operation.
fn client_loop(operation: &str, deadline: Instant) -> Result<Vec<Duration>, String> {
    let mut latencies = Vec::new();
    match operation {
        "status" => {
            while Instant::now() < deadline {
                latencies.push(timed(|| {
                    client()
                        .get::<StatusResponse>(PATH_STATUS)
                        .map(drop)
                        .map_err(|err| format!("status: {err}"))
                })?);
            }
        }
        "mint" => {
            let (_, task) = registered_task()?;
            while Instant::now() < deadline {
                latencies.push(timed(|| mint(task.domain).map(drop))?);
                revoke(task.domain)?;
            }
        }
        "introspect" => {
            let (_, task) = registered_task()?;
            let token = mint(task.domain)?.token;
            while Instant::now() < deadline {
                latencies.push(timed(|| {
                    let answer = introspect(&token).map_err(|err| format!("introspect: {err}"))?;
                    if answer.active {
                        Ok(())
                    } else {
                        Err(format!(
                            "a live token introspected inactive: {:?}",
                            answer.reason
                        ))
                    }
                })?);
            }
        }
        "register" => {
            while Instant::now() < deadline {
                latencies.push(registered_task()?.0);
            }
        }
        other => return Err(format!("unknown broker operation {other}")),
    }
    Ok(latencies)
}

fn percentile(sorted: &[Duration], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() - 1) as f64 * fraction).round() as usize;
    sorted[index].as_nanos() as f64
}

/// The filesystem the agent's state (and so the ledger's commits) lives on.
fn state_storage() -> String {
    use nix::sys::statfs::{TMPFS_MAGIC, statfs};
    match statfs(bulkhead::config::DEFAULT_STATE_DIR) {
        Ok(fs) if fs.filesystem_type() == TMPFS_MAGIC => "tmpfs".to_owned(),
        Ok(fs) => format!("fs {:#x}", fs.filesystem_type().0),
        Err(err) => format!("unknown ({err})"),
    }
}

pub fn measure(profile: &Profile, agent_pid: Option<i32>) -> Result<(), String> {
    let storage = state_storage();
    for &clients in profile.broker_clients {
        for operation in OPERATIONS {
            let calibration = calibrate();
            let started = Instant::now();
            let deadline = started + Duration::from_secs(profile.broker_secs);
            let mut latencies = std::thread::scope(|scope| {
                let workers: Vec<_> = (0..clients)
                    .map(|_| scope.spawn(|| client_loop(operation, deadline)))
                    .collect();
                let mut all = Vec::new();
                for worker in workers {
                    all.extend(
                        worker
                            .join()
                            .map_err(|_| "a client panicked".to_owned())??,
                    );
                }
                Ok::<_, String>(all)
            })?;
            let wall = started.elapsed();
            latencies.sort();
            emit(json!({
                "kind": "broker",
                "name": operation,
                "clients": clients,
                "storage": storage,
                "ops": latencies.len(),
                "wall_ns": wall.as_nanos() as f64,
                "throughput_per_s": latencies.len() as f64 / wall.as_secs_f64(),
                "p50_ns": percentile(&latencies, 0.50),
                "p99_ns": percentile(&latencies, 0.99),
                "calibration_ns": calibration.as_nanos() as f64,
            }));
        }
    }
    if let Some(pid) = agent_pid {
        emit(agent_memory(pid)?);
    }
    Ok(())
}

/// The agent's resident memory now and at its peak (kB, as /proc gives them).
fn agent_memory(pid: i32) -> Result<serde_json::Value, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|err| format!("the agent's /proc status: {err}"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse::<u64>().ok())
            .ok_or_else(|| format!("no {name} in the agent's status"))
    };
    Ok(json!({
        "kind": "memory",
        "name": "agent",
        "rss_kib": field("VmRSS:")?,
        "peak_rss_kib": field("VmHWM:")?,
    }))
}
