//! libFuzzer entry for `fuzz_checks::tls_sni` (what it checks is documented there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::tls_sni::check(data));
