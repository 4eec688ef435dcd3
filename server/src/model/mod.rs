//! The BitNet b1.58 forward pass (reference §2): loading typed weight views from a GGUF file
//! and running batches of tokens from one or many sequences through the decoder.
//!
//! This module owns the graph and its numerics. It does not tokenize, sample or schedule
//! requests; matrix products go through `linear` and the per-row pieces through `ops`.

pub mod cache;
pub mod config;
pub mod linear;
pub mod ops;

pub use cache::KvCache;
pub use config::{Activation, ConfigError, ModelConfig};

use crate::gguf::{GgmlType, GgufError, GgufFile, TensorInfo};
use crate::quant;
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
    /// Rows borrowed from the mapped file (byte offset of row 0).
    MappedF16 { start: usize },
    /// Any other type, converted to f16 at load (Q6_K, Q8_0, BF16, F32 embeddings).
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
            let w = TernaryTensor::new(file, t);
            if !w.scale.is_finite() {
                return Err(ModelError::NonFinite {
                    name: name.into(),
                    what: w.scale.to_string(),
                });
            }
            Ok(w)
        };
        let mut layers = Vec::with_capacity(c.n_layer);
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
            GgmlType::F16 => Embedding::MappedF16 {
                start: (file.data_offset() + emb.offset) as usize,
            },
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
        Ok(Model {
            config,
            file: file.clone(),
            n_ctx,
            embedding,
            output_norm,
            layers,
            ternary_type: ternary_type.unwrap_or(GgmlType::I2S),
        })
    }

    /// Context limit (tokens per sequence).
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// The ternary format of the weights (I2_S, TQ2_0 or TQ1_0).
    pub fn ternary_type(&self) -> GgmlType {
        self.ternary_type
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
                // GGUF tensor data is 32-byte aligned; f16 needs 2.
                bytemuck_f16(bytes)
            }
        }
    }

    /// Runs a batch: every sequence's new tokens go through the decoder together (one weight
    /// pass for all of them), each attending to its own cache. Returns, per sequence, the
    /// logits it asked for (`Last`: one row; `All`: one row per new token; `None`: empty).
    pub fn forward(&self, batch: &mut [SeqInput<'_>]) -> Result<Vec<Vec<f32>>, ModelError> {
        let c = &self.config;
        let (d, hd, nh, nkv) = (c.n_embd, c.head_dim, c.n_head, c.n_head_kv);
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
            let mut t = 0;
            for s in batch.iter() {
                for &id in s.tokens {
                    let id = id as usize;
                    emb[id * d..(id + 1) * d].convert_to_f32_slice(&mut x[t * d..(t + 1) * d]);
                    t += 1;
                }
            }
        }
        let mut h = vec![0f32; n * d];
        let mut q = vec![0f32; n * d];
        let mut k = vec![0f32; n * kvd];
        let mut v = vec![0f32; n * kvd];
        let mut att = vec![0f32; n * d];
        let mut g = vec![0f32; n * c.n_ff];
        let mut u = vec![0f32; n * c.n_ff];
        let mut f = vec![0f32; n * c.n_ff];
        let mut scores = Vec::new();
        let scale = 1.0 / (hd as f32).sqrt();
        let group = nh / nkv;

        for (li, layer) in self.layers.iter().enumerate() {
            for t in 0..n {
                let r = t * d..(t + 1) * d;
                ops::rms_norm(&x[r.clone()], &layer.attn_norm, c.rms_eps, &mut h[r]);
            }
            self.matmul(&layer.q, &h, n, &mut q);
            self.matmul(&layer.k, &h, n, &mut k);
            self.matmul(&layer.v, &h, n, &mut v);
            for t in 0..n {
                for head in q[t * d..(t + 1) * d].chunks_mut(hd) {
                    ops::rope_neox(head, pos[t], c.rope_theta);
                }
                for head in k[t * kvd..(t + 1) * kvd].chunks_mut(hd) {
                    ops::rope_neox(head, pos[t], c.rope_theta);
                }
                let cache = &mut batch[seq[t]].cache;
                cache.push(li, &k[t * kvd..(t + 1) * kvd], &v[t * kvd..(t + 1) * kvd]);
            }
            // Causal attention: token t sees its sequence's positions 0..=pos[t].
            for t in 0..n {
                let len = pos[t] + 1;
                let (kc, vc) = batch[seq[t]].cache.layer(li, len);
                let out = &mut att[t * d..(t + 1) * d];
                out.fill(0.0);
                for hh in 0..nh {
                    let kvh = hh / group;
                    let qh = &q[t * d + hh * hd..][..hd];
                    scores.clear();
                    for p in 0..len {
                        let kr = &kc[p * kvd + kvh * hd..][..hd];
                        let dot: f32 = qh.iter().zip(kr).map(|(a, b)| a * b.to_f32()).sum();
                        scores.push(dot * scale);
                    }
                    ops::softmax(&mut scores);
                    let oh = &mut out[hh * hd..(hh + 1) * hd];
                    for (p, &w) in scores.iter().enumerate() {
                        let vr = &vc[p * kvd + kvh * hd..][..hd];
                        for (o, vv) in oh.iter_mut().zip(vr) {
                            *o += w * vv.to_f32();
                        }
                    }
                }
                ops::rms_norm(
                    &att[t * d..(t + 1) * d],
                    &layer.attn_sub_norm,
                    c.rms_eps,
                    &mut h[t * d..(t + 1) * d],
                );
            }
            self.matmul(&layer.o, &h, n, &mut q);
            for (xv, ov) in x.iter_mut().zip(&q) {
                *xv += ov;
            }
            for t in 0..n {
                let r = t * d..(t + 1) * d;
                ops::rms_norm(&x[r.clone()], &layer.ffn_norm, c.rms_eps, &mut h[r]);
            }
            self.matmul(&layer.gate, &h, n, &mut g);
            self.matmul(&layer.up, &h, n, &mut u);
            match c.activation {
                Activation::Relu2 => ops::relu2_mul(&mut g, &u),
                Activation::Silu => ops::silu_mul(&mut g, &u),
            }
            for t in 0..n {
                let r = t * c.n_ff..(t + 1) * c.n_ff;
                ops::rms_norm(&g[r.clone()], &layer.ffn_sub_norm, c.rms_eps, &mut f[r]);
            }
            self.matmul(&layer.down, &f, n, &mut q);
            for (xv, dv) in x.iter_mut().zip(&q) {
                *xv += dv;
            }
        }
        let mut start = 0;
        for s in batch.iter_mut() {
            s.cache.commit(s.tokens.len());
        }
        // Output head on the rows that were asked for.
        let mut wanted = Vec::new();
        for s in batch.iter() {
            let len = s.tokens.len();
            match s.logits {
                Logits::None => {}
                Logits::Last => wanted.extend(len.checked_sub(1).map(|i| start + i)),
                Logits::All => wanted.extend(start..start + len),
            }
            start += len;
        }
        let mut hn = vec![0f32; wanted.len() * d];
        for (i, &t) in wanted.iter().enumerate() {
            ops::rms_norm(
                &x[t * d..(t + 1) * d],
                &self.output_norm,
                c.rms_eps,
                &mut hn[i * d..(i + 1) * d],
            );
        }
        let mut logits = vec![0f32; wanted.len() * c.n_vocab];
        linear::f16_matmul(emb, c.n_vocab, d, &hn, wanted.len(), &mut logits);
        let mut out = Vec::with_capacity(batch.len());
        let mut row = 0;
        for s in batch.iter() {
            let rows = match s.logits {
                Logits::None => 0,
                Logits::Last => usize::from(!s.tokens.is_empty()),
                Logits::All => s.tokens.len(),
            };
            out.push(logits[row * c.n_vocab..(row + rows) * c.n_vocab].to_vec());
            row += rows;
        }
        Ok(out)
    }

    fn matmul(&self, w: &TernaryTensor, x: &[f32], n: usize, y: &mut [f32]) {
        linear::ternary_matmul(&self.file, w, &x[..n * w.cols], n, &mut y[..n * w.rows]);
    }
}

fn bytemuck_f16(bytes: &[u8]) -> &[f16] {
    assert!(bytes.as_ptr().align_offset(2) == 0 && bytes.len().is_multiple_of(2));
    // SAFETY: f16 is a plain 2-byte value with no invalid bit patterns; alignment and length
    // were checked above.
    unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<f16>(), bytes.len() / 2) }
}
