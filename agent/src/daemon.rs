//! `bulkhead run`: check the host, load enforcement, serve the local API until told to stop.

use std::sync::Arc;

use anyhow::Context;
use tokio::io::{Interest, unix::AsyncFd};

use crate::{
    api::{
        handlers::AppState,
        server::{self, SocketGuard},
    },
    config::NodeConfig,
    domains::Domains,
    enforce::Enforcement,
    preflight,
};

pub async fn run(config: NodeConfig) -> anyhow::Result<()> {
    preflight::Host::running()
        .check()
        .context("this host cannot enforce bulkhead domains")?;

    let (mut enforcement, task_domains) = Enforcement::load()?;
    tracing::info!(hooks = ?enforcement.hooks, "LSM programs loaded and attached");

    if let Some(logger) = enforcement.kernel_log.take() {
        forward_kernel_log(logger)?;
    }

    let socket_path = config.api.socket_path.as_path();
    let listener = server::bind(socket_path, config.api.socket_mode)?;
    let _socket = SocketGuard(socket_path.to_owned());

    let state = Arc::new(AppState {
        domains: Domains::new(Box::new(task_domains)),
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
            tracing::warn!(signal, "shutting down; enforcement stops with the agent (programs are not pinned yet)");
            Ok(())
        }
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
