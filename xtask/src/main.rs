//! `cargo xtask`: bulkhead's developer tasks.
//!
//! - `setup`: install the toolchain pieces, qemu, busybox and the kernel matrix (idempotent)
//! - `test`: setup if needed, host tests, then the VM enforcement suite on every kernel
//! - `vm-test [FILTER]`: only the VM suite
//! - `vm-run [--config FILE] [--include PATH]... [-- COMMAND...]`: the agent in a VM; run COMMAND or the demo
//!
//! `--kernel bookworm|trixie|sid` (repeatable) picks kernels of the matrix (kernels.rs).
//! - `fuzz [TARGET] [--secs N]`: the fuzz targets (cargo-fuzz), N seconds each

mod artifacts;
mod bench;
mod bench_report;
mod cmd;
mod fuzz;
mod guest_python;
mod initramfs;
mod kernel_btf;
mod kernels;
mod qemu;
mod report;
mod setup;
mod vm;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install everything the build and the VM need (skips what is present).
    Setup,
    /// Run every test: host (`cargo test`) and the VM enforcement suite.
    Test {
        #[command(flatten)]
        vm: VmArgs,
    },
    /// Run the VM enforcement suite only, optionally only tests whose name contains FILTER.
    VmTest {
        filter: Option<String>,
        /// Also print the agent's log from inside the VM.
        #[arg(long)]
        agent_log: bool,
        #[command(flatten)]
        vm: VmArgs,
    },
    /// Boot the VM with the agent running and run COMMAND as root outside any domain, or the
    /// demonstration when no COMMAND is given. Exits with COMMAND's status.
    VmRun {
        /// File or directory to make available in the guest as /include/<basename>.
        #[arg(long = "include", value_name = "HOST_PATH")]
        includes: Vec<PathBuf>,
        /// Node config for the agent in the VM (default: config/node.example.toml with a
        /// COMMAND; the suite's tests/vm/node.toml, broker enabled, for the demonstration). The
        /// agent validates it there; a bad config shows the agent's error and fails the run.
        #[arg(long, value_name = "HOST_PATH")]
        config: Option<PathBuf>,
        #[command(flatten)]
        vm: VmArgs,
        #[arg(last = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Measure what bulkhead costs: one VM boot per kernel, bulkhead against no programs and
    /// against empty programs on the same hooks, in interleaved rounds; prints ratios (never
    /// absolute TCG times) and writes them with every sample to target/bench/*.json.
    Bench {
        /// quick (what CI runs: 2 rounds, fewer iterations) or full.
        #[arg(long, default_value = "full")]
        profile: String,
        #[command(flatten)]
        vm: VmArgs,
    },
    /// Run the fuzz targets (fuzz/, cargo-fuzz with libFuzzer) for SECS seconds each, or only
    /// TARGET. Fails on any finding and says where the input is.
    Fuzz {
        target: Option<String>,
        #[arg(long, default_value_t = 60)]
        secs: u64,
    },
}

#[derive(Args, Clone)]
struct VmArgs {
    /// Use KVM instead of TCG emulation (off by default: it hangs on the dev machines).
    #[arg(long)]
    kvm: bool,
    /// Multi-threaded TCG (one host thread per vCPU) instead of single-threaded; only to
    /// compare: it lets a vCPU run stale translations of patched kernel text (see qemu.rs).
    #[arg(long, conflicts_with = "kvm")]
    mttcg: bool,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 2048)]
    memory: u32,
    /// Guest CPU count.
    #[arg(long, default_value_t = 2)]
    cpus: u32,
    /// Give up on the VM after this many seconds.
    #[arg(long, default_value_t = 1800)]
    timeout: u64,
    /// Kernel of the matrix to boot: bookworm (Debian 12), trixie (Debian 13) or sid
    /// (unstable). Repeatable; tests default to all of them, vm-run to bookworm.
    #[arg(long = "kernel", value_name = "NAME")]
    kernels: Vec<String>,
}

impl VmArgs {
    /// The chosen kernels in matrix order, each once; all of the matrix when none is named.
    fn suites(&self) -> anyhow::Result<Vec<kernels::Suite>> {
        let mut chosen = Vec::new();
        for name in &self.kernels {
            chosen.push(kernels::suite_by_name(name)?);
        }
        if chosen.is_empty() {
            return Ok(kernels::MATRIX.to_vec());
        }
        Ok(kernels::MATRIX
            .iter()
            .filter(|suite| chosen.contains(suite))
            .copied()
            .collect())
    }

    /// The one kernel `vm-run` boots.
    fn single_suite(&self) -> anyhow::Result<kernels::Suite> {
        match self.kernels.as_slice() {
            [] => kernels::suite_by_name(kernels::DEFAULT_KERNEL),
            [one] => kernels::suite_by_name(one),
            _ => anyhow::bail!("vm-run boots one kernel: give --kernel once"),
        }
    }

    fn options(&self) -> qemu::VmOptions {
        qemu::VmOptions {
            kvm: self.kvm,
            mttcg: self.mttcg,
            memory_mib: self.memory,
            cpus: self.cpus,
            timeout: Duration::from_secs(self.timeout),
        }
    }
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Task::Setup => setup::setup(kernels::MATRIX).map(|_| ExitCode::SUCCESS),
        Task::Fuzz { target, secs } => fuzz::run(target.as_deref(), secs),
        Task::Bench { profile, vm } => vm
            .suites()
            .and_then(|suites| setup::setup(&suites))
            .and_then(|kernels| bench::run(&kernels, &profile, &vm.options())),
        Task::Test { vm } => test_all(&vm),
        Task::VmTest {
            filter,
            agent_log,
            vm,
        } => vm_suite(filter.as_deref(), agent_log, &vm).map(|tally| {
            println!();
            tally.print("vm");
            tally.exit_code()
        }),
        Task::VmRun {
            includes,
            config,
            vm,
            command,
        } => vm
            .single_suite()
            .and_then(|suite| setup::setup(&[suite]))
            .and_then(|kernels| {
                vm::run_command(
                    &kernels[0],
                    config.as_deref(),
                    &includes,
                    &command,
                    &vm.options(),
                )
            }),
    };
    result.unwrap_or_else(|err| {
        eprintln!("xtask: {err:#}");
        ExitCode::FAILURE
    })
}

fn test_all(vm: &VmArgs) -> anyhow::Result<ExitCode> {
    // Every kernel of the matrix is fetched first: the host tests read their BTF.
    setup::setup(kernels::MATRIX)?;
    let host = report::host_tests()?;
    let guest = vm_suite(None, false, vm)?;
    println!();
    host.print("host");
    guest.print("vm");
    let total = host.plus(&guest);
    total.print("total");
    Ok(total.exit_code())
}

/// The VM suite on each chosen kernel, one boot each; prints a line per kernel and returns the
/// sum. A kernel whose run breaks still counts (as failures) and the others still run.
fn vm_suite(filter: Option<&str>, agent_log: bool, vm: &VmArgs) -> anyhow::Result<report::Tally> {
    let kernels = setup::setup(&vm.suites()?)?;
    let mut per_kernel = Vec::new();
    for kernel in &kernels {
        let tally = vm::run_suite(kernel, filter, agent_log, &vm.options())?;
        per_kernel.push((kernel.release.clone(), tally));
    }
    println!();
    let mut all = report::Tally::default();
    for (release, tally) in &per_kernel {
        tally.print(&format!("vm {release}"));
        all = all.plus(tally);
    }
    Ok(all)
}
