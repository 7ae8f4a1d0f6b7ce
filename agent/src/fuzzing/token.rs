//! Fuzz target `token_parsing`: one token, judged by the broker's verifier.
//!
//! The first input byte picks how the rest becomes a token:
//! - `Foreign`: the rest is the token text itself (what an attacker can send unaided);
//! - `Trusted(key)`: the rest is `header JSON \0 claims JSON`, signed here with one of the
//!   verifier's trusted keys, so the fuzzer reaches the header and claims checks that run
//!   after a good signature (an attacker who holds no key cannot get there; a bug there is
//!   reachable only with a key, or with a signature bug, but it must still be found);
//! - `Untrusted`: the same, signed with a key the verifier does not trust.
//!
//! Keys are made fresh per process; nothing here is a fixed secret.

use std::{
    collections::HashMap,
    sync::OnceLock,
    time::{SystemTime, UNIX_EPOCH},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};

use crate::{
    broker::{
        claims::{Claims, DEFAULT_AUDIENCE, Scope},
        verify::{LEEWAY_SECS, TrustedKey, Verifier, VerifyError},
    },
    keys::{
        generate::generate,
        material::{SigningAlgorithm, SigningKey},
    },
};

/// The `kid`s the keyed verifier trusts; short, so the fuzzer finds them.
pub const SHARED_SECRET_KID: &str = "k1";
pub const ED25519_KID: &str = "k2";
/// The issuer the keyed verifier requires (the lone-secret one requires none).
pub const ISSUER: &str = "bulkhead-fuzz";

/// Longest verification error accepted: errors are logged, and an error that echoes its input
/// would let a caller write what it likes into the agent's log.
const MAX_ERROR_LEN: usize = 200;

struct Keys {
    shared_secret: EncodingKey,
    ed25519: SigningKey,
    untrusted_secret: EncodingKey,
    /// Trusts both keys by kid, requires [`ISSUER`].
    keyed: Verifier,
    /// Trusts the shared secret alone, also without a kid (Airflow's `jwt_secret`), no issuer.
    lone_secret: Verifier,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let secret = random_secret();
        let ed25519 = SigningKey::parse(
            generate(SigningAlgorithm::EdDSA, 2048)
                .expect("Ed25519 key generation")
                .as_bytes(),
            SigningAlgorithm::EdDSA,
        )
        .expect("a generated key parses");
        let shared = || TrustedKey {
            algorithm: Algorithm::HS512,
            key: DecodingKey::from_secret(&secret),
        };
        let keyed = Verifier::new(
            HashMap::from([
                (SHARED_SECRET_KID.to_owned(), shared()),
                (
                    ED25519_KID.to_owned(),
                    TrustedKey {
                        algorithm: Algorithm::EdDSA,
                        key: ed25519.decoding_key().clone(),
                    },
                ),
            ]),
            DEFAULT_AUDIENCE.to_owned(),
            Some(ISSUER.to_owned()),
        );
        let lone_secret = Verifier::new(
            HashMap::from([(SHARED_SECRET_KID.to_owned(), shared())]),
            DEFAULT_AUDIENCE.to_owned(),
            None,
        )
        .with_lone_secret(SHARED_SECRET_KID.to_owned());
        Keys {
            shared_secret: EncodingKey::from_secret(&secret),
            ed25519,
            untrusted_secret: EncodingKey::from_secret(&random_secret()),
            keyed,
            lone_secret,
        }
    })
}

fn random_secret() -> [u8; 64] {
    let mut secret = [0u8; 64];
    aws_lc_rs::rand::fill(&mut secret).expect("system randomness");
    secret
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Origin {
    Foreign,
    SharedSecret,
    Ed25519,
    Untrusted,
}

/// Judges one fuzz input (see the module comment for its layout); returns how many of the
/// four verifications (two verifiers, two scopes) accepted it, so the corpus replay can show
/// that the checks on accepted tokens ran.
pub fn parse_token(data: &[u8]) -> usize {
    let Some((&selector, rest)) = data.split_first() else {
        return 0;
    };
    let origin = match selector % 4 {
        0 => Origin::Foreign,
        1 => Origin::SharedSecret,
        2 => Origin::Ed25519,
        _ => Origin::Untrusted,
    };
    let keys = keys();
    let (token, header) = match origin {
        Origin::Foreign => (String::from_utf8_lossy(rest).into_owned(), None),
        signed => {
            let (header, claims) = match rest.iter().position(|&byte| byte == 0) {
                Some(at) => (&rest[..at], &rest[at + 1..]),
                None => (rest, &[][..]),
            };
            let (key, algorithm) = match signed {
                Origin::SharedSecret => (&keys.shared_secret, Algorithm::HS512),
                Origin::Ed25519 => (keys.ed25519.encoding_key(), Algorithm::EdDSA),
                _ => (&keys.untrusted_secret, Algorithm::HS512),
            };
            (sign(header, claims, key, algorithm), Some(header))
        }
    };
    let mut accepted = 0;
    for (verifier, issuer, lone_secret) in [
        (&keys.keyed, Some(ISSUER), false),
        (&keys.lone_secret, None, true),
    ] {
        for scope in [Scope::Workload, Scope::Execution] {
            match verifier.verify(&token, scope) {
                Ok(claims) => {
                    let expected = Expected {
                        origin,
                        header,
                        issuer,
                        lone_secret,
                        scope,
                    };
                    expected.check(&claims);
                    accepted += 1;
                }
                Err(err) => check_error(&err),
            }
        }
    }
    accepted
}

fn sign(header: &[u8], claims: &[u8], key: &EncodingKey, algorithm: Algorithm) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), key, algorithm).expect("signing");
    format!("{message}.{signature}")
}

/// What an accepted token must have been.
struct Expected<'a> {
    origin: Origin,
    header: Option<&'a [u8]>,
    issuer: Option<&'static str>,
    lone_secret: bool,
    scope: Scope,
}

impl Expected<'_> {
    fn check(&self, claims: &Claims) {
        let (signed_by, algorithm) = match self.origin {
            Origin::SharedSecret => (SHARED_SECRET_KID, "HS512"),
            Origin::Ed25519 if !self.lone_secret => (ED25519_KID, "EdDSA"),
            origin => panic!("a token from {origin:?} verified: {claims:?}"),
        };
        let header: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(self.header.expect("signed tokens have a header"))
                .expect("an accepted header is a JSON object");
        assert_eq!(
            header.get("alg").and_then(|alg| alg.as_str()),
            Some(algorithm),
            "accepted under an algorithm that is not its key's"
        );
        match header.get("kid") {
            // A lone shared secret is every token's key whatever kid it names (Airflow 3.3
            // writes "not-used"); the kid must still be a string.
            Some(kid) if self.lone_secret => {
                assert!(kid.is_string(), "accepted with a kid that is not a string")
            }
            Some(kid) => assert_eq!(kid.as_str(), Some(signed_by), "accepted under another kid"),
            None => assert!(
                self.lone_secret,
                "a token without kid accepted by a keyed verifier"
            ),
        }
        for forbidden in ["jku", "x5u", "jwk", "x5c", "x5t", "x5t#S256", "crit"] {
            assert!(!header.contains_key(forbidden), "accepted with {forbidden}");
        }
        assert_eq!(
            claims.scope,
            self.scope.as_str(),
            "accepted with another scope"
        );
        assert_eq!(
            claims.aud, DEFAULT_AUDIENCE,
            "accepted for another audience"
        );
        assert_eq!(
            claims.iss.as_deref(),
            self.issuer,
            "accepted from another issuer"
        );
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs();
        assert!(
            claims.exp.saturating_add(LEEWAY_SECS) >= now,
            "accepted after exp"
        );
        assert!(
            claims.nbf <= now.saturating_add(LEEWAY_SECS),
            "accepted before nbf"
        );
    }
}

/// Verification errors are logged: short, one line, no control characters.
fn check_error(err: &VerifyError) {
    let text = err.to_string();
    assert!(
        text.len() <= MAX_ERROR_LEN,
        "error of {} bytes: {text:.300}",
        text.len()
    );
    assert!(
        !text.chars().any(char::is_control),
        "error with a control character: {text:?}"
    );
}

#[cfg(test)]
mod tests {
    //! The checks above must be able to fail, or a verifier that accepts too much would pass.

    use super::*;

    fn claims() -> Claims {
        Claims {
            aud: DEFAULT_AUDIENCE.to_owned(),
            sub: "s".to_owned(),
            scope: "execution".to_owned(),
            iat: 0,
            nbf: 0,
            exp: u64::MAX - LEEWAY_SECS,
            jti: "j".to_owned(),
            iss: Some(ISSUER.to_owned()),
        }
    }

    fn expected(origin: Origin, header: &[u8]) -> Expected<'_> {
        Expected {
            origin,
            header: Some(header),
            issuer: Some(ISSUER),
            lone_secret: false,
            scope: Scope::Execution,
        }
    }

    const HEADER: &[u8] = br#"{"alg":"HS512","kid":"k1"}"#;

    #[test]
    fn honest_acceptance_passes() {
        expected(Origin::SharedSecret, HEADER).check(&claims());
    }

    #[test]
    #[should_panic(expected = "from Untrusted verified")]
    fn acceptance_of_an_untrusted_key_fails() {
        expected(Origin::Untrusted, HEADER).check(&claims());
    }

    #[test]
    #[should_panic(expected = "another audience")]
    fn acceptance_for_another_audience_fails() {
        let mut claims = claims();
        claims.aud = "urn:elsewhere".to_owned();
        expected(Origin::SharedSecret, HEADER).check(&claims);
    }

    #[test]
    #[should_panic(expected = "accepted under another kid")]
    fn acceptance_under_another_kid_fails() {
        expected(Origin::SharedSecret, br#"{"alg":"HS512","kid":"k2"}"#).check(&claims());
    }

    #[test]
    #[should_panic(expected = "accepted with jku")]
    fn acceptance_with_a_key_url_fails() {
        expected(
            Origin::SharedSecret,
            br#"{"alg":"HS512","kid":"k1","jku":"https://x"}"#,
        )
        .check(&claims());
    }

    #[test]
    #[should_panic(expected = "accepted after exp")]
    fn acceptance_after_exp_fails() {
        let mut claims = claims();
        claims.exp = 1;
        expected(Origin::SharedSecret, HEADER).check(&claims);
    }

    #[test]
    #[should_panic(expected = "control character")]
    fn an_error_with_a_newline_fails() {
        check_error(&VerifyError::Invalid("forged\nlog line".to_owned()));
    }
}
