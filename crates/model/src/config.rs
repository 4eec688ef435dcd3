//! Model hyper-parameters read from GGUF metadata, with checks that they describe a BitNet
//! b1.58 graph this engine can run.

use bitnet_gguf::{Array, GgufError, GgufFile};

/// Architectures that share the BitNet b1.58 graph (docs/formats.md#model-metadata-keys).
pub const SUPPORTED_ARCHS: [&str; 2] = ["bitnet-b1.58", "bitnet-25"];

/// The FFN activation. BitNet b1.58 is trained with squared ReLU; a file may say otherwise
/// through `<arch>.hidden_activation` (the key upstream added in 2026).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Relu2,
    Silu,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub arch: String,
    pub name: Option<String>,
    pub n_vocab: usize,
    /// Context length the model was trained with.
    pub n_ctx_train: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    pub rms_eps: f32,
    pub rope_theta: f32,
    pub activation: Activation,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(
        "model architecture {0:?} is not supported; this engine runs BitNet b1.58 models (general.architecture = \"bitnet-b1.58\" or \"bitnet-25\")"
    )]
    UnsupportedArch(String),
    #[error("model metadata is inconsistent: {0}")]
    Inconsistent(String),
}

impl ModelConfig {
    pub fn from_gguf(f: &GgufFile) -> Result<ModelConfig, ConfigError> {
        let arch = f
            .get_str("general.architecture")?
            .ok_or_else(|| GgufError::MissingKey {
                key: "general.architecture".into(),
                hint: "the file is not a model GGUF (or was truncated)".into(),
            })?
            .to_string();
        if !SUPPORTED_ARCHS.contains(&arch.as_str()) {
            return Err(ConfigError::UnsupportedArch(arch));
        }
        let hint = "the file lacks a required model hyper-parameter; re-convert it".to_string();
        let req = |k: &str| -> Result<u64, ConfigError> {
            let key = format!("{arch}.{k}");
            f.get_u64(&key)?.ok_or_else(|| {
                GgufError::MissingKey {
                    key,
                    hint: hint.clone(),
                }
                .into()
            })
        };
        let n_embd = req("embedding_length")? as usize;
        let n_layer = req("block_count")? as usize;
        let n_head = req("attention.head_count")? as usize;
        let n_head_kv = req("attention.head_count_kv")? as usize;
        let n_ff = req("feed_forward_length")? as usize;
        let n_ctx_train = req("context_length")? as usize;
        let rms_eps = f
            .get_f64(&format!("{arch}.attention.layer_norm_rms_epsilon"))?
            .ok_or_else(|| GgufError::MissingKey {
                key: format!("{arch}.attention.layer_norm_rms_epsilon"),
                hint: hint.clone(),
            })? as f32;
        let rope_theta = f
            .get_f64(&format!("{arch}.rope.freq_base"))?
            .unwrap_or(10_000.0) as f32;
        let tokens = f
            .get("tokenizer.ggml.tokens")
            .and_then(|v| v.as_array())
            .map(Array::len);
        let n_vocab = match f.get_u64(&format!("{arch}.vocab_size"))? {
            Some(v) => v as usize,
            None => tokens.ok_or_else(|| GgufError::MissingKey {
                key: "tokenizer.ggml.tokens".into(),
                hint: "the file has no vocabulary".into(),
            })?,
        };
        let bad = |m: String| Err(ConfigError::Inconsistent(m));
        if n_embd == 0 || n_layer == 0 || n_head == 0 || n_head_kv == 0 || n_ff == 0 {
            return bad(format!(
                "zero-sized dimension (embedding {n_embd}, layers {n_layer}, heads {n_head}/{n_head_kv}, ffn {n_ff})"
            ));
        }
        if !n_embd.is_multiple_of(n_head) {
            return bad(format!(
                "embedding length {n_embd} is not divisible by {n_head} heads"
            ));
        }
        if !n_head.is_multiple_of(n_head_kv) {
            return bad(format!(
                "{n_head} heads cannot be grouped over {n_head_kv} KV heads"
            ));
        }
        let head_dim = n_embd / n_head;
        if !head_dim.is_multiple_of(2) {
            return bad(format!(
                "head dimension {head_dim} is odd; RoPE needs pairs"
            ));
        }
        if let Some(rot) = f.get_u64(&format!("{arch}.rope.dimension_count"))?
            && rot as usize != head_dim
        {
            return bad(format!(
                "rope.dimension_count {rot} differs from the head dimension {head_dim}; partial RoPE is not part of BitNet b1.58"
            ));
        }
        if let Some(t) = tokens
            && t != n_vocab
        {
            return bad(format!(
                "vocab_size {n_vocab} but {t} tokens in tokenizer.ggml.tokens"
            ));
        }
        if n_ctx_train == 0 {
            return bad("context_length is 0".into());
        }
        // The KV cache of one token (kv_bytes_per_token) must be a number this machine can
        // hold: a hostile header (a huge block_count) must not overflow it.
        if [n_layer, 2, n_head_kv, head_dim, 2]
            .iter()
            .try_fold(1usize, |acc, &x| acc.checked_mul(x))
            .is_none_or(|b| b > isize::MAX as usize)
        {
            return bad(format!(
                "{n_layer} layers × {n_head_kv} KV heads × head dimension {head_dim}: the KV \
                 cache of one token overflows"
            ));
        }
        let eps_ok = rms_eps > 0.0 && rms_eps < 1.0;
        if !eps_ok || rope_theta.is_nan() || rope_theta <= 0.0 {
            return bad(format!(
                "rms epsilon {rms_eps} / rope base {rope_theta} out of range"
            ));
        }
        let activation = match f.get_str(&format!("{arch}.hidden_activation"))? {
            None | Some("relu2") | Some("relu_sqr") => Activation::Relu2,
            Some("silu") => Activation::Silu,
            Some(other) => {
                return bad(format!(
                    "hidden_activation {other:?} is unknown (expected relu2 or silu)"
                ));
            }
        };
        Ok(ModelConfig {
            name: f.get_str("general.name")?.map(str::to_string),
            arch,
            n_vocab,
            n_ctx_train,
            n_embd,
            n_layer,
            n_head,
            n_head_kv,
            head_dim,
            n_ff,
            rms_eps,
            rope_theta,
            activation,
        })
    }

    /// Bytes of KV cache per token (f16 K and V for every layer); `from_gguf` refuses a header
    /// for which this overflows.
    pub fn kv_bytes_per_token(&self) -> usize {
        self.n_layer * 2 * self.n_head_kv * self.head_dim * 2
    }
}
