//! The broker's operations, each deciding from the caller as the kernel attests it (PID, uid
//! and domain read through a pidfd), never from what the request claims.
//!
//! Who may do what:
//! - register a task: a process outside any domain, of an allowed uid, presenting a valid
//!   workload token (or a task identity where local issuing is on), for its own child;
//! - mint: the supervisor that registered the domain (while it lives), or, where the node
//!   allows it, a process inside that very domain;
//! - introspect, revoke, list revocations: processes outside any domain (revoking a token or
//!   domain also needs ownership or root);
//! - the JWKS: anyone.

use std::{
    sync::{Arc, RwLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bulkhead_common::DomainId;
use jsonwebtoken::jwk::JwkSet;

use super::{
    claims::Scope,
    config::{BrokerSection, SubFormat},
    domain_locks::DomainLocks,
    ledger::{GroupedLedger, RevokeReason, TokenStanding},
    mint::{MintError, Minter},
    owners::{Owner, Owners},
    pending::{PendingRegistrations, REGISTRATION_TTL, Registration},
    verify::{LEEWAY_SECS, TrustedKey, Verifier, VerifyError},
};
use crate::{
    api::wire::{
        IntrospectResponse, MintResponse, RegisterRequest, RegisterResponse, RevokeRequest,
        SealSelfResponse,
    },
    domains::{Domains, EndedDomain, Label, SealError, TaskBinding},
    keys::keyring::Keyring,
    peer::{Peer, PeerError},
    state::StateDb,
};

/// Longest task identity accepted (Airflow's are 36-character UUIDs).
const MAX_SUB_LEN: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("workload token refused: {0}")]
    WorkloadToken(VerifyError),
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error("cannot identify the process: {0}")]
    Process(#[from] PeerError),
    #[error("{0}")]
    NotFound(String),
    #[error(
        "the domain's current token still has more than 20% of its life; ask again in {retry_after} s"
    )]
    Fresh { retry_after: u64 },
    #[error(transparent)]
    Mint(#[from] MintError),
    #[error("the caller vanished before the answer; nothing was handed out")]
    CallerGone,
    #[error("state database: {0}")]
    Storage(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Busy(String),
}

fn storage(err: anyhow::Error) -> BrokerError {
    BrokerError::Storage(format!("{err:#}"))
}

/// What the broker signs with and trusts, swapped whole when the keys rotate.
struct Keys {
    keyring: Keyring,
    minter: Minter,
    verifier: Verifier,
}

pub struct Settings {
    pub audience: String,
    pub issuer: Option<String>,
    pub lifetime: Duration,
    pub allowed_uids: Vec<u32>,
    pub in_domain_mint: bool,
    pub local_issuing: bool,
    pub sub_format: SubFormat,
    /// How long a registration made for `bulkhead exec` waits for its process.
    pub registration_ttl: Duration,
}

impl Settings {
    pub fn from_config(config: &BrokerSection) -> Self {
        Self {
            audience: config.audience.clone(),
            issuer: config.issuer.clone(),
            lifetime: config.token_lifetime,
            allowed_uids: config.allowed_uids.clone(),
            in_domain_mint: config.in_domain_mint,
            local_issuing: config.local_issuing,
            sub_format: config.sub_format,
            registration_ttl: REGISTRATION_TTL,
        }
    }
}

pub struct Broker {
    settings: Settings,
    keys: RwLock<Arc<Keys>>,
    workload: Option<Verifier>,
    ledger: Arc<StateDb>,
    domains: Arc<Domains>,
    owners: Owners,
    pending: PendingRegistrations,
    /// Serialises minting per domain, so a domain's freshness check and the record of its
    /// new token are one step; other domains' mints go on meanwhile.
    minting: DomainLocks,
    /// Where minted tokens are recorded: concurrent mints share a durable commit.
    recorder: GroupedLedger,
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Broker {
    pub fn new(
        settings: Settings,
        keyring: Keyring,
        workload: Option<Verifier>,
        ledger: Arc<StateDb>,
        domains: Arc<Domains>,
    ) -> Self {
        let keys = Arc::new(Self::build_keys(&settings, keyring));
        let broker = Self {
            pending: PendingRegistrations::new(settings.registration_ttl),
            settings,
            keys: RwLock::new(keys),
            workload,
            recorder: GroupedLedger::new(ledger.clone()),
            ledger,
            domains,
            owners: Owners::default(),
            minting: DomainLocks::default(),
        };
        let restored = broker.owners.restore(&broker.domains.live());
        if restored > 0 {
            tracing::info!(restored, "supervisors of registered domains found again");
        }
        broker
    }

    fn build_keys(settings: &Settings, keyring: Keyring) -> Keys {
        let trusted = keyring
            .held
            .iter()
            .map(|held| {
                (
                    held.key.kid().to_owned(),
                    TrustedKey {
                        algorithm: held.key.algorithm().jwt(),
                        key: held.key.decoding_key().clone(),
                    },
                )
            })
            .collect();
        Keys {
            minter: Minter {
                key: keyring.signing().clone(),
                audience: settings.audience.clone(),
                issuer: settings.issuer.clone(),
                lifetime: settings.lifetime,
            },
            verifier: Verifier::new(trusted, settings.audience.clone(), settings.issuer.clone()),
            keyring,
        }
    }

    fn keys(&self) -> Arc<Keys> {
        self.keys.read().expect("keys lock poisoned").clone()
    }

    pub fn signing_kid(&self) -> String {
        self.keys().minter.key.kid().to_owned()
    }

    /// The keyring's shape (creation times and roles), to tell when a reload is due.
    pub fn key_shape(&self) -> Vec<(u64, crate::keys::rotation::Role)> {
        self.keys().keyring.shape()
    }

    /// Installs a rotated keyring; tokens already minted stay valid under the keys it keeps.
    pub fn install_keyring(&self, keyring: Keyring) {
        let signing = keyring.signing().kid().to_owned();
        let published = keyring.held.len();
        *self.keys.write().expect("keys lock poisoned") =
            Arc::new(Self::build_keys(&self.settings, keyring));
        tracing::info!(signing_kid = %signing, published, "signing keys updated");
    }

    fn require_outside_domain(&self, caller: &Peer, what: &str) -> Result<(), BrokerError> {
        match self.domains.lookup(caller)? {
            None => Ok(()),
            Some(_) => Err(BrokerError::Forbidden(format!(
                "a process inside a domain cannot {what}"
            ))),
        }
    }

    fn require_allowed_uid(&self, caller: &Peer) -> Result<(), BrokerError> {
        if self.settings.allowed_uids.contains(&caller.uid) {
            Ok(())
        } else {
            Err(BrokerError::Forbidden(format!(
                "uid {} is not in the broker's allowed_uids",
                caller.uid
            )))
        }
    }

    /// Opens a domain for a task and seals the caller's child `pid` into it; without a `pid`,
    /// holds the registration for the child that will present its id (`bulkhead exec`).
    pub fn register(
        &self,
        caller: &Peer,
        request: RegisterRequest,
    ) -> Result<RegisterResponse, BrokerError> {
        self.require_outside_domain(caller, "register a task")?;
        self.require_allowed_uid(caller)?;
        let label = request
            .label
            .map(Label::try_from)
            .transpose()
            .map_err(BrokerError::BadRequest)?;
        let sub = self.task_identity(request.workload_token, request.sub)?;
        let Some(pid) = request.pid else {
            return self.hold_registration(caller, sub, label);
        };
        let child = caller.child(pid)?;
        let binding = TaskBinding {
            sub,
            owner_pid: caller.pid,
            owner_start: caller.start_time()?,
            owner_uid: caller.uid,
        };
        let sub = binding.sub.clone();
        let (domain, label) = self.open_task_domain(&child, label, binding, Owner::of(caller))?;
        Ok(RegisterResponse {
            domain: Some(domain),
            registration: None,
            expires_in: None,
            sub,
            label: label.map(|label| label.as_str().to_owned()),
        })
    }

    /// How long a registration without a pid waits for its process.
    pub fn registration_ttl(&self) -> Duration {
        self.pending.ttl()
    }

    /// Seals `caller` into the domain of the registration `id`, which its parent made.
    pub fn take_registration(
        &self,
        caller: &Peer,
        id: &str,
    ) -> Result<SealSelfResponse, BrokerError> {
        self.require_outside_domain(caller, "take a registration")?;
        let registration = self.pending.take_for(id, caller)?;
        let binding = TaskBinding {
            sub: registration.sub,
            owner_pid: registration.owner.pid(),
            owner_start: registration.owner_start,
            owner_uid: registration.owner_uid,
        };
        let (domain, label) =
            self.open_task_domain(caller, registration.label, binding, Ok(registration.owner))?;
        Ok(SealSelfResponse {
            domain,
            label: label.map(|label| label.as_str().to_owned()),
        })
    }

    /// The task identity: the `sub` of a valid workload token, or a given `sub` where the node
    /// allows local issuing.
    fn task_identity(
        &self,
        workload_token: Option<String>,
        sub: Option<String>,
    ) -> Result<String, BrokerError> {
        let sub = match (workload_token, sub) {
            (Some(_), Some(_)) => {
                return Err(BrokerError::BadRequest(
                    "give a workload_token or a sub, not both: the token names the task".into(),
                ));
            }
            (Some(token), None) => {
                let verifier = self.workload.as_ref().ok_or_else(|| {
                    BrokerError::BadRequest(
                        "this node has no workload token issuer configured; it registers tasks \
                         by sub (local issuing)"
                            .into(),
                    )
                })?;
                verifier
                    .verify(&token, Scope::Workload)
                    .map_err(BrokerError::WorkloadToken)?
                    .sub
            }
            (None, Some(sub)) if self.settings.local_issuing => sub,
            (None, Some(_)) => {
                return Err(BrokerError::Forbidden(
                    "this node does not allow local issuing; present the task's workload_token"
                        .into(),
                ));
            }
            (None, None) => {
                return Err(BrokerError::BadRequest(
                    "a workload_token is required to register a task".into(),
                ));
            }
        };
        validate_sub(&sub, self.settings.sub_format)?;
        Ok(sub)
    }

    fn hold_registration(
        &self,
        caller: &Peer,
        sub: String,
        label: Option<Label>,
    ) -> Result<RegisterResponse, BrokerError> {
        let registration = Registration {
            sub: sub.clone(),
            label: label.clone(),
            owner: Owner::of(caller).map_err(|source| {
                BrokerError::Process(PeerError::Pidfd {
                    pid: caller.pid,
                    source,
                })
            })?,
            owner_start: caller.start_time()?,
            owner_uid: caller.uid,
        };
        let id = self.pending.add(registration)?;
        tracing::info!(
            sub = %sub,
            label = label.as_ref().map(Label::as_str).unwrap_or("-"),
            supervisor_pid = caller.pid,
            "task registered; waiting for its process (bulkhead exec --registration)"
        );
        Ok(RegisterResponse {
            domain: None,
            registration: Some(id),
            expires_in: Some(self.pending.ttl().as_secs()),
            sub,
            label: label.map(|label| label.as_str().to_owned()),
        })
    }

    /// Seals `process` into a new domain bound to `binding`, and remembers `owner` as the
    /// supervisor that may mint for it. Returns the domain and its label.
    fn open_task_domain(
        &self,
        process: &Peer,
        label: Option<Label>,
        binding: TaskBinding,
        owner: std::io::Result<Owner>,
    ) -> Result<(DomainId, Option<Label>), BrokerError> {
        let sub = binding.sub.clone();
        let supervisor_pid = binding.owner_pid;
        let record = self.domains.seal_task(process, label, binding)?;
        match owner {
            Ok(owner) => self.owners.insert_held(record.id, owner),
            // The task is confined either way; only minting for it is lost.
            Err(err) => {
                tracing::error!(domain = record.id, error = %err, "cannot hold the supervisor's pidfd");
            }
        }
        tracing::info!(
            domain = record.id,
            sub = %sub,
            label = record.label.as_ref().map(Label::as_str).unwrap_or("-"),
            supervisor_pid,
            task_pid = process.pid,
            "task registered and sealed"
        );
        Ok((record.id, record.label))
    }

    /// Mints an execution token for a domain, to its owner or (if allowed) a process in it.
    pub fn mint(
        &self,
        caller: &Peer,
        domain: Option<DomainId>,
    ) -> Result<MintResponse, BrokerError> {
        let domain = self.mint_target(caller, domain)?;
        let record = self
            .domains
            .record(domain)
            .ok_or_else(|| BrokerError::NotFound(format!("no live domain {domain}")))?;
        let task = record.task.ok_or_else(|| {
            BrokerError::NotFound(format!(
                "domain {domain} was not registered as a task; it has no identity to mint for"
            ))
        })?;
        let keys = self.keys();
        let _this_domain = self.minting.lock(domain);
        self.check_refresh_allowed(domain)?;
        let (token, claims) =
            keys.minter
                .mint(Scope::Execution, &task.sub, domain, &self.recorder)?;
        // Re-checked after the work: a caller that exited (its PID now free for reuse) or a
        // domain that ended meanwhile gets nothing, and the recorded token is revoked.
        let gone = !caller.is_alive() || !self.domains.is_live(domain);
        if gone {
            if let Err(err) = self
                .ledger
                .revoke(&claims.jti, RevokeReason::CallerGone, now())
            {
                tracing::error!(jti = %claims.jti, error = format!("{err:#}"), "could not revoke an undelivered token");
            }
            return Err(BrokerError::CallerGone);
        }
        tracing::info!(
            domain,
            sub = %task.sub,
            jti = %claims.jti,
            kid = %keys.minter.key.kid(),
            pid = caller.pid,
            "execution token minted"
        );
        Ok(MintResponse {
            token: token.to_string(),
            jti: claims.jti,
            domain,
            sub: claims.sub,
            kid: keys.minter.key.kid().to_owned(),
            exp: claims.exp,
            expires_in: claims.exp.saturating_sub(now()),
        })
    }

    /// The live domain of task `sub` that `caller` registered. Not yet sealed, ended, or
    /// another supervisor's all answer the same, so the answer tells a caller nothing about
    /// tasks that are not its own.
    pub fn supervised_task_domain(
        &self,
        caller: &Peer,
        sub: &str,
    ) -> Result<DomainId, BrokerError> {
        self.domains
            .task_domain(sub)
            .filter(|domain| self.owners.is_owner(*domain, caller))
            .ok_or_else(|| {
                BrokerError::NotFound(
                    "no live domain of yours for this task (not sealed yet, or ended)".into(),
                )
            })
    }

    /// The domain `caller` may mint for.
    fn mint_target(&self, caller: &Peer, asked: Option<DomainId>) -> Result<DomainId, BrokerError> {
        match self.domains.lookup(caller)? {
            Some(own) => {
                if !self.settings.in_domain_mint {
                    return Err(BrokerError::Forbidden(
                        "this node hands tokens to supervisors only, not to processes inside a \
                         domain (in_domain_mint = false)"
                            .into(),
                    ));
                }
                match asked {
                    Some(other) if other != own => Err(BrokerError::Forbidden(format!(
                        "a process in domain {own} cannot mint for domain {other}"
                    ))),
                    _ => Ok(own),
                }
            }
            None => {
                let domain = asked
                    .ok_or_else(|| BrokerError::BadRequest("name the domain to mint for".into()))?;
                if self.owners.is_owner(domain, caller) {
                    Ok(domain)
                } else {
                    Err(BrokerError::Forbidden(format!(
                        "only the live supervisor that registered domain {domain} may mint for it"
                    )))
                }
            }
        }
    }

    /// A domain gets a new token only once its newest live one has less than 20% of its life
    /// left: each domain holds at most two live tokens, and the ledger stays bounded.
    fn check_refresh_allowed(&self, domain: DomainId) -> Result<(), BrokerError> {
        let now = now();
        let window = self.settings.lifetime.as_secs() / 5;
        let newest_exp = self
            .ledger
            .domain_tokens(domain)
            .map_err(storage)?
            .into_iter()
            .filter_map(|standing| match standing {
                TokenStanding::Live(issued) => Some(issued.exp),
                _ => None,
            })
            .max();
        match newest_exp {
            Some(exp) if exp.saturating_sub(now) > window => Err(BrokerError::Fresh {
                retry_after: exp - window - now,
            }),
            _ => Ok(()),
        }
    }

    /// Verifies a token for a local validator: signature, claims, scope, issued here, not
    /// revoked. A refusal is an answer (`active: false` with the reason), not an error.
    pub fn introspect(
        &self,
        caller: &Peer,
        token: &str,
        scope: Scope,
    ) -> Result<IntrospectResponse, BrokerError> {
        self.require_outside_domain(caller, "introspect tokens")?;
        let inactive = |reason: String| IntrospectResponse {
            active: false,
            reason: Some(reason),
            claims: None,
            domain: None,
        };
        let claims = match self.keys().verifier.verify(token, scope) {
            Ok(claims) => claims,
            Err(err) => return Ok(inactive(err.to_string())),
        };
        Ok(match self.ledger.standing(&claims.jti).map_err(storage)? {
            TokenStanding::Live(issued) => IntrospectResponse {
                active: true,
                reason: None,
                domain: Some(issued.domain),
                claims: Some(claims),
            },
            TokenStanding::Revoked(_, revoked) => {
                inactive(format!("revoked: {}", revoked.reason.as_str()))
            }
            TokenStanding::Unknown => inactive("jti was never issued by this broker".into()),
        })
    }

    /// Revokes one token or all of a domain's, for its owner or root.
    pub fn revoke(&self, caller: &Peer, request: RevokeRequest) -> Result<usize, BrokerError> {
        self.require_outside_domain(caller, "revoke tokens")?;
        let may_revoke = |domain: DomainId| caller.uid == 0 || self.owners.is_owner(domain, caller);
        match (request.jti, request.domain) {
            (Some(jti), None) => {
                let issued = match self.ledger.standing(&jti).map_err(storage)? {
                    TokenStanding::Live(issued) => issued,
                    TokenStanding::Revoked(..) => return Ok(0),
                    TokenStanding::Unknown => {
                        return Err(BrokerError::NotFound(
                            "no live token with that jti was issued here".into(),
                        ));
                    }
                };
                if !may_revoke(issued.domain) {
                    return Err(BrokerError::Forbidden(
                        "only root or the domain's supervisor may revoke its tokens".into(),
                    ));
                }
                self.ledger
                    .revoke(&jti, RevokeReason::Requested, now())
                    .map_err(storage)?;
                tracing::info!(jti = %jti, domain = issued.domain, pid = caller.pid, "token revoked");
                Ok(1)
            }
            (None, Some(domain)) => {
                if !may_revoke(domain) {
                    return Err(BrokerError::Forbidden(
                        "only root or the domain's supervisor may revoke its tokens".into(),
                    ));
                }
                let count = self
                    .ledger
                    .revoke_domain(domain, RevokeReason::Requested, now())
                    .map_err(storage)?;
                tracing::info!(domain, count, pid = caller.pid, "domain's tokens revoked");
                Ok(count)
            }
            _ => Err(BrokerError::BadRequest(
                "give exactly one of jti or domain".into(),
            )),
        }
    }

    pub fn revocations(&self, caller: &Peer) -> Result<Vec<super::ledger::Revoked>, BrokerError> {
        self.require_outside_domain(caller, "list revocations")?;
        self.ledger.revocations().map_err(storage)
    }

    /// The public keys of every published key (none for HS512).
    pub fn jwks(&self) -> JwkSet {
        self.keys().keyring.jwks()
    }

    /// A domain ended: its supervisor's hold goes and its tokens are revoked.
    pub fn domain_ended(&self, ended: &EndedDomain) {
        let id = ended.record.id;
        self.owners.remove(id);
        match self
            .ledger
            .revoke_domain(id, RevokeReason::DomainEnded, now())
        {
            Ok(0) => {}
            Ok(count) => tracing::info!(domain = id, count, "domain ended; its tokens are revoked"),
            Err(err) => tracing::error!(
                domain = id,
                error = format!("{err:#}"),
                "domain ended but its tokens could not be revoked; retrying at the next sweep"
            ),
        }
    }

    /// Revokes the tokens of every domain that is no longer live (ends missed while the agent
    /// was down or a notice was lost) and prunes expired entries. Cheap: the ledger holds live
    /// tokens only.
    pub fn sweep(&self) -> anyhow::Result<(usize, usize)> {
        let now = now();
        let mut revoked = 0;
        for domain in self.ledger.domains_with_tokens()? {
            if !self.domains.is_live(domain) {
                self.owners.remove(domain);
                revoked += self
                    .ledger
                    .revoke_domain(domain, RevokeReason::DomainEnded, now)?;
            }
        }
        let pruned = self.ledger.prune(now.saturating_sub(LEEWAY_SECS))?;
        Ok((revoked, pruned))
    }
}

fn validate_sub(sub: &str, format: SubFormat) -> Result<(), BrokerError> {
    let printable = sub.chars().all(|c| c.is_ascii_graphic());
    if sub.is_empty() || sub.len() > MAX_SUB_LEN || !printable {
        return Err(BrokerError::BadRequest(format!(
            "a task identity (sub) is 1 to {MAX_SUB_LEN} printable ASCII characters"
        )));
    }
    if format == SubFormat::Uuid && !is_canonical_uuid(sub) {
        return Err(BrokerError::BadRequest(
            "a task identity (sub) on this node is a task instance UUID in lowercase hyphenated \
             form, as Airflow writes it ([broker] sub_format = \"uuid\")"
                .into(),
        ));
    }
    Ok(())
}

/// The one spelling Airflow gives a UUID (`str(uuid.UUID)`).
fn is_canonical_uuid(text: &str) -> bool {
    uuid::Uuid::try_parse(text).is_ok_and(|id| id.hyphenated().to_string() == text)
}
