//! Any bytes as KMS's answer to the enclave: see `nacre_kms::fuzzing`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nacre_kms::fuzzing::exercise(data));
