//! Signing-key custody: reading key files only if they are private, parsing them into signing
//! keys with their `kid`, keeping the bytes out of dumps and swap, and generating new keys.

pub mod admin;
pub mod file;
pub mod fleet_jwks;
pub mod generate;
pub mod keyring;
pub mod material;
pub mod memory;
pub mod rotation;

#[cfg(test)]
mod tests;
