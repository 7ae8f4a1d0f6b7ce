//! Request and response bodies of the agent's local API, shared by the server and the CLI.

use bulkhead_common::DomainId;
use serde::{Deserialize, Serialize};

pub const PATH_STATUS: &str = "/v1/status";
pub const PATH_WHOAMI: &str = "/v1/whoami";
pub const PATH_SEAL_SELF: &str = "/v1/domains/seal-self";
pub const PATH_DOMAINS: &str = "/v1/domains";

/// Largest request body the agent reads; anything larger is refused unread.
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;

/// Ask the agent to put the calling process into a new domain.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealSelfRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// A registration the caller's parent (the supervisor) made with the token broker; the
    /// domain is then the registered task's, with its label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SealSelfResponse {
    pub domain: DomainId,
    pub label: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct WhoamiResponse {
    pub pid: i32,
    pub uid: u32,
    pub domain: Option<DomainId>,
    pub label: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct StatusResponse {
    pub version: String,
    pub pid: u32,
    pub hooks: Vec<String>,
    pub domains: usize,
}

/// The node's live domains, for operators. Refused to callers inside a domain: one task has
/// no business learning what else runs on the node.
#[derive(Debug, Serialize, Deserialize)]
pub struct DomainsResponse {
    pub domains: Vec<DomainInfo>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DomainInfo {
    pub id: DomainId,
    pub label: Option<String>,
    /// Seconds since the Unix epoch.
    pub created: u64,
    pub sealed_pid: i32,
    pub sealed_uid: u32,
    /// Running tasks (threads included) the kernel counts for the domain; absent if the count
    /// could not be read.
    #[serde(default)]
    pub tasks: Option<u64>,
}

/// Every error the API returns: a stable machine-readable `code` and a sentence for people.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorResponse {
    pub code: String,
    pub error: String,
}

// The token broker's operations.
pub const PATH_TASKS: &str = "/v1/tasks";
pub const PATH_TOKENS: &str = "/v1/tokens";
pub const PATH_INTROSPECT: &str = "/v1/tokens/introspect";
pub const PATH_REVOKE: &str = "/v1/tokens/revoke";
pub const PATH_REVOKED: &str = "/v1/tokens/revoked";
pub const PATH_JWKS: &str = "/v1/jwks";
pub const PATH_WELL_KNOWN_JWKS: &str = "/.well-known/jwks.json";

/// A supervisor registers the task it is about to run: the broker opens a domain bound to the
/// task's identity and seals the supervisor's child `pid` into it. Without `pid`, the broker
/// answers with a `registration` id instead, which the supervisor's child presents through
/// `bulkhead exec --registration ID` to be sealed.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// The `scope=workload` token the executor gave the supervisor for this task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_token: Option<String>,
    /// The task identity, only where the node allows local issuing (no workload token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// The supervisor's child to seal: single-threaded, before it runs any task code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RegisterResponse {
    /// The task's domain, once a process is sealed into it (at once when `pid` was given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<DomainId>,
    /// Without `pid`: the id the supervisor's child presents to be sealed ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration: Option<String>,
    /// ... within this many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<u64>,
    pub sub: String,
    pub label: Option<String>,
}

/// Mint an execution token for `domain` (its owning supervisor), or for the caller's own
/// domain (a process inside it, where the node allows it).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MintRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<DomainId>,
    /// The task instead of its domain: for a supervisor that started its task through
    /// `bulkhead exec --registration` and so never saw the domain id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
}

#[derive(Serialize, Deserialize)]
pub struct MintResponse {
    pub token: String,
    pub jti: String,
    pub domain: DomainId,
    pub sub: String,
    pub kid: String,
    /// Seconds since the Unix epoch.
    pub exp: u64,
    pub expires_in: u64,
}

impl std::fmt::Debug for MintResponse {
    /// Never prints the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MintResponse")
            .field("jti", &self.jti)
            .field("domain", &self.domain)
            .field("exp", &self.exp)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntrospectRequest {
    pub token: String,
    /// The scope the token must have; `execution` unless given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<crate::broker::claims::Scope>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct IntrospectResponse {
    pub active: bool,
    /// Why the token is not active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claims: Option<crate::broker::claims::Claims>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<DomainId>,
}

/// Revoke one token (`jti`) or every token of a domain.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<DomainId>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RevokeResponse {
    pub revoked: usize,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RevocationsResponse {
    pub revoked: Vec<crate::broker::ledger::Revoked>,
}
