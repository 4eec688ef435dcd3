//! Reading the tokenizer's data out of GGUF metadata (`tokenizer.ggml.*`).

use super::TokenizerData;
use bitnet_gguf::{GgufError, GgufFile};

impl TokenizerData {
    /// The tokenizer arrays and ids of a GGUF file. Only byte-level BPE (`tokenizer.ggml.model =
    /// "gpt2"`) is supported, which is what BitNet and LLaMA-3 files use.
    pub fn from_gguf(f: &GgufFile) -> Result<TokenizerData, GgufError> {
        let model = f.get_str("tokenizer.ggml.model")?.unwrap_or("gpt2");
        if model != "gpt2" {
            return Err(GgufError::WrongType {
                key: "tokenizer.ggml.model".into(),
                expected: "\"gpt2\" (byte-level BPE, the only tokenizer this engine implements)",
                found: format!("{model:?}"),
            });
        }
        let tokens = f
            .get_str_array("tokenizer.ggml.tokens")?
            .ok_or_else(|| GgufError::MissingKey {
                key: "tokenizer.ggml.tokens".into(),
                hint: "the file has no vocabulary; use a GGUF converted with its tokenizer".into(),
            })?
            .iter()
            .map(str::to_string)
            .collect();
        let token_types = f
            .get_int_array("tokenizer.ggml.token_type")?
            .unwrap_or_default()
            .into_iter()
            .map(|t| t as i32)
            .collect();
        let merges = f
            .get_str_array("tokenizer.ggml.merges")?
            .map(|m| m.iter().map(str::to_string).collect())
            .unwrap_or_default();
        let id = |k: &str| -> Result<Option<u32>, GgufError> {
            Ok(f.get_u64(k)?.map(|v| v.min(u32::MAX as u64) as u32))
        };
        let pre = f.get_str("tokenizer.ggml.pre")?.map(str::to_string);
        // llama.cpp adds BOS for the LLaMA-3 pre-tokenizer unless the file says otherwise.
        let add_bos = f.get_bool("tokenizer.ggml.add_bos_token")?.unwrap_or(true);
        Ok(TokenizerData {
            tokens,
            token_types,
            merges,
            bos_id: id("tokenizer.ggml.bos_token_id")?,
            eos_id: id("tokenizer.ggml.eos_token_id")?,
            add_bos,
            pre,
            chat_template: f.get_str("tokenizer.chat_template")?.map(str::to_string),
        })
    }
}
