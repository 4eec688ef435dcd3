#![no_main]
// The harness is bitnet_fuzz::chat::run (crates/fuzz/src/chat.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| bitnet_fuzz::chat::run(data));
