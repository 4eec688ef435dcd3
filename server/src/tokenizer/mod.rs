//! Byte-level BPE tokenizer read from GGUF metadata (LLaMA-3 vocabulary and pre-split).

pub mod bytes;
pub mod vocab;
