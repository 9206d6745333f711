//! libFuzzer entry for `fuzz_checks::route_service_signature` (what it checks is documented there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::route_service_signature::check(data));
