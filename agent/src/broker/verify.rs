//! Strict token verification, for tokens presented to the broker (workload tokens from the
//! executor, execution tokens from local validators).
//!
//! Order matters: the header is judged before any key is chosen, the key is chosen only by a
//! `kid` this broker trusts, and the algorithm is the key's own, never the token's say-so. So
//! `alg: none`, an HS256 token "signed" with a public key, an injected `kid`, and keys offered
//! by the token itself (`jku`, `x5u`, `jwk`, `x5c`) all fail before a signature is checked.

use std::collections::HashMap;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::claims::{Claims, Scope};
use crate::keys::material::SigningAlgorithm;

/// Header parameters that let a token name its own verification key, or demand extensions;
/// a token carrying any of them is refused outright.
const FORBIDDEN_HEADER_PARAMETERS: [&str; 7] =
    ["jku", "x5u", "jwk", "x5c", "x5t", "x5t#S256", "crit"];

/// Clock skew tolerated on `exp` and `nbf`, as Airflow's validator is configured.
pub const LEEWAY_SECS: u64 = 10;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("header parameter {0:?} is not accepted: keys are never taken from the token")]
    ForbiddenHeader(String),
    #[error("algorithm \"{0}\" is not accepted")]
    Algorithm(String),
    #[error("the token names no kid")]
    NoKid,
    #[error("unknown kid")]
    UnknownKid,
    #[error("the token's algorithm is not its key's")]
    AlgorithmMismatch,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("scope \"{found}\" where \"{needed}\" is needed")]
    Scope { found: String, needed: &'static str },
}

/// How much of a token's own text an error may repeat. Refusals are logged, and the token is
/// the caller's: an error that echoed it whole would let any caller write what it likes into
/// the agent's log (found by the `token_parsing` fuzz target: a 700-byte `alg` came back in
/// full).
const MAX_ECHO_CHARS: usize = 32;
/// The same for the JWT library's reasons, which quote claim values (`invalid type: string
/// "...", expected u64`).
const MAX_REASON_CHARS: usize = 120;

/// `text` escaped to printable ASCII (so it stays one log line and forges none) and cut to
/// `max` characters.
fn excerpt(text: &str, max: usize) -> String {
    let mut shown: String = text.escape_default().collect();
    if shown.len() > max {
        // Escaped text is ASCII, so any byte index is a character boundary.
        shown.truncate(max);
        shown.push_str("...");
    }
    shown
}

/// One trusted verification key.
pub struct TrustedKey {
    pub algorithm: Algorithm,
    pub key: DecodingKey,
}

/// Verifies tokens against a fixed set of trusted keys, an audience and an optional issuer.
pub struct Verifier {
    keys: HashMap<String, TrustedKey>,
    audience: String,
    issuer: Option<String>,
    /// A lone shared secret that every token is checked against, whatever `kid` it names or
    /// none: Airflow writes no `kid` for its `jwt_secret` before 3.3 and `"not-used"` from 3.3
    /// on, and with one secret the `kid` chooses nothing.
    lone_secret: Option<String>,
}

impl Verifier {
    pub fn new(
        keys: HashMap<String, TrustedKey>,
        audience: String,
        issuer: Option<String>,
    ) -> Self {
        Self {
            keys,
            audience,
            issuer,
            lone_secret: None,
        }
    }

    /// Every token is checked against `kid`'s key, which must be the only one (a shared
    /// secret), whatever `kid` the token names. The algorithm is still the key's: a token that
    /// names another is refused before its signature is looked at.
    pub fn with_lone_secret(mut self, kid: String) -> Self {
        debug_assert!(self.keys.len() == 1 && self.keys.contains_key(&kid));
        self.lone_secret = Some(kid);
        self
    }

    /// The claims of `token` if it is signed by a trusted key, for our audience (and issuer),
    /// currently valid, and of scope `needed`.
    pub fn verify(&self, token: &str, needed: Scope) -> Result<Claims, VerifyError> {
        let (header, algorithm) = judge_header(token)?;
        let named = match header.get("kid") {
            Some(kid) => Some(
                kid.as_str()
                    .ok_or(VerifyError::Malformed("kid is not a string"))?,
            ),
            None => None,
        };
        let kid = match (self.lone_secret.as_deref(), named) {
            (Some(secret), _) => secret,
            (None, Some(kid)) => kid,
            (None, None) => return Err(VerifyError::NoKid),
        };
        let trusted = self.keys.get(kid).ok_or(VerifyError::UnknownKid)?;
        if trusted.algorithm != algorithm {
            return Err(VerifyError::AlgorithmMismatch);
        }
        let mut validation = Validation::new(trusted.algorithm);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iat", "nbf", "aud", "sub"]);
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            // jsonwebtoken only compares `iss` when present; a configured issuer must be there.
            validation.required_spec_claims.insert("iss".to_owned());
        }
        let claims = jsonwebtoken::decode::<Claims>(token, &trusted.key, &validation)
            .map_err(|err| VerifyError::Invalid(excerpt(&err.to_string(), MAX_REASON_CHARS)))?
            .claims;
        if self.issuer.is_none() && claims.iss.is_some() {
            // Not configured means none expected; a stray issuer is a token from elsewhere.
            return Err(VerifyError::Invalid("unexpected issuer".into()));
        }
        if claims.scope != needed.as_str() {
            return Err(VerifyError::Scope {
                found: excerpt(&claims.scope, MAX_ECHO_CHARS),
                needed: needed.as_str(),
            });
        }
        Ok(claims)
    }
}

/// Decodes and judges the header alone: a JSON object, no forbidden parameters, an algorithm
/// the broker supports (which excludes every spelling of `none`).
fn judge_header(
    token: &str,
) -> Result<(serde_json::Map<String, serde_json::Value>, Algorithm), VerifyError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(VerifyError::Malformed(
            "a JWT has three dot-separated parts",
        ));
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| VerifyError::Malformed("header is not base64url"))?;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes)
        .map_err(|_| VerifyError::Malformed("header is not a JSON object"))?;
    if let Some(name) = FORBIDDEN_HEADER_PARAMETERS
        .iter()
        .find(|name| header.contains_key(**name))
    {
        return Err(VerifyError::ForbiddenHeader((*name).to_owned()));
    }
    let alg = header
        .get("alg")
        .and_then(|alg| alg.as_str())
        .ok_or(VerifyError::Malformed("header has no string alg"))?;
    // Only the algorithms the broker signs with; this excludes every spelling of `none`.
    let algorithm = alg
        .parse::<SigningAlgorithm>()
        .map_err(|_| VerifyError::Algorithm(excerpt(alg, MAX_ECHO_CHARS)))?
        .jwt();
    Ok((header, algorithm))
}
