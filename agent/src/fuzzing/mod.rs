//! What each fuzz target does with one input, kept here so the fuzzer (`fuzz/`, run by
//! `cargo xtask fuzz`) and the normal tests (which replay `fuzz/corpus/`) run the same code.
//!
//! Each function must not panic on any input; where the parser accepts an input, it also
//! checks what acceptance must imply (a verified token really was signed by a trusted key, a
//! decoded request encodes back to itself), so the fuzzer finds wrong answers, not only crashes.
//!
//! Compiled only for tests and for the `fuzzing` feature: none of it belongs in the daemon.

pub mod node_config;
pub mod request;
pub mod token;

#[cfg(test)]
mod corpus_tests;
