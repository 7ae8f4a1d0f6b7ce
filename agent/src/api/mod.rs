//! The agent's local API over a Unix socket.

pub mod broker_routes;
pub mod client;
pub mod handlers;
pub mod jwks_listener;
pub mod server;
pub mod wire;
