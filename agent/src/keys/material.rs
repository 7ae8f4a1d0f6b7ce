//! Turning key bytes into a signing key: the algorithm it serves, its `kid` (the RFC 7638
//! thumbprint of its public JWK), and the public JWK published in the JWKS.
//!
//! Accepted: PEM PKCS#8 Ed25519 keys (EdDSA) and PEM PKCS#8 or PKCS#1 RSA keys of 2048 bits or
//! more (RS256, RS512), as `openssl genpkey` and `bulkhead keys generate` write them; and for
//! HS512 the shared secret itself, as Airflow's `[api_auth] jwt_secret` holds it (its UTF-8
//! bytes are the HMAC key, as PyJWT uses a str secret). Every intermediate copy of secret bytes
//! is zeroized when dropped.

use aws_lc_rs::{
    digest,
    signature::{Ed25519KeyPair, KeyPair as _},
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{
    Algorithm, DecodingKey, EncodingKey,
    jwk::{
        AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, KeyAlgorithm,
        OctetKeyPairParameters, OctetKeyPairType, PublicKeyUse, RSAKeyParameters, RSAKeyType,
        ThumbprintHash,
    },
};
use pkcs8::{ObjectIdentifier, PrivateKeyInfoRef, der::Decode as _};
use zeroize::Zeroizing;

const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// Shortest HS512 secret accepted. Airflow generates 22-character secrets; anything shorter is
/// guessable offline from any token it signed.
pub const MIN_HMAC_SECRET_BYTES: usize = 16;

/// The algorithms the broker signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub enum SigningAlgorithm {
    EdDSA,
    RS256,
    RS512,
    HS512,
}

impl SigningAlgorithm {
    pub fn jwt(self) -> Algorithm {
        match self {
            Self::EdDSA => Algorithm::EdDSA,
            Self::RS256 => Algorithm::RS256,
            Self::RS512 => Algorithm::RS512,
            Self::HS512 => Algorithm::HS512,
        }
    }

    pub fn is_symmetric(self) -> bool {
        self == Self::HS512
    }
}

impl std::str::FromStr for SigningAlgorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "EdDSA" => Ok(Self::EdDSA),
            "RS256" => Ok(Self::RS256),
            "RS512" => Ok(Self::RS512),
            "HS512" => Ok(Self::HS512),
            other => Err(format!(
                "unsupported algorithm {other:?}; expected EdDSA, RS256, RS512 or HS512"
            )),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not a PEM document: {0}")]
    Pem(String),
    #[error(
        "PEM label {0:?} is not an unencrypted private key (expected PRIVATE KEY or RSA PRIVATE KEY)"
    )]
    Label(String),
    #[error("PKCS#8 document does not parse: {0}")]
    Pkcs8(String),
    #[error("the key is {found}, but the algorithm {algorithm:?} needs {needs}")]
    Mismatch {
        found: &'static str,
        algorithm: SigningAlgorithm,
        needs: &'static str,
    },
    #[error("the key is rejected by the crypto library: {0}")]
    Rejected(String),
    #[error("an HS512 secret must be at least {MIN_HMAC_SECRET_BYTES} bytes, this one has {0}")]
    ShortSecret(usize),
}

/// A key the broker signs with. Never printed: Debug shows the algorithm and kid only.
pub struct SigningKey {
    algorithm: SigningAlgorithm,
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// None for HS512: a shared secret has no public half to publish.
    public: Option<Jwk>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("algorithm", &self.algorithm)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Parses key material for `algorithm` (a PEM private key, or the HS512 secret).
    pub fn parse(contents: &[u8], algorithm: SigningAlgorithm) -> Result<Self, KeyError> {
        match algorithm {
            SigningAlgorithm::HS512 => Self::hmac(contents),
            _ => Self::private_pem(contents, algorithm),
        }
    }

    pub fn algorithm(&self) -> SigningAlgorithm {
        self.algorithm
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn encoding_key(&self) -> &EncodingKey {
        &self.encoding
    }

    pub fn decoding_key(&self) -> &DecodingKey {
        &self.decoding
    }

    /// The public JWK with `kid`, `use` and `alg`; None for HS512.
    pub fn public_jwk(&self) -> Option<&Jwk> {
        self.public.as_ref()
    }

    /// The bytes of the private key as held for signing, to lock them in memory.
    pub fn secret_bytes(&self) -> &[u8] {
        self.encoding.as_bytes()
    }

    fn hmac(contents: &[u8]) -> Result<Self, KeyError> {
        // A trailing newline is an artefact of the file, not part of Airflow's secret.
        let secret = contents.strip_suffix(b"\n").unwrap_or(contents);
        let secret = secret.strip_suffix(b"\r").unwrap_or(secret);
        if secret.len() < MIN_HMAC_SECRET_BYTES {
            return Err(KeyError::ShortSecret(secret.len()));
        }
        // RFC 7638 over the oct JWK: {"k":...,"kty":"oct"}. Built in a zeroized buffer, since
        // it holds the secret.
        let mut canonical = Zeroizing::new(String::with_capacity(secret.len() * 2 + 32));
        canonical.push_str("{\"k\":\"");
        URL_SAFE_NO_PAD.encode_string(secret, &mut canonical);
        canonical.push_str("\",\"kty\":\"oct\"}");
        let kid = URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, canonical.as_bytes()));
        Ok(Self {
            algorithm: SigningAlgorithm::HS512,
            kid,
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            public: None,
        })
    }

    fn private_pem(contents: &[u8], algorithm: SigningAlgorithm) -> Result<Self, KeyError> {
        let (label, der) =
            pem_rfc7468::decode_vec(contents).map_err(|err| KeyError::Pem(err.to_string()))?;
        let der = Zeroizing::new(der);
        match label {
            "PRIVATE KEY" => {
                let info = PrivateKeyInfoRef::from_der(&der)
                    .map_err(|err| KeyError::Pkcs8(err.to_string()))?;
                let inner = info.private_key.as_bytes();
                match info.algorithm.oid {
                    OID_ED25519 => Self::ed25519(&der, algorithm),
                    OID_RSA => Self::rsa(inner, algorithm),
                    other => Err(KeyError::Pkcs8(format!(
                        "unsupported key algorithm {other}"
                    ))),
                }
            }
            "RSA PRIVATE KEY" => Self::rsa(&der, algorithm),
            other => Err(KeyError::Label(other.to_owned())),
        }
    }

    fn ed25519(pkcs8: &[u8], algorithm: SigningAlgorithm) -> Result<Self, KeyError> {
        if algorithm != SigningAlgorithm::EdDSA {
            return Err(mismatch("an Ed25519 key", algorithm));
        }
        let pair =
            Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|err| KeyError::Rejected(err.to_string()))?;
        let public = AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
            key_type: OctetKeyPairType::OctetKeyPair,
            curve: EllipticCurve::Ed25519,
            x: URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
        });
        let decoding = DecodingKey::from_ed_der(pair.public_key().as_ref());
        Self::asymmetric(algorithm, EncodingKey::from_ed_der(pkcs8), decoding, public)
    }

    fn rsa(pkcs1: &[u8], algorithm: SigningAlgorithm) -> Result<Self, KeyError> {
        if !matches!(algorithm, SigningAlgorithm::RS256 | SigningAlgorithm::RS512) {
            return Err(mismatch("an RSA key", algorithm));
        }
        // aws-lc-rs refuses RSA keys under 2048 bits.
        let pair = aws_lc_rs::rsa::KeyPair::from_der(pkcs1)
            .map_err(|err| KeyError::Rejected(err.to_string()))?;
        let public = pair.public_key();
        let (n, e) = (
            public.modulus().big_endian_without_leading_zero(),
            public.exponent().big_endian_without_leading_zero(),
        );
        let params = AlgorithmParameters::RSA(RSAKeyParameters {
            key_type: RSAKeyType::RSA,
            n: URL_SAFE_NO_PAD.encode(n),
            e: URL_SAFE_NO_PAD.encode(e),
        });
        let decoding = DecodingKey::from_rsa_raw_components(n, e);
        Self::asymmetric(
            algorithm,
            EncodingKey::from_rsa_der(pkcs1),
            decoding,
            params,
        )
    }

    fn asymmetric(
        algorithm: SigningAlgorithm,
        encoding: EncodingKey,
        decoding: DecodingKey,
        params: AlgorithmParameters,
    ) -> Result<Self, KeyError> {
        let mut jwk = Jwk {
            common: CommonParameters::default(),
            algorithm: params,
        };
        let kid = jwk
            .thumbprint(ThumbprintHash::SHA256)
            .map_err(|err| KeyError::Rejected(err.to_string()))?;
        jwk.common = CommonParameters {
            public_key_use: Some(PublicKeyUse::Signature),
            key_algorithm: Some(match algorithm {
                SigningAlgorithm::EdDSA => KeyAlgorithm::EdDSA,
                SigningAlgorithm::RS256 => KeyAlgorithm::RS256,
                SigningAlgorithm::RS512 => KeyAlgorithm::RS512,
                SigningAlgorithm::HS512 => KeyAlgorithm::HS512,
            }),
            key_id: Some(kid.clone()),
            ..CommonParameters::default()
        };
        Ok(Self {
            algorithm,
            kid,
            encoding,
            decoding,
            public: Some(jwk),
        })
    }
}

fn mismatch(found: &'static str, algorithm: SigningAlgorithm) -> KeyError {
    let needs = match algorithm {
        SigningAlgorithm::EdDSA => "an Ed25519 key",
        SigningAlgorithm::RS256 | SigningAlgorithm::RS512 => "an RSA key",
        SigningAlgorithm::HS512 => "a shared secret",
    };
    KeyError::Mismatch {
        found,
        algorithm,
        needs,
    }
}
