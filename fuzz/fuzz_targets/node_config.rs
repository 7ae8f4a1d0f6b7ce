//! See agent/src/fuzzing/node_config.rs for what one input does and what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    bulkhead::fuzzing::node_config::parse_node_config(data);
});
