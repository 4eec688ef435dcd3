//! The BitNet b1.58 forward pass (docs/model.md): loading typed weight views from a GGUF file
//! and running batches of tokens from one or many sequences through the decoder.
//!
//! This crate owns the graph and its numerics. It does not tokenize, sample or schedule
//! requests; matrix products go through `linear` and the per-row pieces through `ops`.

mod attention;
mod cache;
mod config;
mod linear;
mod ops;

pub use cache::KvCache;
pub use config::{Activation, ConfigError, ModelConfig};

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
}

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

struct Layer {
    attn_norm: Vec<f32>,
    q: TernaryTensor,
    k: TernaryTensor,
    v: TernaryTensor,
    attn_sub_norm: Vec<f32>,
    o: TernaryTensor,
    ffn_norm: Vec<f32>,
    gate: TernaryTensor,
    up: TernaryTensor,
    ffn_sub_norm: Vec<f32>,
    down: TernaryTensor,
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
        let hint = "the file is not a complete BitNet b1.58 model";
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
        for l in 0..c.n_layer {
            let n = |s: &str| format!("blk.{l}.{s}.weight");
            let ff = c.n_ff as u64;
            layers.push(Layer {
                attn_norm: norm(&n("attn_norm"), d)?,
                q: ternary(&n("attn_q"), d, d)?,
                k: ternary(&n("attn_k"), d, kv)?,
                v: ternary(&n("attn_v"), d, kv)?,
                attn_sub_norm: norm(&n("attn_sub_norm"), d)?,
                o: ternary(&n("attn_output"), d, d)?,
                ffn_norm: norm(&n("ffn_norm"), d)?,
                gate: ternary(&n("ffn_gate"), d, ff)?,
                up: ternary(&n("ffn_up"), d, ff)?,
                ffn_sub_norm: norm(&n("ffn_sub_norm"), ff)?,
                down: ternary(&n("ffn_down"), ff, d)?,
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
        if opts.head == HeadKind::Q8 {
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
    pub fn forward(&self, batch: &mut [SeqInput<'_>]) -> Result<Vec<Vec<f32>>, ModelError> {
        let c = &self.config;
        let (d, hd, nkv, ff) = (c.n_embd, c.head_dim, c.n_head_kv, c.n_ff);
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
            return Ok(batch.iter().map(|_| Vec::new()).collect());
        }
        let emb = self.embedding_rows();
        let mut x = vec![0f32; n * d];
        {
            use half::slice::HalfFloatSliceExt;
            let ids = batch.iter().flat_map(|s| s.tokens.iter());
            for (row, &id) in x.chunks_mut(d).zip(ids) {
                let id = id as usize;
                emb[id * d..(id + 1) * d].convert_to_f32_slice(row);
            }
        }
        let mut q = vec![0f32; n * d];
        let mut k = vec![0f32; n * kvd];
        let mut v = vec![0f32; n * kvd];
        let mut att = vec![0f32; n * d];
        let mut g = vec![0f32; n * ff];
        let mut u = vec![0f32; n * ff];
        let mut acts = QuantActs::new();
        let angles: Vec<Vec<(f32, f32)>> = pos.iter().map(|&p| self.rope.angles(p)).collect();
        let (kern, pool, file) = (self.kernels, &self.pool, &self.file);
        // Norm (and the FFN activation) fused into the activation quantization, token-parallel.
        let eps = c.rms_eps;
        let normed = |src: &[f32], w: &[f32], width: usize, acts: &mut QuantActs| {
            // Inlined into `quantize_rows`' SIMD entry points, so the norm gets their code
            // generation (a closure is otherwise compiled for the crate's baseline).
            acts.quantize_rows(
                kern,
                Some(pool),
                n,
                width,
                #[inline(always)]
                |t, row| {
                    ops::rms_norm(&src[t * width..(t + 1) * width], w, eps, row);
                },
            );
        };

        for (li, layer) in self.layers.iter().enumerate() {
            normed(&x, &layer.attn_norm, d, &mut acts);
            let (wq, wk, wv) = (layer.q.view(file), layer.k.view(file), layer.v.view(file));
            kern.ternary_matmul_many(
                pool,
                &acts,
                &mut [
                    TernaryJob {
                        w: &wq,
                        y: &mut q,
                        y_stride: d,
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
            for t in 0..n {
                let angles = &angles[t];
                ops::Rope::apply(angles, &mut q[t * d..(t + 1) * d]);
                ops::Rope::apply(angles, &mut k[t * kvd..(t + 1) * kvd]);
                let cache = &mut batch[seq[t]].cache;
                cache.push(li, &k[t * kvd..(t + 1) * kvd], &v[t * kvd..(t + 1) * kvd]);
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
            normed(&att, &layer.attn_sub_norm, d, &mut acts);
            kern.ternary_matmul(pool, &layer.o.view(file), &acts, &mut q, d);
            for (xv, ov) in x.iter_mut().zip(&q) {
                *xv += ov;
            }
            normed(&x, &layer.ffn_norm, d, &mut acts);
            let (wg, wu) = (layer.gate.view(file), layer.up.view(file));
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
                    }
                    ops::rms_norm_in_place(row, &layer.ffn_sub_norm, eps);
                },
            );
            kern.ternary_matmul(pool, &layer.down.view(file), &acts, &mut q, d);
            for (xv, dv) in x.iter_mut().zip(&q) {
                *xv += dv;
            }
        }
        for s in batch.iter_mut() {
            s.cache.commit(s.tokens.len());
        }
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
                None => kern.f16_matmul(pool, emb, nv, d, &hn, &mut logits, nv),
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
}

fn bytemuck_f16(bytes: &[u8]) -> &[f16] {
    assert!(bytes.as_ptr().align_offset(2) == 0 && bytes.len().is_multiple_of(2));
    // SAFETY: f16 is a plain 2-byte value with no invalid bit patterns; alignment and length
    // were checked above.
    unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<f16>(), bytes.len() / 2) }
}
