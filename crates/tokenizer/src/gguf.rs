//! Reading the tokenizer's data out of GGUF metadata (`tokenizer.ggml.*`).

use super::TokenizerData;
use super::model::{LLAMA3_PRE_NAMES, QWEN2_PRE_NAMES};
use bitnet_gguf::{Array, GgufError, GgufFile};

impl TokenizerData {
    /// The tokenizer arrays and ids of a GGUF file. `tokenizer.ggml.model` must be `"gpt2"`
    /// (BPE with merges: BitNet, LLaMA-3, Qwen, and Microsoft's Gemma 3 files) or `"llama"`
    /// (SentencePiece BPE with scores); [`super::Tokenizer::new`] checks the rest.
    pub fn from_gguf(f: &GgufFile) -> Result<TokenizerData, GgufError> {
        let model = f.get_str("tokenizer.ggml.model")?.unwrap_or("gpt2");
        if model != "gpt2" && model != "llama" {
            return Err(GgufError::WrongType {
                key: "tokenizer.ggml.model".into(),
                expected: "\"gpt2\" (BPE with merges) or \"llama\" (SentencePiece BPE with \
                           scores), the tokenizers this engine implements",
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
        let scores = match f.get("tokenizer.ggml.scores") {
            None => Vec::new(),
            Some(v) => match v.as_array() {
                Some(Array::F32(s)) => s.clone(),
                Some(Array::F64(s)) => s.iter().map(|&x| x as f32).collect(),
                _ => {
                    return Err(GgufError::WrongType {
                        key: "tokenizer.ggml.scores".into(),
                        expected: "an array of f32",
                        found: v.type_description(),
                    });
                }
            },
        };
        let id = |k: &str| -> Result<Option<u32>, GgufError> {
            Ok(f.get_u64(k)?.map(|v| v.min(u32::MAX as u64) as u32))
        };
        let pre = f.get_str("tokenizer.ggml.pre")?.map(str::to_string);
        let bos_id = id("tokenizer.ggml.bos_token_id")?;
        // Without the key, llama.cpp adds BOS for the LLaMA-3 pre-tokenizer and SentencePiece
        // vocabularies, not for Qwen2's (whose vocabulary has no BOS token).
        let bos_by_default = match pre.as_deref() {
            None => true,
            Some(p) if LLAMA3_PRE_NAMES.contains(&p) => true,
            Some(p) if QWEN2_PRE_NAMES.contains(&p) => false,
            Some(_) => bos_id.is_some(),
        };
        let add_bos = f
            .get_bool("tokenizer.ggml.add_bos_token")?
            .unwrap_or(bos_by_default);
        let add_eos = f.get_bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false);
        Ok(TokenizerData {
            tokens,
            token_types,
            merges,
            bos_id,
            eos_id: id("tokenizer.ggml.eos_token_id")?,
            add_bos,
            add_eos,
            model: Some(model.to_string()),
            pre,
            scores,
            chat_template: f.get_str("tokenizer.chat_template")?.map(str::to_string),
        })
    }
}
