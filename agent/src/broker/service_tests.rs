//! The broker's decisions with real processes as callers (this test process as supervisor, its
//! `sleep` children as tasks) and fake kernel maps: who may register, mint, introspect and
//! revoke, and what a domain's end does. Each refusal has its allowed twin.

use std::{
    collections::HashMap,
    io,
    os::{
        fd::{AsFd, AsRawFd, BorrowedFd},
        unix::net::UnixStream,
    },
    process::{Child, Command},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use bulkhead_common::DomainId;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use super::{
    claims::{DEFAULT_AUDIENCE, Scope},
    config::SubFormat,
    mint::{Issued, IssuedRegistry, Minter},
    pending::REGISTRATION_TTL,
    service::{Broker, BrokerError, Settings, now},
    verify::{TrustedKey, Verifier},
};
use crate::{
    api::wire::{RegisterRequest, RevokeRequest},
    domains::{Census, DomainStore, Domains, Noticed},
    enforce::{domain_census::CensusError, task_storage::LabelError},
    keys::{
        generate::generate,
        keyring::{HeldKey, Keyring},
        material::{SigningAlgorithm, SigningKey},
        rotation::Role,
    },
    peer::Peer,
    state::StateDb,
};

/// Labels keyed by the PID a pidfd names (from /proc/self/fdinfo), so any pidfd of a process
/// finds its label, as task storage does.
#[derive(Default, Clone)]
struct Labels(Arc<Mutex<HashMap<i32, DomainId>>>);

fn pid_of(pidfd: BorrowedFd<'_>) -> i32 {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd())).unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix("Pid:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

impl crate::domains::TaskLabels for Labels {
    fn lookup(&self, pidfd: BorrowedFd<'_>) -> io::Result<Option<DomainId>> {
        Ok(self.0.lock().unwrap().get(&pid_of(pidfd)).copied())
    }
    fn label_new(&self, pidfd: BorrowedFd<'_>, domain: DomainId) -> Result<(), LabelError> {
        match self.0.lock().unwrap().entry(pid_of(pidfd)) {
            std::collections::hash_map::Entry::Occupied(_) => Err(LabelError::AlreadyLabelled),
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(domain);
                Ok(())
            }
        }
    }
    fn unlabel(&self, pidfd: BorrowedFd<'_>) -> io::Result<()> {
        self.0.lock().unwrap().remove(&pid_of(pidfd));
        Ok(())
    }
}

#[derive(Default, Clone)]
struct Counts(Arc<Mutex<std::collections::HashSet<DomainId>>>);

impl Census for Counts {
    fn open(&mut self, domain: DomainId) -> Result<(), CensusError> {
        self.0.lock().unwrap().insert(domain);
        Ok(())
    }
    fn discard(&mut self, domain: DomainId) -> io::Result<()> {
        self.0.lock().unwrap().remove(&domain);
        Ok(())
    }
    fn running_tasks(&self, domain: DomainId) -> io::Result<Option<u64>> {
        Ok(self.0.lock().unwrap().contains(&domain).then_some(1))
    }
}

/// The executor's key, which signs workload tokens.
struct Executor {
    key: SigningKey,
}

impl Executor {
    fn new() -> Self {
        let pem = generate(SigningAlgorithm::EdDSA, 2048).unwrap();
        Self {
            key: SigningKey::parse(pem.as_bytes(), SigningAlgorithm::EdDSA).unwrap(),
        }
    }

    fn token(&self, sub: &str, scope: &str) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.key.kid().to_owned());
        let now = now();
        let claims = json!({
            "aud": DEFAULT_AUDIENCE, "sub": sub, "scope": scope,
            "iat": now, "nbf": now, "exp": now + 86_400, "jti": "w1",
        });
        jsonwebtoken::encode(&header, &claims, self.key.encoding_key()).unwrap()
    }

    fn verifier(&self) -> Verifier {
        Verifier::new(
            HashMap::from([(
                self.key.kid().to_owned(),
                TrustedKey {
                    algorithm: Algorithm::EdDSA,
                    key: self.key.decoding_key().clone(),
                },
            )]),
            DEFAULT_AUDIENCE.to_owned(),
            None,
        )
    }
}

fn signing_key() -> Arc<SigningKey> {
    let pem = generate(SigningAlgorithm::EdDSA, 2048).unwrap();
    Arc::new(SigningKey::parse(pem.as_bytes(), SigningAlgorithm::EdDSA).unwrap())
}

fn keyring(keys: &[(Arc<SigningKey>, Role)]) -> Keyring {
    Keyring {
        held: keys
            .iter()
            .enumerate()
            .map(|(created, (key, role))| HeldKey {
                key: key.clone(),
                role: *role,
                created: created as u64,
            })
            .collect(),
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    ledger: Arc<StateDb>,
    domains: Arc<Domains>,
    labels: Labels,
    counts: Counts,
    executor: Executor,
    broker: Broker,
    key: Arc<SigningKey>,
    me: Peer,
    _socket: (UnixStream, UnixStream),
    children: Vec<Child>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn settings() -> Settings {
    Settings {
        audience: DEFAULT_AUDIENCE.to_owned(),
        issuer: None,
        lifetime: Duration::from_secs(600),
        allowed_uids: vec![nix::unistd::getuid().as_raw()],
        in_domain_mint: false,
        local_issuing: false,
        // Most tests name tasks "t1"; the shipped default (uuid) has its own tests below.
        sub_format: SubFormat::Any,
        registration_ttl: REGISTRATION_TTL,
    }
}

fn fixture_with(settings: Settings) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(StateDb::open(dir.path()).unwrap());
    let (labels, counts) = (Labels::default(), Counts::default());
    let domains = Arc::new(
        Domains::new(
            Box::new(labels.clone()),
            Box::new(counts.clone()),
            Box::new(ledger.clone()) as Box<dyn DomainStore>,
        )
        .unwrap(),
    );
    let executor = Executor::new();
    let key = signing_key();
    let broker = Broker::new(
        settings,
        keyring(&[(key.clone(), Role::Signing)]),
        Some(executor.verifier()),
        ledger.clone(),
        domains.clone(),
    );
    let socket = UnixStream::pair().unwrap();
    let me = Peer::of_socket(socket.0.as_fd()).unwrap();
    Fixture {
        _dir: dir,
        ledger,
        domains,
        labels,
        counts,
        executor,
        broker,
        key,
        me,
        _socket: socket,
        children: Vec::new(),
    }
}

fn fixture() -> Fixture {
    fixture_with(settings())
}

impl Fixture {
    /// A fresh single-threaded child of this process, as the supervisor's task would be.
    fn child(&mut self) -> i32 {
        let child = Command::new("sleep").arg("60").spawn().unwrap();
        let pid = child.id() as i32;
        self.children.push(child);
        pid
    }

    fn register(&mut self, sub: &str) -> DomainId {
        let pid = self.child();
        let request = RegisterRequest {
            workload_token: Some(self.executor.token(sub, "workload")),
            sub: None,
            pid: Some(pid),
            label: Some("etl.load".into()),
        };
        self.broker
            .register(&self.me, request)
            .unwrap()
            .domain
            .unwrap()
    }

    /// The process `pid` (a child of this one) as a caller.
    fn caller(&self, pid: i32) -> Peer {
        self.me.child(pid).unwrap()
    }

    fn introspect(&self, token: &str) -> (bool, Option<String>) {
        let answer = self
            .broker
            .introspect(&self.me, token, Scope::Execution)
            .unwrap();
        (answer.active, answer.reason)
    }
}

fn register_request(token: Option<String>, sub: Option<&str>, pid: i32) -> RegisterRequest {
    RegisterRequest {
        workload_token: token,
        sub: sub.map(str::to_owned),
        pid: Some(pid),
        label: None,
    }
}

#[test]
fn a_registered_task_is_sealed_bound_to_its_identity_and_its_owner_gets_tokens() {
    let mut f = fixture();
    let sub = "0196a1b2-0000-7000-8000-000000000001";
    let domain = f.register(sub);
    let record = f.domains.record(domain).unwrap();
    let task = record.task.unwrap();
    assert_eq!(task.sub, sub);
    assert_eq!(task.owner_pid, f.me.pid);
    assert_eq!(
        f.labels.0.lock().unwrap().get(&record.sealed_pid),
        Some(&domain)
    );

    let minted = f.broker.mint(&f.me, Some(domain)).unwrap();
    assert_eq!((minted.domain, minted.sub.as_str()), (domain, sub));
    assert_eq!(minted.kid, f.key.kid());
    assert!(minted.expires_in > 590);
    assert_eq!(f.introspect(&minted.token), (true, None));
    assert!(f.ledger.standing(&minted.jti).is_ok());
}

#[test]
fn registration_needs_a_valid_workload_token_and_changes_nothing_otherwise() {
    let mut f = fixture();
    let pid = f.child();
    let stranger = Executor::new();
    for (request, expected) in [
        (
            register_request(None, None, pid),
            "workload_token is required",
        ),
        (
            register_request(Some(f.executor.token("t", "execution")), None, pid),
            "scope",
        ),
        (
            register_request(Some(stranger.token("t", "workload")), None, pid),
            "unknown kid",
        ),
        (
            register_request(Some("not.a.token".into()), None, pid),
            "malformed",
        ),
        (register_request(None, Some("t"), pid), "local issuing"),
        (
            register_request(Some(f.executor.token("t", "workload")), Some("t"), pid),
            "not both",
        ),
        (
            register_request(Some(f.executor.token("bad sub", "workload")), None, pid),
            "printable",
        ),
        // Not the caller's child: its parent.
        (
            register_request(
                Some(f.executor.token("t", "workload")),
                None,
                nix::unistd::getppid().as_raw(),
            ),
            "not a child",
        ),
    ] {
        let err = f.broker.register(&f.me, request).unwrap_err().to_string();
        assert!(err.contains(expected), "expected {expected:?}: {err}");
        assert_eq!(f.domains.count(), 0, "{err}");
        assert!(f.labels.0.lock().unwrap().is_empty(), "{err}");
    }
    // Control: the same child with a good token.
    let good = register_request(Some(f.executor.token("t", "workload")), None, pid);
    f.broker.register(&f.me, good).unwrap();
    assert_eq!(f.domains.count(), 1);
}

#[test]
fn one_live_domain_per_task_and_only_allowed_uids_register() {
    let mut f = fixture();
    f.register("task-1");
    let pid = f.child();
    let again = register_request(Some(f.executor.token("task-1", "workload")), None, pid);
    assert!(matches!(
        f.broker.register(&f.me, again),
        Err(BrokerError::Seal(
            crate::domains::SealError::AlreadyRegistered(..)
        ))
    ));
    let other = register_request(Some(f.executor.token("task-2", "workload")), None, pid);
    f.broker.register(&f.me, other).unwrap();

    let mut strict = fixture_with(Settings {
        allowed_uids: vec![u32::MAX - 1],
        ..settings()
    });
    let pid = strict.child();
    let request = register_request(Some(strict.executor.token("t", "workload")), None, pid);
    let err = strict.broker.register(&strict.me, request).unwrap_err();
    assert!(err.to_string().contains("allowed_uids"), "{err}");
    assert_eq!(strict.domains.count(), 0);
}

#[test]
fn local_issuing_registers_by_sub_where_allowed() {
    let mut f = fixture_with(Settings {
        local_issuing: true,
        ..settings()
    });
    let pid = f.child();
    let registered = f
        .broker
        .register(&f.me, register_request(None, Some("local-task"), pid))
        .unwrap();
    assert_eq!(registered.sub, "local-task");
}

#[test]
fn a_uuid_node_takes_only_canonical_task_instance_ids() {
    let mut f = fixture_with(Settings {
        local_issuing: true,
        sub_format: SubFormat::Uuid,
        ..settings()
    });
    for refused in [
        "local-task",
        // Airflow compares the text: another spelling of the same UUID is another task.
        "0196A1B2-0000-7000-8000-0000000000C0",
        "0196a1b200007000800000000000c0de",
        "{0196a1b2-0000-7000-8000-0000000000c0}",
        "urn:uuid:0196a1b2-0000-7000-8000-0000000000c0",
    ] {
        let pid = f.child();
        let err = f
            .broker
            .register(&f.me, register_request(None, Some(refused), pid))
            .unwrap_err();
        assert!(err.to_string().contains("sub_format"), "{refused}: {err}");
    }
    assert_eq!(f.domains.count(), 0, "a refused registration seals nothing");
    // The same check on a workload token's sub.
    let pid = f.child();
    let token = f.executor.token("not-a-uuid", "workload");
    let err = f
        .broker
        .register(&f.me, register_request(Some(token), None, pid))
        .unwrap_err();
    assert!(err.to_string().contains("sub_format"), "{err}");
    let pid = f.child();
    let sub = "0196a1b2-0000-7000-8000-0000000000c0";
    let registered = f
        .broker
        .register(&f.me, register_request(None, Some(sub), pid))
        .unwrap();
    assert_eq!(registered.sub, sub);
}

#[test]
fn a_process_inside_a_domain_can_neither_register_nor_mint_unless_allowed() {
    let mut f = fixture();
    let domain = f.register("t1");
    let task_pid = f.domains.record(domain).unwrap().sealed_pid;
    let task = f.caller(task_pid);
    let pid = f.child();
    let request = register_request(Some(f.executor.token("t9", "workload")), None, pid);
    let err = f.broker.register(&task, request).unwrap_err();
    assert!(err.to_string().contains("inside a domain"), "{err}");
    let err = f.broker.mint(&task, None).unwrap_err();
    assert!(err.to_string().contains("in_domain_mint = false"), "{err}");
    let err = f
        .broker
        .introspect(&task, "x.y.z", Scope::Execution)
        .unwrap_err();
    assert!(err.to_string().contains("inside a domain"), "{err}");

    // Where the node allows it, a task mints for its own domain and no other.
    let mut open = fixture_with(Settings {
        in_domain_mint: true,
        ..settings()
    });
    let mine = open.register("t1");
    let theirs = open.register("t2");
    let task = open.caller(open.domains.record(mine).unwrap().sealed_pid);
    let err = open.broker.mint(&task, Some(theirs)).unwrap_err();
    assert!(err.to_string().contains("cannot mint for domain"), "{err}");
    assert_eq!(open.broker.mint(&task, None).unwrap().domain, mine);
}

#[test]
fn a_supervisor_finds_its_own_tasks_domain_by_sub_and_no_one_elses() {
    let mut f = fixture();
    let domain = f.register("t1");
    assert_eq!(
        f.broker.supervised_task_domain(&f.me, "t1").unwrap(),
        domain
    );
    let other_pid = f.child();
    let other = f.caller(other_pid);
    // Another supervisor's task and a task that is not live answer alike.
    let theirs = f.broker.supervised_task_domain(&other, "t1").unwrap_err();
    let absent = f.broker.supervised_task_domain(&f.me, "t2").unwrap_err();
    assert_eq!(theirs.to_string(), absent.to_string());
    assert!(matches!(theirs, BrokerError::NotFound(_)), "{theirs}");
}

/// Mints race: for one domain exactly one of many concurrent mints gets a token (the others
/// are told it is fresh); for different domains every concurrent mint gets its own, recorded.
#[test]
fn concurrent_mints_one_token_per_domain_and_all_domains_served() {
    let mut f = fixture();
    let domains: Vec<DomainId> = (0..8).map(|n| f.register(&format!("t{n}"))).collect();
    let same: Vec<_> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| f.broker.mint(&f.me, Some(domains[0]))))
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let minted = same.iter().filter(|result| result.is_ok()).count();
    assert_eq!(minted, 1, "one domain got {minted} tokens at once");
    assert!(
        same.iter()
            .filter_map(|result| result.as_ref().err())
            .all(|err| matches!(err, BrokerError::Fresh { .. })),
        "{:?}",
        same.iter()
            .filter_map(|r| r.as_ref().err())
            .collect::<Vec<_>>()
    );
    let each: Vec<_> = std::thread::scope(|scope| {
        let threads: Vec<_> = domains[1..]
            .iter()
            .map(|domain| scope.spawn(|| f.broker.mint(&f.me, Some(*domain))))
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    for (result, domain) in each.into_iter().zip(&domains[1..]) {
        let minted = result.unwrap();
        assert_eq!(minted.domain, *domain);
        assert_eq!(f.introspect(&minted.token), (true, None));
    }
}

#[test]
fn only_the_registering_supervisor_mints_for_a_domain() {
    let mut f = fixture();
    let domain = f.register("t1");
    // Another process outside any domain, same uid: not the owner.
    let other_pid = f.child();
    let other = f.caller(other_pid);
    let err = f.broker.mint(&other, Some(domain)).unwrap_err();
    assert!(
        err.to_string().contains("only the live supervisor"),
        "{err}"
    );
    let err = f.broker.mint(&f.me, None).unwrap_err();
    assert!(err.to_string().contains("name the domain"), "{err}");
    let err = f.broker.mint(&f.me, Some(12345)).unwrap_err();
    assert!(
        err.to_string().contains("only the live supervisor"),
        "{err}"
    );
    // Control: the owner.
    f.broker.mint(&f.me, Some(domain)).unwrap();
}

#[test]
fn a_new_token_only_when_less_than_a_fifth_of_the_last_is_left() {
    let mut f = fixture();
    let domain = f.register("t1");
    f.broker.mint(&f.me, Some(domain)).unwrap();
    match f.broker.mint(&f.me, Some(domain)) {
        Err(BrokerError::Fresh { retry_after }) => assert!((470..=480).contains(&retry_after)),
        other => panic!("expected Fresh, got {:?}", other.map(|m| m.jti)),
    }
    // Control: once the last token is revoked, the domain may have a new one.
    f.broker
        .revoke(
            &f.me,
            RevokeRequest {
                jti: None,
                domain: Some(domain),
            },
        )
        .unwrap();
    f.broker.mint(&f.me, Some(domain)).unwrap();
}

/// A registry that records nothing durable: the token exists, the ledger never heard of it.
struct Forgetful;
impl IssuedRegistry for Forgetful {
    fn record(&self, _: &Issued) -> anyhow::Result<()> {
        Ok(())
    }
}

#[test]
fn introspection_refuses_revoked_unissued_expired_and_wrong_scope_tokens() {
    let mut f = fixture();
    let domain = f.register("t1");
    let minted = f.broker.mint(&f.me, Some(domain)).unwrap();
    assert_eq!(f.introspect(&minted.token), (true, None));

    let minter = Minter {
        key: f.key.clone(),
        audience: DEFAULT_AUDIENCE.to_owned(),
        issuer: None,
        lifetime: Duration::from_secs(600),
    };
    let (unissued, _) = minter
        .mint(Scope::Execution, "t1", domain, &Forgetful)
        .unwrap();
    let (active, reason) = f.introspect(&unissued);
    assert!(!active && reason.unwrap().contains("never issued"));

    let (workload, _) = minter
        .mint(Scope::Workload, "t1", domain, &Forgetful)
        .unwrap();
    let (active, reason) = f.introspect(&workload);
    assert!(!active && reason.unwrap().contains("scope"));

    let now = now();
    let expired = jsonwebtoken::encode(
        &{
            let mut h = Header::new(Algorithm::EdDSA);
            h.kid = Some(f.key.kid().to_owned());
            h
        },
        &json!({"aud": DEFAULT_AUDIENCE, "sub": "t1", "scope": "execution",
                "iat": now - 700, "nbf": now - 700, "exp": now - 100, "jti": minted.jti}),
        f.key.encoding_key(),
    )
    .unwrap();
    let (active, reason) = f.introspect(&expired);
    assert!(!active && reason.unwrap().contains("Expired"));

    let forged_key = EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef");
    let mut header = Header::new(Algorithm::HS512);
    header.kid = Some(f.key.kid().to_owned());
    let claims = json!({"aud": DEFAULT_AUDIENCE, "sub": "t1", "scope": "execution",
                        "iat": now, "nbf": now, "exp": now + 60, "jti": minted.jti});
    let forged = jsonwebtoken::encode(&header, &claims, &forged_key).unwrap();
    assert!(!f.introspect(&forged).0);

    assert_eq!(
        f.broker
            .revoke(
                &f.me,
                RevokeRequest {
                    jti: Some(minted.jti.clone()),
                    domain: None
                }
            )
            .unwrap(),
        1
    );
    let (active, reason) = f.introspect(&minted.token);
    assert!(!active && reason.unwrap().contains("revoked"));
}

#[test]
fn revocation_needs_ownership_and_clear_requests() {
    let mut f = fixture();
    let domain = f.register("t1");
    let minted = f.broker.mint(&f.me, Some(domain)).unwrap();
    let other_pid = f.child();
    let other = f.caller(other_pid);
    let by_jti = || RevokeRequest {
        jti: Some(minted.jti.clone()),
        domain: None,
    };
    if other.uid != 0 {
        let err = f.broker.revoke(&other, by_jti()).unwrap_err();
        assert!(
            err.to_string()
                .contains("only root or the domain's supervisor"),
            "{err}"
        );
        assert!(
            f.introspect(&minted.token).0,
            "a refused revocation changes nothing"
        );
    }
    for request in [
        RevokeRequest::default(),
        RevokeRequest {
            jti: Some("a".into()),
            domain: Some(domain),
        },
    ] {
        let err = f.broker.revoke(&f.me, request).unwrap_err();
        assert!(err.to_string().contains("exactly one"), "{err}");
    }
    let err = f
        .broker
        .revoke(
            &f.me,
            RevokeRequest {
                jti: Some("never".into()),
                domain: None,
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("no live token"), "{err}");
    assert_eq!(f.broker.revoke(&f.me, by_jti()).unwrap(), 1);
    assert_eq!(f.broker.revoke(&f.me, by_jti()).unwrap(), 0);
    let list = f.broker.revocations(&f.me).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].jti, minted.jti);
}

#[test]
fn a_domain_end_revokes_its_tokens_and_ends_its_owners_hold() {
    let mut f = fixture();
    let ending = f.register("t1");
    let staying = f.register("t2");
    let gone = f.broker.mint(&f.me, Some(ending)).unwrap();
    let kept = f.broker.mint(&f.me, Some(staying)).unwrap();
    f.counts.0.lock().unwrap().remove(&ending);
    let mut ends = f.domains.subscribe_ends();
    assert_eq!(f.domains.reconcile().len(), 1);
    f.broker.domain_ended(&ends.try_recv().unwrap());
    let (active, reason) = f.introspect(&gone.token);
    assert!(!active && reason.unwrap().contains("domain_ended"));
    assert!(
        f.introspect(&kept.token).0,
        "the other domain's token stays valid"
    );
    let err = f.broker.mint(&f.me, Some(ending)).unwrap_err();
    assert!(
        err.to_string().contains("only the live supervisor"),
        "{err}"
    );
}

#[test]
fn a_sweep_revokes_tokens_of_domains_whose_end_notice_was_missed() {
    let mut f = fixture();
    let domain = f.register("t1");
    let minted = f.broker.mint(&f.me, Some(domain)).unwrap();
    assert_eq!(f.broker.sweep().unwrap(), (0, 0));
    f.counts.0.lock().unwrap().remove(&domain);
    // Ended without anyone listening.
    f.domains.end(domain, SystemTime::now(), Noticed::Scan);
    assert_eq!(f.broker.sweep().unwrap().0, 1);
    assert!(!f.introspect(&minted.token).0);
}

#[test]
fn after_a_rotation_old_tokens_verify_until_their_key_expires() {
    let mut f = fixture();
    let domain = f.register("t1");
    let old_token = f.broker.mint(&f.me, Some(domain)).unwrap();
    let old_key = f.key.clone();
    let new_key = signing_key();
    // Published before it signs.
    f.broker.install_keyring(keyring(&[
        (old_key.clone(), Role::Signing),
        (new_key.clone(), Role::Next),
    ]));
    let kids: Vec<_> = f
        .broker
        .jwks()
        .keys
        .iter()
        .filter_map(|k| k.common.key_id.clone())
        .collect();
    assert_eq!(kids, [old_key.kid(), new_key.kid()]);
    assert_eq!(f.broker.signing_kid(), old_key.kid());
    f.broker.install_keyring(keyring(&[
        (old_key.clone(), Role::Retired),
        (new_key.clone(), Role::Signing),
    ]));
    assert_eq!(f.broker.signing_kid(), new_key.kid());
    assert!(
        f.introspect(&old_token.token).0,
        "retired keys still verify"
    );
    f.broker
        .install_keyring(keyring(&[(new_key.clone(), Role::Signing)]));
    let (active, reason) = f.introspect(&old_token.token);
    assert!(!active && reason.unwrap().contains("unknown kid"));
    assert_eq!(f.broker.jwks().keys.len(), 1);
}

/// Registers `sub` for `bulkhead exec` (no pid); returns the registration id.
fn register_for_exec(f: &Fixture, sub: &str) -> Result<String, BrokerError> {
    let request = RegisterRequest {
        workload_token: Some(f.executor.token(sub, "workload")),
        sub: None,
        pid: None,
        label: Some("etl.exec".into()),
    };
    let answer = f.broker.register(&f.me, request)?;
    assert_eq!(
        answer.domain, None,
        "nothing is sealed before the process asks"
    );
    assert_eq!(
        answer.expires_in,
        Some(f.broker.registration_ttl().as_secs())
    );
    Ok(answer.registration.expect("a registration id"))
}

#[test]
fn a_registration_for_exec_is_taken_once_and_only_by_the_supervisors_child() {
    let mut f = fixture();
    let sub = "0196a1b2-0000-7000-8000-0000000000a1";
    let id = register_for_exec(&f, sub).unwrap();
    assert!(f.domains.live().is_empty());

    // Not a child of the supervisor (here: the supervisor itself): refused, and the
    // registration stays for the right process.
    let refused = f.broker.take_registration(&f.me, &id);
    assert!(
        matches!(refused, Err(BrokerError::Forbidden(_))),
        "{refused:?}"
    );
    assert!(f.domains.live().is_empty());
    // A child already in a domain cannot move into this one.
    let sealed_elsewhere = f.register("0196a1b2-0000-7000-8000-0000000000a2");
    let in_domain = f.domains.record(sealed_elsewhere).unwrap().sealed_pid;
    let refused = f.broker.take_registration(&f.caller(in_domain), &id);
    assert!(
        matches!(refused, Err(BrokerError::Forbidden(_))),
        "{refused:?}"
    );

    let child = f.child();
    let sealed = f.broker.take_registration(&f.caller(child), &id).unwrap();
    assert_eq!(sealed.label.as_deref(), Some("etl.exec"));
    let task = f.domains.record(sealed.domain).unwrap().task.unwrap();
    assert_eq!((task.sub.as_str(), task.owner_pid), (sub, f.me.pid));
    assert_eq!(f.labels.0.lock().unwrap().get(&child), Some(&sealed.domain));
    // The supervisor owns the domain: it mints for it.
    let minted = f.broker.mint(&f.me, Some(sealed.domain)).unwrap();
    assert_eq!(minted.sub, sub);

    let again = f.child();
    let refused = f.broker.take_registration(&f.caller(again), &id);
    assert!(
        matches!(refused, Err(BrokerError::NotFound(_))),
        "{refused:?}"
    );
    assert_eq!(f.labels.0.lock().unwrap().get(&again), None);
}

#[test]
fn a_registration_expires_is_unique_per_task_and_unknown_ids_find_nothing() {
    let mut f = fixture_with(Settings {
        registration_ttl: Duration::ZERO,
        ..settings()
    });
    let id = register_for_exec(&f, "0196a1b2-0000-7000-8000-0000000000a3").unwrap();
    let child = f.child();
    let expired = f.broker.take_registration(&f.caller(child), &id);
    assert!(
        matches!(expired, Err(BrokerError::NotFound(_))),
        "{expired:?}"
    );
    assert_eq!(f.labels.0.lock().unwrap().get(&child), None);

    let mut f = fixture();
    let sub = "0196a1b2-0000-7000-8000-0000000000a4";
    let first = register_for_exec(&f, sub).unwrap();
    let second = register_for_exec(&f, sub);
    assert!(
        matches!(second, Err(BrokerError::Conflict(_))),
        "{second:?}"
    );
    let child = f.child();
    let unknown = f
        .broker
        .take_registration(&f.caller(child), "forged\nlog line");
    assert!(
        matches!(unknown, Err(BrokerError::NotFound(_))),
        "{unknown:?}"
    );
    // Refusals are logged: the caller's text is not repeated in them.
    assert!(!unknown.unwrap_err().to_string().contains("forged"));
    // Control: the first registration is intact and taken by the child.
    assert!(f.broker.take_registration(&f.caller(child), &first).is_ok());
}
