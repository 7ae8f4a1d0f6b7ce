//! The broker's keys in memory: the one that signs and every one that is published, read from
//! the key directory (with rotation) or from one environment variable (without).
//!
//! A keyring is built whole or not at all: a key file that cannot be read or parsed leaves the
//! previous keyring in force, so a bad rotation never takes signing down.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context;
use zeroize::Zeroizing;

use super::{
    file::read_private,
    material::{SigningAlgorithm, SigningKey},
    memory,
    rotation::{self, Role, Schedule},
};

/// One key the broker holds, with its role now.
#[derive(Debug, Clone)]
pub struct HeldKey {
    pub key: Arc<SigningKey>,
    pub role: Role,
    /// Creation time from the file name; 0 for a key from the environment.
    pub created: u64,
}

#[derive(Debug, Clone)]
pub struct Keyring {
    /// Published keys (next, signing, retired), oldest first.
    pub held: Vec<HeldKey>,
}

impl Keyring {
    pub fn signing(&self) -> &Arc<SigningKey> {
        &self
            .held
            .iter()
            .find(|held| held.role == Role::Signing)
            .expect("a keyring always has a signing key")
            .key
    }

    /// The public keys of every published key, oldest first (none for HS512, whose secret is
    /// never published).
    pub fn jwks(&self) -> jsonwebtoken::jwk::JwkSet {
        jsonwebtoken::jwk::JwkSet {
            keys: self
                .held
                .iter()
                .filter_map(|held| held.key.public_jwk().cloned())
                .collect(),
        }
    }

    /// What the keyring is made of: a reload is needed exactly when this changes.
    pub fn shape(&self) -> Vec<(u64, Role)> {
        self.held
            .iter()
            .map(|held| (held.created, held.role))
            .collect()
    }

    /// The one key in environment variable `name`; it never rotates.
    pub fn from_env(name: &str, algorithm: SigningAlgorithm) -> anyhow::Result<Self> {
        let value = Zeroizing::new(std::env::var(name).with_context(|| {
            format!("the signing key environment variable {name} is not set or not UTF-8")
        })?);
        let key = SigningKey::parse(value.as_bytes(), algorithm)
            .map_err(|err| anyhow::anyhow!("the key in {name}: {err}"))?;
        Ok(Self {
            held: vec![held(key, Role::Signing, 0)?],
        })
    }
}

/// The key files in `dir` with their creation times, oldest first. Other names are ignored
/// (editors' backup files, a README); a missing directory is an error naming the fix.
pub fn list_dir(dir: &Path) -> anyhow::Result<Vec<(u64, PathBuf)>> {
    let entries = std::fs::read_dir(dir).with_context(|| {
        format!(
            "reading the key directory {} (create the first key with `bulkhead keys rotate`)",
            dir.display()
        )
    })?;
    let mut keys = BTreeMap::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        if let Some(created) = entry
            .file_name()
            .to_str()
            .and_then(rotation::parse_file_name)
        {
            keys.insert(created, entry.path());
        }
    }
    Ok(keys.into_iter().collect())
}

/// The roles of the key files in `dir` at `now`, oldest first.
pub fn plan(dir: &Path, now: u64, schedule: Schedule) -> anyhow::Result<Vec<(u64, PathBuf, Role)>> {
    let files = list_dir(dir)?;
    let created: Vec<u64> = files.iter().map(|(created, _)| *created).collect();
    let roles = rotation::roles(&created, now, schedule);
    Ok(files
        .into_iter()
        .zip(roles)
        .map(|((created, path), role)| (created, path, role))
        .collect())
}

/// Reads every published key in `dir` (each file checked as a private key file).
pub fn load_dir(
    dir: &Path,
    algorithm: SigningAlgorithm,
    now: u64,
    schedule: Schedule,
) -> anyhow::Result<Keyring> {
    load_planned(dir, plan(dir, now, schedule)?, algorithm)
}

/// Reads the published keys of `plan`, a [`plan`] of `dir`.
pub fn load_planned(
    dir: &Path,
    plan: Vec<(u64, PathBuf, Role)>,
    algorithm: SigningAlgorithm,
) -> anyhow::Result<Keyring> {
    if plan.is_empty() {
        anyhow::bail!(
            "the key directory {} holds no signing key (signing-<unix time>.key); create one \
             with `bulkhead keys rotate`",
            dir.display()
        );
    }
    let mut keyring = Vec::new();
    for (created, path, role) in plan {
        if !role.is_published() {
            continue;
        }
        let contents = read_private(&path)?;
        let key = SigningKey::parse(&contents, algorithm).map_err(|err| {
            anyhow::anyhow!(
                "{}: {err} (the broker is configured for {algorithm:?})",
                path.display()
            )
        })?;
        keyring.push(held(key, role, created)?);
    }
    Ok(Keyring { held: keyring })
}

fn held(key: SigningKey, role: Role, created: u64) -> anyhow::Result<HeldKey> {
    // Kept out of swap and core dumps for as long as the key is held.
    memory::lock(key.secret_bytes())?;
    Ok(HeldKey {
        key: Arc::new(key),
        role,
        created,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::generate::{generate, write_new};

    use crate::keys::rotation::TEST_SCHEDULE as SCHEDULE;

    fn add_key(dir: &Path, created: u64) -> String {
        let pem = generate(SigningAlgorithm::EdDSA, 2048).unwrap();
        write_new(&dir.join(rotation::file_name(created)), pem.as_bytes()).unwrap();
        SigningKey::parse(pem.as_bytes(), SigningAlgorithm::EdDSA)
            .unwrap()
            .kid()
            .to_owned()
    }

    #[test]
    fn loads_published_keys_and_signs_with_the_right_one() {
        let dir = tempfile::tempdir().unwrap();
        let oldest = add_key(dir.path(), 1000);
        let old = add_key(dir.path(), 2000);
        let new = add_key(dir.path(), 5000);
        std::fs::write(dir.path().join("README"), "not a key").unwrap();
        let keyring = load_dir(dir.path(), SigningAlgorithm::EdDSA, 5100, SCHEDULE).unwrap();
        assert_eq!(keyring.signing().kid(), old);
        let kids: Vec<_> = keyring
            .held
            .iter()
            .map(|h| h.key.kid().to_owned())
            .collect();
        // The oldest stopped signing at 2300 and expired at 3000: no longer held.
        assert_eq!(kids, [old.clone(), new.clone()]);
        assert!(!kids.contains(&oldest));
        assert_eq!(keyring.shape(), [(2000, Role::Signing), (5000, Role::Next)]);
        let later = load_dir(dir.path(), SigningAlgorithm::EdDSA, 5300, SCHEDULE).unwrap();
        assert_eq!(later.signing().kid(), new);
    }

    #[test]
    fn an_empty_or_missing_directory_names_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_dir(dir.path(), SigningAlgorithm::EdDSA, 0, SCHEDULE).unwrap_err();
        assert!(
            format!("{err:#}").contains("bulkhead keys rotate"),
            "{err:#}"
        );
        let err = load_dir(
            &dir.path().join("nope"),
            SigningAlgorithm::EdDSA,
            0,
            SCHEDULE,
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("bulkhead keys rotate"),
            "{err:#}"
        );
    }

    #[test]
    fn one_bad_key_file_fails_the_whole_load() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        add_key(dir.path(), 1000);
        add_key(dir.path(), 2000);
        let loose = dir.path().join(rotation::file_name(2000));
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_dir(dir.path(), SigningAlgorithm::EdDSA, 2100, SCHEDULE).unwrap_err();
        assert!(format!("{err:#}").contains("chmod 600"), "{err:#}");
        // A key of another algorithm is named, not silently skipped.
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = load_dir(dir.path(), SigningAlgorithm::RS256, 2100, SCHEDULE).unwrap_err();
        assert!(format!("{err:#}").contains("RS256"), "{err:#}");
    }
}
