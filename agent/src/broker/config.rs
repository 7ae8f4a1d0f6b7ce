//! The `[broker]` section of the node config.
//!
//! Cross-field rules (a key source, a way to register tasks) are checked while deserializing,
//! like every other rule, so an enabled broker that could not work never starts.

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;

use super::claims::DEFAULT_AUDIENCE;
use crate::{config::AbsolutePath, keys::material::SigningAlgorithm};

pub const DEFAULT_TOKEN_LIFETIME_SECS: u64 = 600;
/// Above Airflow's JWKS cache (`JWKS.refresh_interval_secs`, 3600 s, with no refetch on an
/// unknown kid) plus the agent's key checks and a margin: an API server that fetched the set
/// just before a rotation still sees the new key before it signs.
pub const DEFAULT_PUBLISH_LEAD_SECS: u64 = 3900;
/// The key directory, relative to the agent's state directory, unless configured.
pub const DEFAULT_KEY_SUBDIR: &str = "keys";

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawBrokerSection")]
pub struct BrokerSection {
    pub enabled: bool,
    pub algorithm: SigningAlgorithm,
    pub keys: KeySource,
    pub audience: String,
    pub issuer: Option<String>,
    pub token_lifetime: Duration,
    pub publish_lead: Duration,
    pub allowed_uids: Vec<u32>,
    pub in_domain_mint: bool,
    pub local_issuing: bool,
    pub sub_format: SubFormat,
    /// Where to publish the JWKS over HTTP for API servers, if anywhere.
    pub jwks_listen: Option<std::net::SocketAddr>,
    pub workload: WorkloadIssuer,
}

/// What a task identity (`sub`) must look like, from a workload token or a local registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubFormat {
    /// A UUID in the canonical lowercase hyphenated form: Airflow's Execution API names a task
    /// instance by its UUID and compares the token's `sub` with it as text, so any other
    /// spelling would give tokens it refuses.
    Uuid,
    /// Any 1 to 256 printable ASCII characters, for runners other than Airflow.
    Any,
}

/// Where the signing keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A directory the broker reads (and `bulkhead keys rotate` writes): rotation works.
    /// `None` means `<state_dir>/keys`.
    Dir(Option<PathBuf>),
    /// One key in an environment variable: no rotation.
    Env(String),
}

impl Default for BrokerSection {
    fn default() -> Self {
        Self::try_from(RawBrokerSection::default()).expect("the defaults are valid")
    }
}

/// Who signs the workload tokens that supervisors present when they register a task (in
/// Airflow: the scheduler, with the API server's keys).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadIssuer {
    /// A JWKS file of the issuer's public keys (root-owned, not writable by others).
    #[serde(default)]
    pub jwks_file: Option<AbsolutePath>,
    /// A shared HS512 secret file (Airflow's `jwt_secret`), read like a key file.
    #[serde(default)]
    pub secret_file: Option<AbsolutePath>,
    /// The `aud` workload tokens must carry; the broker's own audience unless set.
    #[serde(default)]
    pub audience: Option<String>,
    /// The `iss` workload tokens must carry, when set.
    #[serde(default)]
    pub issuer: Option<String>,
    /// The algorithm of `jwks_file` keys that name none (Airflow's `[api_auth] jwt_algorithm`,
    /// when it is not `GUESS`). Unset: RS256 for RSA keys, EdDSA for Ed25519, as Airflow
    /// guesses.
    #[serde(default)]
    pub algorithm: Option<SigningAlgorithm>,
}

impl WorkloadIssuer {
    fn is_configured(&self) -> bool {
        self.jwks_file.is_some() || self.secret_file.is_some()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBrokerSection {
    #[serde(default)]
    enabled: bool,
    #[serde(default = "default_algorithm")]
    algorithm: SigningAlgorithm,
    #[serde(default)]
    key_dir: Option<AbsolutePath>,
    #[serde(default)]
    key_env: Option<String>,
    #[serde(default = "default_audience")]
    audience: String,
    #[serde(default)]
    issuer: Option<String>,
    #[serde(default = "default_lifetime")]
    token_lifetime_secs: u64,
    #[serde(default = "default_publish_lead")]
    publish_lead_secs: u64,
    #[serde(default = "default_allowed_uids")]
    allowed_uids: Vec<u32>,
    #[serde(default)]
    in_domain_mint: bool,
    #[serde(default)]
    local_issuing: bool,
    #[serde(default = "default_sub_format")]
    sub_format: SubFormat,
    #[serde(default)]
    jwks_listen: Option<std::net::SocketAddr>,
    #[serde(default)]
    workload: WorkloadIssuer,
}

impl Default for RawBrokerSection {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}

fn default_algorithm() -> SigningAlgorithm {
    SigningAlgorithm::EdDSA
}
fn default_audience() -> String {
    DEFAULT_AUDIENCE.to_owned()
}
fn default_lifetime() -> u64 {
    DEFAULT_TOKEN_LIFETIME_SECS
}
fn default_publish_lead() -> u64 {
    DEFAULT_PUBLISH_LEAD_SECS
}
fn default_sub_format() -> SubFormat {
    SubFormat::Uuid
}
fn default_allowed_uids() -> Vec<u32> {
    vec![0]
}

impl TryFrom<RawBrokerSection> for BrokerSection {
    type Error = String;

    fn try_from(raw: RawBrokerSection) -> Result<Self, Self::Error> {
        if !(60..=86_400).contains(&raw.token_lifetime_secs) {
            return Err(format!(
                "token_lifetime_secs: expected 60 to 86400 seconds, got {}",
                raw.token_lifetime_secs
            ));
        }
        if raw.publish_lead_secs > 86_400 {
            return Err(format!(
                "publish_lead_secs: expected 0 to 86400 seconds, got {}",
                raw.publish_lead_secs
            ));
        }
        for (name, value) in [
            ("audience", Some(&raw.audience)),
            ("issuer", raw.issuer.as_ref()),
            ("workload.audience", raw.workload.audience.as_ref()),
            ("workload.issuer", raw.workload.issuer.as_ref()),
        ] {
            if value
                .is_some_and(|v| v.is_empty() || v.len() > 256 || v.chars().any(char::is_control))
            {
                return Err(format!("{name}: expected 1 to 256 printable characters"));
            }
        }
        let keys = match (raw.key_dir, raw.key_env) {
            (Some(_), Some(_)) => {
                return Err(
                    "key_dir and key_env are both set; keys come from one place (key_dir allows \
                     rotation, key_env does not)"
                        .to_owned(),
                );
            }
            (_, Some(name)) => {
                let valid = !name.is_empty()
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    && !name.as_bytes()[0].is_ascii_digit();
                if !valid {
                    return Err(format!(
                        "key_env: expected an environment variable name such as \
                         \"BULKHEAD_SIGNING_KEY\", got {name:?}"
                    ));
                }
                KeySource::Env(name)
            }
            (dir, None) => KeySource::Dir(dir.map(|dir| dir.as_path().to_owned())),
        };
        if raw.allowed_uids.is_empty() {
            return Err(
                "allowed_uids is empty: no supervisor could register a task (root is uid 0)"
                    .to_owned(),
            );
        }
        if raw.workload.jwks_file.is_some() && raw.workload.secret_file.is_some() {
            return Err(
                "workload: set jwks_file (asymmetric issuer keys) or secret_file (a shared \
                 HS512 secret), not both"
                    .to_owned(),
            );
        }
        if raw.jwks_listen.is_some() && raw.algorithm == SigningAlgorithm::HS512 {
            return Err(
                "jwks_listen: an HS512 broker has no public keys to publish (the API server \
                 verifies with the shared jwt_secret); remove jwks_listen"
                    .to_owned(),
            );
        }
        match raw.workload.algorithm {
            Some(_) if raw.workload.jwks_file.is_none() => {
                return Err(
                    "workload.algorithm names the algorithm of jwks_file keys without \"alg\"; \
                     set jwks_file, or remove it (a secret_file is always HS512)"
                        .to_owned(),
                );
            }
            Some(SigningAlgorithm::HS512) => {
                return Err(
                    "workload.algorithm: a JWKS holds public keys (EdDSA, RS256 or RS512); for \
                     Airflow's HS512 jwt_secret set secret_file instead"
                        .to_owned(),
                );
            }
            _ => {}
        }
        if raw.enabled && !raw.local_issuing && !raw.workload.is_configured() {
            return Err(
                "an enabled broker needs a way to register tasks: set [broker.workload] jwks_file \
                 or secret_file (the executor's token issuer), or local_issuing = true"
                    .to_owned(),
            );
        }
        Ok(Self {
            enabled: raw.enabled,
            algorithm: raw.algorithm,
            keys,
            audience: raw.audience,
            issuer: raw.issuer,
            token_lifetime: Duration::from_secs(raw.token_lifetime_secs),
            publish_lead: Duration::from_secs(raw.publish_lead_secs),
            allowed_uids: raw.allowed_uids,
            in_domain_mint: raw.in_domain_mint,
            local_issuing: raw.local_issuing,
            sub_format: raw.sub_format,
            jwks_listen: raw.jwks_listen,
            workload: raw.workload,
        })
    }
}

impl BrokerSection {
    /// The key directory: configured, or `<state_dir>/keys`. `None` for keys from the
    /// environment.
    pub fn key_dir(&self, state_dir: &std::path::Path) -> Option<PathBuf> {
        match &self.keys {
            KeySource::Dir(Some(dir)) => Some(dir.clone()),
            KeySource::Dir(None) => Some(state_dir.join(DEFAULT_KEY_SUBDIR)),
            KeySource::Env(_) => None,
        }
    }

    /// The audience workload tokens must carry.
    pub fn workload_audience(&self) -> &str {
        self.workload.audience.as_deref().unwrap_or(&self.audience)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::NodeConfig;

    fn broker_error(section: &str) -> String {
        NodeConfig::parse(&format!("[broker]\n{section}")).unwrap_err()
    }

    #[test]
    fn disabled_by_default_with_documented_values() {
        let broker = NodeConfig::parse("").unwrap().broker;
        assert!(!broker.enabled);
        assert_eq!(broker.audience, "urn:airflow.apache.org:task");
        assert_eq!(broker.token_lifetime.as_secs(), 600);
        assert_eq!(broker.allowed_uids, [0]);
        assert_eq!(
            broker.key_dir(std::path::Path::new("/var/lib/bulkhead")),
            Some("/var/lib/bulkhead/keys".into())
        );
    }

    #[test]
    fn bad_broker_sections_are_refused_with_the_reason() {
        for (section, expected) in [
            ("enabled = true\n", "needs a way to register tasks"),
            ("token_lifetime_secs = 5\n", "token_lifetime_secs"),
            ("publish_lead_secs = 100000\n", "publish_lead_secs"),
            (
                "key_dir = \"/k\"\nkey_env = \"K\"\n",
                "key_dir and key_env are both set",
            ),
            ("key_env = \"A-B\"\n", "key_env"),
            ("allowed_uids = []\n", "allowed_uids is empty"),
            ("audience = \"\"\n", "audience"),
            ("issuer = \"a\\nb\"\n", "issuer"),
            ("algorithm = \"HS256\"\n", "HS256"),
            ("key_dir = \"keys\"\n", "absolute path"),
            ("lifetime = 5\n", "unknown field"),
            (
                "[broker.workload]\njwks_file = \"/a\"\nsecret_file = \"/b\"\n",
                "not both",
            ),
        ] {
            let err = broker_error(section);
            assert!(err.contains(expected), "{section:?}: {err}");
        }
    }

    #[test]
    fn a_workable_broker_is_accepted() {
        let config = NodeConfig::parse(
            "[broker]\nenabled = true\nalgorithm = \"RS256\"\nissuer = \"bulkhead\"\n\
             allowed_uids = [0, 50000]\n[broker.workload]\njwks_file = \"/etc/bulkhead/jwks.json\"\n",
        )
        .unwrap();
        assert!(config.broker.enabled);
        assert_eq!(config.broker.allowed_uids, [0, 50000]);
        assert_eq!(
            config.broker.workload_audience(),
            "urn:airflow.apache.org:task"
        );
        let local =
            NodeConfig::parse("[broker]\nenabled = true\nlocal_issuing = true\nkey_env = \"K\"\n")
                .unwrap();
        assert_eq!(local.broker.key_dir(std::path::Path::new("/s")), None);
    }
}
