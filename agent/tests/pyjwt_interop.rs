//! Interop with a validator nobody here wrote: broker tokens of every algorithm validated by
//! PyJWT (from PyPI) configured as Airflow's JWTValidator is, keys from the broker's JWKS.
//!
//! Needs a Python with PyJWT and cryptography: `cargo xtask test` builds one and runs this with
//! `--ignored` and BULKHEAD_PYJWT_PYTHON set.

use std::{path::PathBuf, process::Command, sync::Arc, time::Duration};

use bulkhead::{
    broker::{
        claims::{DEFAULT_AUDIENCE, Scope},
        mint::{Issued, IssuedRegistry, Minter},
    },
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

#[test]
#[ignore = "needs PyJWT from PyPI: run through `cargo xtask test`"]
fn pyjwt_validates_broker_tokens_like_airflow_does() {
    let python = std::env::var("BULKHEAD_PYJWT_PYTHON")
        .expect("BULKHEAD_PYJWT_PYTHON: a python with PyJWT (cargo xtask test sets it)");
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/interop/pyjwt_validate.py");
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
        let output = Command::new(&python)
            .arg(&script)
            .args([&keys, &name, DEFAULT_AUDIENCE])
            .arg(&token_file)
            .arg(sub)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "PyJWT refused the {name} token: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        println!("{}", String::from_utf8_lossy(&output.stdout).trim());
    }
}
