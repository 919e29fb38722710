#![no_main]

#[path = "../bodies/admission_review.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
