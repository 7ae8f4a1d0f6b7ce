//! `bulkhead keys generate`: a new key, written to a new file that only root can read.

use std::{io::Write, os::unix::fs::OpenOptionsExt, path::Path};

use anyhow::{Context, bail};
use aws_lc_rs::{
    encoding::AsDer,
    rand::{SecureRandom, SystemRandom},
    rsa::KeySize,
    signature::Ed25519KeyPair,
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use zeroize::Zeroizing;

use super::material::SigningAlgorithm;

/// RSA modulus sizes offered.
pub fn rsa_key_size(bits: u32) -> anyhow::Result<KeySize> {
    Ok(match bits {
        2048 => KeySize::Rsa2048,
        3072 => KeySize::Rsa3072,
        4096 => KeySize::Rsa4096,
        other => bail!("RSA keys are 2048, 3072 or 4096 bits, not {other}"),
    })
}

/// New key material for `algorithm`, in the form [`super::material::SigningKey::parse`] reads:
/// PEM PKCS#8 for EdDSA and RSA, and for HS512 a secret of 64 random bytes in base64url (86
/// characters, usable as Airflow's `jwt_secret` as it is).
pub fn generate(algorithm: SigningAlgorithm, rsa_bits: u32) -> anyhow::Result<Zeroizing<String>> {
    let pkcs8: Zeroizing<Vec<u8>> = match algorithm {
        SigningAlgorithm::HS512 => {
            let mut secret = Zeroizing::new([0u8; 64]);
            SystemRandom::new()
                .fill(secret.as_mut())
                .map_err(|_| anyhow::anyhow!("the system random source failed"))?;
            let mut text = Zeroizing::new(URL_SAFE_NO_PAD.encode(secret.as_ref()));
            text.push('\n');
            return Ok(text);
        }
        SigningAlgorithm::EdDSA => {
            let pair = Ed25519KeyPair::generate()
                .map_err(|_| anyhow::anyhow!("Ed25519 key generation failed"))?;
            Zeroizing::new(
                pair.to_pkcs8v1()
                    .map_err(|_| anyhow::anyhow!("encoding the Ed25519 key failed"))?
                    .as_ref()
                    .to_vec(),
            )
        }
        SigningAlgorithm::RS256 | SigningAlgorithm::RS512 => {
            let pair = aws_lc_rs::rsa::KeyPair::generate(rsa_key_size(rsa_bits)?)
                .map_err(|_| anyhow::anyhow!("RSA key generation failed"))?;
            let der = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair)
                .map_err(|_| anyhow::anyhow!("encoding the RSA key failed"))?;
            Zeroizing::new(der.as_ref().to_vec())
        }
    };
    let pem = pem_rfc7468::encode_string("PRIVATE KEY", pem_rfc7468::LineEnding::LF, &pkcs8)
        .map_err(|err| anyhow::anyhow!("PEM encoding failed: {err}"))?;
    Ok(Zeroizing::new(pem))
}

/// Writes `contents` to a new file, mode 0600, refusing to replace anything already there
/// (a key that is replaced by mistake cannot be recovered).
pub fn write_new(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .with_context(|| {
            format!(
                "creating {} (an existing file is never replaced)",
                path.display()
            )
        })?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}
