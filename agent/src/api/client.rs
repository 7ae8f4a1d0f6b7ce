//! The CLI's side of the local API.
//!
//! Runs on a current-thread tokio runtime, which starts no threads: `bulkhead exec` must still
//! be single-threaded when the agent seals it.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Serialize, de::DeserializeOwned};

use super::wire::ErrorResponse;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the bulkhead agent at {path}: {source} (is `bulkhead run` active?)")]
    Unreachable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the agent refused ({status}, {code}): {message}")]
    Refused {
        status: StatusCode,
        code: String,
        message: String,
    },
    #[error("talking to the agent: {0}")]
    Protocol(String),
}

pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: &Path) -> Self {
        Self {
            socket: socket.to_owned(),
        }
    }

    pub fn get<R: DeserializeOwned>(&self, path: &str) -> Result<R, ClientError> {
        self.call(Method::GET, path, Bytes::new())
    }

    pub fn post<B: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<R, ClientError> {
        let body =
            serde_json::to_vec(body).map_err(|err| ClientError::Protocol(err.to_string()))?;
        self.call(Method::POST, path, Bytes::from(body))
    }

    fn call<R: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<R, ClientError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|err| ClientError::Protocol(err.to_string()))?;
        let (status, bytes) = runtime.block_on(self.exchange(method, path, body))?;
        if status.is_success() {
            serde_json::from_slice(&bytes)
                .map_err(|err| ClientError::Protocol(format!("bad response: {err}")))
        } else {
            let refusal: ErrorResponse = serde_json::from_slice(&bytes).unwrap_or(ErrorResponse {
                code: "unknown".into(),
                error: String::from_utf8_lossy(&bytes).into_owned(),
            });
            Err(ClientError::Refused {
                status,
                code: refusal.code,
                message: refusal.error,
            })
        }
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| ClientError::Unreachable {
                path: self.socket.clone(),
                source,
            })?;
        let protocol = |err: hyper::Error| ClientError::Protocol(err.to_string());
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(protocol)?;
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "bulkhead")
            // One request per connection: without this the server keeps the connection open
            // for a next request until its read timeout, and the client would wait for that.
            .header("connection", "close")
            .header("content-type", "application/json")
            .body(Full::new(body))
            .map_err(|err| ClientError::Protocol(err.to_string()))?;
        // The connection future drives the socket; the answer is complete once the body is
        // collected, whatever the connection does afterwards.
        let exchange = async {
            let response = sender.send_request(request).await.map_err(protocol)?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(protocol)?
                .to_bytes();
            Ok::<_, ClientError>((status, bytes))
        };
        tokio::pin!(exchange);
        tokio::select! {
            response = &mut exchange => response,
            closed = connection => match closed {
                // Closed cleanly: the response (if any) is already complete.
                Ok(()) => exchange.await,
                Err(err) => Err(protocol(err)),
            },
        }
    }
}
