#![no_main]
//! See `roam_fuzz::storage_request`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| roam_fuzz::storage_request::run(data));
