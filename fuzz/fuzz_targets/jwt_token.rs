//! libFuzzer entry for `fuzz_checks::jwt_token` (what it checks is documented there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::jwt_token::check(data));
