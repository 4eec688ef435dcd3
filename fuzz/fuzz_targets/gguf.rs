#![no_main]
// The harness is bitnet_fuzz::gguf::run (crates/fuzz/src/gguf.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| bitnet_fuzz::gguf::run(data));
