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
    pub label: Option<String>,
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
}

/// Every error the API returns: a stable machine-readable `code` and a sentence for people.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorResponse {
    pub code: String,
    pub error: String,
}
