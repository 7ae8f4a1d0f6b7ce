//! The keys that sign workload tokens (the executor's side: in Airflow, the scheduler signs
//! them with the API server's keys), read from the node config at start.

use std::collections::HashMap;

use anyhow::Context;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm};

use super::{
    config::BrokerSection,
    verify::{TrustedKey, Verifier},
};
use crate::keys::{
    file::{read_private, read_trusted},
    material::{SigningAlgorithm, SigningKey},
};

/// A JWKS file larger than this is not a key set.
const MAX_JWKS_BYTES: u64 = 1024 * 1024;

/// The verifier for workload tokens, or `None` where the node only allows local issuing.
pub fn workload_verifier(config: &BrokerSection) -> anyhow::Result<Option<Verifier>> {
    let keys = if let Some(path) = &config.workload.jwks_file {
        let path = path.as_path();
        let bytes = read_trusted(path, MAX_JWKS_BYTES)?;
        let keys = trusted_keys(&bytes, config.workload.algorithm)
            .with_context(|| format!("{}", path.display()))?;
        (keys, None)
    } else if let Some(path) = &config.workload.secret_file {
        let path = path.as_path();
        let secret = read_private(path)?;
        let key = SigningKey::parse(&secret, SigningAlgorithm::HS512)
            .map_err(|err| anyhow::anyhow!("{}: {err}", path.display()))?;
        let kid = key.kid().to_owned();
        let trusted = TrustedKey {
            algorithm: SigningAlgorithm::HS512.jwt(),
            key: key.decoding_key().clone(),
        };
        (HashMap::from([(kid.clone(), trusted)]), Some(kid))
    } else {
        return Ok(None);
    };
    let (keys, lone_secret) = keys;
    let verifier = Verifier::new(
        keys,
        config.workload_audience().to_owned(),
        config.workload.issuer.clone(),
    );
    Ok(Some(match lone_secret {
        Some(kid) => verifier.with_lone_secret(kid),
        None => verifier,
    }))
}

/// The keys of a JWKS. Each must name its `kid`, taken as given (Airflow's kids are a hash of
/// its own JWK dict, not the RFC 7638 thumbprint), and serve an algorithm the broker supports,
/// so the algorithm is the key's, never the token's choice; anything else stops the agent.
///
/// A key without `"alg"` (Airflow writes none) serves `unnamed`: the configured
/// `[broker.workload] algorithm` (Airflow's `[api_auth] jwt_algorithm`), or what Airflow's
/// `GUESS` picks for its type: RS256 for RSA, EdDSA for Ed25519.
pub fn trusted_keys(
    jwks: &[u8],
    unnamed: Option<SigningAlgorithm>,
) -> anyhow::Result<HashMap<String, TrustedKey>> {
    let set: JwkSet = serde_json::from_slice(jwks).context("not a JWKS (RFC 7517 key set)")?;
    if set.keys.is_empty() {
        anyhow::bail!("the JWKS holds no keys");
    }
    let mut keys = HashMap::new();
    for (index, jwk) in set.keys.iter().enumerate() {
        let kid = jwk
            .common
            .key_id
            .clone()
            .with_context(|| format!("key {index} has no kid"))?;
        let algorithm = key_algorithm(jwk, unnamed).with_context(|| format!("key {kid:?}"))?;
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk)
            .with_context(|| format!("key {kid:?} is not a usable public key"))?;
        if keys
            .insert(
                kid.clone(),
                TrustedKey {
                    algorithm: algorithm.jwt(),
                    key,
                },
            )
            .is_some()
        {
            anyhow::bail!("kid {kid:?} appears twice");
        }
    }
    Ok(keys)
}

/// The one algorithm a JWKS key verifies: its `"alg"`, else `unnamed`, else Airflow's guess
/// from its type. A named algorithm that disagrees with the configured one is refused: one of
/// the two is a mistake, and guessing which would accept tokens the operator did not mean to.
fn key_algorithm(jwk: &Jwk, unnamed: Option<SigningAlgorithm>) -> anyhow::Result<SigningAlgorithm> {
    let named = match jwk.common.key_algorithm {
        None => None,
        Some(KeyAlgorithm::EdDSA) => Some(SigningAlgorithm::EdDSA),
        Some(KeyAlgorithm::RS256) => Some(SigningAlgorithm::RS256),
        Some(KeyAlgorithm::RS512) => Some(SigningAlgorithm::RS512),
        Some(other) => {
            anyhow::bail!("has algorithm {other:?}; workload keys serve EdDSA, RS256 or RS512")
        }
    };
    let by_type = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => KeyType::Rsa,
        AlgorithmParameters::OctetKeyPair(pair) if pair.curve == EllipticCurve::Ed25519 => {
            KeyType::Ed25519
        }
        _ => anyhow::bail!("is neither an RSA nor an Ed25519 public key"),
    };
    let algorithm = match (named, unnamed) {
        (Some(named), Some(configured)) if named != configured => anyhow::bail!(
            "names \"alg\": {named:?} but [broker.workload] algorithm is {configured:?}; \
             remove one of them"
        ),
        (Some(named), _) => named,
        (None, Some(configured)) => configured,
        (None, None) => match by_type {
            KeyType::Rsa => SigningAlgorithm::RS256,
            KeyType::Ed25519 => SigningAlgorithm::EdDSA,
        },
    };
    let fits = match by_type {
        KeyType::Rsa => matches!(algorithm, SigningAlgorithm::RS256 | SigningAlgorithm::RS512),
        KeyType::Ed25519 => algorithm == SigningAlgorithm::EdDSA,
    };
    if !fits {
        anyhow::bail!("is an {by_type:?} key, which cannot verify {algorithm:?}");
    }
    Ok(algorithm)
}

#[derive(Debug, Clone, Copy)]
enum KeyType {
    Rsa,
    Ed25519,
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::{Value, json};

    use super::*;
    use crate::{
        broker::{
            claims::{DEFAULT_AUDIENCE, Scope},
            verify::VerifyError,
        },
        config::NodeConfig,
        keys::generate::generate,
    };

    const SUB: &str = "0196a1b2-0000-7000-8000-0000000000c1";

    fn key(algorithm: SigningAlgorithm) -> SigningKey {
        SigningKey::parse(generate(algorithm, 2048).unwrap().as_bytes(), algorithm).unwrap()
    }

    /// The public JWK as Airflow's `key_to_jwk_dict` writes it: no `"alg"`, the RSA one with
    /// `key_ops`, and a `kid` of Airflow's own making.
    fn airflow_jwk(key: &SigningKey, kid: &str) -> Value {
        let mut jwk = serde_json::to_value(key.public_jwk().unwrap()).unwrap();
        let members = jwk.as_object_mut().unwrap();
        members.remove("alg");
        members.remove("use");
        if key.algorithm() != SigningAlgorithm::EdDSA {
            members.insert("key_ops".into(), json!(["verify"]));
        }
        members.insert("kid".into(), json!(kid));
        jwk
    }

    fn jwks(keys: &[Value]) -> Vec<u8> {
        serde_json::to_vec(&json!({ "keys": keys })).unwrap()
    }

    fn workload_token(alg: Algorithm, kid: Option<&str>, key: &EncodingKey) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        let now = super::super::service::now();
        let claims = json!({
            "aud": DEFAULT_AUDIENCE, "sub": SUB, "scope": "workload",
            "iat": now, "nbf": now, "exp": now + 600,
            "jti": "9f1c2b3a4d5e6f708192a3b4c5d6e7f8",
        });
        jsonwebtoken::encode(&header, &claims, key).unwrap()
    }

    fn verifier(keys: HashMap<String, TrustedKey>) -> Verifier {
        Verifier::new(keys, DEFAULT_AUDIENCE.to_owned(), None)
    }

    #[test]
    fn keys_without_alg_serve_what_airflow_guesses_and_keep_their_kid() {
        let rsa = key(SigningAlgorithm::RS256);
        let ed = key(SigningAlgorithm::EdDSA);
        let set = jwks(&[
            airflow_jwk(&rsa, "airflow-rsa"),
            airflow_jwk(&ed, "airflow-ed"),
        ]);
        let keys = trusted_keys(&set, None).unwrap();
        assert_eq!(keys["airflow-rsa"].algorithm, Algorithm::RS256);
        assert_eq!(keys["airflow-ed"].algorithm, Algorithm::EdDSA);
        let verifier = verifier(keys);
        for (alg, kid, key) in [
            (Algorithm::RS256, "airflow-rsa", &rsa),
            (Algorithm::EdDSA, "airflow-ed", &ed),
        ] {
            let token = workload_token(alg, Some(kid), key.encoding_key());
            let claims = verifier.verify(&token, Scope::Workload).unwrap();
            assert_eq!(claims.sub, SUB);
        }
        // The control: the same RSA key under another algorithm than the one it serves.
        let token = workload_token(Algorithm::RS512, Some("airflow-rsa"), rsa.encoding_key());
        assert_eq!(
            verifier.verify(&token, Scope::Workload).unwrap_err(),
            VerifyError::AlgorithmMismatch
        );
    }

    #[test]
    fn a_configured_algorithm_names_what_unnamed_keys_serve() {
        let rsa = key(SigningAlgorithm::RS512);
        let set = jwks(&[airflow_jwk(&rsa, "k")]);
        let keys = trusted_keys(&set, Some(SigningAlgorithm::RS512)).unwrap();
        assert_eq!(keys["k"].algorithm, Algorithm::RS512);
        let token = workload_token(Algorithm::RS512, Some("k"), rsa.encoding_key());
        assert!(verifier(keys).verify(&token, Scope::Workload).is_ok());
    }

    #[test]
    fn keys_whose_algorithm_cannot_be_theirs_are_refused_with_the_reason() {
        let rsa = key(SigningAlgorithm::RS256);
        let ed = key(SigningAlgorithm::EdDSA);
        let mut named = airflow_jwk(&rsa, "named");
        named["alg"] = json!("RS256");
        for (set, unnamed, expected) in [
            (
                jwks(&[named]),
                Some(SigningAlgorithm::RS512),
                "remove one of them",
            ),
            (
                jwks(&[airflow_jwk(&ed, "ed")]),
                Some(SigningAlgorithm::RS512),
                "cannot verify RS512",
            ),
            (
                jwks(&[json!({"kty": "EC", "crv": "P-256", "kid": "ec",
                    "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                    "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"})]),
                None,
                "neither an RSA nor an Ed25519",
            ),
        ] {
            let Err(err) = trusted_keys(&set, unnamed) else {
                panic!("accepted; expected {expected}");
            };
            let err = format!("{err:#}");
            assert!(err.contains(expected), "{err}");
        }
    }

    #[test]
    fn a_lone_secret_verifies_whatever_kid_airflow_writes() {
        let dir = tempfile::tempdir().unwrap();
        let secret = generate(SigningAlgorithm::HS512, 0).unwrap();
        let path = dir.path().join("jwt_secret");
        std::fs::write(&path, secret.as_bytes()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let config = NodeConfig::parse(&format!(
            "[broker]\nenabled = true\n[broker.workload]\nsecret_file = {:?}\n",
            path.display().to_string()
        ))
        .unwrap();
        let verifier = workload_verifier(&config.broker).unwrap().unwrap();
        let parsed = SigningKey::parse(secret.as_bytes(), SigningAlgorithm::HS512).unwrap();
        let honest = parsed.encoding_key();
        // Airflow 3.3 writes "not-used"; earlier versions, none; `[api_auth] jwt_kid`, its own.
        for kid in [Some("not-used"), None, Some("operator-kid")] {
            let token = workload_token(Algorithm::HS512, kid, honest);
            assert_eq!(
                verifier.verify(&token, Scope::Workload).unwrap().sub,
                SUB,
                "{kid:?}"
            );
        }
        let other = EncodingKey::from_secret(b"another secret of enough length for hs512 use");
        let forged = workload_token(Algorithm::HS512, Some("not-used"), &other);
        assert!(matches!(
            verifier.verify(&forged, Scope::Workload),
            Err(VerifyError::Invalid(_))
        ));
        let weaker = workload_token(Algorithm::HS256, Some("not-used"), honest);
        assert!(verifier.verify(&weaker, Scope::Workload).is_err());
    }
}
