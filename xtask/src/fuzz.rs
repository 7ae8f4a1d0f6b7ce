//! `cargo xtask fuzz`: runs the fuzz targets in fuzz/ with cargo-fuzz (libFuzzer) for a fixed
//! time each; any finding fails the run.
//!
//! Seeds and past findings live in `fuzz/corpus/<target>/`, which the normal tests replay.
//! What the fuzzer adds goes to the cache directory instead, so a rerun starts where the last
//! one stopped without filling the repository; the build is cached there too.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
};

use anyhow::{Context, bail};

use crate::{artifacts::workspace_root, setup};

/// A single input that takes this long is a finding (a request or token that stalls the
/// agent), not a slow machine.
const INPUT_TIMEOUT_SECS: u64 = 10;

pub fn run(only: Option<&str>, secs: u64) -> anyhow::Result<ExitCode> {
    setup::build_prerequisites()?;
    setup::cargo_fuzz()?;
    let fuzz_dir = workspace_root().join("fuzz");
    let targets = targets(&fuzz_dir)?;
    let chosen = match only {
        None => targets,
        Some(name) if targets.iter().any(|target| target == name) => vec![name.to_owned()],
        Some(name) => bail!(
            "no fuzz target {name:?}; the targets are {}",
            targets.join(", ")
        ),
    };
    let mut reports = Vec::new();
    for target in &chosen {
        reports.push(fuzz_one(&fuzz_dir, target, secs)?);
    }
    println!();
    for report in &reports {
        println!("fuzz {}: {}", report.target, report.summary());
    }
    let findings: Vec<&Report> = reports.iter().filter(|report| !report.clean).collect();
    if findings.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for report in findings {
        println!(
            "fuzz {0}: FINDING, the input is in fuzz/artifacts/{0}/ (cargo fuzz printed the \
             command that reproduces it, to run in fuzz/ with +nightly); once fixed, copy it \
             to fuzz/corpus/{0}/found-<what-it-was> so the normal tests replay it.",
            report.target
        );
    }
    Ok(ExitCode::FAILURE)
}

/// The targets are the files in fuzz/fuzz_targets, so adding one needs no change here.
fn targets(fuzz_dir: &Path) -> anyhow::Result<Vec<String>> {
    let dir = fuzz_dir.join("fuzz_targets");
    let mut targets = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "rs")
            && let Some(stem) = path.file_stem().and_then(|stem| stem.to_str())
        {
            targets.push(stem.to_owned());
        }
    }
    targets.sort();
    Ok(targets)
}

struct Report {
    target: String,
    clean: bool,
    /// libFuzzer's `stat::` lines, and its last progress line.
    runs: Option<String>,
    execs_per_sec: Option<String>,
    last_progress: Option<String>,
}

impl Report {
    fn summary(&self) -> String {
        let verdict = if self.clean { "no finding" } else { "FINDING" };
        format!(
            "{verdict}; {} runs, {} execs/s; {}",
            self.runs.as_deref().unwrap_or("?"),
            self.execs_per_sec.as_deref().unwrap_or("?"),
            self.last_progress.as_deref().unwrap_or("no progress line")
        )
    }
}

fn fuzz_one(fuzz_dir: &Path, target: &str, secs: u64) -> anyhow::Result<Report> {
    let cache = setup::cache_dir().join("fuzz");
    let work_corpus: PathBuf = cache.join("corpus").join(target);
    std::fs::create_dir_all(&work_corpus)
        .with_context(|| format!("creating {}", work_corpus.display()))?;
    println!("fuzz {target}: {secs} s (builds first; the first build takes minutes)");
    let mut child = Command::new("cargo")
        .current_dir(fuzz_dir)
        .args(["+nightly", "fuzz", "run", "--release", "--debug-assertions"])
        .arg("--target-dir")
        .arg(cache.join("target"))
        .arg(target)
        // New inputs go to the first directory; the second is only read.
        .arg(&work_corpus)
        .arg(fuzz_dir.join("corpus").join(target))
        .arg("--")
        .arg(format!("-max_total_time={secs}"))
        .arg(format!("-timeout={INPUT_TIMEOUT_SECS}"))
        .arg("-print_final_stats=1")
        .stderr(Stdio::piped())
        .spawn()
        .context("starting cargo fuzz")?;
    let mut report = Report {
        target: target.to_owned(),
        clean: false,
        runs: None,
        execs_per_sec: None,
        last_progress: None,
    };
    for line in BufReader::new(child.stderr.take().expect("piped")).lines() {
        let line = line?;
        if let Some(runs) = line.strip_prefix("stat::number_of_executed_units: ") {
            report.runs = Some(runs.trim().to_owned());
        } else if let Some(rate) = line.strip_prefix("stat::average_exec_per_sec: ") {
            report.execs_per_sec = Some(rate.trim().to_owned());
        } else if line.starts_with('#') && line.contains("cov:") {
            report.last_progress = Some(progress_figures(&line));
        }
        if !is_chatter(&line) {
            eprintln!("{line}");
        }
    }
    report.clean = child.wait()?.success();
    Ok(report)
}

/// libFuzzer's routine output: progress lines by the thousand, newly covered functions, its
/// recommended dictionary, its statistics (summarised instead). A finding's report (the panic
/// or sanitizer error, the input) is none of these.
fn is_chatter(line: &str) -> bool {
    let trimmed = line.trim_start();
    (line.starts_with('#') && line.contains("cov:"))
        || trimmed.starts_with("NEW_FUNC")
        || trimmed.starts_with("INFO:")
        || trimmed.starts_with("stat::")
        || line.starts_with("###### ")
        || (line.starts_with('"') && line.contains("# Uses:"))
}

/// `#123 NEW cov: 456 ft: 789 corp: 12/3Kb ...` -> `cov: 456 ft: 789 corp: 12/3Kb`.
fn progress_figures(line: &str) -> String {
    let Some(at) = line.find("cov:") else {
        return line.to_owned();
    };
    let figures: Vec<&str> = line[at..].split_whitespace().take(6).collect();
    figures.join(" ")
}
