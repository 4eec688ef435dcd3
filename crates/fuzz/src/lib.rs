//! The fuzz harnesses, written once: each `fuzz/fuzz_targets/<target>.rs` is one call into a
//! module of this crate, and `tests/replay.rs` calls the same functions on every committed
//! corpus and regression input (`fuzz/corpus/<target>/`, `fuzz/regressions/<target>/`), so plain
//! `cargo test` keeps what the fuzzer found fixed. How to run the fuzzer: `docs/fuzzing.md`.
//!
//! A harness takes arbitrary bytes, drives the product code the way the server does, and panics
//! only when the product breaks a promise: a panic inside the product, a bound it does not keep,
//! a round trip that does not hold. Inputs the product refuses with an error are fine.
//!
//! This crate is for tests and fuzzing only; nothing ships it.

pub mod chat;
pub mod gguf;
pub mod http;
pub mod tokenizer;
pub mod vocab;

/// A harness: one input, run to the end; panics on a broken promise.
pub type Harness = fn(&[u8]);

/// The fuzz targets by name (`fuzz/fuzz_targets/<name>.rs`, `fuzz/corpus/<name>/`).
pub const TARGETS: [(&str, Harness); 4] = [
    ("gguf", gguf::run),
    ("tokenizer", tokenizer::run),
    ("chat_template", chat::run),
    ("http_request", http::run),
];
