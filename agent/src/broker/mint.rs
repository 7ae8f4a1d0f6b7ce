//! Minting tokens: Airflow-compatible claims, a fresh `jti`, and the `jti` made durable before
//! the token exists outside this function.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use bulkhead_common::DomainId;
use jsonwebtoken::Header;
use zeroize::Zeroizing;

use super::claims::{Claims, Scope};
use crate::keys::material::SigningKey;

/// Default lifetime of an execution token.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(600);

/// What the broker remembers of every token it hands out.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Issued {
    pub jti: String,
    pub domain: DomainId,
    pub sub: String,
    pub exp: u64,
}

/// Where issued `jti`s are recorded, durably, before a token is handed out.
pub trait IssuedRegistry: Send + Sync {
    fn record(&self, issued: &Issued) -> anyhow::Result<()>;
}

#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("the system random source failed")]
    Random,
    #[error("signing failed: {0}")]
    Sign(String),
    #[error("the token could not be recorded durably, so it was not issued: {0}")]
    NotDurable(String),
}

pub struct Minter {
    pub key: Arc<SigningKey>,
    pub audience: String,
    pub issuer: Option<String>,
    pub lifetime: Duration,
}

impl Minter {
    /// A signed token of `scope` for `sub`, bound to `domain`. The token is a secret: it is
    /// returned zeroizing, and its `jti` is recorded in `registry` first.
    pub fn mint(
        &self,
        scope: Scope,
        sub: &str,
        domain: DomainId,
        registry: &dyn IssuedRegistry,
    ) -> Result<(Zeroizing<String>, Claims), MintError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let claims = Claims {
            aud: self.audience.clone(),
            sub: sub.to_owned(),
            scope: scope.as_str().to_owned(),
            iat: now,
            nbf: now,
            exp: now + self.lifetime.as_secs(),
            jti: random_id()?,
            iss: self.issuer.clone(),
        };
        let mut header = Header::new(self.key.algorithm().jwt());
        header.kid = Some(self.key.kid().to_owned());
        let token = Zeroizing::new(
            jsonwebtoken::encode(&header, &claims, self.key.encoding_key())
                .map_err(|err| MintError::Sign(err.to_string()))?,
        );
        registry
            .record(&Issued {
                jti: claims.jti.clone(),
                domain,
                sub: claims.sub.clone(),
                exp: claims.exp,
            })
            .map_err(|err| MintError::NotDurable(format!("{err:#}")))?;
        Ok((token, claims))
    }
}

/// 128 random bits as 32 hex digits (the shape of Airflow's `uuid4().hex` jti): token ids, and
/// the ids of registrations waiting for a process.
pub(super) fn random_id() -> Result<String, MintError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| MintError::Random)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, sync::Mutex};

    use super::*;
    use crate::{
        broker::{
            claims::DEFAULT_AUDIENCE,
            verify::{TrustedKey, Verifier},
        },
        keys::{generate::generate, material::SigningAlgorithm},
    };

    #[derive(Default)]
    struct Registry {
        issued: Mutex<Vec<Issued>>,
        fail: bool,
    }

    impl IssuedRegistry for Registry {
        fn record(&self, issued: &Issued) -> anyhow::Result<()> {
            if self.fail {
                anyhow::bail!("disk full");
            }
            self.issued.lock().unwrap().push(issued.clone());
            Ok(())
        }
    }

    fn minter(algorithm: SigningAlgorithm) -> Minter {
        let key =
            SigningKey::parse(generate(algorithm, 2048).unwrap().as_bytes(), algorithm).unwrap();
        Minter {
            key: Arc::new(key),
            audience: DEFAULT_AUDIENCE.to_owned(),
            issuer: None,
            lifetime: DEFAULT_LIFETIME,
        }
    }

    #[test]
    fn minted_tokens_verify_carry_airflow_claims_and_are_recorded_first() {
        for algorithm in [
            SigningAlgorithm::EdDSA,
            SigningAlgorithm::RS256,
            SigningAlgorithm::RS512,
            SigningAlgorithm::HS512,
        ] {
            let minter = minter(algorithm);
            let registry = Registry::default();
            let sub = "0196a1b2-0000-7000-8000-000000000001";
            let (token, claims) = minter.mint(Scope::Execution, sub, 42, &registry).unwrap();
            assert_eq!(claims.exp - claims.iat, 600);
            assert_eq!(claims.nbf, claims.iat);
            assert_eq!(claims.jti.len(), 32);
            assert!(claims.jti.chars().all(|c| c.is_ascii_hexdigit()));
            let recorded = registry.issued.lock().unwrap().clone();
            assert_eq!(
                recorded,
                [Issued {
                    jti: claims.jti.clone(),
                    domain: 42,
                    sub: sub.to_owned(),
                    exp: claims.exp
                }]
            );
            let header = jsonwebtoken::decode_header(token.as_str()).unwrap();
            assert_eq!(header.kid.as_deref(), Some(minter.key.kid()));
            let verifier = Verifier::new(
                HashMap::from([(
                    minter.key.kid().to_owned(),
                    TrustedKey {
                        algorithm: algorithm.jwt(),
                        key: minter.key.decoding_key().clone(),
                    },
                )]),
                DEFAULT_AUDIENCE.to_owned(),
                None,
            );
            assert_eq!(verifier.verify(&token, Scope::Execution).unwrap(), claims);
        }
    }

    #[test]
    fn jtis_are_unique() {
        let minter = minter(SigningAlgorithm::EdDSA);
        let registry = Registry::default();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let (_, claims) = minter.mint(Scope::Execution, "s", 1, &registry).unwrap();
            assert!(seen.insert(claims.jti));
        }
    }

    #[test]
    fn no_token_without_a_durable_record() {
        let minter = minter(SigningAlgorithm::EdDSA);
        let registry = Registry {
            fail: true,
            ..Registry::default()
        };
        let err = minter
            .mint(Scope::Execution, "s", 1, &registry)
            .unwrap_err();
        assert!(matches!(err, MintError::NotDurable(_)), "{err}");
    }
}
