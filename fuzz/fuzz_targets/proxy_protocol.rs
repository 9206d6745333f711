//! libFuzzer entry for `fuzz_checks::proxy_protocol` (what it checks is documented there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::proxy_protocol::check(data));
