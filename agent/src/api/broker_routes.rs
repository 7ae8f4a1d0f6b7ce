//! The token broker's routes: decoding requests, and mapping the broker's refusals to HTTP.

use hyper::StatusCode;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::{
    handlers::{ApiResponse, AppState, decode_body, error, json, seal_error},
    wire::{
        IntrospectRequest, MintRequest, RegisterRequest, RevocationsResponse, RevokeRequest,
        RevokeResponse,
    },
};
use crate::{
    broker::{
        claims::Scope,
        mint::MintError,
        service::{Broker, BrokerError},
    },
    peer::{Peer, PeerError},
};

fn disabled() -> ApiResponse {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "broker_disabled",
        "the token broker is not enabled on this node ([broker] enabled = true)",
    )
}

/// A GET carries no body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoBody {}

/// Decodes the request, runs `operation` on the broker, and answers with its result or its
/// refusal.
fn serve<Request: DeserializeOwned, Answer: Serialize>(
    state: &AppState,
    peer: &Peer,
    body: &[u8],
    name: &str,
    operation: impl FnOnce(&Broker, Request) -> Result<Answer, BrokerError>,
) -> ApiResponse {
    let Some(broker) = state.broker.as_deref() else {
        return disabled();
    };
    let request = match decode_body(body) {
        Ok(request) => request,
        Err(reason) => return error(StatusCode::BAD_REQUEST, "bad_request", reason),
    };
    match operation(broker, request) {
        Ok(answer) => json(StatusCode::OK, &answer),
        Err(err) => refusal(peer, name, &err),
    }
}

/// `bulkhead exec --registration ID`: the caller asks to be sealed into the domain of the task
/// its parent registered.
pub fn take_registration(state: &AppState, peer: &Peer, id: &str) -> ApiResponse {
    let Some(broker) = state.broker.as_deref() else {
        return disabled();
    };
    match broker.take_registration(peer, id) {
        Ok(sealed) => json(StatusCode::OK, &sealed),
        Err(err) => refusal(peer, "take registration", &err),
    }
}

fn refusal(peer: &Peer, operation: &str, err: &BrokerError) -> ApiResponse {
    let (status, code) = match err {
        BrokerError::Seal(seal) => return seal_error(seal),
        BrokerError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
        BrokerError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
        BrokerError::WorkloadToken(_) => (StatusCode::UNAUTHORIZED, "invalid_workload_token"),
        BrokerError::Process(PeerError::NotChild { .. }) => (StatusCode::FORBIDDEN, "not_a_child"),
        BrokerError::Process(PeerError::NoSuchProcess(_)) => {
            (StatusCode::NOT_FOUND, "no_such_process")
        }
        BrokerError::Process(_) => (StatusCode::BAD_REQUEST, "process_unidentified"),
        BrokerError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        BrokerError::Fresh { .. } => (StatusCode::CONFLICT, "token_fresh"),
        BrokerError::Mint(MintError::NotDurable(_)) | BrokerError::Storage(_) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "state_not_durable")
        }
        BrokerError::Mint(_) => (StatusCode::INTERNAL_SERVER_ERROR, "mint_failed"),
        BrokerError::CallerGone => (StatusCode::GONE, "caller_gone"),
        BrokerError::Conflict(_) => (StatusCode::CONFLICT, "already_registered"),
        BrokerError::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "too_many_registrations"),
    };
    // The error text never holds a token (verification errors name the check, not the input).
    tracing::warn!(pid = peer.pid, uid = peer.uid, operation, code, reason = %err, "broker refused");
    error(status, code, err.to_string())
}

pub fn register(state: &AppState, peer: &Peer, body: &[u8]) -> ApiResponse {
    serve(
        state,
        peer,
        body,
        "register",
        |broker, request: RegisterRequest| broker.register(peer, request),
    )
}

pub fn mint(state: &AppState, peer: &Peer, body: &[u8]) -> ApiResponse {
    serve(state, peer, body, "mint", |broker, request: MintRequest| {
        let domain = match (request.domain, request.sub) {
            (Some(_), Some(_)) => {
                return Err(BrokerError::BadRequest(
                    "name the domain or the task (sub), not both".into(),
                ));
            }
            (None, Some(sub)) => Some(broker.supervised_task_domain(peer, &sub)?),
            (domain, None) => domain,
        };
        broker.mint(peer, domain)
    })
}

pub fn introspect(state: &AppState, peer: &Peer, body: &[u8]) -> ApiResponse {
    serve(
        state,
        peer,
        body,
        "introspect",
        |broker, request: IntrospectRequest| {
            let scope = request.scope.unwrap_or(Scope::Execution);
            broker.introspect(peer, &request.token, scope)
        },
    )
}

pub fn revoke(state: &AppState, peer: &Peer, body: &[u8]) -> ApiResponse {
    serve(
        state,
        peer,
        body,
        "revoke",
        |broker, request: RevokeRequest| {
            broker
                .revoke(peer, request)
                .map(|revoked| RevokeResponse { revoked })
        },
    )
}

pub fn revocations(state: &AppState, peer: &Peer) -> ApiResponse {
    serve(state, peer, b"", "revocations", |broker, NoBody {}| {
        broker
            .revocations(peer)
            .map(|revoked| RevocationsResponse { revoked })
    })
}

pub fn jwks(state: &AppState, peer: &Peer) -> ApiResponse {
    serve(state, peer, b"", "jwks", |broker, NoBody {}| {
        Ok(broker.jwks())
    })
}
