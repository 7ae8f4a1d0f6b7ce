//! The local API: HTTP/1.1 with JSON over a Unix socket.
//!
//! Each connection is attested once at accept (see `peer`), served on its own task, and bounded
//! in time and size, so a slow or hostile client cannot hold up anyone else.

use std::{
    os::{fd::AsFd, unix::fs::PermissionsExt},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use http_body_util::{BodyExt, Limited};
use hyper::{Request, StatusCode, body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::UnixListener, sync::Semaphore};

use super::{
    handlers::{self, AppState},
    wire::MAX_REQUEST_BYTES,
};
use crate::{config::FileMode, peer::Peer};

/// Time a client has to send a request's headers, and then its body.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 256;

/// Binds the socket, refusing to steal it from a live agent.
/// Fails if an agent answers on `path`.
pub fn ensure_no_agent_serving(path: &Path) -> anyhow::Result<()> {
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        anyhow::bail!("another agent is already serving {}", path.display());
    }
    Ok(())
}

pub fn bind(path: &Path, mode: FileMode) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .with_context(|| format!("creating socket directory {}", dir.display()))?;
    }
    if std::fs::symlink_metadata(path).is_ok() {
        ensure_no_agent_serving(path)?;
        // Nobody answers: a stale socket from an agent that died. Anything else at that path
        // (a regular file, say) is not ours to delete.
        let file_type = std::fs::symlink_metadata(path)?.file_type();
        if !std::os::unix::fs::FileTypeExt::is_socket(&file_type) {
            anyhow::bail!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing stale socket {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode.bits()))
        .with_context(|| format!("setting mode {mode} on {}", path.display()))?;
    Ok(listener)
}

use std::os::unix::fs::DirBuilderExt;

pub async fn serve(listener: UnixListener, state: Arc<AppState>) -> anyhow::Result<()> {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = slots.clone().acquire_owned().await?;
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::warn!(error = %err, "accept failed");
                continue;
            }
        };
        // Attest before reading a single byte from the client.
        let peer = match Peer::of_socket(stream.as_fd()) {
            Ok(peer) => Arc::new(peer),
            Err(err) => {
                tracing::warn!(error = %err, "dropping connection from an unidentifiable peer");
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |request| {
                let (state, peer) = (state.clone(), peer.clone());
                async move { Ok::<_, std::convert::Infallible>(respond(state, peer, request).await) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "connection ended with an error");
            }
        });
    }
}

async fn respond(
    state: Arc<AppState>,
    peer: Arc<Peer>,
    request: Request<Incoming>,
) -> handlers::ApiResponse {
    let (parts, body) = request.into_parts();
    let body = match tokio::time::timeout(
        READ_TIMEOUT,
        Limited::new(body, MAX_REQUEST_BYTES).collect(),
    )
    .await
    {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(err)) if err.is::<http_body_util::LengthLimitError>() => {
            return handlers::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("request body exceeds {MAX_REQUEST_BYTES} bytes"),
            );
        }
        Ok(Err(err)) => {
            return handlers::error(StatusCode::BAD_REQUEST, "bad_request", err.to_string());
        }
        Err(_) => {
            return handlers::error(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                "request body too slow",
            );
        }
    };
    // Routes sign, verify and commit to disk (fsync): blocking work, kept off the runtime's
    // workers so one slow commit cannot stall every other connection's I/O.
    let answered = tokio::task::spawn_blocking(move || {
        handlers::route(&state, &peer, &parts.method, parts.uri.path(), &body)
    })
    .await;
    answered.unwrap_or_else(|err| {
        tracing::error!(error = %err, "a request's handler panicked");
        handlers::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the request could not be handled",
        )
    })
}

/// Removes the socket when the agent shuts down cleanly.
pub struct SocketGuard(pub PathBuf);

impl Drop for SocketGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use std::{io, os::fd::BorrowedFd};

    use bulkhead_common::DomainId;

    use super::*;
    use crate::{
        api::{
            client::{Client, ClientError},
            wire::{MintRequest, MintResponse, PATH_STATUS, PATH_TOKENS, StatusResponse},
        },
        domains::{Census, Domains, TaskLabels},
        enforce::{domain_census::CensusError, task_storage::LabelError},
        state::StateDb,
    };

    /// A kernel with no labelled task: every caller is outside any domain.
    struct NoLabels;
    impl TaskLabels for NoLabels {
        fn lookup(&self, _: BorrowedFd<'_>) -> io::Result<Option<DomainId>> {
            Ok(None)
        }
        fn label_new(&self, _: BorrowedFd<'_>, _: DomainId) -> Result<(), LabelError> {
            Ok(())
        }
        fn unlabel(&self, _: BorrowedFd<'_>) -> io::Result<()> {
            Ok(())
        }
    }

    struct NoCounts;
    impl Census for NoCounts {
        fn open(&mut self, _: DomainId) -> Result<(), CensusError> {
            Ok(())
        }
        fn discard(&mut self, _: DomainId) -> io::Result<()> {
            Ok(())
        }
        fn running_tasks(&self, _: DomainId) -> io::Result<Option<u64>> {
            Ok(None)
        }
    }

    /// The CLI's client against the real server: an answer, a refusal with its code, and an
    /// unknown route, each over its own connection.
    #[test]
    fn the_client_talks_to_the_server() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("api.sock");
        let store = Arc::new(StateDb::open(dir.path()).unwrap());
        let domains =
            Domains::new(Box::new(NoLabels), Box::new(NoCounts), Box::new(store)).unwrap();
        let state = Arc::new(AppState {
            domains: Arc::new(domains),
            hooks: vec!["task_kill"],
            broker: None,
        });
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let listener = runtime
            .block_on(async { bind(&socket, FileMode::try_from("0600".to_owned()).unwrap()) })
            .unwrap();
        runtime.spawn(serve(listener, state));

        let client = Client::new(&socket);
        let status: StatusResponse = client.get(PATH_STATUS).unwrap();
        assert_eq!(status.pid, std::process::id());
        assert_eq!(status.hooks, ["task_kill"]);
        let refused = client
            .post::<_, MintResponse>(
                PATH_TOKENS,
                &MintRequest {
                    domain: Some(1),
                    sub: None,
                },
            )
            .unwrap_err();
        match refused {
            ClientError::Refused { status, code, .. } => {
                assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
                assert_eq!(code, "broker_disabled");
            }
            other => panic!("{other}"),
        }
        let unknown = client
            .get::<serde_json::Value>("/v1/nothing-here")
            .unwrap_err();
        assert!(
            matches!(unknown, ClientError::Refused { status, .. } if status == StatusCode::NOT_FOUND),
            "{unknown}"
        );
    }
}
