//! The claims of the tokens the broker deals in, as Airflow's Execution API expects them.

use serde::{Deserialize, Serialize};

/// Airflow's default audience for Execution API tokens.
pub const DEFAULT_AUDIENCE: &str = "urn:airflow.apache.org:task";

/// What a token may be used for (Airflow PR #60108): a long-lived `workload` token travels with
/// the queued task and only starts it; a short-lived `execution` token is used for everything
/// else. Neither is accepted where the other is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Workload,
    Execution,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Workload => "workload",
            Self::Execution => "execution",
        }
    }
}

/// The claims every accepted token must carry, with exactly these JSON types: a string `aud`
/// (an array is refused), integer times, a string `scope`. Decoding into this struct is itself
/// a check: a string-typed `exp` or a missing `nbf` fails here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub aud: String,
    pub sub: String,
    pub scope: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    pub jti: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
}
