//! The two VM jobs: the enforcement suite and `vm-run`.
//!
//! Suite protocol on the serial console (see tests/src/main.rs):
//! `BULKHEAD-SUITE planned=N`, then one `BULKHEAD-TEST ok|FAIL NAME[ :: detail]` per test, then
//! `BULKHEAD-GUEST suite-exit=CODE` from /init. Anything short of that (a test that never
//! reported, a crash, a timeout, a kernel fault) is a failure.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Context;

use crate::{
    artifacts::{build_guest_binaries, target_dir, workspace_root},
    guest_python,
    initramfs::{self, Contents},
    kernels::Kernel,
    qemu::{Boot, VmOptions},
    report::Tally,
};

const DEMO: &str = include_str!("guest/demo.sh");

/// The node config `vm-run` uses unless `--config` names another.
pub fn example_node_config() -> PathBuf {
    workspace_root().join("config/node.example.toml")
}

/// The suite's node config: protects the files `bulkhead-vm-suite prepare` creates.
fn suite_node_config() -> PathBuf {
    workspace_root().join("tests/vm/node.toml")
}

pub fn run_suite(
    kernel: &Kernel,
    filter: Option<&str>,
    agent_log: bool,
    options: &VmOptions,
) -> anyhow::Result<Tally> {
    if let Some(filter) = filter
        && !filter
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-:.".contains(&b))
    {
        anyhow::bail!(
            "FILTER may only contain A-Z a-z 0-9 _ - : . (it travels on the kernel command line)"
        );
    }
    let binaries = build_guest_binaries()?;
    let config = suite_node_config();
    let out = target_dir().join("vm/test");
    std::fs::create_dir_all(&out)?;
    let image = initramfs::build(
        &Contents {
            binaries,
            node_config: &config,
            includes: &airflow_includes(),
            run_script: None,
            extra_archives: vec![guest_python::archive()?],
        },
        &out,
    )?;
    let mut cmdline = String::from("bulkhead.mode=test");
    if let Some(filter) = filter {
        cmdline.push_str(&format!(" bulkhead.filter={filter}"));
    }
    if agent_log {
        cmdline.push_str(" bulkhead.agentlog=1");
    }
    eprintln!(
        "vm: booting {} ({}, tcg unless --kvm)",
        kernel.package, kernel.suite
    );

    let mut tally = Tally::default();
    let mut booted = None;
    let mut planned = None;
    let mut suite_exit = None;
    let mut agent_failed = false;
    let outcome = Boot {
        kernel: &kernel.vmlinuz,
        initramfs: &image,
        cmdline,
        options,
    }
    .run(|line| {
        if let Some(rest) = find_marker(line, "BULKHEAD-NOTE ") {
            println!("vm note {rest}");
        } else if let Some(rest) = find_marker(line, "BULKHEAD-TEST ") {
            println!("vm test {rest}");
            if rest.starts_with("ok ") {
                tally.passed += 1;
            } else if rest.starts_with("skip ") {
                tally.skipped += 1;
            } else {
                tally.failed += 1;
            }
        } else if let Some(n) = find_marker(line, "BULKHEAD-SUITE planned=") {
            planned = n.trim().parse::<usize>().ok();
        } else if let Some(code) = find_marker(line, "BULKHEAD-GUEST suite-exit=") {
            suite_exit = code.trim().parse::<i32>().ok();
        } else if find_marker(line, "BULKHEAD-GUEST agent-failed").is_some()
            || find_marker(line, "BULKHEAD-GUEST prepare-failed").is_some()
        {
            agent_failed = true;
            println!("{line}");
        } else if line.starts_with("agent| ")
            || line.starts_with("vm: ")
            || line.contains("BULKHEAD-GUEST")
        {
            if let Some(rest) = find_marker(line, "BULKHEAD-GUEST booted kernel=") {
                booted = rest.split_whitespace().next().map(str::to_owned);
            }
            println!("{line}");
        }
    })?;

    let mut problems = Vec::new();
    match &booted {
        Some(release) if *release == kernel.release => {}
        Some(release) => problems.push(format!(
            "the guest runs {release}, not the {} kernel {}",
            kernel.suite, kernel.release
        )),
        None => problems.push("the guest never said which kernel it runs".to_owned()),
    }
    if let Some(failure) = &outcome.failure {
        problems.push(failure.clone());
    }
    if agent_failed {
        problems.push("the agent did not start in the VM".to_owned());
    }
    match planned {
        None => problems.push("the suite never announced its plan".to_owned()),
        Some(planned) if planned != tally.reported() => problems.push(format!(
            "the suite planned {planned} tests but {} reported",
            tally.reported()
        )),
        Some(_) => {}
    }
    match suite_exit {
        None => problems.push("the suite never finished".to_owned()),
        Some(0) => {}
        Some(code) if tally.failed == 0 => problems.push(format!("the suite exited with {code}")),
        Some(_) => {}
    }
    if !problems.is_empty() {
        println!("vm: FAILED: {}", problems.join("; "));
        println!("vm: last console lines:");
        for line in &outcome.tail {
            println!("  | {line}");
        }
        // A missing report counts as at least one failure, never as a pass.
        tally.failed += planned
            .map_or(1, |p| p.saturating_sub(tally.reported()))
            .max(1);
    }
    Ok(tally)
}

/// `vm-run`: boots with the agent running, runs COMMAND (or the demo) as root outside any
/// domain, prints its output and returns its exit status.
pub fn run_command(
    kernel: &Kernel,
    config: Option<&Path>,
    includes: &[PathBuf],
    command: &[String],
    options: &VmOptions,
) -> anyhow::Result<ExitCode> {
    // The demonstration needs the broker and an executor key it trusts: the suite's config,
    // with its files made before the agent starts.
    let demo = command.is_empty() && config.is_none();
    let config = match config {
        Some(config) => config.to_owned(),
        None if demo => suite_node_config(),
        None => example_node_config(),
    };
    let config = config.as_path();
    std::fs::metadata(config).with_context(|| format!("--config {}", config.display()))?;
    for include in includes {
        std::fs::metadata(include).with_context(|| format!("--include {}", include.display()))?;
    }
    let script = if command.is_empty() {
        DEMO.to_owned()
    } else {
        format!(
            "cd /\n{}\n",
            command
                .iter()
                .map(|arg| shell_quote(arg))
                .collect::<Vec<_>>()
                .join(" ")
        )
    };
    let binaries = build_guest_binaries()?;
    let out = target_dir().join("vm/run");
    std::fs::create_dir_all(&out)?;
    // The demonstration's Airflow part needs Python in the guest; without the venv it shows
    // the rest and says so.
    let python = match guest_python::archive() {
        Ok(archive) => vec![archive],
        Err(err) => {
            eprintln!("vm-run: no Python in the guest: {err:#}");
            Vec::new()
        }
    };
    let mut includes = includes.to_vec();
    includes.extend(airflow_includes());
    let image = initramfs::build(
        &Contents {
            binaries,
            node_config: config,
            includes: &includes,
            run_script: Some(script),
            extra_archives: python,
        },
        &out,
    )?;
    eprintln!("vm-run: booting {} ({}) ...", kernel.package, kernel.suite);
    let mut printing = false;
    let mut exit = None;
    let outcome = Boot {
        kernel: &kernel.vmlinuz,
        initramfs: &image,
        cmdline: format!(
            "bulkhead.mode=run quiet{}",
            if demo { " bulkhead.prepare=1" } else { "" }
        ),
        options,
    }
    .run(|line| {
        if let Some(code) = find_marker(line, "BULKHEAD-VMRUN exit=") {
            exit = code.trim().parse::<u8>().ok();
            printing = false;
        } else if find_marker(line, "BULKHEAD-VMRUN start").is_some() {
            printing = true;
        } else if printing || line.starts_with("agent| ") || line.contains("agent-failed") {
            println!("{line}");
        }
    })?;
    if let Some(failure) = outcome.failure {
        eprintln!("vm-run: {failure}");
        for line in &outcome.tail {
            eprintln!("  | {line}");
        }
        return Ok(ExitCode::FAILURE);
    }
    match exit {
        Some(code) => Ok(ExitCode::from(code)),
        None => {
            eprintln!("vm-run: the command did not report an exit status");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The Airflow integration and the real-task test, as /include/bulkhead_airflow and
/// /include/airflow in the guest.
fn airflow_includes() -> Vec<PathBuf> {
    let root = workspace_root();
    vec![
        root.join("integrations/airflow/src/bulkhead_airflow"),
        root.join("tests/airflow"),
    ]
}

/// The marker's payload if `line` contains it (console lines can carry kernel noise first).
pub(crate) fn find_marker<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.find(marker).map(|at| &line[at + marker.len()..])
}

fn shell_quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_found_after_console_noise() {
        assert_eq!(
            find_marker("[ 1.2] x BULKHEAD-TEST ok a", "BULKHEAD-TEST "),
            Some("ok a")
        );
        assert_eq!(find_marker("nothing", "BULKHEAD-TEST "), None);
    }

    #[test]
    fn shell_quoting_survives_quotes() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
