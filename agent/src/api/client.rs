//! The CLI's side of the local API: one HTTP/1.1 request per connection over the Unix socket,
//! with blocking std I/O and httparse (the parser hyper itself uses) for the response head.
//!
//! No async runtime: `bulkhead exec` must still be single-threaded when the agent seals it, and
//! it is on the path of every task start, where a runtime's set-up is pure overhead.

use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use hyper::StatusCode;
use serde::{Serialize, de::DeserializeOwned};

use super::wire::ErrorResponse;

/// Longest the agent may take to answer one request. Generous: a seal waits for a durable
/// commit, and a loaded agent under emulation is slow; a dead one is noticed at connect.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest response read (the biggest is a domain list or a revocation list).
const MAX_RESPONSE_BYTES: u64 = 16 << 20;
/// Response headers parsed at most.
const MAX_HEADERS: usize = 32;

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
        self.call("GET", path, &[])
    }

    pub fn post<B: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<R, ClientError> {
        let body =
            serde_json::to_vec(body).map_err(|err| ClientError::Protocol(err.to_string()))?;
        self.call("POST", path, &body)
    }

    fn call<R: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<R, ClientError> {
        let (status, bytes) = self.exchange(method, path, body)?;
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

    fn exchange(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<(StatusCode, Vec<u8>), ClientError> {
        let protocol = |err: std::io::Error| ClientError::Protocol(err.to_string());
        let mut stream =
            UnixStream::connect(&self.socket).map_err(|source| ClientError::Unreachable {
                path: self.socket.clone(),
                source,
            })?;
        stream
            .set_read_timeout(Some(ANSWER_TIMEOUT))
            .map_err(protocol)?;
        if path
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(ClientError::Protocol(format!("bad request path {path:?}")));
        }
        // One request per connection: the server closes after answering, so the response
        // ends where the stream does.
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: bulkhead\r\nconnection: close\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).map_err(protocol)?;
        stream.write_all(body).map_err(protocol)?;
        let mut response = Vec::new();
        (&mut stream)
            .take(MAX_RESPONSE_BYTES + 1)
            .read_to_end(&mut response)
            .map_err(protocol)?;
        if response.len() as u64 > MAX_RESPONSE_BYTES {
            return Err(ClientError::Protocol(format!(
                "response larger than {MAX_RESPONSE_BYTES} bytes"
            )));
        }
        parse_response(&response)
    }
}

/// The status and body of a complete response (the whole stream up to its end).
fn parse_response(response: &[u8]) -> Result<(StatusCode, Vec<u8>), ClientError> {
    let protocol = |message: String| ClientError::Protocol(message);
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut headers);
    let body_start = match parsed.parse(response) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => {
            return Err(protocol(
                "the agent closed the connection mid-answer".into(),
            ));
        }
        Err(err) => return Err(protocol(format!("bad response head: {err}"))),
    };
    let status = parsed
        .code
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or_else(|| protocol("response without a status".into()))?;
    let header = |name: &str| {
        parsed
            .headers
            .iter()
            .find(|header| header.name.eq_ignore_ascii_case(name))
            .map(|header| String::from_utf8_lossy(header.value).trim().to_owned())
    };
    if header("transfer-encoding").is_some() {
        return Err(protocol(
            "chunked responses are not expected from the agent".into(),
        ));
    }
    let body = &response[body_start..];
    let body = match header("content-length") {
        Some(length) => {
            let length: usize = length
                .parse()
                .map_err(|_| protocol(format!("bad content-length {length:?}")))?;
            body.get(..length).ok_or_else(|| {
                protocol(format!(
                    "the agent closed the connection after {} of {length} body bytes",
                    body.len()
                ))
            })?
        }
        None => body,
    };
    Ok((status, body.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_is_read_to_its_content_length() {
        let (status, body) = parse_response(
            b"HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}extra",
        )
        .unwrap();
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(body, b"{}");
    }

    #[test]
    fn truncated_or_malformed_responses_are_protocol_errors() {
        for response in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{}"[..],
            b"HTTP/1.1 200 OK\r\ncontent-le",
            b"not http at all\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n{}",
        ] {
            let err = parse_response(response).unwrap_err();
            assert!(matches!(err, ClientError::Protocol(_)), "{err}");
        }
    }

    #[test]
    fn an_unreachable_socket_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let err = Client::new(&dir.path().join("absent.sock"))
            .get::<serde_json::Value>("/v1/status")
            .unwrap_err();
        assert!(matches!(err, ClientError::Unreachable { .. }), "{err}");
        assert!(
            err.to_string().contains("is `bulkhead run` active?"),
            "{err}"
        );
    }
}
