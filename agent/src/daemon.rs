//! `bulkhead run`: check the host, load enforcement, serve the local API until told to stop.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use tokio::signal::unix::{SignalKind, signal};

use anyhow::Context;
use tokio::io::{Interest, unix::AsyncFd};

use crate::{
    api::{
        handlers::AppState,
        server::{self, SocketGuard},
    },
    audit::{AuditLog, AuditTrail, limiter::Rate},
    broker,
    config::NodeConfig,
    domains::Domains,
    enforce::{Enforcement, Settings, pins::PinDir},
    lifecycle::DomainEnds,
    preflight,
    protect::{self, Protector, watch},
    reachable_sockets::{self, ReachableSockets},
    state::StateDb,
};

pub async fn run(config: NodeConfig, config_path: PathBuf) -> anyhow::Result<()> {
    // First: the agent will hold signing keys and tokens, so no core dumps and no same-uid
    // ptrace or /proc reads of it from this moment on.
    crate::keys::memory::harden_process().context("hardening the agent process")?;
    preflight::Host::running()
        .check()
        .context("this host cannot enforce bulkhead domains")?;

    let socket_path = config.api.socket_path.as_path().to_owned();
    let socket_path = socket_path.as_path();
    // Before touching the kernel: a second agent would replace the running one's programs.
    server::ensure_no_agent_serving(socket_path)?;

    // The state database before the kernel: its lock is a second guard against two agents,
    // and a state directory that cannot be used stops the agent before anything changes.
    prepare_state_dir(config.agent.state_dir.as_path())?;
    let state_db = Arc::new(StateDb::open(config.agent.state_dir.as_path())?);
    let audit_log = Arc::new(AuditLog::open(config.audit.log_path.as_path())?);
    // The broker's keys and issuer before the kernel and the socket: a bad key file or JWKS
    // stops the agent with nothing changed.
    let prepared_broker =
        broker::runtime::prepare(&config.broker, config.agent.state_dir.as_path())
            .context("starting the token broker")?;
    let jwks_listener = config
        .broker
        .jwks_listen
        .filter(|_| config.broker.enabled)
        .map(crate::api::jwks_listener::bind)
        .transpose()?;

    let pins = PinDir::new(config.agent.pin_dir.as_path());
    let (mut enforcement, mut maps) = Enforcement::load(&pins, &config)?;
    maps.settings.set_mode(config.audit.mode)?;
    tracing::info!(
        hooks = ?enforcement.hooks,
        pin_dir = %pins.root().display(),
        adopted_live_domains = enforcement.adopted,
        replaced_generations = enforcement.replaced_generations,
        "LSM programs loaded, attached and pinned"
    );

    let open_file_limit = protect::raise_open_file_limit()?;
    if open_file_limit < protect::MAX_PROTECTED_INODES as u64 {
        tracing::warn!(
            open_file_limit,
            "the agent holds every protected inode open; with this open-file limit a larger \
             protected set stops the scan with an error (raise LimitNOFILE)"
        );
    }
    let mut protector =
        Protector::new(config.protected_patterns(), Box::new(maps.protected_inodes))
            .with_guards(maps.guarded_dirs);
    let report = protector
        .scan()
        .context("marking the protected files; the agent does not run with partial protection")?;
    for pattern in &report.unmatched {
        tracing::warn!(
            pattern,
            "protected path matches nothing yet; it will be marked when it appears"
        );
    }
    tracing::info!(
        inodes = report.inodes,
        guarded_dirs = report.guarded_dirs,
        rescan_secs = config.protect.rescan_interval_secs.duration().as_secs(),
        "protected files marked"
    );
    let known_paths = protector.known_paths();
    let (patterns_tx, patterns_rx) = tokio::sync::watch::channel(config.protected_patterns());
    tokio::spawn(watch::keep_marked(
        protector,
        config.protect.rescan_interval_secs.duration(),
        patterns_rx,
    ));

    if let Some(logger) = enforcement.kernel_log.take() {
        forward_kernel_log(logger)?;
    }

    let listener = server::bind(socket_path, config.api.socket_mode)?;
    let _socket = SocketGuard(socket_path.to_owned());
    // Before serving: tasks in domains reach the agent only once its socket file is marked.
    let mut reachable = ReachableSockets::new(Box::new(maps.reachable_sockets));
    for skip in reachable.mark(&reachable_paths(&config)) {
        if skip.path == socket_path {
            anyhow::bail!(
                "marking the API socket {} reachable from domains: {}",
                socket_path.display(),
                skip.reason
            );
        }
        tracing::warn!(path = %skip.path.display(), reason = %skip.reason, "reachable socket not marked yet; tasks in domains cannot connect to it until it appears");
    }
    let (reachable_tx, reachable_rx) = tokio::sync::watch::channel(reachable_paths(&config));
    tokio::spawn(reachable_sockets::keep_marked(
        reachable,
        config.protect.rescan_interval_secs.duration(),
        reachable_rx,
    ));

    let domains = Arc::new(
        Domains::new(
            Box::new(maps.task_domains),
            Box::new(maps.domain_census),
            Box::new(state_db.clone()),
        )
        .context("reading the live domains from the state database")?,
    );
    let state_dir = config.agent.state_dir.as_path();
    let broker = prepared_broker.map(|prepared| prepared.start(state_db, domains.clone()));
    if let (Some(broker), Some(listener)) = (&broker, jwks_listener) {
        let address = listener.local_addr().ok();
        let published = broker.clone();
        let published: crate::api::jwks_listener::Published = Arc::new(move || published.jwks());
        tokio::spawn(async move {
            if let Err(err) = crate::api::jwks_listener::serve(listener, published).await {
                tracing::error!(
                    error = format!("{err:#}"),
                    "the JWKS listener stopped; API servers fetching this node's keys will fail"
                );
            }
        });
        tracing::info!(address = ?address, "publishing the broker's JWKS over HTTP");
    }
    if let Some(broker) = &broker {
        // Before the domain-end reader starts: its first reconcile may end domains at once.
        broker::runtime::spawn_upkeep(broker.clone(), &domains, &config.broker, state_dir);
    }
    tracing::info!(
        recorded_domains = domains.count(),
        "domains restored from the state database"
    );
    tokio::spawn(
        DomainEnds {
            events: maps.domain_events,
            log: audit_log.clone(),
        }
        .run(domains.clone()),
    );
    let state = Arc::new(AppState {
        domains,
        hooks: enforcement.hooks.clone(),
        broker,
    });
    let (rate_tx, rate_rx) = tokio::sync::watch::channel(audit_rate(&config));
    let trail = AuditTrail {
        events: maps.audit_events,
        lost: maps.audit_lost,
        log: audit_log,
        rate: rate_rx,
        paths: known_paths,
    };
    tokio::spawn(trail.run(state.clone()));
    let mut live = Live {
        config,
        path: config_path,
        settings: maps.settings,
        patterns: patterns_tx,
        reachable: reachable_tx,
        rate: rate_tx,
    };
    tracing::info!(
        socket = %socket_path.display(),
        socket_mode = %live.config.api.socket_mode,
        mode = live.config.audit.mode.as_str(),
        audit_log = %live.config.audit.log_path.as_path().display(),
        pid = std::process::id(),
        "bulkhead agent ready"
    );

    let serving = server::serve(listener, state);
    tokio::pin!(serving);
    let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            served = &mut serving => return served,
            _ = hangup.recv() => live.reload(),
            signal = &mut shutdown => {
                tracing::warn!(signal, pin_dir = %pins.root().display(), "agent stopping; the pinned programs keep enforcing (bulkhead uninstall removes them)");
                return Ok(());
            }
        }
    }
}

fn audit_rate(config: &NodeConfig) -> Rate {
    Rate {
        per_sec: config.audit.rate_per_sec.get() as f64,
        burst: config.audit.burst.get() as f64,
    }
}

/// What a SIGHUP can change while the agent runs.
struct Live {
    config: NodeConfig,
    path: PathBuf,
    settings: Settings,
    patterns: tokio::sync::watch::Sender<Vec<String>>,
    reachable: tokio::sync::watch::Sender<Vec<PathBuf>>,
    rate: tokio::sync::watch::Sender<Rate>,
}

impl Live {
    /// Re-reads the config file. A file that does not validate changes nothing; a valid one
    /// applies the mode, the protected paths and the audit rate at once, and names the keys
    /// that only a restart applies.
    fn reload(&mut self) {
        let new = match NodeConfig::load(&self.path) {
            Ok(new) => new,
            Err(err) => {
                tracing::error!(error = %err, "config reload refused; the running configuration stays in force");
                return;
            }
        };
        if new.audit.mode != self.config.audit.mode {
            if let Err(err) = self.settings.set_mode(new.audit.mode) {
                tracing::error!(
                    error = format!("{err:#}"),
                    "config reload: mode not changed; nothing else applied"
                );
                return;
            }
            tracing::warn!(
                from = self.config.audit.mode.as_str(),
                to = new.audit.mode.as_str(),
                "enforcement mode changed"
            );
        }
        let mut restart_only = Vec::new();
        if new.api != self.config.api {
            restart_only.push("[api]");
        }
        if new.agent != self.config.agent {
            restart_only.push("[agent]");
        }
        if new.audit.log_path != self.config.audit.log_path {
            restart_only.push("audit.log_path");
        }
        if new.protect.rescan_interval_secs != self.config.protect.rescan_interval_secs {
            restart_only.push("protect.rescan_interval_secs");
        }
        if new.broker != self.config.broker {
            restart_only.push("[broker]");
        }
        if new.devices != self.config.devices {
            restart_only.push("[devices]");
        }
        if new.protect.handed_over_descriptors != self.config.protect.handed_over_descriptors {
            restart_only.push("protect.handed_over_descriptors");
        }
        if restart_only.is_empty() {
            tracing::info!(mode = new.audit.mode.as_str(), "config reloaded");
        } else {
            tracing::warn!(keys = ?restart_only, "config reloaded; these keys take effect only at the next start");
        }
        // Keys that need a restart keep their running values until then.
        let mut applied = new;
        applied.api = self.config.api.clone();
        applied.agent = self.config.agent.clone();
        applied.audit.log_path = self.config.audit.log_path.clone();
        applied.protect.rescan_interval_secs = self.config.protect.rescan_interval_secs;
        // The running broker's key directory and secret stay protected whatever the new file says.
        applied.broker = self.config.broker.clone();
        applied.devices = self.config.devices.clone();
        applied.protect.handed_over_descriptors = self.config.protect.handed_over_descriptors;
        self.patterns.send_replace(applied.protected_patterns());
        self.reachable.send_replace(reachable_paths(&applied));
        self.rate.send_replace(audit_rate(&applied));
        self.config = applied;
    }
}

/// The configured protected paths, plus the agent's own state and pin directories, always.
/// The socket files every domain may reach: the agent's own, and the configured ones.
fn reachable_paths(config: &NodeConfig) -> Vec<PathBuf> {
    std::iter::once(config.api.socket_path.as_path().to_owned())
        .chain(
            config
                .sockets
                .reachable
                .iter()
                .map(|path| path.as_path().to_owned()),
        )
        .collect()
}

/// Creates the state directory (0700, root) if missing; refuses a non-directory there.
fn prepare_state_dir(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => anyhow::bail!("state_dir {} exists but is not a directory", path.display()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            // Parents get the usual mode; only the state directory itself is private.
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(path)
                .with_context(|| format!("creating state_dir {}", path.display()))
        }
        Err(err) => Err(err).with_context(|| format!("checking state_dir {}", path.display())),
    }
}

/// Copies the eBPF programs' aya-log lines into the agent's log.
fn forward_kernel_log(logger: aya_log::EbpfLogger<&'static dyn log::Log>) -> anyhow::Result<()> {
    // SAFETY: the logger owns its ring-buffer fd and keeps it open, unchanged, until dropped,
    // which only happens when the AsyncFd itself is dropped.
    let mut readable = unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) }
        .context("watching the eBPF log ring")?;
    tokio::spawn(async move {
        loop {
            let Ok(mut guard) = readable.readable_mut().await else {
                return;
            };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
    Ok(())
}

async fn shutdown_signal() -> &'static str {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
