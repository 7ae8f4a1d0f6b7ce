//! bulkhead's VM enforcement suite. Runs as root inside the test VM, outside any domain, in the
//! role of a task supervisor; the agent is already running.
//!
//! `bulkhead-vm-suite [FILTER]` runs the suite; `bulkhead-vm-suite helper ...` is how the suite
//! starts its attacker and target processes (see helper.rs); `bulkhead-vm-suite prepare`
//! creates the protected files before the agent starts (fixtures.rs); `bulkhead-vm-suite bench
//! [quick|full]` runs the benchmarks (bench/).

mod access;
mod bench;
mod bench_hooks;
mod broker_exec_helpers;
mod broker_helpers;
mod descriptor_access;
mod device_access;
mod domain_helpers;
mod file_access;
mod fixtures;
mod harness;
mod helper;
mod ipc_access;
mod kernel_access;
mod key_access;
mod perf_access;
mod race_access;
mod refusal_records;
mod scenarios;
mod scenarios_agent_files;
mod scenarios_airflow;
mod scenarios_audit;
mod scenarios_broker;
mod scenarios_descriptors;
mod scenarios_domains;
mod scenarios_files;
mod scenarios_ipc;
mod scenarios_kernel;
mod scenarios_keys;
mod scenarios_lifecycle;
mod scenarios_lookup;
mod scenarios_names;
mod scenarios_races;
mod scenarios_shm;
mod scenarios_signals;
mod scenarios_sockets;
mod shm_access;
mod signal_access;
mod socket_access;
mod task_control;
mod tty_access;

/// In the suite's initial environment (set by the VM's /init) so reading its environ can be
/// checked for content, not just success.
pub const SUPERVISOR_MARKER: &str = "BULKHEAD_SUPERVISOR_MARKER=supervisor-env";
/// In the agent's initial environment (set by the VM's /init).
pub const AGENT_MARKER: &str = "BULKHEAD_AGENT_MARKER=agent-env";
/// In the environment of processes the suite starts as targets.
pub const HOLDER_MARKER: &str = "BULKHEAD_HOLDER_MARKER=holder-env";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("helper") {
        std::process::exit(helper::main(&args[1..]));
    }
    if args.first().map(String::as_str) == Some("bench") {
        let profile = args.get(1).map_or("quick", String::as_str);
        if let Err(err) = bench::run(profile) {
            println!("BULKHEAD-BENCH-FAILED {err}");
            std::process::exit(1);
        }
        return;
    }
    if args.first().map(String::as_str) == Some("prepare") {
        if let Err(err) = fixtures::prepare() {
            eprintln!("{err}");
            std::process::exit(1);
        }
        return;
    }
    let filter = args.first().map(String::as_str);
    let failed = scenarios::run(filter);
    std::process::exit(i32::from(failed > 0));
}
