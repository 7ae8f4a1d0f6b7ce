//! Operator commands on the broker's key directory: list the keys with their roles, and rotate
//! (add a new key, delete expired ones). The running agent picks the change up by itself
//! within seconds; no restart, no signal.

use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use super::{
    file::read_private,
    generate::{generate, write_new},
    keyring,
    material::{SigningAlgorithm, SigningKey},
    rotation::{self, Role, Schedule},
};

#[derive(Debug, Serialize)]
pub struct KeyStatus {
    pub file: String,
    pub created: u64,
    pub role: Role,
    pub kid: Option<String>,
    /// For a key that does not sign yet: when it will (Unix seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signs_from: Option<u64>,
}

/// Every key file with its role now; the kid of each key that parses.
pub fn list(
    dir: &Path,
    algorithm: SigningAlgorithm,
    now: u64,
    schedule: Schedule,
) -> anyhow::Result<Vec<KeyStatus>> {
    Ok(keyring::plan(dir, now, schedule)?
        .into_iter()
        .map(|(created, path, role)| KeyStatus {
            file: path.display().to_string(),
            created,
            role,
            kid: read_private(&path)
                .ok()
                .and_then(|contents| SigningKey::parse(&contents, algorithm).ok())
                .map(|key| key.kid().to_owned()),
            signs_from: (role == Role::Next).then_some(created + schedule.publish_lead),
        })
        .collect())
}

/// Adds a new key (published at once, signing after the lead) and deletes expired ones.
/// HS512 is refused: a shared secret must reach the API server first, so the operator places
/// it (as `signing-<unix time>.key`) once the API server accepts it.
pub fn rotate(
    dir: &Path,
    algorithm: SigningAlgorithm,
    now: u64,
    schedule: Schedule,
) -> anyhow::Result<Vec<KeyStatus>> {
    if algorithm.is_symmetric() {
        anyhow::bail!(
            "HS512 keys are shared with the API server and cannot be generated here: give the API \
             server the new secret first, then write it to {}/{} (mode 0600)",
            dir.display(),
            rotation::file_name(now)
        );
    }
    if keyring::list_dir(dir)?
        .iter()
        .any(|(created, _)| *created >= now)
    {
        anyhow::bail!("a key created this second or later already exists; try again in a second");
    }
    for (_, path, role) in keyring::plan(dir, now, schedule)? {
        if role == Role::Expired {
            std::fs::remove_file(&path)
                .with_context(|| format!("deleting the expired key {}", path.display()))?;
        }
    }
    let material = generate(algorithm, 3072)?;
    SigningKey::parse(material.as_bytes(), algorithm)?;
    write_new(&dir.join(rotation::file_name(now)), material.as_bytes())?;
    list(dir, algorithm, now, schedule)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::keys::rotation::TEST_SCHEDULE as SCHEDULE;

    #[test]
    fn rotation_adds_a_published_key_and_removes_expired_ones() {
        let dir = tempfile::tempdir().unwrap();
        rotate(dir.path(), SigningAlgorithm::EdDSA, 1000, SCHEDULE).unwrap();
        let keys = rotate(dir.path(), SigningAlgorithm::EdDSA, 2000, SCHEDULE).unwrap();
        let roles: Vec<_> = keys.iter().map(|k| k.role).collect();
        assert_eq!(roles, [Role::Signing, Role::Next]);
        assert_eq!(keys[1].signs_from, Some(2300));
        assert!(keys.iter().all(|k| k.kid.is_some()));
        // At 3100 the first key has expired (stopped at 2300, + 700): the next rotation drops it.
        let keys = rotate(dir.path(), SigningAlgorithm::EdDSA, 3100, SCHEDULE).unwrap();
        let created: Vec<_> = keys.iter().map(|k| k.created).collect();
        assert_eq!(created, [2000, 3100]);
        let err = rotate(dir.path(), SigningAlgorithm::EdDSA, 3100, SCHEDULE).unwrap_err();
        assert!(err.to_string().contains("try again"), "{err}");
        let err = rotate(dir.path(), SigningAlgorithm::HS512, 4000, SCHEDULE).unwrap_err();
        assert!(err.to_string().contains("API server"), "{err}");
    }
}
