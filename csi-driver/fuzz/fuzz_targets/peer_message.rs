#![no_main]
//! See `roam_fuzz::peer_message`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| roam_fuzz::peer_message::run(data));
