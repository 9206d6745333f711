//! libFuzzer entry for `fuzz_checks::route_emitter_config` (what it checks is documented there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::route_emitter_config::check(data));
