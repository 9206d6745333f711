//! libFuzzer entry for `fuzz_checks::routing_api_json` (what it checks is documented there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::routing_api_json::check(data));
