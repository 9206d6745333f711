//! libFuzzer entry for `fuzz_checks::nats_registration` (what it checks is documented there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::nats_registration::check(data));
