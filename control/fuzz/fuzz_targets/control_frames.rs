//! Any bytes as what one side of the control link reads from the other:
//! see `nacre_control::fuzzing`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nacre_control::fuzzing::exercise(data));
