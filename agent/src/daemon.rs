//! `bulkhead run`: check the host, load enforcement, serve the local API until told to stop.

use std::{path::Path, sync::Arc};

use anyhow::Context;
use tokio::io::{Interest, unix::AsyncFd};

use crate::{
    api::{
        handlers::AppState,
        server::{self, SocketGuard},
    },
    config::NodeConfig,
    domains::Domains,
    enforce::{Enforcement, pins::PinDir},
    preflight,
    protect::{Protector, watch},
};

pub async fn run(config: NodeConfig) -> anyhow::Result<()> {
    preflight::Host::running()
        .check()
        .context("this host cannot enforce bulkhead domains")?;

    let socket_path = config.api.socket_path.as_path();
    // Before touching the kernel: a second agent would replace the running one's programs.
    server::ensure_no_agent_serving(socket_path)?;

    let pins = PinDir::new(config.agent.pin_dir.as_path());
    let (mut enforcement, maps) = Enforcement::load(&pins)?;
    tracing::info!(
        hooks = ?enforcement.hooks,
        pin_dir = %pins.root().display(),
        adopted_live_domains = enforcement.adopted,
        replaced_generations = enforcement.replaced_generations,
        "LSM programs loaded, attached and pinned"
    );

    prepare_state_dir(config.agent.state_dir.as_path())?;
    let mut protector =
        Protector::new(protected_patterns(&config), Box::new(maps.protected_inodes));
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
        rescan_secs = config.protect.rescan_interval_secs.duration().as_secs(),
        "protected files marked"
    );
    tokio::spawn(watch::keep_marked(
        protector,
        config.protect.rescan_interval_secs.duration(),
    ));

    if let Some(logger) = enforcement.kernel_log.take() {
        forward_kernel_log(logger)?;
    }

    let listener = server::bind(socket_path, config.api.socket_mode)?;
    let _socket = SocketGuard(socket_path.to_owned());

    let state = Arc::new(AppState {
        domains: Domains::new(Box::new(maps.task_domains)),
        hooks: enforcement.hooks.clone(),
    });
    tracing::info!(
        socket = %socket_path.display(),
        mode = %config.api.socket_mode,
        pid = std::process::id(),
        "bulkhead agent ready"
    );

    tokio::select! {
        served = server::serve(listener, state) => served,
        signal = shutdown_signal() => {
            tracing::warn!(signal, pin_dir = %pins.root().display(), "agent stopping; the pinned programs keep enforcing (bulkhead uninstall removes them)");
            Ok(())
        }
    }
}

/// The configured protected paths, plus the agent's own state and pin directories, always.
fn protected_patterns(config: &NodeConfig) -> Vec<String> {
    [
        config.agent.state_dir.as_path(),
        config.agent.pin_dir.as_path(),
    ]
    .into_iter()
    .map(|dir| glob::Pattern::escape(&dir.to_string_lossy()))
    .chain(config.protect.paths.iter().map(|p| p.as_str().to_owned()))
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
    use tokio::signal::unix::{SignalKind, signal};
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
