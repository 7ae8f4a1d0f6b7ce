//! bulkhead: puts each task of a task runner in a kernel-enforced domain (eBPF LSM) and, later,
//! brokers its tokens. One module per concern; see README.md for the architecture.

pub mod api;
pub mod audit;
pub mod broker;
pub mod config;
pub mod daemon;
pub mod domains;
pub mod enforce;
pub mod exec;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod keys;
pub mod lifecycle;
pub mod peer;
pub mod preflight;
pub mod protect;
pub mod reachable_sockets;
pub mod state;
