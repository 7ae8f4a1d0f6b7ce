//! The token broker end to end (issue 4, section 4): a supervisor registers its child with an
//! executor-signed workload token, the child is sealed, the supervisor mints an execution
//! token; the task cannot read it out of the supervisor, mint, or register; its exit ends the
//! domain and revokes the token. Registration with a token the broker must not trust seals
//! nothing.

use std::{sync::Arc, time::Duration};

use bulkhead::{
    broker::{
        claims::{DEFAULT_AUDIENCE, Scope},
        mint::{Issued, IssuedRegistry, Minter},
    },
    keys::{
        file::read_private,
        generate::generate,
        material::{SigningAlgorithm, SigningKey},
    },
};

use crate::{
    access::Outcome,
    fixtures::EXECUTOR_KEY,
    harness::Suite,
    scenarios::{expect, run_helper},
};

pub fn add(suite: &mut Suite<'_>) {
    suite.add("broker:register-mint-task-cannot-steal-end-revokes", || {
        let token = workload_token(
            executor_key()?,
            "0196a1b2-0000-7000-8000-0000000000e2",
            Scope::Workload,
        )?;
        expect(
            run_helper(false, "", &["supervise", &token], &[]),
            Outcome::Allowed,
        )
    });
    suite.add(
        "broker:exec-registration-taken-only-by-the-supervisors-child",
        || {
            let token = workload_token(
                executor_key()?,
                "0196a1b2-0000-7000-8000-0000000000e5",
                Scope::Workload,
            )?;
            expect(
                run_helper(false, "", &["supervise-exec", &token], &[]),
                Outcome::Allowed,
            )
        },
    );
    suite.add(
        "broker:workload-token-of-another-issuer-seals-nothing",
        || {
            let stranger = SigningKey::parse(
                generate(SigningAlgorithm::EdDSA, 2048)
                    .map_err(|e| e.to_string())?
                    .as_bytes(),
                SigningAlgorithm::EdDSA,
            )
            .map_err(|e| e.to_string())?;
            let token = workload_token(
                Arc::new(stranger),
                "0196a1b2-0000-7000-8000-0000000000e3",
                Scope::Workload,
            )?;
            registration_refused(&token)
        },
    );
    // Not a timed test: it prints a first latency figure and fails only if a request fails.
    suite.add("bench:broker-mint-introspect-latency", || {
        let token = workload_token(
            executor_key()?,
            "0196a1b2-0000-7000-8000-0000000000b1",
            Scope::Workload,
        )?;
        let output = std::process::Command::new(crate::scenarios::exe())
            .args(["helper", "broker-bench", &token, "30"])
            .output()
            .map_err(|e| e.to_string())?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).into_owned());
        }
        println!(
            "BULKHEAD-NOTE {}",
            String::from_utf8_lossy(&output.stdout).trim()
        );
        Ok(())
    });
    suite.add(
        "bench:hook-cost-outside-and-inside-domains",
        crate::bench_hooks::hook_cost,
    );
    suite.add(
        "broker:jwks-listener-serves-the-sockets-keys-only",
        jwks_listener,
    );
    suite.add("broker:execution-token-cannot-register", || {
        let token = workload_token(
            executor_key()?,
            "0196a1b2-0000-7000-8000-0000000000e4",
            Scope::Execution,
        )?;
        registration_refused(&token)
    });
}

/// Where tests/vm/node.toml has the agent publish its JWKS over TCP.
const JWKS_LISTEN: &str = "127.0.0.1:8765";

/// The JWKS an API server fetches over TCP is the one the local socket gives, and the listener
/// answers no other route.
fn jwks_listener() -> Result<(), String> {
    let over_tcp = |path: &str| -> Result<(String, String), String> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(JWKS_LISTEN)
            .map_err(|err| format!("{JWKS_LISTEN}: {err}"))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n"
        )
        .map_err(|err| err.to_string())?;
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .map_err(|err| err.to_string())?;
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        Ok((
            head.lines().next().unwrap_or_default().to_owned(),
            body.to_owned(),
        ))
    };
    let (status, body) = over_tcp("/.well-known/jwks.json")?;
    if !status.contains("200") {
        return Err(format!("JWKS over TCP: {status}"));
    }
    let published: serde_json::Value =
        serde_json::from_str(&body).map_err(|err| err.to_string())?;
    let local: serde_json::Value = crate::broker_helpers::client()
        .get(bulkhead::api::wire::PATH_JWKS)
        .map_err(|err| err.to_string())?;
    if published != local || published["keys"].as_array().is_none_or(Vec::is_empty) {
        return Err(format!(
            "JWKS over TCP {published} differs from the socket's {local}"
        ));
    }
    for path in ["/v1/status", "/v1/tasks", "/v1/domains"] {
        let (status, _) = over_tcp(path)?;
        if !status.contains("404") {
            return Err(format!("{path} over the JWKS listener: {status}"));
        }
    }
    Ok(())
}

/// A supervisor presenting the workload token in file `token` is refused and seals nothing.
fn registration_refused(token: &str) -> Result<(), String> {
    expect(
        run_helper(
            false,
            "",
            &["register-refused", token, "invalid_workload_token"],
            &[],
        ),
        Outcome::Denied,
    )
}

pub(crate) fn executor_key() -> Result<Arc<SigningKey>, String> {
    let pem = read_private(std::path::Path::new(EXECUTOR_KEY)).map_err(|e| e.to_string())?;
    SigningKey::parse(&pem, SigningAlgorithm::EdDSA)
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

/// The executor's side: a workload token never recorded by the broker.
struct NotRecorded;
impl IssuedRegistry for NotRecorded {
    fn record(&self, _: &Issued) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Signs a token as the executor would.
pub(crate) fn sign_as_executor(
    key: Arc<SigningKey>,
    sub: &str,
    scope: Scope,
) -> Result<String, String> {
    let minter = Minter {
        key,
        audience: DEFAULT_AUDIENCE.to_owned(),
        issuer: None,
        lifetime: Duration::from_secs(3600),
    };
    let (token, _) = minter
        .mint(scope, sub, 0, &NotRecorded)
        .map_err(|e| e.to_string())?;
    Ok(token.to_string())
}

/// Signs a token as the executor would and writes it to a file; returns the file's path.
fn workload_token(key: Arc<SigningKey>, sub: &str, scope: Scope) -> Result<String, String> {
    let token = sign_as_executor(key, sub, scope)?;
    let path = format!("/tmp/workload-{sub}-{}.jwt", scope.as_str());
    std::fs::write(&path, token.as_bytes()).map_err(|e| e.to_string())?;
    Ok(path)
}
