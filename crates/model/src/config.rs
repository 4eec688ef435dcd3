//! Model hyper-parameters read from GGUF metadata, with checks that they describe a graph of
//! the BitNet family this engine can run (docs/model.md#the-model-family).

use bitnet_gguf::{Array, GgufError, GgufFile};

/// Architectures this engine loads (docs/formats.md#model-metadata-keys): the BitNet b1.58
/// generation graph under two names, and Microsoft's BitNet embedding models.
pub const SUPPORTED_ARCHS: [&str; 4] = ["bitnet-b1.58", "bitnet-25", "qwen3", "gemma3"];

/// The FFN activation. BitNet b1.58 is trained with squared ReLU; a file may say otherwise
/// through `<arch>.hidden_activation` (the key upstream added in 2026). The embedding
/// architectures fix theirs: SiLU for `qwen3`, GELU with the tanh approximation for `gemma3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Relu2,
    Silu,
    /// PyTorch's `gelu(approximate="tanh")` (Hugging Face's `gelu_pytorch_tanh`).
    GeluTanh,
}

/// How an embedding model turns its per-token hidden states into one vector
/// (`<arch>.pooling_type`, llama.cpp's numbering: 1 mean, 2 cls, 3 last).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The average over every token of the input.
    Mean,
    /// The first token's state.
    Cls,
    /// The last token's state (the published BitNet embedding files).
    Last,
}

/// What a loaded model is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// Next-token logits through the tied output head (`bitnet-b1.58`, `bitnet-25`):
    /// [`crate::Model::forward`].
    Generation,
    /// One pooled vector of `dim` values per input (`qwen3`, `gemma3`):
    /// [`crate::Model::embed`]. `pooling_defaulted` is true when the file has no
    /// `<arch>.pooling_type` and mean pooling was assumed (as llama.cpp does).
    Embedding {
        dim: usize,
        pooling: Pooling,
        pooling_defaulted: bool,
    },
}

/// Which layer graph the architecture has (docs/model.md#the-model-family); it decides which
/// tensors a layer must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Graph {
    /// BitNet b1.58: one input norm for Q/K/V and for gate/up, sub norms before O and down.
    BitnetB158,
    /// BitNet embedding models on the Qwen3 layout: an input norm per projection, per-head
    /// Q/K norms.
    Qwen3,
    /// As Qwen3, plus post-attention / post-FFN norms and the embedding scaled by √n_embd.
    Gemma3,
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
    /// The layer graph of the architecture.
    pub graph: Graph,
    /// Generation or embedding, with the embedding's pooling.
    pub kind: ModelKind,
    /// Multiplies the attention scores: `1/√head_dim`, or `1/√query_pre_attn_scalar` for a
    /// `gemma3` file that sets `gemma3.attention.query_pre_attn_scalar`.
    pub attn_scale: f32,
    /// Multiplies the embedding rows: √n_embd for `gemma3`, else 1.
    pub embd_scale: f32,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(
        "model architecture {0:?} is not supported; this engine runs BitNet b1.58 models (general.architecture = \"bitnet-b1.58\" or \"bitnet-25\") and BitNet embedding models (\"qwen3\" or \"gemma3\")"
    )]
    UnsupportedArch(String),
    #[error("{0}")]
    Unsupported(String),
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
        let graph = match arch.as_str() {
            "qwen3" => Graph::Qwen3,
            "gemma3" => Graph::Gemma3,
            _ => Graph::BitnetB158,
        };
        // The head dimension: `attention.key_length` / `value_length` when the file has them
        // (the embedding models' heads are wider than n_embd / n_head), else n_embd / n_head.
        let key_len = f.get_u64(&format!("{arch}.attention.key_length"))?;
        let value_len = f.get_u64(&format!("{arch}.attention.value_length"))?;
        let head_dim = match (key_len, value_len) {
            (Some(k), Some(v)) if k != v => {
                return bad(format!(
                    "attention.key_length {k} differs from attention.value_length {v}; heads with different key and value widths are not supported"
                ));
            }
            (Some(k), _) | (None, Some(k)) => k as usize,
            (None, None) => {
                if !n_embd.is_multiple_of(n_head) {
                    return bad(format!(
                        "embedding length {n_embd} is not divisible by {n_head} heads (and the file has no attention.key_length)"
                    ));
                }
                n_embd / n_head
            }
        };
        if !n_head.is_multiple_of(n_head_kv) {
            return bad(format!(
                "{n_head} heads cannot be grouped over {n_head_kv} KV heads"
            ));
        }
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return bad(format!(
                "head dimension {head_dim} is zero or odd; RoPE needs pairs"
            ));
        }
        if n_head
            .checked_mul(head_dim)
            .is_none_or(|q| q > isize::MAX as usize / 8)
        {
            return bad(format!(
                "{n_head} heads × head dimension {head_dim} overflows"
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
        let activation = match graph {
            Graph::Qwen3 => Activation::Silu,
            Graph::Gemma3 => Activation::GeluTanh,
            Graph::BitnetB158 => match f.get_str(&format!("{arch}.hidden_activation"))? {
                None | Some("relu2") | Some("relu_sqr") => Activation::Relu2,
                Some("silu") => Activation::Silu,
                Some(other) => {
                    return bad(format!(
                        "hidden_activation {other:?} is unknown (expected relu2 or silu)"
                    ));
                }
            },
        };
        // This engine's attention is causal, over every position, in every layer.
        if f.get_bool(&format!("{arch}.attention.causal"))? == Some(false) {
            return Err(ConfigError::Unsupported(format!(
                "{arch}.attention.causal is false: this engine runs causal attention only (as llama.cpp and bitnet.cpp do for {arch} models); a bidirectional model would give wrong embeddings"
            )));
        }
        if let Some(w) = f.get_u64(&format!("{arch}.attention.sliding_window"))?
            && w > 0
        {
            return Err(ConfigError::Unsupported(format!(
                "{arch}.attention.sliding_window is {w}: sliding-window attention is not implemented (every layer attends to the whole sequence); use a file converted without a sliding window, as Microsoft's BitNet embedding converter writes them"
            )));
        }
        let pre_attn = match graph {
            Graph::Gemma3 => f.get_f64("gemma3.attention.query_pre_attn_scalar")?,
            _ => None,
        };
        let attn_scale = match pre_attn {
            Some(s) if !(s.is_finite() && s > 0.0) => {
                return bad(format!(
                    "attention.query_pre_attn_scalar {s} is not a positive number"
                ));
            }
            Some(s) => 1.0 / (s as f32).sqrt(),
            None => 1.0 / (head_dim as f32).sqrt(),
        };
        let embd_scale = match graph {
            Graph::Gemma3 => (n_embd as f32).sqrt(),
            _ => 1.0,
        };
        let kind = match graph {
            Graph::BitnetB158 => ModelKind::Generation,
            Graph::Qwen3 | Graph::Gemma3 => {
                let key = format!("{arch}.pooling_type");
                let (pooling, pooling_defaulted) = match f.get_u64(&key)? {
                    None => (Pooling::Mean, true),
                    Some(1) => (Pooling::Mean, false),
                    Some(2) => (Pooling::Cls, false),
                    Some(3) => (Pooling::Last, false),
                    Some(0) => {
                        return Err(ConfigError::Unsupported(format!(
                            "{key} is 0 (none: one vector per token); this engine returns one pooled vector per input, so the file must declare 1 (mean), 2 (cls) or 3 (last)"
                        )));
                    }
                    Some(4) => {
                        return Err(ConfigError::Unsupported(format!(
                            "{key} is 4 (rank): reranking models are not supported, only embedding models with pooling 1 (mean), 2 (cls) or 3 (last)"
                        )));
                    }
                    Some(other) => {
                        return bad(format!(
                            "{key} {other} is unknown (llama.cpp numbering: 1 mean, 2 cls, 3 last)"
                        ));
                    }
                };
                ModelKind::Embedding {
                    dim: n_embd,
                    pooling,
                    pooling_defaulted,
                }
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
            graph,
            kind,
            attn_scale,
            embd_scale,
        })
    }

    /// Width of the attention: query heads × head dimension (n_embd for BitNet b1.58, wider
    /// for the embedding models).
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }

    /// Bytes of KV cache per token (f16 K and V for every layer); `from_gguf` refuses a header
    /// for which this overflows.
    pub fn kv_bytes_per_token(&self) -> usize {
        self.n_layer * 2 * self.n_head_kv * self.head_dim * 2
    }
}
