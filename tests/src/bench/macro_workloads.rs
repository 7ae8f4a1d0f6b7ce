//! File-tree workloads of the kind a worker host runs all day (archive, copy, search, list
//! processes), with busybox's tools, outside any domain: what every process on the host pays
//! for bulkhead's hooks in ordinary work.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use serde_json::json;

use super::{emit, states::State, workloads::calibrate};

const TREE: &str = "/tmp/bulkhead-bench/tree";
const COPY: &str = "/tmp/bulkhead-bench/tree-copy";
const DIRS: usize = 20;
const FILES_PER_DIR: usize = 40;

/// (name, shell command). Each runs in a fresh `sh -c`, the same in every state.
const WORKLOADS: &[(&str, &str)] = &[
    ("tar", "tar cf /dev/null -C /tmp/bulkhead-bench tree"),
    (
        "cp-r",
        "cp -r /tmp/bulkhead-bench/tree /tmp/bulkhead-bench/tree-copy",
    ),
    (
        "find",
        "find /tmp/bulkhead-bench/tree -name '*7*' >/dev/null",
    ),
    (
        "grep-r",
        "grep -r needle /tmp/bulkhead-bench/tree >/dev/null",
    ),
    ("ps", "ps >/dev/null"),
];

pub fn prepare_tree() -> Result<(), String> {
    let text = "a line of text as a log or a DAG file has it\n".repeat(40);
    for dir in 0..DIRS {
        let path = std::path::Path::new(TREE).join(format!("dir-{dir}"));
        std::fs::create_dir_all(&path).map_err(|err| format!("{}: {err}", path.display()))?;
        for file in 0..FILES_PER_DIR {
            let mut body = text.clone();
            if file % 10 == 0 {
                body.push_str("needle\n");
            }
            std::fs::write(path.join(format!("file-{file}.txt")), body)
                .map_err(|err| err.to_string())?;
        }
    }
    Ok(())
}

/// `runs` of each workload make a sample; the fastest counts (see workloads::BATCHES).
pub fn measure(state: State, round: usize, runs: usize) -> Result<(), String> {
    for (name, script) in WORKLOADS {
        let mut best: Option<(Duration, Duration)> = None;
        for _ in 0..runs.max(1) {
            let calibration = calibrate();
            let start = Instant::now();
            let status = Command::new("sh")
                .args(["-c", script])
                .status()
                .map_err(|err| format!("{name}: {err}"))?;
            let elapsed = start.elapsed();
            if !status.success() {
                return Err(format!("macro workload {name} failed: {status}"));
            }
            // Untimed: the next copy starts from nothing.
            let _ = std::fs::remove_dir_all(COPY);
            if best.is_none_or(|(fastest, _)| elapsed < fastest) {
                best = Some((elapsed, calibration));
            }
        }
        let (elapsed, calibration) = best.expect("at least one run");
        emit(json!({
            "kind": "macro",
            "name": name,
            "state": state.as_str(),
            "placement": "outside",
            "round": round,
            "ns": elapsed.as_nanos() as f64,
            "calibration_ns": calibration.as_nanos() as f64,
        }));
    }
    Ok(())
}
