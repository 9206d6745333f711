//! libFuzzer entry for `fuzz_checks::http_request_head` (what it checks is documented there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::http_request_head::check(data));
