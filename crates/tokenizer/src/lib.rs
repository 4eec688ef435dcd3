//! Byte-level BPE tokenizer read from GGUF metadata (LLaMA-3 vocabulary and pre-split), the
//! streaming detokenizer, and chat formatting.
//!
//! * [`Tokenizer`] — built from [`TokenizerData`] (the `tokenizer.ggml.*` values; the GGUF reader
//!   fills it in): `encode`, `decode`, special tokens, end-of-generation ids.
//! * [`TextStream`] — generated token bytes to text that never splits a UTF-8 character and
//!   never shows any part of a stop string.
//! * [`ChatTemplate`] — messages to prompt text (BitNet's format, or the model's Jinja template).
//!
//! Token ids match the reference (PyPI `quicktok-v1`'s `llama3` encoding, the same split and
//! merges as LLaMA-3's `tokenizer.json`) on the committed corpus in
//! `crates/tokenizer/tests/data/tokenizer/`. SentencePiece vocabularies (`tokenizer.ggml.model = "llama"`)
//! and pre-tokenizers other than LLaMA-3's are not supported.

mod bpe;
mod bytes;
mod chat;
mod gguf;
mod lookup;
mod model;
mod pretokenize;
mod special;
mod stop;
mod stream;
mod unicode;
mod unicode_tables;
pub mod vocab;

pub use bytes::bytes_to_token_text;
pub use chat::{ChatError, ChatMessage, ChatTemplate};
pub use model::{Tokenizer, TokenizerData, TokenizerError};
pub use stream::{Pushed, TextStream, Utf8Stream};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_can_be_shared_across_threads() {
        fn check<T: Send + Sync>() {}
        check::<Tokenizer>();
        check::<ChatTemplate>();
        check::<TextStream>();
    }
}
