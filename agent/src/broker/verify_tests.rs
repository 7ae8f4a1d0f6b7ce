//! Every attack in the broker issue's list, each refused, next to the control that the same
//! token made honestly is accepted (so a verifier that refuses everything fails here).

use std::{
    collections::HashMap,
    time::{SystemTime, UNIX_EPOCH},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};

use super::{
    claims::{DEFAULT_AUDIENCE, Scope},
    verify::{TrustedKey, Verifier, VerifyError},
};
use crate::keys::{
    generate::generate,
    material::{SigningAlgorithm, SigningKey},
};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

struct Fixture {
    key: SigningKey,
    verifier: Verifier,
}

fn fixture(issuer: Option<&str>) -> Fixture {
    let key = SigningKey::parse(
        generate(SigningAlgorithm::EdDSA, 2048).unwrap().as_bytes(),
        SigningAlgorithm::EdDSA,
    )
    .unwrap();
    let trusted = HashMap::from([(
        key.kid().to_owned(),
        TrustedKey {
            algorithm: Algorithm::EdDSA,
            key: key.decoding_key().clone(),
        },
    )]);
    let verifier = Verifier::new(
        trusted,
        DEFAULT_AUDIENCE.to_owned(),
        issuer.map(str::to_owned),
    );
    Fixture { key, verifier }
}

fn claims(scope: &str) -> Value {
    let now = now();
    json!({
        "aud": DEFAULT_AUDIENCE,
        "sub": "0196a1b2-0000-7000-8000-000000000001",
        "scope": scope,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": "4f1e0c2a9d8b4e7f8a6b5c4d3e2f1a0b",
    })
}

/// Signs `header` and `claims` exactly as given (no library normalisation), with `key` under
/// `alg`; `alg` None leaves the signature empty.
fn forge(header: &Value, claims: &Value, key: Option<(&EncodingKey, Algorithm)>) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = match key {
        Some((key, alg)) => jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).unwrap(),
        None => String::new(),
    };
    format!("{message}.{signature}")
}

impl Fixture {
    fn header(&self) -> Value {
        json!({"alg": "EdDSA", "typ": "JWT", "kid": self.key.kid()})
    }

    fn sign(&self, header: &Value, claims: &Value) -> String {
        forge(
            header,
            claims,
            Some((self.key.encoding_key(), Algorithm::EdDSA)),
        )
    }

    fn honest(&self, claims: &Value) -> String {
        self.sign(&self.header(), claims)
    }

    fn check(&self, token: &str, scope: Scope) -> Result<(), VerifyError> {
        self.verifier.verify(token, scope).map(|_| ())
    }
}

fn invalid(result: Result<(), VerifyError>) -> bool {
    matches!(result, Err(VerifyError::Invalid(_)))
}

#[test]
fn control_an_honest_execution_token_is_accepted() {
    let f = fixture(None);
    let token = f.honest(&claims("execution"));
    let accepted = f.verifier.verify(&token, Scope::Execution).unwrap();
    assert_eq!(accepted.scope, "execution");
    assert_eq!(accepted.aud, DEFAULT_AUDIENCE);
}

#[test]
fn alg_none_in_every_spelling_is_refused() {
    let f = fixture(None);
    for none in ["none", "None", "NONE", "nOnE"] {
        let header = json!({"alg": none, "typ": "JWT", "kid": f.key.kid()});
        let token = forge(&header, &claims("execution"), None);
        assert_eq!(
            f.check(&token, Scope::Execution),
            Err(VerifyError::Algorithm(none.to_owned()))
        );
    }
}

#[test]
fn an_hmac_token_keyed_with_the_public_key_is_refused() {
    let f = fixture(None);
    let public_x = serde_json::to_value(f.key.public_jwk().unwrap()).unwrap()["x"]
        .as_str()
        .unwrap()
        .to_owned();
    let public_raw = URL_SAFE_NO_PAD.decode(&public_x).unwrap();
    for (alg, algorithm) in [("HS256", Algorithm::HS256), ("HS512", Algorithm::HS512)] {
        for secret in [public_raw.as_slice(), public_x.as_bytes()] {
            let header = json!({"alg": alg, "typ": "JWT", "kid": f.key.kid()});
            let token = forge(
                &header,
                &claims("execution"),
                Some((&EncodingKey::from_secret(secret), algorithm)),
            );
            let result = f.check(&token, Scope::Execution);
            assert!(
                matches!(
                    result,
                    Err(VerifyError::Algorithm(_) | VerifyError::AlgorithmMismatch)
                ),
                "{alg}: {result:?}"
            );
        }
    }
}

#[test]
fn unknown_missing_or_injected_kids_are_refused() {
    let f = fixture(None);
    for kid in [
        "not-a-kid",
        "../../../../etc/bulkhead/key.pem",
        "' OR '1'='1",
        "",
    ] {
        let header = json!({"alg": "EdDSA", "kid": kid});
        assert_eq!(
            f.check(&f.sign(&header, &claims("execution")), Scope::Execution),
            Err(VerifyError::UnknownKid),
            "{kid:?}"
        );
    }
    let header = json!({"alg": "EdDSA"});
    assert_eq!(
        f.check(&f.sign(&header, &claims("execution")), Scope::Execution),
        Err(VerifyError::NoKid)
    );
    let header = json!({"alg": "EdDSA", "kid": 7});
    assert!(matches!(
        f.check(&f.sign(&header, &claims("execution")), Scope::Execution),
        Err(VerifyError::Malformed(_))
    ));
}

#[test]
fn keys_offered_by_the_token_are_refused() {
    let f = fixture(None);
    let jwk = serde_json::to_value(f.key.public_jwk().unwrap()).unwrap();
    for (name, value) in [
        ("jku", json!("https://attacker.example/jwks.json")),
        ("x5u", json!("https://attacker.example/cert.pem")),
        ("jwk", jwk),
        ("x5c", json!(["MIIB"])),
        ("crit", json!(["exp"])),
    ] {
        let mut header = f.header();
        header[name] = value;
        assert_eq!(
            f.check(&f.sign(&header, &claims("execution")), Scope::Execution),
            Err(VerifyError::ForbiddenHeader(name.to_owned()))
        );
    }
}

#[test]
fn missing_or_string_typed_times_are_refused() {
    let f = fixture(None);
    for claim in ["exp", "nbf", "iat"] {
        let mut missing = claims("execution");
        missing.as_object_mut().unwrap().remove(claim);
        assert!(
            invalid(f.check(&f.honest(&missing), Scope::Execution)),
            "missing {claim}"
        );
        let mut stringly = claims("execution");
        stringly[claim] = json!(stringly[claim].to_string());
        assert!(
            invalid(f.check(&f.honest(&stringly), Scope::Execution)),
            "string {claim}"
        );
    }
}

#[test]
fn not_yet_valid_and_expired_tokens_are_refused_within_the_leeway_only() {
    let f = fixture(None);
    let mut future = claims("execution");
    future["nbf"] = json!(now() + 3600);
    assert!(invalid(f.check(&f.honest(&future), Scope::Execution)));
    let mut expired = claims("execution");
    expired["exp"] = json!(now() - 100);
    assert!(invalid(f.check(&f.honest(&expired), Scope::Execution)));
    // Controls: skew inside the 10 s leeway is tolerated.
    let mut skewed = claims("execution");
    skewed["nbf"] = json!(now() + 5);
    skewed["exp"] = json!(now() + 600);
    assert!(f.check(&f.honest(&skewed), Scope::Execution).is_ok());
    let mut just_expired = claims("execution");
    just_expired["exp"] = json!(now() - 3);
    assert!(f.check(&f.honest(&just_expired), Scope::Execution).is_ok());
}

#[test]
fn wrong_or_array_audiences_are_refused() {
    let f = fixture(None);
    for aud in [
        json!("urn:airflow.apache.org:other"),
        json!([DEFAULT_AUDIENCE]),
        json!([DEFAULT_AUDIENCE, "urn:x"]),
        json!(null),
    ] {
        let mut bad = claims("execution");
        bad["aud"] = aud.clone();
        assert!(invalid(f.check(&f.honest(&bad), Scope::Execution)), "{aud}");
    }
}

#[test]
fn issuers_must_match_the_configuration_exactly() {
    let with_issuer = fixture(Some("bulkhead:worker-7"));
    let mut good = claims("execution");
    good["iss"] = json!("bulkhead:worker-7");
    assert!(
        with_issuer
            .check(&with_issuer.honest(&good), Scope::Execution)
            .is_ok()
    );
    let mut wrong = claims("execution");
    wrong["iss"] = json!("bulkhead:worker-8");
    assert!(invalid(
        with_issuer.check(&with_issuer.honest(&wrong), Scope::Execution)
    ));
    assert!(invalid(with_issuer.check(
        &with_issuer.honest(&claims("execution")),
        Scope::Execution
    )));
    let without = fixture(None);
    let mut stray = claims("execution");
    stray["iss"] = json!("somewhere-else");
    assert!(invalid(
        without.check(&without.honest(&stray), Scope::Execution)
    ));
}

#[test]
fn scopes_are_not_interchangeable() {
    let f = fixture(None);
    let workload = f.honest(&claims("workload"));
    let execution = f.honest(&claims("execution"));
    assert!(matches!(
        f.check(&workload, Scope::Execution),
        Err(VerifyError::Scope { .. })
    ));
    assert!(matches!(
        f.check(&execution, Scope::Workload),
        Err(VerifyError::Scope { .. })
    ));
    assert!(f.check(&workload, Scope::Workload).is_ok());
    let mut unscoped = claims("execution");
    unscoped.as_object_mut().unwrap().remove("scope");
    assert!(invalid(f.check(&f.honest(&unscoped), Scope::Execution)));
}

#[test]
fn a_tampered_payload_or_a_foreign_key_is_refused() {
    let f = fixture(None);
    let token = f.honest(&claims("execution"));
    let mut parts: Vec<&str> = token.split('.').collect();
    let mut tampered = claims("execution");
    tampered["sub"] = json!("0196a1b2-0000-7000-8000-000000000002");
    let payload = URL_SAFE_NO_PAD.encode(tampered.to_string());
    parts[1] = &payload;
    assert!(invalid(f.check(&parts.join("."), Scope::Execution)));

    let other = fixture(None);
    let foreign = forge(
        &f.header(),
        &claims("execution"),
        Some((other.key.encoding_key(), Algorithm::EdDSA)),
    );
    assert!(invalid(f.check(&foreign, Scope::Execution)));
}

#[test]
fn malformed_tokens_are_refused_without_panicking() {
    let f = fixture(None);
    for token in [
        "",
        ".",
        "..",
        "a.b",
        "a.b.c.d",
        "!!!.e30.",
        "e30.e30.",
        "bnVsbA.e30.x",
    ] {
        assert!(f.check(token, Scope::Execution).is_err(), "{token:?}");
    }
}

/// Refusals are logged: a token's own text comes back cut short and escaped, never whole and
/// never with a line break (the `token_parsing` fuzz target found a 700-byte `alg` echoed).
#[test]
fn errors_repeat_little_of_the_token_and_no_line_breaks() {
    let f = fixture(None);
    let long_alg = format!("HS512\n{}", "A".repeat(10_000));
    let token = forge(&json!({"alg": long_alg}), &claims("execution"), None);
    let long_scope = forge(
        &f.header(),
        &claims(&format!("execution\r\n{}", "B".repeat(10_000))),
        Some((f.key.encoding_key(), Algorithm::EdDSA)),
    );
    let mut string_exp = claims("execution");
    string_exp["exp"] = json!(format!("1\n{}", "C".repeat(10_000)));
    let string_exp = forge(
        &f.header(),
        &string_exp,
        Some((f.key.encoding_key(), Algorithm::EdDSA)),
    );
    for (token, refusal) in [
        (token, "algorithm"),
        (long_scope, "scope"),
        (string_exp, "invalid token"),
    ] {
        let text = f.check(&token, Scope::Execution).unwrap_err().to_string();
        assert!(text.starts_with(refusal), "{text}");
        assert!(text.len() <= 200, "{} bytes: {text:.300}", text.len());
        assert!(!text.chars().any(char::is_control), "{text:?}");
    }
}
