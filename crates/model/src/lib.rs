//! The forward pass of the BitNet model family (docs/model.md): loading typed weight views from
//! a GGUF file and running batches of tokens from one or many sequences through the decoder.
//! BitNet b1.58 generation models give logits ([`Model::forward`]); the BitNet embedding models
//! (`qwen3`, `gemma3`) give one pooled vector per input ([`Model::embed`]). Both
//! run the same layer code, which executes whichever optional parts a layer has (per-projection
//! input norms, per-head Q/K norms, post norms).
//!
//! This crate owns the graph and its numerics. It does not tokenize, sample or schedule
//! requests; matrix products go through `linear` and the per-row pieces through `ops`.

mod attention;
mod cache;
mod config;
mod linear;
mod ops;

pub use cache::KvCache;
pub use config::{Activation, ConfigError, Graph, ModelConfig, ModelKind, Pooling};

use bitnet_gguf::quant;
use bitnet_gguf::{GgmlType, GgufError, GgufFile, TensorInfo};
use bitnet_kernels::{KernelError, Kernels, Q8Matrix, QuantActs, TernaryJob, ThreadPool};
use half::f16;
use linear::TernaryTensor;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "tensor {name:?} has shape {found:?} but this model needs {expected:?}; the file does not match its own metadata"
    )]
    Shape {
        name: String,
        expected: Vec<u64>,
        found: Vec<u64>,
    },
    #[error("tensor {name:?} is {ty} but must be {expected}")]
    Type {
        name: String,
        ty: GgmlType,
        expected: &'static str,
    },
    #[error(
        "ternary tensor {name:?} has rows of {cols} values; {ty} needs a multiple of {multiple}"
    )]
    RowLength {
        name: String,
        ty: GgmlType,
        cols: usize,
        multiple: usize,
    },
    #[error("tensor {name:?} contains a non-finite value ({what}); the file is corrupt")]
    NonFinite { name: String, what: String },
    #[error("tensor {name:?}: {source}")]
    Layout { name: String, source: KernelError },
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error("token id {id} is outside the vocabulary (0..{n_vocab})")]
    TokenOutOfRange { id: u32, n_vocab: usize },
    #[error(
        "the sequence would reach {needed} tokens but its context is limited to {limit}; shorten the prompt or lower max_tokens (or raise --ctx-size up to the model's limit)"
    )]
    ContextFull { needed: usize, limit: usize },
    #[error(
        "this is an embedding model ({arch}): it has no output head and gives no logits; use Model::embed"
    )]
    NoOutputHead { arch: String },
    #[error(
        "this is a generation model ({arch}): it has no pooling and gives no embeddings; load a BitNet embedding model (qwen3 or gemma3) for embeddings"
    )]
    NotEmbedding { arch: String },
    #[error("input {index} has no tokens; an embedding needs at least one token")]
    EmptyInput { index: usize },
    #[error(
        "input {index} has {len} tokens but the context is limited to {limit}; shorten or split the input (or raise --ctx-size up to the model's limit)"
    )]
    InputTooLong {
        index: usize,
        len: usize,
        limit: usize,
    },
}

/// Tokens per forward pass of [`Model::embed`]: bounds the activations of one pass (a few
/// hundred KiB per token for the published shapes) while keeping the weight pass shared by
/// many tokens.
pub const DEFAULT_EMBED_BATCH_TOKENS: usize = 1024;

/// Options that change how a model is loaded.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Context limit; `None` uses the model's trained context length.
    pub n_ctx: Option<usize>,
    /// Worker threads; 0 = one per physical core.
    pub threads: usize,
    /// Kernel variant; `None` = the best for this CPU, or `BITNET_KERNEL`. The one instruction
    /// set decision of the forward pass: the matrix products, the activation quantization and
    /// attention all run with this variant's code ([`Kernels::simd`]).
    pub kernels: Option<&'static Kernels>,
    /// How the output head multiplies (the embedding is always used as stored for lookups).
    /// Ignored for an embedding model, which has no output head.
    pub head: HeadKind,
}

/// The output head's arithmetic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HeadKind {
    /// F16 weights × f32 activations, as the model was published (exact).
    #[default]
    F16,
    /// The embedding requantized to 8 bits per weight at load (one fp16 scale per 32):
    /// half the memory traffic per token, a small change in logits.
    Q8,
}

/// One ternary projection and the RMS norm (if any) applied to its input just before the
/// activation quantization.
struct Proj {
    norm_in: Option<Vec<f32>>,
    w: TernaryTensor,
}

/// One decoder layer. The parts every member of the family has are plain fields; the rest are
/// `Option`s, set by `Model::load` from the architecture's tensor list
/// (docs/model.md#the-model-family), and the forward pass runs whichever are present.
struct Layer {
    /// The input norm of the attention block.
    attn_norm: Vec<f32>,
    /// Q, K, V; with `norm_in` (embedding models) each re-normalises the normed input.
    q: Proj,
    k: Proj,
    v: Proj,
    /// Per-head RMS norms of Q and K (width head_dim), before RoPE.
    q_norm: Option<Vec<f32>>,
    k_norm: Option<Vec<f32>>,
    /// The output projection; its `norm_in` is `attn_sub_norm` (b1.58) or
    /// `attn_output_norm_in` (embedding models), the same operation under two names.
    o: Proj,
    /// Gemma3: norm of the attention output before the residual add.
    post_attn_norm: Option<Vec<f32>>,
    /// The input norm of the FFN block.
    ffn_norm: Vec<f32>,
    gate: Proj,
    up: Proj,
    /// Its `norm_in` is `ffn_sub_norm` (b1.58) or `ffn_down_norm_in`.
    down: Proj,
    /// Gemma3: norm of the FFN output before the residual add.
    post_ffn_norm: Option<Vec<f32>>,
}

/// The token embedding, also the tied output head.
enum Embedding {
    /// F16 rows borrowed from the mapped file (byte offset of row 0), made only when they are
    /// 2-byte aligned in memory.
    MappedF16 { start: usize },
    /// Any other type, converted to f16 at load (Q6_K, Q8_0, BF16, F32 embeddings), and F16 rows
    /// at an odd address (a file with `general.alignment` 1), copied.
    Owned(Vec<f16>),
}

/// A loaded model: metadata, typed views into the mapped file, and small owned norms.
pub struct Model {
    pub config: ModelConfig,
    file: GgufFile,
    n_ctx: usize,
    embedding: Embedding,
    output_norm: Vec<f32>,
    layers: Vec<Layer>,
    ternary_type: GgmlType,
    kernels: &'static Kernels,
    pool: ThreadPool,
    q8_head: Option<Q8Matrix>,
    rope: ops::Rope,
}

/// What logits a sequence of a batch wants back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    None,
    Last,
    All,
}

/// One sequence's part of a batch: new tokens appended after what its cache holds.
pub struct SeqInput<'a> {
    pub cache: &'a mut KvCache,
    pub tokens: &'a [u32],
    pub logits: Logits,
}

impl Model {
    pub fn load(file: &GgufFile, opts: &LoadOptions) -> Result<Model, ModelError> {
        let config = ModelConfig::from_gguf(file)?;
        let c = &config;
        let (d, kv) = (c.n_embd as u64, (c.n_head_kv * c.head_dim) as u64);
        let (qd, hd) = (c.q_dim() as u64, c.head_dim as u64);
        let hint = match c.graph {
            Graph::BitnetB158 => "the file is not a complete BitNet b1.58 model",
            Graph::Qwen3 | Graph::Gemma3 => {
                "the file is not a complete BitNet embedding model (Microsoft's converter writes an input norm per projection, *_norm_in)"
            }
        };
        let get = |name: &str, dims: &[u64]| -> Result<&TensorInfo, ModelError> {
            let t = file.require_tensor(name, hint)?;
            if t.dims != dims {
                return Err(ModelError::Shape {
                    name: name.into(),
                    expected: dims.to_vec(),
                    found: t.dims.clone(),
                });
            }
            Ok(t)
        };
        let norm = |name: &str, n: u64| -> Result<Vec<f32>, ModelError> {
            let t = get(name, &[n])?;
            if t.ty != GgmlType::F32 && t.ty != GgmlType::F16 && t.ty != GgmlType::BF16 {
                return Err(ModelError::Type {
                    name: name.into(),
                    ty: t.ty,
                    expected: "F32 (or F16/BF16)",
                });
            }
            let v = quant::dequantize(t.ty, file.tensor_data(t), n as usize);
            if let Some(bad) = v.iter().find(|x| !x.is_finite()) {
                return Err(ModelError::NonFinite {
                    name: name.into(),
                    what: bad.to_string(),
                });
            }
            Ok(v)
        };
        let mut ternary_type = None;
        let mut ternary = |name: &str, cols: u64, rows: u64| -> Result<TernaryTensor, ModelError> {
            let t = get(name, &[cols, rows])?;
            if !t.ty.is_ternary() {
                return Err(ModelError::Type {
                    name: name.into(),
                    ty: t.ty,
                    expected: "a ternary type (I2_S, TQ2_0 or TQ1_0)",
                });
            }
            let multiple = if t.ty == GgmlType::I2S { 128 } else { 256 };
            if !(cols as usize).is_multiple_of(multiple) {
                return Err(ModelError::RowLength {
                    name: name.into(),
                    ty: t.ty,
                    cols: cols as usize,
                    multiple,
                });
            }
            ternary_type.get_or_insert(t.ty);
            let w = TernaryTensor::new(file, t).map_err(|source| ModelError::Layout {
                name: name.into(),
                source,
            })?;
            if !w.scale.is_finite() {
                return Err(ModelError::NonFinite {
                    name: name.into(),
                    what: w.scale.to_string(),
                });
            }
            Ok(w)
        };
        // `block_count` comes from the file: reserve no more layers than it has tensors (11 per
        // layer), so a hostile count is a missing-tensor error below instead of an abort here.
        let mut layers = Vec::with_capacity(c.n_layer.min(file.tensors().len() / 11));
        // Which optional parts the architecture's layers have.
        let embed = c.graph != Graph::BitnetB158;
        let gemma = c.graph == Graph::Gemma3;
        for l in 0..c.n_layer {
            let n = |s: &str| format!("blk.{l}.{s}.weight");
            let ff = c.n_ff as u64;
            // `norm_in` names the projection's own input norm; b1.58 has none before Q/K/V and
            // gate/up, and calls the ones before O and down sub norms.
            let mut proj = |w: &str, norm_in: Option<&str>, cols: u64, rows: u64| {
                let norm_in = match norm_in {
                    Some(name) => Some(norm(&n(name), cols)?),
                    None => None,
                };
                Ok::<_, ModelError>(Proj {
                    norm_in,
                    w: ternary(&n(w), cols, rows)?,
                })
            };
            let opt = |on: bool, name: &'static str| on.then_some(name);
            let opt_norm = |on: bool, name: &str, width: u64| match on {
                true => norm(&n(name), width).map(Some),
                false => Ok(None),
            };
            // In file order, so that a file without tensors reports the first one.
            let attn_norm = norm(&n("attn_norm"), d)?;
            let q = proj("attn_q", opt(embed, "attn_q_norm_in"), d, qd)?;
            let k = proj("attn_k", opt(embed, "attn_k_norm_in"), d, kv)?;
            let v = proj("attn_v", opt(embed, "attn_v_norm_in"), d, kv)?;
            let q_norm = opt_norm(embed, "attn_q_norm", hd)?;
            let k_norm = opt_norm(embed, "attn_k_norm", hd)?;
            let o_norm = if embed {
                "attn_output_norm_in"
            } else {
                "attn_sub_norm"
            };
            let o = proj("attn_output", Some(o_norm), qd, d)?;
            let post_attn_norm = opt_norm(gemma, "post_attention_norm", d)?;
            let ffn_norm = norm(&n("ffn_norm"), d)?;
            let gate = proj("ffn_gate", opt(embed, "ffn_gate_norm_in"), d, ff)?;
            let up = proj("ffn_up", opt(embed, "ffn_up_norm_in"), d, ff)?;
            let down_norm = if embed {
                "ffn_down_norm_in"
            } else {
                "ffn_sub_norm"
            };
            let down = proj("ffn_down", Some(down_norm), ff, d)?;
            layers.push(Layer {
                attn_norm,
                q,
                k,
                v,
                q_norm,
                k_norm,
                o,
                post_attn_norm,
                ffn_norm,
                gate,
                up,
                down,
                post_ffn_norm: opt_norm(gemma, "post_ffw_norm", d)?,
            });
        }
        let output_norm = norm("output_norm.weight", d)?;
        let emb = get("token_embd.weight", &[d, c.n_vocab as u64])?;
        let embedding = match emb.ty {
            // Every converter's alignment (32) leaves F16 rows usable in place. GGUF allows any
            // power of two, and llama.cpp and gguf-py load a file with alignment 1, so rows at
            // an odd address are copied once here (the cost of a BF16 embedding) rather than
            // refused.
            GgmlType::F16 if file.tensor_data(emb).as_ptr().align_offset(2) == 0 => {
                Embedding::MappedF16 {
                    start: (file.data_offset() + emb.offset) as usize,
                }
            }
            GgmlType::F16 => Embedding::Owned(
                file.tensor_data(emb)
                    .chunks_exact(2)
                    .map(|b| f16::from_le_bytes([b[0], b[1]]))
                    .collect(),
            ),
            ty if ty.is_ternary() => {
                return Err(ModelError::Type {
                    name: emb.name.clone(),
                    ty,
                    expected: "F16, BF16, F32, Q8_0 or Q6_K",
                });
            }
            ty => {
                let f =
                    quant::dequantize(ty, file.tensor_data(emb), (d * c.n_vocab as u64) as usize);
                Embedding::Owned(f.into_iter().map(f16::from_f32).collect())
            }
        };
        let n_ctx = opts.n_ctx.unwrap_or(c.n_ctx_train).max(1);
        let kernels = match opts.kernels {
            Some(k) => k,
            None => Kernels::select()?,
        };
        let pool = ThreadPool::new(opts.threads);
        let rope = ops::Rope::new(c.head_dim, c.rope_theta);
        let mut model = Model {
            config,
            file: file.clone(),
            n_ctx,
            embedding,
            output_norm,
            layers,
            ternary_type: ternary_type.unwrap_or(GgmlType::I2S),
            kernels,
            pool,
            q8_head: None,
            rope,
        };
        // An embedding model has no output head to requantize.
        if opts.head == HeadKind::Q8 && model.config.kind == ModelKind::Generation {
            let (rows, cols) = (model.config.n_vocab, model.config.n_embd);
            let q8 = Q8Matrix::from_f16(&model.pool, model.embedding_rows(), rows, cols)?;
            model.q8_head = Some(q8);
        }
        Ok(model)
    }

    /// Context limit (tokens per sequence).
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// What the model is for: [`ModelKind::Generation`] ([`Model::forward`] with logits) or
    /// [`ModelKind::Embedding`] ([`Model::embed`]; its `dim`, `pooling` and whether the pooling
    /// was defaulted because the file does not say).
    pub fn kind(&self) -> ModelKind {
        self.config.kind
    }

    /// The ternary format of the weights (I2_S, TQ2_0 or TQ1_0).
    pub fn ternary_type(&self) -> GgmlType {
        self.ternary_type
    }

    /// The kernel variant in use (for the matrix products, activation quantization and
    /// attention alike).
    pub fn kernels(&self) -> &'static Kernels {
        self.kernels
    }

    /// Threads the matrix products run on.
    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// The output head's arithmetic.
    pub fn head(&self) -> HeadKind {
        if self.q8_head.is_some() {
            HeadKind::Q8
        } else {
            HeadKind::F16
        }
    }

    /// The file the model was loaded from.
    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    /// A fresh cache for one sequence, limited to the model's context.
    pub fn new_cache(&self) -> KvCache {
        let c = &self.config;
        KvCache::new(c.n_layer, c.n_head_kv * c.head_dim, self.n_ctx)
    }

    fn embedding_rows(&self) -> &[f16] {
        let n = self.config.n_vocab * self.config.n_embd;
        match &self.embedding {
            Embedding::Owned(v) => v,
            Embedding::MappedF16 { start } => {
                let bytes = &self.file.bytes()[*start..*start + 2 * n];
                // `load` maps F16 rows only at an even address.
                bytemuck_f16(bytes)
            }
        }
    }

    /// Runs a batch: every sequence's new tokens go through the decoder together (one weight
    /// pass for all of them), each attending to its own cache. Returns, per sequence, the
    /// logits it asked for (`Last`: one row; `All`: one row per new token; `None`: empty).
    /// An embedding model has no output head: asking it for logits is
    /// [`ModelError::NoOutputHead`] (`Logits::None` still fills the caches).
    pub fn forward(&self, batch: &mut [SeqInput<'_>]) -> Result<Vec<Vec<f32>>, ModelError> {
        let c = &self.config;
        if c.kind != ModelKind::Generation && batch.iter().any(|s| s.logits != Logits::None) {
            return Err(ModelError::NoOutputHead {
                arch: c.arch.clone(),
            });
        }
        let d = c.n_embd;
        let x = self.decode(batch)?;
        if x.is_empty() {
            return Ok(batch.iter().map(|_| Vec::new()).collect());
        }
        let (kern, pool) = (self.kernels, &self.pool);
        // Output head on the rows that were asked for.
        let mut wanted = Vec::new();
        let mut start = 0;
        for s in batch.iter() {
            let len = s.tokens.len();
            match s.logits {
                Logits::None => {}
                Logits::Last if len > 0 => wanted.push(start + len - 1),
                Logits::Last => {}
                Logits::All => wanted.extend(start..start + len),
            }
            start += len;
        }
        let mut hn = vec![0f32; wanted.len() * d];
        for (o, &t) in hn.chunks_mut(d).zip(&wanted) {
            ops::rms_norm(&x[t * d..(t + 1) * d], &self.output_norm, c.rms_eps, o);
        }
        let nv = c.n_vocab;
        let mut logits = vec![0f32; wanted.len() * nv];
        if !wanted.is_empty() {
            match &self.q8_head {
                Some(q8) => kern.q8_matmul(pool, q8, &hn, &mut logits, nv),
                None => kern.f16_matmul(pool, self.embedding_rows(), nv, d, &hn, &mut logits, nv),
            }
        }
        let mut out = Vec::with_capacity(batch.len());
        let mut row = 0;
        for s in batch.iter() {
            let rows = match s.logits {
                Logits::None => 0,
                Logits::Last => usize::from(!s.tokens.is_empty()),
                Logits::All => s.tokens.len(),
            };
            out.push(logits[row * nv..(row + rows) * nv].to_vec());
            row += rows;
        }
        Ok(out)
    }

    /// Embeds inputs with the default token budget per pass ([`DEFAULT_EMBED_BATCH_TOKENS`]);
    /// see [`Model::embed_with_budget`].
    pub fn embed(&self, inputs: &[&[u32]]) -> Result<Vec<Vec<f32>>, ModelError> {
        self.embed_with_budget(inputs, DEFAULT_EMBED_BATCH_TOKENS)
    }

    /// One embedding per input: each input (token ids, special tokens included — the caller
    /// adds BOS/EOS as the tokenizer metadata says) runs from an empty state; the hidden states
    /// after `output_norm` are pooled as the model's [`Pooling`] says (mean over every token,
    /// the first token, or the last). Returns `inputs.len()` vectors of n_embd values, in
    /// input order, NOT normalised: scaling is the caller's policy (the server L2-normalises
    /// by default and offers llama.cpp's other `embd_normalize` modes, `server/src/http/embeddings.rs`).
    ///
    /// At most `max_batch_tokens` tokens (at least 1) go through each forward pass: inputs are
    /// packed into passes in order, and an input longer than what is left of a pass continues
    /// in the next through its own KV cache. A cache exists only while its input is in flight,
    /// so memory stays near one pass's activations plus the caches of the inputs in that pass
    /// (at most one of them carried over from the pass before), never the sum of all inputs.
    /// The numbers do not depend on the budget or on which inputs share a pass.
    ///
    /// Errors, before any work: a generation model ([`ModelError::NotEmbedding`]), an empty
    /// input, a token id outside the vocabulary, an input longer than the context limit.
    pub fn embed_with_budget(
        &self,
        inputs: &[&[u32]],
        max_batch_tokens: usize,
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        let c = &self.config;
        let ModelKind::Embedding { pooling, .. } = c.kind else {
            return Err(ModelError::NotEmbedding {
                arch: c.arch.clone(),
            });
        };
        for (index, toks) in inputs.iter().enumerate() {
            if toks.is_empty() {
                return Err(ModelError::EmptyInput { index });
            }
            if let Some(&id) = toks.iter().find(|&&t| t as usize >= c.n_vocab) {
                return Err(ModelError::TokenOutOfRange {
                    id,
                    n_vocab: c.n_vocab,
                });
            }
            if toks.len() > self.n_ctx {
                return Err(ModelError::InputTooLong {
                    index,
                    len: toks.len(),
                    limit: self.n_ctx,
                });
            }
        }
        let budget = max_batch_tokens.max(1);
        let d = c.n_embd;
        /// An input in flight: its cache, how far it got, and its pooling accumulator.
        struct InFlight {
            index: usize,
            cache: KvCache,
            done: usize,
            take: usize,
            acc: Vec<f64>,
        }
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); inputs.len()];
        let mut flight: Vec<InFlight> = Vec::new();
        let mut next = 0;
        let mut row = vec![0f32; d];
        loop {
            // Fill the pass: inputs already in flight first, then new ones while room is left.
            let mut left = budget;
            for f in flight.iter_mut() {
                f.take = (inputs[f.index].len() - f.done).min(left);
                left -= f.take;
            }
            while left > 0 && next < inputs.len() {
                let take = inputs[next].len().min(left);
                flight.push(InFlight {
                    index: next,
                    cache: self.new_cache(),
                    done: 0,
                    take,
                    acc: vec![0.0; d],
                });
                left -= take;
                next += 1;
            }
            if flight.is_empty() {
                break;
            }
            let x = {
                let mut batch: Vec<SeqInput<'_>> = flight
                    .iter_mut()
                    .filter(|f| f.take > 0)
                    .map(|f| SeqInput {
                        tokens: &inputs[f.index][f.done..f.done + f.take],
                        cache: &mut f.cache,
                        logits: Logits::None,
                    })
                    .collect();
                self.decode(&mut batch)?
            };
            let mut t0 = 0;
            for f in flight.iter_mut().filter(|f| f.take > 0) {
                let len = inputs[f.index].len();
                let mut pool_row = |t: usize, acc: &mut Vec<f64>| {
                    ops::rms_norm(
                        &x[t * d..(t + 1) * d],
                        &self.output_norm,
                        c.rms_eps,
                        &mut row,
                    );
                    for (a, &v) in acc.iter_mut().zip(&row) {
                        *a += f64::from(v);
                    }
                };
                match pooling {
                    Pooling::Mean => {
                        for t in t0..t0 + f.take {
                            pool_row(t, &mut f.acc);
                        }
                    }
                    Pooling::Cls if f.done == 0 => pool_row(t0, &mut f.acc),
                    Pooling::Last if f.done + f.take == len => {
                        pool_row(t0 + f.take - 1, &mut f.acc)
                    }
                    Pooling::Cls | Pooling::Last => {}
                }
                t0 += f.take;
                f.done += f.take;
                if f.done == len {
                    if pooling == Pooling::Mean {
                        for a in f.acc.iter_mut() {
                            *a /= len as f64;
                        }
                    }
                    out[f.index] = f.acc.iter().map(|&x| x as f32).collect();
                }
            }
            // Finished inputs give their caches back.
            flight.retain(|f| f.done < inputs[f.index].len());
        }
        Ok(out)
    }

    /// Checks a batch and runs its tokens through every layer, appending their keys and values
    /// to the caches (committed on success). Returns the final hidden states before
    /// `output_norm`, one n_embd row per token in batch order (empty for an empty batch).
    fn decode(&self, batch: &mut [SeqInput<'_>]) -> Result<Vec<f32>, ModelError> {
        let c = &self.config;
        let (d, hd, nkv, ff, qd) = (c.n_embd, c.head_dim, c.n_head_kv, c.n_ff, c.q_dim());
        let kvd = nkv * hd;
        for s in batch.iter() {
            if let Some(&id) = s.tokens.iter().find(|&&t| t as usize >= c.n_vocab) {
                return Err(ModelError::TokenOutOfRange {
                    id,
                    n_vocab: c.n_vocab,
                });
            }
            let needed = s.cache.len() + s.tokens.len();
            if needed > s.cache.max_len() {
                return Err(ModelError::ContextFull {
                    needed,
                    limit: s.cache.max_len(),
                });
            }
        }
        // Flatten: token t belongs to sequence seq[t] at position pos[t].
        let mut seq = Vec::new();
        let mut pos = Vec::new();
        for (i, s) in batch.iter().enumerate() {
            for j in 0..s.tokens.len() {
                seq.push(i);
                pos.push(s.cache.len() + j);
            }
        }
        let n = seq.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        let emb = self.embedding_rows();
        let mut x = vec![0f32; n * d];
        {
            use half::slice::HalfFloatSliceExt;
            let ids = batch.iter().flat_map(|s| s.tokens.iter());
            for (row, &id) in x.chunks_mut(d).zip(ids) {
                let id = id as usize;
                emb[id * d..(id + 1) * d].convert_to_f32_slice(row);
                if c.embd_scale != 1.0 {
                    for v in row.iter_mut() {
                        *v *= c.embd_scale;
                    }
                }
            }
        }
        let mut q = vec![0f32; n * qd];
        let mut k = vec![0f32; n * kvd];
        let mut v = vec![0f32; n * kvd];
        let mut att = vec![0f32; n * qd];
        let mut g = vec![0f32; n * ff];
        let mut u = vec![0f32; n * ff];
        // A projection's output before the residual add (O and down).
        let mut y = vec![0f32; n * d];
        let mut acts = QuantActs::new();
        let angles: Vec<Vec<(f32, f32)>> = pos.iter().map(|&p| self.rope.angles(p)).collect();
        let (kern, pool, file) = (self.kernels, &self.pool, &self.file);
        // Norms fused into the activation quantization, token-parallel: each row of `src` is
        // normed with `first` (if any), then with `second` (a projection's own input norm, if
        // any), then quantized.
        let eps = c.rms_eps;
        let normed = |src: &[f32],
                      first: Option<&[f32]>,
                      second: Option<&[f32]>,
                      width: usize,
                      acts: &mut QuantActs| {
            // Inlined into `quantize_rows`' SIMD entry points, so the norm gets their code
            // generation (a closure is otherwise compiled for the crate's baseline).
            acts.quantize_rows(
                kern,
                Some(pool),
                n,
                width,
                #[inline(always)]
                |t, row| {
                    let src = &src[t * width..(t + 1) * width];
                    match first {
                        Some(w) => ops::rms_norm(src, w, eps, row),
                        None => row.copy_from_slice(src),
                    }
                    if let Some(w) = second {
                        ops::rms_norm_in_place(row, w, eps);
                    }
                },
            );
        };
        // Rows of `y` (width `width`) normed in place, when the layer has that norm.
        let norm_rows = |y: &mut [f32], w: Option<&Vec<f32>>, width: usize| {
            if let Some(w) = w {
                for row in y.chunks_mut(width) {
                    ops::rms_norm_in_place(row, w, eps);
                }
            }
        };

        for (li, layer) in self.layers.iter().enumerate() {
            // Q, K, V. Without per-projection norms they share one quantized input and one
            // scheduling of the three products; with them, each has its own input.
            let (pq, pk, pv) = (&layer.q, &layer.k, &layer.v);
            if pq.norm_in.is_none() && pk.norm_in.is_none() && pv.norm_in.is_none() {
                normed(&x, Some(&layer.attn_norm), None, d, &mut acts);
                let (wq, wk, wv) = (pq.w.view(file), pk.w.view(file), pv.w.view(file));
                kern.ternary_matmul_many(
                    pool,
                    &acts,
                    &mut [
                        TernaryJob {
                            w: &wq,
                            y: &mut q,
                            y_stride: qd,
                        },
                        TernaryJob {
                            w: &wk,
                            y: &mut k,
                            y_stride: kvd,
                        },
                        TernaryJob {
                            w: &wv,
                            y: &mut v,
                            y_stride: kvd,
                        },
                    ],
                );
            } else {
                for (p, out, stride) in [(pq, &mut q, qd), (pk, &mut k, kvd), (pv, &mut v, kvd)] {
                    let norm_in = p.norm_in.as_deref();
                    normed(&x, Some(&layer.attn_norm), norm_in, d, &mut acts);
                    kern.ternary_matmul(pool, &p.w.view(file), &acts, out, stride);
                }
            }
            for t in 0..n {
                let angles = &angles[t];
                let (qt, kt) = (&mut q[t * qd..(t + 1) * qd], &mut k[t * kvd..(t + 1) * kvd]);
                // Per-head Q/K norms come before RoPE.
                norm_rows(qt, layer.q_norm.as_ref(), hd);
                norm_rows(kt, layer.k_norm.as_ref(), hd);
                ops::Rope::apply(angles, qt);
                ops::Rope::apply(angles, kt);
                let cache = &mut batch[seq[t]].cache;
                cache.push(li, kt, &v[t * kvd..(t + 1) * kvd]);
            }
            {
                let caches: Vec<&KvCache> = batch.iter().map(|s| &*s.cache).collect();
                let batch = attention::Attention {
                    c,
                    layer: li,
                    caches: &caches,
                    seq: &seq,
                    pos: &pos,
                    q: &q,
                };
                batch.run(kern, pool, &mut att);
            }
            normed(&att, layer.o.norm_in.as_deref(), None, qd, &mut acts);
            kern.ternary_matmul(pool, &layer.o.w.view(file), &acts, &mut y, d);
            norm_rows(&mut y, layer.post_attn_norm.as_ref(), d);
            for (xv, ov) in x.iter_mut().zip(&y) {
                *xv += ov;
            }
            let (pg, pu) = (&layer.gate, &layer.up);
            if pg.norm_in.is_none() && pu.norm_in.is_none() {
                normed(&x, Some(&layer.ffn_norm), None, d, &mut acts);
                let (wg, wu) = (pg.w.view(file), pu.w.view(file));
                kern.ternary_matmul_many(
                    pool,
                    &acts,
                    &mut [
                        TernaryJob {
                            w: &wg,
                            y: &mut g,
                            y_stride: ff,
                        },
                        TernaryJob {
                            w: &wu,
                            y: &mut u,
                            y_stride: ff,
                        },
                    ],
                );
            } else {
                for (p, out) in [(pg, &mut g), (pu, &mut u)] {
                    let norm_in = p.norm_in.as_deref();
                    normed(&x, Some(&layer.ffn_norm), norm_in, d, &mut acts);
                    kern.ternary_matmul(pool, &p.w.view(file), &acts, out, ff);
                }
            }
            // The activation (and down's input norm) fused into the quantization.
            let down_norm = layer.down.norm_in.as_deref();
            acts.quantize_rows(
                kern,
                Some(pool),
                n,
                ff,
                #[inline(always)]
                |t, row| {
                    let (gt, ut) = (&g[t * ff..(t + 1) * ff], &u[t * ff..(t + 1) * ff]);
                    match c.activation {
                        Activation::Relu2 => ops::relu2_mul(gt, ut, row),
                        Activation::Silu => ops::silu_mul(gt, ut, row),
                        Activation::GeluTanh => ops::gelu_tanh_mul(gt, ut, row),
                    }
                    if let Some(w) = down_norm {
                        ops::rms_norm_in_place(row, w, eps);
                    }
                },
            );
            kern.ternary_matmul(pool, &layer.down.w.view(file), &acts, &mut y, d);
            norm_rows(&mut y, layer.post_ffn_norm.as_ref(), d);
            for (xv, dv) in x.iter_mut().zip(&y) {
                *xv += dv;
            }
        }
        for s in batch.iter_mut() {
            s.cache.commit(s.tokens.len());
        }
        Ok(x)
    }
}

fn bytemuck_f16(bytes: &[u8]) -> &[f16] {
    assert!(bytes.as_ptr().align_offset(2) == 0 && bytes.len().is_multiple_of(2));
    // SAFETY: f16 is a plain 2-byte value with no invalid bit patterns; alignment and length
    // were checked above.
    unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<f16>(), bytes.len() / 2) }
}
