//! The `bulkhead` binary's behaviour that needs no LSM: refusals happen before anything runs.

use std::process::Command;

fn bulkhead() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bulkhead"))
}

#[test]
fn exec_without_an_agent_runs_nothing_and_exits_125() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let output = bulkhead()
        .args(["exec", "--socket"])
        .arg(dir.path().join("absent.sock"))
        .args(["--", "touch"])
        .arg(&marker)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(125));
    assert!(!marker.exists(), "CMD ran although no agent sealed it");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot reach the bulkhead agent"),
        "{stderr}"
    );
}

#[test]
fn run_with_a_bad_config_exits_2_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(&config, "[api]\nsocket_path = \"relative.sock\"\n").unwrap();
    let output = bulkhead()
        .arg("run")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&config.display().to_string()) && stderr.contains("line 2"),
        "{stderr}"
    );
    assert!(stderr.contains("absolute path"), "{stderr}");
}

#[test]
fn check_config_accepts_the_example() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/node.example.toml");
    let output = bulkhead()
        .args(["check-config", "--config", example])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
