//! Starting the broker inside the agent, and its upkeep: domain ends revoke tokens, rotated
//! keys are picked up, expired ledger entries are pruned.

use std::{path::Path, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::sync::broadcast::error::RecvError;

use super::{
    config::{BrokerSection, KeySource},
    issuer,
    service::{Broker, Settings, now},
    verify::LEEWAY_SECS,
};
use crate::{
    domains::Domains,
    keys::{
        generate::{generate, write_new},
        keyring::{self, Keyring},
        material::SigningAlgorithm,
        rotation::{self, Schedule},
    },
    state::StateDb,
};

/// How often the key directory is looked at for rotations.
pub const KEY_CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// How often ended domains are swept and expired tokens pruned.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// The rotation schedule: a retired key stays published for the longest token lifetime, the
/// verification leeway, and two key checks (the agent notices a switch up to one check late).
pub fn schedule(config: &BrokerSection) -> Schedule {
    Schedule {
        publish_lead: config.publish_lead.as_secs(),
        retire_after: config.token_lifetime.as_secs()
            + LEEWAY_SECS
            + 2 * KEY_CHECK_INTERVAL.as_secs(),
    }
}

/// Everything the broker reads from the node config and its files (signing keys, the
/// workload issuer's keys), read and checked before the agent touches the kernel or binds its
/// socket: a broker that cannot start must stop the agent while nothing has changed, not after
/// supervisors were told it is serving.
pub struct PreparedBroker {
    settings: Settings,
    keyring: Keyring,
    workload: Option<super::verify::Verifier>,
}

/// Reads the broker's keys and issuer, or `None` when the broker is disabled.
pub fn prepare(config: &BrokerSection, state_dir: &Path) -> anyhow::Result<Option<PreparedBroker>> {
    if !config.enabled {
        return Ok(None);
    }
    let workload =
        issuer::workload_verifier(config).context("reading the workload token issuer")?;
    let keyring = match config.key_dir(state_dir) {
        Some(dir) => {
            ensure_first_key(&dir, config.algorithm)?;
            keyring::load_dir(&dir, config.algorithm, now(), schedule(config))?
        }
        None => match &config.keys {
            KeySource::Env(name) => Keyring::from_env(name, config.algorithm)?,
            KeySource::Dir(_) => unreachable!("key_dir is None only for keys from the environment"),
        },
    };
    Ok(Some(PreparedBroker {
        settings: Settings::from_config(config),
        keyring,
        workload,
    }))
}

/// What `bulkhead check-config` can tell without changing anything: the workload issuer's
/// keys and the signing keys read as the agent will read them. A key directory that does not
/// exist yet is fine for an asymmetric algorithm (the agent makes the first key).
pub fn check(config: &BrokerSection, state_dir: &Path) -> anyhow::Result<()> {
    if !config.enabled {
        return Ok(());
    }
    issuer::workload_verifier(config).context("reading the workload token issuer")?;
    match config.key_dir(state_dir) {
        Some(dir) if dir.exists() && !keyring::list_dir(&dir)?.is_empty() => {
            keyring::load_dir(&dir, config.algorithm, now(), schedule(config))?;
        }
        Some(dir) if config.algorithm.is_symmetric() => return Err(no_shared_secret(&dir)),
        Some(_) => {}
        None => match &config.keys {
            KeySource::Env(name) => drop(Keyring::from_env(name, config.algorithm)?),
            KeySource::Dir(_) => unreachable!("key_dir is None only for keys from the environment"),
        },
    }
    Ok(())
}

impl PreparedBroker {
    /// The broker, serving the domains the agent restored.
    pub fn start(self, ledger: Arc<StateDb>, domains: Arc<Domains>) -> Arc<Broker> {
        let lifetime_secs = self.settings.lifetime.as_secs();
        let broker = Broker::new(self.settings, self.keyring, self.workload, ledger, domains);
        tracing::info!(
            signing_kid = %broker.signing_kid(),
            lifetime_secs,
            "token broker ready"
        );
        Arc::new(broker)
    }
}

/// On a new node the key directory is created (0700) and, for an asymmetric algorithm, given
/// its first key. A shared HS512 secret must come from the operator: the API server has to
/// hold the same one.
fn ensure_first_key(dir: &Path, algorithm: SigningAlgorithm) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating the key directory {}", dir.display()))?;
    if !keyring::list_dir(dir)?.is_empty() {
        return Ok(());
    }
    if algorithm.is_symmetric() {
        return Err(no_shared_secret(dir));
    }
    let created = now();
    let material = generate(algorithm, 3072)?;
    write_new(&dir.join(rotation::file_name(created)), material.as_bytes())?;
    tracing::warn!(dir = %dir.display(), ?algorithm, "no signing key yet: generated the node's first key");
    Ok(())
}

fn no_shared_secret(dir: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "the key directory {} holds no key; put the HS512 secret the API server uses in {}/{} \
         (mode 0600)",
        dir.display(),
        dir.display(),
        rotation::file_name(0)
    )
}

/// Spawns the upkeep tasks. Call before the domain-end reader starts, so no end is missed.
pub fn spawn_upkeep(
    broker: Arc<Broker>,
    domains: &Domains,
    config: &BrokerSection,
    state_dir: &Path,
) {
    let mut ends = domains.subscribe_ends();
    let on_end = broker.clone();
    tokio::spawn(async move {
        loop {
            match ends.recv().await {
                Ok(ended) => on_end.domain_ended(&ended),
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "missed domain-end notices; sweeping the ledger");
                    sweep(&on_end);
                }
                Err(RecvError::Closed) => return,
            }
        }
    });
    let key_dir = config.key_dir(state_dir);
    let (algorithm, schedule) = (config.algorithm, schedule(config));
    tokio::spawn(async move {
        let mut keys = tokio::time::interval(KEY_CHECK_INTERVAL);
        let mut sweeps = tokio::time::interval(SWEEP_INTERVAL);
        loop {
            tokio::select! {
                _ = keys.tick() => if let Some(dir) = &key_dir {
                    reload_keys(&broker, dir, algorithm, schedule);
                },
                _ = sweeps.tick() => sweep(&broker),
            }
        }
    });
}

fn sweep(broker: &Broker) {
    match broker.sweep() {
        Ok((0, 0)) => {}
        Ok((revoked, pruned)) => {
            tracing::info!(
                revoked,
                pruned,
                "ledger swept: tokens of ended domains revoked, expired entries pruned"
            )
        }
        Err(err) => tracing::error!(
            error = format!("{err:#}"),
            "ledger sweep failed; retrying later"
        ),
    }
}

/// Loads the key directory again when a key's role changed or a key was added or removed. A
/// directory that does not load leaves the current keys signing.
fn reload_keys(broker: &Broker, dir: &Path, algorithm: SigningAlgorithm, schedule: Schedule) {
    // One look at the directory decides both whether to reload and what to load.
    let plan = match keyring::plan(dir, now(), schedule) {
        Ok(plan) => plan,
        Err(err) => {
            tracing::error!(
                error = format!("{err:#}"),
                "cannot read the key directory; the current keys stay in use"
            );
            return;
        }
    };
    let shape: Vec<_> = plan
        .iter()
        .filter(|(_, _, role)| role.is_published())
        .map(|(created, _, role)| (*created, *role))
        .collect();
    if shape == broker.key_shape() {
        return;
    }
    match keyring::load_planned(dir, plan, algorithm) {
        Ok(keyring) => broker.install_keyring(keyring),
        Err(err) => tracing::error!(
            error = format!("{err:#}"),
            "rotated keys do not load; the current keys stay in use"
        ),
    }
}
