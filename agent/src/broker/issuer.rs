//! The keys that sign workload tokens (the executor's side: in Airflow, the scheduler signs
//! them with the API server's keys), read from the node config at start.

use std::collections::HashMap;

use anyhow::Context;
use jsonwebtoken::jwk::{JwkSet, KeyAlgorithm};

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
        let keys = trusted_keys(&bytes).with_context(|| format!("{}", path.display()))?;
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
    let (keys, keyless) = keys;
    let verifier = Verifier::new(
        keys,
        config.workload_audience().to_owned(),
        config.workload.issuer.clone(),
    );
    Ok(Some(match keyless {
        Some(kid) => verifier.accepting_no_kid_for(kid),
        None => verifier,
    }))
}

/// The keys of a JWKS. Each must name its `kid` and an algorithm the broker supports, so the
/// algorithm is the key's, never the token's choice; anything else stops the agent.
pub fn trusted_keys(jwks: &[u8]) -> anyhow::Result<HashMap<String, TrustedKey>> {
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
        let algorithm = match jwk.common.key_algorithm {
            Some(KeyAlgorithm::EdDSA) => SigningAlgorithm::EdDSA,
            Some(KeyAlgorithm::RS256) => SigningAlgorithm::RS256,
            Some(KeyAlgorithm::RS512) => SigningAlgorithm::RS512,
            other => anyhow::bail!(
                "key {kid:?} has algorithm {other:?}; expected \"alg\": EdDSA, RS256 or RS512"
            ),
        };
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
