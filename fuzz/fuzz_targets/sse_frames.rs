//! libFuzzer entry for `fuzz_checks::sse_frames` (what it checks is documented there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::sse_frames::check(data));
