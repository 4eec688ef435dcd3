#![no_main]
// The harness is bitnet_fuzz::tokenizer::run (crates/fuzz/src/tokenizer.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| bitnet_fuzz::tokenizer::run(data));
