//! One JWKS for a fleet. Airflow's API server trusts one `[api_auth] trusted_jwks_url`, while
//! each node's broker signs with keys of its own; the operator collects every node's published
//! keys (`bulkhead keys export-jwks`, or the optional JWKS listener) and combines them here.
//!
//! Combining is where a mistake would be silent, so it refuses instead: a key without a `kid`
//! (Airflow finds keys by it), private key material (a file that is not a published set), a
//! shared secret, and one `kid` for two different keys (Airflow would verify one node's tokens
//! with the other's key). The same key published by two sets is kept once.

use std::collections::BTreeMap;

use anyhow::Context;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet};

/// JWK members that only private keys have (RFC 7518 section 6).
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// Every key of `sets` (named for errors), each `kid` once, in `kid` order.
pub fn combine(sets: &[(String, Vec<u8>)]) -> anyhow::Result<JwkSet> {
    let mut keys: BTreeMap<String, (Jwk, &str)> = BTreeMap::new();
    for (name, bytes) in sets {
        for jwk in public_keys(bytes).with_context(|| name.clone())? {
            let kid = jwk
                .common
                .key_id
                .clone()
                .expect("public_keys checked the kid");
            match keys.get(&kid) {
                Some((seen, _)) if *seen == jwk => {}
                Some((_, first)) => anyhow::bail!(
                    "kid {kid:?} names different keys in {first} and {name}; every node's keys \
                     need kids of their own"
                ),
                None => {
                    keys.insert(kid, (jwk, name));
                }
            }
        }
    }
    Ok(JwkSet {
        keys: keys.into_values().map(|(jwk, _)| jwk).collect(),
    })
}

/// The keys of one published set, each checked to be a public key with a `kid`.
fn public_keys(bytes: &[u8]) -> anyhow::Result<Vec<Jwk>> {
    // The raw members first: the typed JWK would silently drop a private part.
    let raw: serde_json::Value = serde_json::from_slice(bytes).context("not JSON")?;
    let members = raw
        .get("keys")
        .and_then(|keys| keys.as_array())
        .context("not a JWKS: no \"keys\" array")?;
    for (index, key) in members.iter().enumerate() {
        if let Some(private) = PRIVATE_MEMBERS
            .iter()
            .find(|member| key.get(**member).is_some())
        {
            anyhow::bail!(
                "key {index} has the private member {private:?}: only published (public) keys \
                 belong in a JWKS"
            );
        }
    }
    let set: JwkSet = serde_json::from_value(raw).context("not a JWKS (RFC 7517 key set)")?;
    for (index, jwk) in set.keys.iter().enumerate() {
        if jwk.common.key_id.is_none() {
            anyhow::bail!("key {index} has no kid");
        }
        if !matches!(
            jwk.algorithm,
            AlgorithmParameters::RSA(_) | AlgorithmParameters::OctetKeyPair(_)
        ) {
            anyhow::bail!("key {index} is neither an RSA nor an Ed25519 public key");
        }
    }
    Ok(set.keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{
        generate::generate,
        material::{SigningAlgorithm, SigningKey},
    };

    fn published(algorithm: SigningAlgorithm) -> (String, serde_json::Value) {
        let key =
            SigningKey::parse(generate(algorithm, 2048).unwrap().as_bytes(), algorithm).unwrap();
        let jwk = serde_json::to_value(key.public_jwk().unwrap()).unwrap();
        (key.kid().to_owned(), jwk)
    }

    fn set(keys: &[&serde_json::Value]) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "keys": keys })).unwrap()
    }

    #[test]
    fn every_nodes_keys_once_each() {
        let (kid_a, a) = published(SigningAlgorithm::EdDSA);
        let (kid_b, b) = published(SigningAlgorithm::RS256);
        let (kid_c, c) = published(SigningAlgorithm::EdDSA);
        let combined = combine(&[
            ("node-1".into(), set(&[&a, &b])),
            // A key both sets publish (a node exported twice, or a shared key).
            ("node-2".into(), set(&[&c, &a])),
        ])
        .unwrap();
        let mut kids: Vec<_> = combined
            .keys
            .iter()
            .map(|jwk| jwk.common.key_id.clone().unwrap())
            .collect();
        let mut expected = vec![kid_a, kid_b, kid_c];
        expected.sort();
        kids.sort();
        assert_eq!(kids, expected);
    }

    #[test]
    fn mistakes_are_refused_naming_the_set() {
        let (kid, a) = published(SigningAlgorithm::EdDSA);
        let (_, mut other) = published(SigningAlgorithm::EdDSA);
        other["kid"] = serde_json::json!(kid);
        let mut private = a.clone();
        private["d"] = serde_json::json!("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A");
        let mut kidless = a.clone();
        kidless.as_object_mut().unwrap().remove("kid");
        let secret = serde_json::json!({"kty": "oct", "kid": "s", "k": "c2VjcmV0"});
        for (second, expected) in [
            (set(&[&other]), "names different keys"),
            (set(&[&private]), "private member \"d\""),
            (set(&[&kidless]), "has no kid"),
            (set(&[&secret]), "private member \"k\""),
            (b"{\"keys\": 3}".to_vec(), "no \"keys\" array"),
        ] {
            let err =
                combine(&[("node-1".into(), set(&[&a])), ("node-2".into(), second)]).unwrap_err();
            let err = format!("{err:#}");
            assert!(err.contains(expected) && err.contains("node-2"), "{err}");
        }
    }
}
