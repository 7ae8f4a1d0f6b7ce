//! `bulkhead-vm-suite bench [quick|full]`: the benchmarks `cargo xtask bench` runs in the VM.
//!
//! Everything is measured in one boot, in interleaved rounds: each round visits bulkhead
//! attached, no programs and the empty-program floor (in a rotating order, so no state always
//! runs first after a change), and runs the same workloads in each. Under TCG time is
//! emulated, so only ratios between states of the same round mean anything; the host side
//! (xtask/src/bench.rs) computes them, drops samples taken while the guest ran slow, and
//! prints the table. This side only measures and prints one `BULKHEAD-BENCH <json>` line per
//! sample; it judges nothing.

mod broker_load;
pub mod floor;
mod macro_workloads;
mod states;
mod task_start;
pub mod workloads;

use std::process::Command;

use serde_json::{Value, json};
use states::{Machine, State};

use crate::scenarios::exe;

/// How much of everything to run.
#[derive(Clone, Copy)]
pub struct Profile {
    pub name: &'static str,
    pub rounds: usize,
    /// Operations of the cheapest microbenchmark per sample (the others divide it).
    pub micro_iterations: u32,
    pub start_iterations: usize,
    /// Runs of each file-tree workload per sample (the fastest counts).
    pub macro_runs: usize,
    pub broker_clients: &'static [usize],
    pub broker_secs: u64,
}

pub const QUICK: Profile = Profile {
    name: "quick",
    rounds: 2,
    micro_iterations: 400,
    start_iterations: 5,
    macro_runs: 1,
    broker_clients: &[1, 8],
    broker_secs: 2,
};

pub const FULL: Profile = Profile {
    name: "full",
    rounds: 5,
    micro_iterations: 4000,
    start_iterations: 20,
    macro_runs: 3,
    broker_clients: &[1, 8, 64],
    broker_secs: 8,
};

pub use task_start::idle as task_start_idle;

/// One sample on the console, for the host to collect.
pub fn emit(sample: Value) {
    println!("BULKHEAD-BENCH {sample}");
}

pub fn run(profile: &str) -> Result<(), String> {
    let profile = match profile {
        "quick" => QUICK,
        "full" => FULL,
        other => return Err(format!("unknown bench profile {other:?} (quick, full)")),
    };
    workloads::prepare_tree()?;
    macro_workloads::prepare_tree()?;
    emit(json!({
        "kind": "meta",
        "profile": profile.name,
        "rounds": profile.rounds,
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        "lsm_programs": bulkhead_common::LSM_PROGRAMS.len(),
    }));
    let mut machine = Machine::adopt()?;
    for round in 0..profile.rounds {
        for offset in 0..State::ALL.len() {
            let state = State::ALL[(round + offset) % State::ALL.len()];
            machine.enter(state)?;
            micro(state, "outside", round, &profile)?;
            if state == State::Bulkhead {
                micro(state, "inside", round, &profile)?;
                task_start::measure(round, &profile)?;
            }
            macro_workloads::measure(state, round, profile.macro_runs)?;
        }
    }
    machine.enter(State::Bulkhead)?;
    broker_load::measure(&profile, machine.agent_pid())?;
    println!("BULKHEAD-BENCH-DONE");
    Ok(())
}

/// One sample of every microbenchmark, from a fresh process outside any domain or sealed
/// into a new one.
fn micro(state: State, placement: &str, round: usize, profile: &Profile) -> Result<(), String> {
    let iterations = profile.micro_iterations.to_string();
    let mut command = if placement == "inside" {
        let mut command = Command::new("bulkhead");
        command.args(["exec", "--label", "bench", "--", &exe()]);
        command
    } else {
        Command::new(exe())
    };
    let output = command
        .args(["helper", "bench-micro", &iterations])
        .output()
        .map_err(|err| format!("bench-micro: {err}"))?;
    if !output.status.success() {
        return Err(format!(
            "bench-micro {placement} in state {}: {}",
            state.as_str(),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut seen = 0;
    for line in stdout.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [name, per_op, calibration] = fields[..] else {
            return Err(format!("bench-micro printed {line:?}"));
        };
        let parse = |text: &str| {
            text.parse::<f64>()
                .map_err(|err| format!("bench-micro printed {line:?}: {err}"))
        };
        emit(json!({
            "kind": "micro",
            "name": name,
            "state": state.as_str(),
            "placement": placement,
            "round": round,
            "ns": parse(per_op)?,
            "calibration_ns": parse(calibration)?,
        }));
        seen += 1;
    }
    if seen != workloads::names().count() {
        return Err(format!("bench-micro reported {seen} workloads: {stdout}"));
    }
    Ok(())
}
