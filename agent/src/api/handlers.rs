//! What each API route does. Every handler receives the caller as attested by the kernel.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Response, StatusCode};
use serde::Serialize;

use super::{
    broker_routes,
    wire::{
        DomainInfo, DomainsResponse, ErrorResponse, PATH_DOMAINS, PATH_INTROSPECT, PATH_JWKS,
        PATH_REVOKE, PATH_REVOKED, PATH_SEAL_SELF, PATH_STATUS, PATH_TASKS, PATH_TOKENS,
        PATH_WELL_KNOWN_JWKS, PATH_WHOAMI, SealSelfRequest, SealSelfResponse, StatusResponse,
        WhoamiResponse,
    },
};
use crate::{
    domains::{Domains, Label, SealError},
    peer::Peer,
};

pub struct AppState {
    pub domains: std::sync::Arc<Domains>,
    pub hooks: Vec<&'static str>,
    /// `None` when the broker is disabled: its routes answer 503.
    pub broker: Option<std::sync::Arc<crate::broker::service::Broker>>,
}

pub type ApiResponse = Response<Full<Bytes>>;

pub fn json<T: Serialize>(status: StatusCode, body: &T) -> ApiResponse {
    let body = serde_json::to_vec(body).expect("API types always serialize");
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}

pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> ApiResponse {
    json(
        status,
        &ErrorResponse {
            code: code.to_owned(),
            error: message.into(),
        },
    )
}

/// A request body as JSON; an empty body is `{}`. Unknown fields are refused by the types.
pub fn decode_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    let body = if body.is_empty() {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|err| format!("invalid request body: {err}"))
}

pub fn route(
    state: &AppState,
    peer: &Peer,
    method: &Method,
    path: &str,
    body: &[u8],
) -> ApiResponse {
    match (method, path) {
        (&Method::GET, PATH_STATUS) => status(state),
        (&Method::GET, PATH_WHOAMI) => whoami(state, peer),
        (&Method::POST, PATH_SEAL_SELF) => seal_self(state, peer, body),
        (&Method::GET, PATH_DOMAINS) => list_domains(state, peer),
        (&Method::POST, PATH_TASKS) => broker_routes::register(state, peer, body),
        (&Method::POST, PATH_TOKENS) => broker_routes::mint(state, peer, body),
        (&Method::POST, PATH_INTROSPECT) => broker_routes::introspect(state, peer, body),
        (&Method::POST, PATH_REVOKE) => broker_routes::revoke(state, peer, body),
        (&Method::GET, PATH_REVOKED) => broker_routes::revocations(state, peer),
        (&Method::GET, PATH_JWKS | PATH_WELL_KNOWN_JWKS) => broker_routes::jwks(state, peer),
        (
            _,
            PATH_STATUS | PATH_WHOAMI | PATH_SEAL_SELF | PATH_DOMAINS | PATH_TASKS | PATH_TOKENS
            | PATH_INTROSPECT | PATH_REVOKE | PATH_REVOKED | PATH_JWKS | PATH_WELL_KNOWN_JWKS,
        ) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not allowed on {path}"),
        ),
        _ => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no such endpoint: {path}"),
        ),
    }
}

fn status(state: &AppState) -> ApiResponse {
    json(
        StatusCode::OK,
        &StatusResponse {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            hooks: state.hooks.iter().map(|h| (*h).to_owned()).collect(),
            domains: state.domains.count(),
        },
    )
}

fn whoami(state: &AppState, peer: &Peer) -> ApiResponse {
    match state.domains.lookup(peer) {
        Ok(domain) => json(
            StatusCode::OK,
            &WhoamiResponse {
                pid: peer.pid,
                uid: peer.uid,
                domain,
                label: domain
                    .and_then(|id| state.domains.record(id))
                    .and_then(|record| record.label)
                    .map(|label| label.as_str().to_owned()),
            },
        ),
        Err(err) => seal_error(&err),
    }
}

fn list_domains(state: &AppState, peer: &Peer) -> ApiResponse {
    match state.domains.lookup(peer) {
        Ok(None) => {}
        Ok(Some(_)) => {
            return error(
                StatusCode::FORBIDDEN,
                "inside_domain",
                "a process inside a domain cannot list the node's domains",
            );
        }
        Err(err) => return seal_error(&err),
    }
    let domains = state
        .domains
        .live()
        .into_iter()
        .map(|record| DomainInfo {
            id: record.id,
            label: record.label.map(|label| label.as_str().to_owned()),
            created: record.created,
            sealed_pid: record.sealed_pid,
            sealed_uid: record.sealed_uid,
            tasks: state.domains.running_tasks(record.id),
        })
        .collect();
    json(StatusCode::OK, &DomainsResponse { domains })
}

fn seal_self(state: &AppState, peer: &Peer, body: &[u8]) -> ApiResponse {
    let request: SealSelfRequest = match decode_body(body) {
        Ok(request) => request,
        Err(reason) => return error(StatusCode::BAD_REQUEST, "bad_request", reason),
    };
    if let Some(registration) = &request.registration {
        if request.label.is_some() {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "a registration names its own label; give one or the other",
            );
        }
        return broker_routes::take_registration(state, peer, registration);
    }
    let label = match request.label.map(Label::try_from).transpose() {
        Ok(label) => label,
        Err(reason) => return error(StatusCode::BAD_REQUEST, "bad_label", reason),
    };
    match state.domains.seal(peer, label) {
        Ok(record) => {
            tracing::info!(
                domain = record.id,
                label = record.label.as_ref().map(Label::as_str).unwrap_or("-"),
                pid = peer.pid,
                uid = peer.uid,
                "sealed process into new domain"
            );
            json(
                StatusCode::OK,
                &SealSelfResponse {
                    domain: record.id,
                    label: record.label.map(|label| label.as_str().to_owned()),
                },
            )
        }
        Err(err) => {
            tracing::warn!(pid = peer.pid, uid = peer.uid, reason = %err, "refused to seal process");
            seal_error(&err)
        }
    }
}

pub fn seal_error(err: &SealError) -> ApiResponse {
    let (status, code) = match err {
        SealError::AlreadyInDomain(_) => (StatusCode::CONFLICT, "already_in_domain"),
        SealError::MultiThreaded(_) => (StatusCode::CONFLICT, "multi_threaded"),
        SealError::Caller(_) => (StatusCode::BAD_REQUEST, "caller_unidentified"),
        SealError::Kernel(_) => (StatusCode::INTERNAL_SERVER_ERROR, "kernel_error"),
        SealError::Capacity(_) => (StatusCode::SERVICE_UNAVAILABLE, "too_many_domains"),
        SealError::Storage(_) => (StatusCode::INTERNAL_SERVER_ERROR, "state_not_durable"),
        SealError::AlreadyRegistered(..) => (StatusCode::CONFLICT, "already_registered"),
    };
    error(status, code, err.to_string())
}
