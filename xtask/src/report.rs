//! Counting and printing test results.

use std::{
    io::{BufRead, BufReader},
    process::{Command, ExitCode, Stdio},
};

use anyhow::Context;

use crate::artifacts::workspace_root;

#[derive(Default, Clone, Copy)]
pub struct Tally {
    pub passed: usize,
    pub failed: usize,
    /// Cases that cannot apply on a kernel and said why; neither passed nor failed.
    pub skipped: usize,
}

impl Tally {
    pub fn plus(&self, other: &Tally) -> Tally {
        Tally {
            passed: self.passed + other.passed,
            failed: self.failed + other.failed,
            skipped: self.skipped + other.skipped,
        }
    }

    pub fn reported(&self) -> usize {
        self.passed + self.failed + self.skipped
    }

    pub fn print(&self, what: &str) {
        let skipped = if self.skipped > 0 {
            format!(" ({} skipped)", self.skipped)
        } else {
            String::new()
        };
        println!(
            "{what}: {} passed, {} failed{skipped}",
            self.passed, self.failed
        );
    }

    pub fn exit_code(&self) -> ExitCode {
        if self.failed == 0 && self.passed > 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}

/// `cargo test` on the host, streamed, with the per-binary summaries added up. A build failure
/// counts as a failure.
pub fn host_tests() -> anyhow::Result<Tally> {
    // The kernel matrix was fetched before: tests that read its BTF must find every kernel.
    let all = cargo_test(
        &[
            "test",
            "--workspace",
            "--exclude",
            "bulkhead-ebpf",
            "--exclude",
            "bulkhead-floor-ebpf",
        ],
        &[("BULKHEAD_REQUIRE_MATRIX_BTF", std::ffi::OsStr::new("1"))],
    )?;
    // The tests that need tools from outside (Airflow), with those tools supplied.
    let python = crate::setup::airflow_python();
    let interop = cargo_test(
        &[
            "test",
            "-p",
            "bulkhead",
            "--test",
            "airflow_interop",
            "--",
            "--ignored",
        ],
        &[("BULKHEAD_AIRFLOW_PYTHON", python.as_os_str())],
    )?;
    Ok(all.plus(&interop))
}

fn cargo_test(args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> anyhow::Result<Tally> {
    let mut child = Command::new(env!("CARGO"))
        .current_dir(workspace_root())
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting cargo test")?;
    let mut tally = Tally::default();
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        println!("{line}");
        if let Some(summary) = line.strip_prefix("test result: ") {
            tally = tally.plus(&parse_summary(summary));
        }
    }
    if !child.wait()?.success() && tally.failed == 0 {
        tally.failed += 1;
        println!("host: cargo test failed outside any test (build error?)");
    }
    Ok(tally)
}

/// "ok. 12 passed; 0 failed; 0 ignored; ..." -> passed/failed.
fn parse_summary(summary: &str) -> Tally {
    // Each ';'-separated part ends in "<count> <word>" ("ok. 12 passed", " 0 failed").
    let count = |word: &str| {
        summary
            .split(';')
            .filter_map(|part| {
                let mut words = part.split_whitespace().rev();
                let name = words.next()?;
                let n = words.next()?;
                (name == word).then(|| n.parse().ok()).flatten()
            })
            .next()
            .unwrap_or(0)
    };
    Tally {
        passed: count("passed"),
        failed: count("failed"),
        skipped: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cargo_summaries() {
        let ok = parse_summary(
            "ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s",
        );
        assert_eq!((ok.passed, ok.failed), (12, 0));
        let bad =
            parse_summary("FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out");
        assert_eq!((bad.passed, bad.failed), (3, 2));
    }
}
