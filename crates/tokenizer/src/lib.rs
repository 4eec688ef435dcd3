//! BPE tokenizers read from GGUF metadata (byte-level LLaMA-3 and Qwen2/3 vocabularies, and
//! SentencePiece-style Gemma vocabularies with byte fallback), the streaming detokenizer, and
//! chat formatting.
//!
//! * [`Tokenizer`] — built from [`TokenizerData`] (the `tokenizer.ggml.*` values; the GGUF reader
//!   fills it in): `encode`, `encode_for_embedding` (BOS/EOS as the file's `add_bos_token` /
//!   `add_eos_token` say), `decode`, special tokens, end-of-generation ids.
//! * [`TextStream`] — generated token bytes to text that never splits a UTF-8 character and
//!   never shows any part of a stop string.
//! * [`ChatTemplate`] — messages to prompt text (BitNet's format, or the model's Jinja template).
//!
//! * [`vocab`] — GGUF tokenizer metadata for synthetic files (LLaMA-3, and the qwen3 / gemma3
//!   embedding files: [`vocab::qwen3_embedding`], [`vocab::gemma3_embedding`]).
//!
//! Token ids match a reference on committed corpora of over 4,000 lines each: PyPI
//! `quicktok-v1`'s `llama3` encoding (`tests/data/tokenizer/`) and `qwen3` encoding (Qwen2's
//! split with NFC, `tests/data/qwen3/`), and PyPI `sentencepiece` on a SYNTHETIC Gemma-style
//! vocabulary (`tests/data/gemma/`; Gemma 3's real tokenizer is not installable here). The
//! Gemma path is read both as Microsoft's converter writes it (`"gpt2"` + `"default"` + merges)
//! and in llama.cpp's classic `"llama"` + scores form. SentencePiece unigram vocabularies and
//! pre-tokenizers other than LLaMA-3's, Qwen2's and Gemma's `"default"` are refused.

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
