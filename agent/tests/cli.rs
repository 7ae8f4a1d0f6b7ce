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

/// The launcher refuses as `bulkhead exec` does, before anything runs: no agent, a command not
/// after `--`, both a label and a registration, an unknown option.
#[test]
fn the_launcher_runs_nothing_unless_sealed_and_refuses_bad_options() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let socket = dir.path().join("absent.sock");
    let touch = ["touch", marker.to_str().unwrap()];
    let cases: [(Vec<&str>, &str); 4] = [
        (
            [&["--socket", socket.to_str().unwrap(), "--"][..], &touch].concat(),
            "cannot reach the bulkhead agent",
        ),
        (touch.to_vec(), "no `--` before the command"),
        (
            [&["--label", "a", "--registration", "b", "--"][..], &touch].concat(),
            "exclude each other",
        ),
        ([&["--lable", "a", "--"][..], &touch].concat(), "--lable"),
    ];
    for (args, expected) in cases {
        let output = Command::new(env!("CARGO_BIN_EXE_bulkhead-exec"))
            .args(&args)
            .env_remove("BULKHEAD_REGISTRATION")
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(125), "{args:?}");
        assert!(
            !marker.exists(),
            "CMD ran although no agent sealed it: {args:?}"
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
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

#[test]
fn keys_generate_then_show_agree_and_never_print_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    for algorithm in ["EdDSA", "RS256", "HS512"] {
        let file = dir.path().join(format!("{algorithm}.key"));
        let generated = bulkhead()
            .args([
                "keys",
                "generate",
                "--algorithm",
                algorithm,
                "--rsa-bits",
                "2048",
                "--out",
            ])
            .arg(&file)
            .output()
            .unwrap();
        assert!(generated.status.success(), "{generated:?}");
        let made: serde_json::Value = serde_json::from_slice(&generated.stdout).unwrap();
        let shown = bulkhead()
            .args(["keys", "show", "--algorithm", algorithm])
            .arg(&file)
            .output()
            .unwrap();
        assert!(shown.status.success(), "{shown:?}");
        let shown_json: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
        assert_eq!(made["kid"], shown_json["kid"], "{algorithm}");
        let secret = std::fs::read_to_string(&file).unwrap();
        let body: String = secret.lines().filter(|l| !l.starts_with("-----")).collect();
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&generated.stdout),
            String::from_utf8_lossy(&shown.stdout)
        );
        assert!(
            !printed.contains(body.get(..24).unwrap()),
            "{algorithm}: secret printed"
        );
    }
}

#[test]
fn keys_show_refuses_a_readable_key_file_with_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("k.pem");
    let generated = bulkhead()
        .args(["keys", "generate", "--out"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(generated.status.success());
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let shown = bulkhead()
        .args(["keys", "show"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!shown.status.success());
    let stderr = String::from_utf8_lossy(&shown.stderr);
    assert!(
        stderr.contains("mode 0644") && stderr.contains("chmod 600"),
        "{stderr}"
    );
}

/// The broker's files are read by `check-config` as the agent reads them, so a key set the
/// agent would stop on is refused here, naming the key and the fix, before any deployment.
#[test]
fn check_config_reads_the_workload_jwks_like_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("workload-jwks.json");
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nstate_dir = {:?}\n[broker]\nenabled = true\n[broker.workload]\n\
             jwks_file = {:?}\n",
            dir.path().join("state").display().to_string(),
            jwks.display().to_string()
        ),
    )
    .unwrap();
    let check = || {
        bulkhead()
            .arg("check-config")
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap()
    };
    // As Airflow writes it: no "alg" (Ed25519, RFC 8037's example key), a kid of its own.
    std::fs::write(
        &jwks,
        r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"airflow-kid",
            "x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#,
    )
    .unwrap();
    let output = check();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // A P-256 key: no algorithm the broker verifies.
    std::fs::write(
        &jwks,
        r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"ec-kid",
            "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#,
    )
    .unwrap();
    let output = check();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("ec-kid") && stderr.contains("neither an RSA nor an Ed25519"),
        "{stderr}"
    );
}

/// A node's published keys, exported from its key directory, and two nodes' sets combined into
/// the one JWKS an API server trusts; a set carrying private material is refused naming it.
#[test]
fn keys_export_and_combine_jwks_for_a_fleet() {
    use std::os::unix::fs::DirBuilderExt;
    let dir = tempfile::tempdir().unwrap();
    let export = |node: &str| {
        let state = dir.path().join(node);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state.join("keys"))
            .unwrap();
        let generated = bulkhead()
            .args(["keys", "generate", "--out"])
            .arg(state.join("keys/signing-1700000000.key"))
            .output()
            .unwrap();
        assert!(generated.status.success(), "{generated:?}");
        let made: serde_json::Value = serde_json::from_slice(&generated.stdout).unwrap();
        let config = state.join("node.toml");
        std::fs::write(
            &config,
            format!("[agent]\nstate_dir = {:?}\n", state.display().to_string()),
        )
        .unwrap();
        let exported = bulkhead()
            .args(["keys", "export-jwks", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(exported.status.success(), "{exported:?}");
        let set: serde_json::Value = serde_json::from_slice(&exported.stdout).unwrap();
        assert_eq!(set["keys"].as_array().unwrap().len(), 1);
        assert_eq!(set["keys"][0]["kid"], made["kid"]);
        assert!(set["keys"][0].get("d").is_none(), "private part exported");
        let file = dir.path().join(format!("{node}.jwks.json"));
        std::fs::write(&file, &exported.stdout).unwrap();
        (file, set)
    };
    let (first, first_set) = export("node-1");
    let (second, second_set) = export("node-2");
    let combined = bulkhead()
        .args(["keys", "combine-jwks"])
        .args([&first, &second, &first])
        .output()
        .unwrap();
    assert!(combined.status.success(), "{combined:?}");
    let set: serde_json::Value = serde_json::from_slice(&combined.stdout).unwrap();
    let mut kids: Vec<_> = set["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| key["kid"].as_str().unwrap().to_owned())
        .collect();
    kids.sort();
    let mut expected = vec![
        first_set["keys"][0]["kid"].as_str().unwrap().to_owned(),
        second_set["keys"][0]["kid"].as_str().unwrap().to_owned(),
    ];
    expected.sort();
    assert_eq!(kids, expected);
    let mut leaked = second_set.clone();
    leaked["keys"][0]["d"] = serde_json::json!("AAAA");
    std::fs::write(&second, leaked.to_string()).unwrap();
    let refused = bulkhead()
        .args(["keys", "combine-jwks"])
        .args([&first, &second])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("node-2.jwks.json") && stderr.contains("private member"),
        "{stderr}"
    );
}
