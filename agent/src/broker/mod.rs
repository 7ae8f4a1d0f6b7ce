//! The token broker (issue 4): claims, strict verification; minting, state and the API follow.

pub mod claims;
pub mod verify;

#[cfg(test)]
mod verify_tests;
