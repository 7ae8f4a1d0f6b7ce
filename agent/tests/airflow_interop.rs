//! Interop judged by Airflow's own code (apache-airflow-core from PyPI), both ways: broker
//! tokens of every algorithm validated by Airflow's `JWTValidator` with the broker's JWKS (or
//! the shared secret), and workload tokens made by Airflow's `JWTGenerator` as its executors
//! make them, with the keys as Airflow writes them, verified by the broker's workload issuer.
//!
//! Needs the Airflow venv: `cargo xtask test` builds one and runs this with `--ignored` and
//! BULKHEAD_AIRFLOW_PYTHON set.

use std::{path::PathBuf, process::Command, sync::Arc, time::Duration};

use bulkhead::{
    broker::{
        claims::{DEFAULT_AUDIENCE, Scope},
        issuer::workload_verifier,
        mint::{Issued, IssuedRegistry, Minter},
    },
    config::NodeConfig,
    keys::{
        generate::generate,
        material::{SigningAlgorithm, SigningKey},
    },
};

struct Recorded;
impl IssuedRegistry for Recorded {
    fn record(&self, _: &Issued) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Airflow's Python and the script that calls its token code, with an AIRFLOW_HOME of its own.
fn airflow(dir: &std::path::Path) -> Command {
    let python = airflow_python();
    let script = repo("tests/interop/airflow_tokens.py");
    let home = dir.join("airflow-home");
    std::fs::create_dir_all(&home).unwrap();
    let mut command = Command::new(python);
    command.arg(script).env("AIRFLOW_HOME", home);
    command
}

#[test]
#[ignore = "needs apache-airflow-core from PyPI: run through `cargo xtask test`"]
fn airflow_validates_broker_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let sub = "0196a1b2-0000-7000-8000-00000000c0de";
    for algorithm in [
        SigningAlgorithm::EdDSA,
        SigningAlgorithm::RS256,
        SigningAlgorithm::RS512,
        SigningAlgorithm::HS512,
    ] {
        let material = generate(algorithm, 2048).unwrap();
        let key = Arc::new(SigningKey::parse(material.as_bytes(), algorithm).unwrap());
        let minter = Minter {
            key: key.clone(),
            audience: DEFAULT_AUDIENCE.to_owned(),
            issuer: None,
            lifetime: Duration::from_secs(600),
        };
        let (token, _) = minter.mint(Scope::Execution, sub, 1, &Recorded).unwrap();
        let name = format!("{algorithm:?}");
        let token_file = dir.path().join(format!("{name}.jwt"));
        std::fs::write(&token_file, token.as_bytes()).unwrap();
        let keys = if algorithm.is_symmetric() {
            let secret = dir.path().join("secret");
            std::fs::write(&secret, material.as_bytes()).unwrap();
            format!("secret:{}", secret.display())
        } else {
            let jwks = dir.path().join(format!("{name}.jwks.json"));
            let set = serde_json::json!({ "keys": [key.public_jwk().unwrap()] });
            std::fs::write(&jwks, set.to_string()).unwrap();
            jwks.display().to_string()
        };
        // Airflow's default `jwt_algorithm` (GUESS: the JWK's own `alg`, HS512 for a secret)
        // and the algorithm named explicitly.
        for alg in ["GUESS", name.as_str()] {
            let output = airflow(dir.path())
                .arg("validate")
                .args([&keys, alg, DEFAULT_AUDIENCE])
                .arg(&token_file)
                .arg(sub)
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "Airflow refused the {name} token (jwt_algorithm {alg}): {}",
                String::from_utf8_lossy(&output.stderr)
            );
            println!("{}", String::from_utf8_lossy(&output.stdout).trim());
        }
    }
}

#[test]
#[ignore = "needs apache-airflow-core from PyPI: run through `cargo xtask test`"]
fn the_broker_takes_workload_tokens_as_airflow_makes_them() {
    let sub = "0196a1b2-0000-7000-8000-0000000000c3";
    for kind in ["Ed25519", "RSA", "secret"] {
        let dir = tempfile::tempdir().unwrap();
        let output = airflow(dir.path())
            .arg("workload")
            .arg(kind)
            .arg(dir.path())
            .arg(sub)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "Airflow made no {kind} workload token: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        println!("{}", String::from_utf8_lossy(&output.stdout).trim());
        let keys = if kind == "secret" {
            format!(
                "secret_file = {:?}",
                dir.path().join("jwt_secret").display().to_string()
            )
        } else {
            format!(
                "jwks_file = {:?}",
                dir.path().join("jwks.json").display().to_string()
            )
        };
        let config = NodeConfig::parse(&format!(
            "[broker]\nenabled = true\n[broker.workload]\n{keys}\n"
        ))
        .unwrap();
        let verifier = workload_verifier(&config.broker)
            .unwrap_or_else(|err| panic!("{kind}: the broker refused Airflow's keys: {err:#}"))
            .unwrap();
        let token = std::fs::read_to_string(dir.path().join("workload.jwt")).unwrap();
        let claims = verifier
            .verify(token.trim(), Scope::Workload)
            .unwrap_or_else(|err| panic!("{kind}: the broker refused Airflow's token: {err}"));
        assert_eq!(claims.sub, sub, "{kind}");
        // The control: the same token judged as an execution token is refused.
        assert!(
            verifier.verify(token.trim(), Scope::Execution).is_err(),
            "{kind}"
        );
    }
}

/// The integration's repository paths.
fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

fn airflow_python() -> String {
    std::env::var("BULKHEAD_AIRFLOW_PYTHON")
        .expect("BULKHEAD_AIRFLOW_PYTHON: the Airflow venv's python (cargo xtask test sets it)")
}

#[test]
#[ignore = "needs the Airflow venv: run through `cargo xtask test`"]
fn the_integrations_unit_tests_pass() {
    let output = Command::new(airflow_python())
        .args(["-m", "unittest", "discover", "-s"])
        .arg(repo("integrations/airflow/tests"))
        .env("PYTHONPATH", repo("integrations/airflow/src"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
#[ignore = "needs the Airflow venv: run through `cargo xtask test`"]
fn the_integration_installs_with_pip() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(airflow_python())
        .args(["-m", "pip", "install", "--quiet", "--no-deps"])
        .args(["--disable-pip-version-check", "--target"])
        .arg(dir.path())
        .arg(repo("integrations/airflow"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(dir.path().join("bulkhead_airflow/coordinator.py").is_file());
}

/// Airflow's side of the coordinator, on the host: real migrations, DAG, task instance,
/// workload token, Execution API and `supervise_task`, with the real `bulkhead exec` against a
/// stand-in agent (the host cannot seal; the VM suite judges the sealing).
#[test]
#[ignore = "needs the Airflow venv: run through `cargo xtask test`"]
fn the_coordinator_runs_a_real_airflow_task_on_broker_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let pem = generate(SigningAlgorithm::EdDSA, 2048).unwrap();
    let key = SigningKey::parse(pem.as_bytes(), SigningAlgorithm::EdDSA).unwrap();
    std::fs::write(path("executor.key"), pem.as_bytes()).unwrap();
    let jwks = serde_json::json!({ "keys": [key.public_jwk().unwrap()] });
    std::fs::write(path("workload-jwks.json"), jwks.to_string()).unwrap();
    std::fs::create_dir(path("keys")).unwrap();
    std::fs::write(path("keys/a.key"), "k").unwrap();
    std::fs::write(path("public.txt"), "p").unwrap();

    let socket = path("agent.sock");
    let mut agent = Command::new(airflow_python())
        .arg(repo("tests/airflow/stand_in_agent.py"))
        .arg(&socket)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(agent.stdout.as_mut().unwrap()),
        &mut ready,
    )
    .unwrap();
    assert_eq!(ready.trim(), "ready");

    let output = Command::new(airflow_python())
        .arg(repo("tests/airflow/run_task.py"))
        .arg("--work")
        .arg(path("work"))
        .args(["--bulkhead", env!("CARGO_BIN_EXE_bulkhead"), "--socket"])
        .arg(&socket)
        .arg("--executor-key")
        .arg(path("executor.key"))
        .arg("--workload-jwks")
        .arg(path("workload-jwks.json"))
        .arg("--airflow-cfg")
        .arg(path("cfg/airflow.cfg"))
        .arg("--broker-keys")
        .arg(path("keys"))
        .arg("--public-file")
        .arg(path("public.txt"))
        .args(["--marker", "SUPERVISOR_ONLY"])
        .env("SUPERVISOR_ONLY", "m")
        .output()
        .unwrap();
    let _ = agent.kill();
    let _ = agent.wait();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let result = stdout
        .lines()
        .find_map(|l| l.strip_prefix("BULKHEAD-AIRFLOW-RESULT "))
        .unwrap_or_else(|| panic!("no result: {}", String::from_utf8_lossy(&output.stderr)));
    let result: serde_json::Value = serde_json::from_str(result).unwrap();
    assert_eq!(result["state"], "success", "{result}");
    assert_eq!(result["rc"], 0, "{result}");
    let report = &result["xcom"]["return_value"];
    assert!(report["attacks"].is_object(), "{result}");
    // Every request the Execution API received carried a stand-in broker token.
    let signed = result["signed_by"].as_object().unwrap();
    assert_eq!(
        signed.keys().collect::<Vec<_>>(),
        ["stand-in-broker/execution"],
        "{result}"
    );
    assert!(signed["stand-in-broker/execution"].as_u64().unwrap() >= 3);
    let after = &result["after_end"];
    assert_eq!(after["broker-introspect"], "revoked: revoked", "{result}");
    assert_eq!(after["api-genuine"], 200, "{result}");
    assert_eq!(after["api-edited-claims"], 403, "{result}");
    assert_eq!(after["api-stranger-key"], 403, "{result}");
    // The task's environment: the allow-list, nothing of the supervisor's.
    let names: Vec<&str> = report["env_names"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n.as_str())
        .collect();
    assert!(!names.contains(&"SUPERVISOR_ONLY"), "{names:?}");
    assert!(!names.contains(&"BULKHEAD_REGISTRATION"), "{names:?}");
}
