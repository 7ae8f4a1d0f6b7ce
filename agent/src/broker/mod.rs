//! The token broker (issue 4): claims, strict verification, minting with a durable jti record;
//! the state tables, the API and key rotation follow.

pub mod claims;
pub mod config;
pub mod ledger;
pub mod mint;
pub mod verify;

#[cfg(test)]
mod verify_tests;
