#![no_main]
// The harness is bitnet_fuzz::http::run (crates/fuzz/src/http.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| bitnet_fuzz::http::run(data));
