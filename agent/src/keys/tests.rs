//! Key parsing, kid derivation and signing round trips, against published test vectors where
//! they exist.

use base64::{
    Engine as _,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use jsonwebtoken::{Header, Validation};

use super::{
    generate::generate,
    material::{KeyError, SigningAlgorithm, SigningKey},
};

const ALL: [SigningAlgorithm; 4] = [
    SigningAlgorithm::EdDSA,
    SigningAlgorithm::RS256,
    SigningAlgorithm::RS512,
    SigningAlgorithm::HS512,
];

/// RFC 8037 appendix A.1: an Ed25519 private key `d`, wrapped as PKCS#8 v1 PEM.
fn rfc8037_key_pem() -> String {
    let d = URL_SAFE_NO_PAD
        .decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A")
        .unwrap();
    let mut der = hex_bytes("302e020100300506032b657004220420");
    der.extend_from_slice(&d);
    format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        STANDARD.encode(der)
    )
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn the_ed25519_kid_is_the_rfc7638_thumbprint_of_rfc8037() {
    let key = SigningKey::parse(rfc8037_key_pem().as_bytes(), SigningAlgorithm::EdDSA).unwrap();
    // RFC 8037 A.3.
    assert_eq!(key.kid(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    let jwk = serde_json::to_value(key.public_jwk().unwrap()).unwrap();
    assert_eq!(jwk["x"], "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo");
    assert_eq!(jwk["kid"], key.kid());
    assert_eq!(jwk["alg"], "EdDSA");
    assert_eq!(jwk["use"], "sig");
}

#[test]
fn generated_keys_sign_and_verify_and_keep_their_kid() {
    for algorithm in ALL {
        let material = generate(algorithm, 2048).unwrap();
        let key = SigningKey::parse(material.as_bytes(), algorithm).unwrap();
        let again = SigningKey::parse(material.as_bytes(), algorithm).unwrap();
        assert_eq!(key.kid(), again.kid(), "{algorithm:?}");

        let mut header = Header::new(algorithm.jwt());
        header.kid = Some(key.kid().to_owned());
        let claims = serde_json::json!({"sub": "t", "exp": 4_000_000_000u64});
        let token = jsonwebtoken::encode(&header, &claims, key.encoding_key()).unwrap();
        let mut validation = Validation::new(algorithm.jwt());
        validation.required_spec_claims.clear();
        let decoded =
            jsonwebtoken::decode::<serde_json::Value>(&token, key.decoding_key(), &validation)
                .unwrap();
        assert_eq!(decoded.claims["sub"], "t", "{algorithm:?}");

        // A different key of the same kind does not verify it.
        let other =
            SigningKey::parse(generate(algorithm, 2048).unwrap().as_bytes(), algorithm).unwrap();
        assert_ne!(other.kid(), key.kid());
        assert!(
            jsonwebtoken::decode::<serde_json::Value>(&token, other.decoding_key(), &validation)
                .is_err(),
            "{algorithm:?}"
        );
    }
}

#[test]
fn published_jwks_never_carry_private_parts() {
    for algorithm in ALL {
        let key =
            SigningKey::parse(generate(algorithm, 2048).unwrap().as_bytes(), algorithm).unwrap();
        match key.public_jwk() {
            None => assert_eq!(algorithm, SigningAlgorithm::HS512),
            Some(jwk) => {
                let json = serde_json::to_value(jwk).unwrap();
                for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
                    assert!(
                        json.get(private).is_none(),
                        "{algorithm:?} publishes {private}"
                    );
                }
            }
        }
        assert!(
            !format!("{key:?}").contains("encoding"),
            "Debug shows no key bytes"
        );
    }
}

#[test]
fn a_key_of_the_wrong_kind_is_refused_by_name() {
    let ed = generate(SigningAlgorithm::EdDSA, 2048).unwrap();
    let err = SigningKey::parse(ed.as_bytes(), SigningAlgorithm::RS256).unwrap_err();
    assert!(
        err.to_string().contains("an Ed25519 key") && err.to_string().contains("an RSA key"),
        "{err}"
    );
    let rsa = generate(SigningAlgorithm::RS256, 2048).unwrap();
    assert!(matches!(
        SigningKey::parse(rsa.as_bytes(), SigningAlgorithm::EdDSA),
        Err(KeyError::Mismatch { .. })
    ));
}

#[test]
fn public_and_encrypted_pem_and_garbage_are_refused() {
    let public = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n-----END PUBLIC KEY-----\n";
    assert!(matches!(
        SigningKey::parse(public.as_bytes(), SigningAlgorithm::EdDSA),
        Err(KeyError::Label(label)) if label == "PUBLIC KEY"
    ));
    assert!(matches!(
        SigningKey::parse(b"not a key at all", SigningAlgorithm::EdDSA),
        Err(KeyError::Pem(_))
    ));
}

#[test]
fn short_hmac_secrets_are_refused_and_a_trailing_newline_is_not_part_of_it() {
    assert!(matches!(
        SigningKey::parse(b"too-short\n", SigningAlgorithm::HS512),
        Err(KeyError::ShortSecret(9))
    ));
    let with_newline =
        SigningKey::parse(b"0123456789abcdefXYZ\n", SigningAlgorithm::HS512).unwrap();
    let without = SigningKey::parse(b"0123456789abcdefXYZ", SigningAlgorithm::HS512).unwrap();
    assert_eq!(with_newline.kid(), without.kid());
    assert!(without.public_jwk().is_none());
}

#[test]
fn generated_files_are_private_and_never_replace_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("signing.pem");
    let material = generate(SigningAlgorithm::EdDSA, 2048).unwrap();
    super::generate::write_new(&path, material.as_bytes()).unwrap();
    let read = super::file::read_private(&path).unwrap();
    assert_eq!(read.as_slice(), material.as_bytes());
    let err = super::generate::write_new(&path, b"other").unwrap_err();
    assert!(format!("{err:#}").contains("never replaced"), "{err:#}");
    assert_eq!(std::fs::read(&path).unwrap(), material.as_bytes());
}
