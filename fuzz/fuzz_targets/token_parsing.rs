//! See agent/src/fuzzing/token.rs for what one input does and what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    bulkhead::fuzzing::token::parse_token(data);
});
