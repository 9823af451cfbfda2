#![no_main]
//! See `roam_fuzz::journal_replay`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| roam_fuzz::journal_replay::run(data));
