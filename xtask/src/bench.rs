//! `cargo xtask bench`: one VM boot per kernel of the matrix running
//! `bulkhead-vm-suite bench PROFILE` (tests/src/bench), its samples collected from the console,
//! the ratios printed as a table and written as JSON (target/bench/) so two commits can be
//! compared. Nothing here judges a time: a run fails only if a boot did not finish measuring.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use serde_json::Value;

use crate::{
    artifacts::{build_guest_binaries, target_dir, workspace_root},
    bench_report::Report,
    initramfs::{self, Contents},
    kernels::Kernel,
    qemu::{Boot, VmOptions},
    vm::find_marker as marker,
};

/// What one kernel's boot gave: its samples, or why it gave none.
struct Run {
    kernel: String,
    samples: Vec<Value>,
    failure: Option<String>,
}

pub fn run(kernels: &[Kernel], profile: &str, options: &VmOptions) -> anyhow::Result<ExitCode> {
    if !matches!(profile, "quick" | "full") {
        anyhow::bail!("--profile is quick or full, not {profile:?}");
    }
    let binaries = build_guest_binaries()?;
    let out = target_dir().join("bench");
    std::fs::create_dir_all(&out)?;
    let image = initramfs::build(
        &Contents {
            binaries,
            // The suite's config: the broker on, with the executor key `prepare` writes.
            node_config: &workspace_root().join("tests/vm/node.toml"),
            includes: &[],
            run_script: None,
            extra_archives: Vec::new(),
        },
        &out.join("vm"),
    )?;
    let mut runs = Vec::new();
    for kernel in kernels {
        eprintln!("bench: booting {} ({}) ...", kernel.package, kernel.suite);
        runs.push(boot(kernel, &image, profile, options)?);
    }
    let mut tables = String::new();
    let mut failed = false;
    for run in &runs {
        if let Some(failure) = &run.failure {
            println!("bench {}: FAILED: {failure}", run.kernel);
            failed = true;
            continue;
        }
        let report = Report::new(run.samples.clone());
        let table = report.table(&run.kernel);
        println!("\n{table}");
        tables.push_str(&table);
        tables.push('\n');
        let file = out.join(format!("{}.json", run.kernel));
        std::fs::write(
            &file,
            serde_json::to_string_pretty(&report.to_json(&run.kernel))?,
        )
        .with_context(|| format!("writing {}", file.display()))?;
        println!("bench: {} written", file.display());
    }
    let table_file: PathBuf = out.join("table.md");
    std::fs::write(&table_file, tables)?;
    println!("bench: tables in {}", table_file.display());
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn boot(
    kernel: &Kernel,
    image: &std::path::Path,
    profile: &str,
    options: &VmOptions,
) -> anyhow::Result<Run> {
    let mut samples = Vec::new();
    let mut done = false;
    let mut problems = Vec::new();
    let outcome = Boot {
        kernel: &kernel.vmlinuz,
        initramfs: image,
        cmdline: format!("bulkhead.mode=bench bulkhead.bench={profile} bulkhead.prepare=1"),
        options,
    }
    .run(|line| {
        if let Some(json) = marker(line, "BULKHEAD-BENCH ") {
            match serde_json::from_str::<Value>(json) {
                Ok(sample) => samples.push(sample),
                Err(err) => problems.push(format!("unreadable sample {json:?}: {err}")),
            }
        } else if marker(line, "BULKHEAD-BENCH-DONE").is_some() {
            done = true;
        } else if let Some(why) = marker(line, "BULKHEAD-BENCH-FAILED ") {
            problems.push(format!("the guest stopped measuring: {why}"));
        } else if line.contains("BULKHEAD-GUEST") || line.starts_with("agent| ") {
            println!("{line}");
        }
    })?;
    if let Some(failure) = outcome.failure {
        problems.push(failure);
    }
    if !done && problems.is_empty() {
        problems.push("the guest never finished measuring".to_owned());
    }
    if !problems.is_empty() {
        for line in &outcome.tail {
            println!("  | {line}");
        }
    }
    Ok(Run {
        kernel: kernel.suite.to_owned(),
        samples,
        failure: (!problems.is_empty()).then(|| problems.join("; ")),
    })
}
