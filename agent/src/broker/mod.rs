//! The token broker: signing keys and tokens stay in this (LSM-protected) process; callers are
//! identified by the kernel; tokens are Airflow Execution API tokens, recorded before they leave
//! and revoked when their domain ends.

pub mod claims;
pub mod config;
pub mod domain_locks;
pub mod group_commit;
pub mod issuer;
pub mod ledger;
pub mod mint;
pub mod owners;
pub mod pending;
pub mod runtime;
pub mod service;
pub mod verify;

#[cfg(test)]
mod verify_tests;

#[cfg(test)]
mod service_tests;
