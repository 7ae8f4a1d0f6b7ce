//! Boots the VM under qemu and streams its serial console line by line.
//!
//! The run fails, with the console's tail, on a global timeout or on any sign that the kernel
//! itself broke (panic, oops, BUG, RCU stall): enforcement code runs in the kernel, so a
//! kernel fault is a test failure even if every test line said ok.

use std::{
    collections::VecDeque,
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::Context;

/// Kernel console patterns that mean the guest kernel is broken.
const KERNEL_FAILURES: &[&str] = &[
    "Kernel panic",
    "Oops:",
    "BUG:",
    "general protection fault",
    "rcu: INFO:",
    "detected stalls on CPUs",
    // RCU Tasks (BPF trampoline updates wait on it): "INFO: rcu_tasks detected stalls on tasks".
    "detected stalls on tasks",
    "soft lockup",
    "hung_task",
];

/// LSM list given to the guest kernel: Debian's defaults that matter here, with bpf.
const GUEST_LSM: &str = "lockdown,capability,landlock,yama,bpf";

#[derive(Clone, Debug)]
pub struct VmOptions {
    pub kvm: bool,
    pub mttcg: bool,
    pub memory_mib: u32,
    pub cpus: u32,
    pub timeout: Duration,
}

pub struct Boot<'a> {
    pub kernel: &'a Path,
    pub initramfs: &'a Path,
    /// Extra kernel command line words (bulkhead.mode=..., quiet, ...).
    pub cmdline: String,
    pub options: &'a VmOptions,
}

pub struct Outcome {
    /// Why the run failed at the VM level (timeout, kernel fault, qemu error), if it did.
    pub failure: Option<String>,
    /// The last console lines, for failure reports.
    pub tail: Vec<String>,
}

const TAIL_LINES: usize = 60;
/// After a kernel failure: how long to keep reading, and how many more lines to keep.
const REPORT_WAIT: Duration = Duration::from_secs(15);
const REPORT_LINES: usize = 250;

impl Boot<'_> {
    /// Boots and feeds every console line to `on_line` until the guest powers off.
    pub fn run(&self, mut on_line: impl FnMut(&str)) -> anyhow::Result<Outcome> {
        let opts = self.options;
        let mut qemu = Command::new("qemu-system-x86_64");
        if opts.kvm {
            qemu.args(["-accel", "kvm", "-cpu", "host"]);
        } else if opts.mttcg {
            qemu.args(["-accel", "tcg,thread=multi", "-cpu", "max"]);
        } else {
            // One host thread runs all vCPUs in turn. With multi-threaded TCG a vCPU can run a
            // stale translation of code another vCPU has just patched: attaching or detaching a
            // BPF trampoline (text_poke_bp) while another CPU runs the hook then ends in an int3
            // Oops at `bpf_lsm_<hook>+5` whose code bytes no longer hold an int3, or in soft
            // lockups and RCU stalls around program swaps. x86 hardware cannot do that after
            // text_poke_bp's serialising IPIs; single-threaded TCG cannot either.
            qemu.args(["-accel", "tcg,thread=single", "-cpu", "max"]);
        }
        qemu.args([
            "-m",
            &opts.memory_mib.to_string(),
            "-smp",
            &opts.cpus.to_string(),
        ])
        .args([
            "-nodefaults",
            "-no-reboot",
            "-display",
            "none",
            "-monitor",
            "none",
        ])
        .args(["-serial", "stdio"])
        .arg("-kernel")
        .arg(self.kernel)
        .arg("-initrd")
        .arg(self.initramfs)
        .arg("-append")
        .arg(format!(
            "console=ttyS0 lsm={GUEST_LSM} preempt=full panic=-1 loglevel=5 softlockup_all_cpu_backtrace=1 rdinit=/init {}",
            self.cmdline
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = qemu
            .spawn()
            .context("cannot start qemu-system-x86_64 (run `cargo xtask setup`)")?;

        let (lines_tx, lines) = mpsc::channel::<String>();
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = lines_tx.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream);
                let mut buf = Vec::new();
                while reader.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
                    let line = String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\r', '\n'])
                        .to_owned();
                    if tx.send(line).is_err() {
                        return;
                    }
                    buf.clear();
                }
            });
        }
        drop(lines_tx);

        let deadline = Instant::now() + opts.timeout;
        let mut tail = VecDeque::with_capacity(TAIL_LINES);
        let mut failure = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    if tail.len() == TAIL_LINES {
                        tail.pop_front();
                    }
                    tail.push_back(line.clone());
                    if let Some(pattern) = KERNEL_FAILURES.iter().find(|p| line.contains(*p)) {
                        failure = Some(format!("guest kernel failure ({pattern}): {line}"));
                        // Keep reading so the tail holds the kernel's whole report (registers,
                        // the stuck task's stack, the other CPUs' backtraces): that is what
                        // tells a bulkhead program from the emulator.
                        let until = Instant::now() + REPORT_WAIT;
                        let mut report = 0;
                        while let Ok(more) =
                            lines.recv_timeout(until.saturating_duration_since(Instant::now()))
                        {
                            if report < REPORT_LINES {
                                tail.push_back(more);
                                report += 1;
                            }
                        }
                        break;
                    }
                    on_line(&line);
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    failure = Some(format!("VM timed out after {} s", opts.timeout.as_secs()));
                    break;
                }
            }
        }
        let _ = child.kill();
        let status = child.wait()?;
        if failure.is_none() && !status.success() {
            failure = Some(format!("qemu exited with {status}"));
        }
        Ok(Outcome {
            failure,
            tail: tail.into(),
        })
    }
}
