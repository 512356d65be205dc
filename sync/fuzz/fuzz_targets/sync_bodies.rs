//! Any bytes as a sync endpoint's body or sealed material: see
//! `nacre_sync::fuzzing`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nacre_sync::fuzzing::exercise(data));
