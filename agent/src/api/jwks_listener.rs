//! The optional TCP listener that publishes the broker's public keys for API servers
//! (`[broker] jwks_listen`), the one thing of the agent reachable from the network.
//!
//! It serves `GET /.well-known/jwks.json` (and `/v1/jwks`) and nothing else: no request reaches
//! the local API's routes, so no caller is ever identified, registered or given a token here.
//! A JWKS is public by design; what this listener must not do is let a client hold the agent
//! up, so connections are few, short and read-bounded, and request bodies are never read.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use hyper::{
    Method, Request, StatusCode, body::Incoming, server::conn::http1, service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::Semaphore};

use super::{
    handlers::{self, ApiResponse},
    wire::{PATH_JWKS, PATH_WELL_KNOWN_JWKS},
};
use jsonwebtoken::jwk::JwkSet;

/// Time a client has to send its request's headers.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more wait in the listen backlog. An API server fetches once an
/// hour; this is for a handful of them and a health check.
const MAX_CONNECTIONS: usize = 16;

/// Binds `address` now, so a port in use stops the agent before the kernel is touched; serving
/// starts with [`serve`].
pub fn bind(address: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(address).with_context(|| {
        format!("binding the JWKS listener on {address} ([broker] jwks_listen)")
    })?;
    listener
        .set_nonblocking(true)
        .context("making the JWKS listener non-blocking")?;
    Ok(listener)
}

/// What the listener publishes: the broker's current key set, asked for at every request so a
/// rotation shows at once.
pub type Published = Arc<dyn Fn() -> JwkSet + Send + Sync>;

pub async fn serve(listener: std::net::TcpListener, published: Published) -> anyhow::Result<()> {
    let listener = TcpListener::from_std(listener).context("serving the JWKS listener")?;
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = slots.clone().acquire_owned().await?;
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::warn!(error = %err, "JWKS listener: accept failed");
                continue;
            }
        };
        let published = published.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |request: Request<Incoming>| {
                let response = respond(&published, request.method(), request.uri().path());
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(READ_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "JWKS listener: connection ended with an error");
            }
        });
    }
}

fn respond(published: &Published, method: &Method, path: &str) -> ApiResponse {
    match (method, path) {
        (&Method::GET, PATH_WELL_KNOWN_JWKS | PATH_JWKS) => {
            handlers::json(StatusCode::OK, &published())
        }
        (_, PATH_WELL_KNOWN_JWKS | PATH_JWKS) => handlers::error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "the JWKS listener answers GET only",
        ),
        _ => handlers::error(
            StatusCode::NOT_FOUND,
            "not_found",
            "the JWKS listener serves /.well-known/jwks.json only",
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    /// One request over a real TCP connection; the status line and the body.
    fn ask(address: SocketAddr, request: &str) -> (String, String) {
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let status = response.lines().next().unwrap_or_default().to_owned();
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    #[test]
    fn publishes_the_key_set_and_nothing_else() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let address = listener.local_addr().unwrap();
        let set: JwkSet = serde_json::from_value(serde_json::json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "kid": "node-key", "alg": "EdDSA",
             "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
        ]}))
        .unwrap();
        let published: Published = Arc::new(move || set.clone());
        let _server = runtime.spawn(async move {
            let _ = serve(listener, published).await;
        });
        let thread = std::thread::spawn(move || {
            let get = |path: &str| {
                ask(
                    address,
                    &format!("GET {path} HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n"),
                )
            };
            let (status, body) = get("/.well-known/jwks.json");
            assert!(status.contains("200"), "{status}");
            let served: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(served["keys"][0]["kid"], "node-key");
            // The local API's routes are not here, whatever the path or method.
            for path in ["/v1/tasks", "/v1/tokens", "/v1/status", "/"] {
                let (status, _) = get(path);
                assert!(status.contains("404"), "{path}: {status}");
            }
            let (status, _) = ask(
                address,
                "POST /.well-known/jwks.json HTTP/1.1\r\nHost: node\r\nContent-Length: 2\r\n\
                 Connection: close\r\n\r\n{}",
            );
            assert!(status.contains("405"), "{status}");
        });
        runtime.block_on(async {
            while !thread.is_finished() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        thread.join().unwrap();
    }

    #[test]
    fn a_port_in_use_is_an_error_naming_the_setting() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let err = bind(taken.local_addr().unwrap()).unwrap_err();
        assert!(format!("{err:#}").contains("jwks_listen"), "{err:#}");
    }
}
