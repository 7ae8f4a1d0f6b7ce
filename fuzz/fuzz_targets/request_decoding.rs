//! See agent/src/fuzzing/request.rs for what one input does and what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    bulkhead::fuzzing::request::decode_request(data);
});
