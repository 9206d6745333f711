//! libFuzzer entry for `fuzz_checks::reservable_ports` (what it checks is documented there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::reservable_ports::check(data));
