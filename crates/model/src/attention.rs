//! Causal multi-head attention with grouped KV heads, over the f16 KV cache.
//!
//! Work is split over the pool in units of (a run of at most [`CHUNK`] consecutive tokens of one
//! sequence, one KV head). A unit converts its KV head's cached rows to f32 once — keys
//! transposed, so that one vector load holds one dimension of many keys — and then computes the
//! unit's (token, query head) rows against them [`ROWS`] at a time: the rows of a block share
//! every key and value load and keep independent accumulator chains, so the dot products run at
//! the multiply-add throughput instead of waiting out its latency. Per block: scores (Q·Kᵀ),
//! softmax, weighted values (P·V), each register-blocked.
//!
//! The block widths are chosen per instruction set (`x86_64`: AVX-512, AVX2+FMA or the SSE2
//! baseline; `aarch64`: NEON); the loops are written once and vectorised by the compiler inside
//! `#[target_feature]` entry points. Which one runs is not detected here: it is the
//! [`Kernels::simd`] of the variant the model was loaded with. Scratch buffers are per thread
//! and reused across calls.
//!
//! It does not apply RoPE, project or store K/V (the forward pass in `super` does), and it keeps
//! no state between calls but the scratch.

use super::cache::KvCache;
use super::config::ModelConfig;
use super::ops;
use bitnet_kernels::{Kernels, Simd, ThreadPool};
use std::cell::RefCell;

/// Most tokens of one sequence that share an attention unit: large enough that a prompt's
/// conversions are shared, small enough that a 2-core pool still gets several units per head.
const CHUNK: usize = 16;

/// (token, query head) rows computed together against each key/value load.
const ROWS: usize = 4;

/// One layer's attention for a batch: token `t` of sequence `seq[t]` (at position `pos[t]`)
/// attends, with every query head, to that sequence's positions `0..=pos[t]` (its cache
/// already holds this batch's rows), with grouped KV heads.
pub(super) struct Attention<'a> {
    pub c: &'a ModelConfig,
    pub layer: usize,
    /// One cache per sequence of the batch.
    pub caches: &'a [&'a KvCache],
    pub seq: &'a [usize],
    pub pos: &'a [usize],
    /// The batch's rotated queries (n × q_dim, q_dim = n_head · head_dim).
    pub q: &'a [f32],
}

impl Attention<'_> {
    /// Writes `att` (n × q_dim) with the code generation of `kernels` ([`Kernels::simd`]).
    pub fn run(&self, kernels: &Kernels, pool: &ThreadPool, att: &mut [f32]) {
        // The variant, not a `Simd`, is the argument: a selected `Kernels` vouches that the CPU
        // has what its `Simd` needs.
        let simd = kernels.simd();
        let Attention {
            c,
            layer,
            caches,
            seq,
            pos,
            q,
        } = *self;
        let (nkv, qd) = (c.n_head_kv, c.q_dim());
        let chunks = chunks(seq, CHUNK);
        let out = SyncPtr(att.as_mut_ptr());
        pool.parallel_for(chunks.len() * nkv, |i| {
            let (t0, t1) = chunks[i / nkv];
            let unit = Unit {
                c,
                cache: caches[seq[t0]],
                layer,
                pos: &pos[t0..t1],
                q: &q[t0 * qd..t1 * qd],
                out: SyncPtr(out.get().wrapping_add(t0 * qd)),
                kvh: i % nkv,
            };
            SCRATCH.with(|s| {
                // Taken out of the cell so that the SIMD entry points below get a plain `&mut`
                // (a closure does not inherit `#[target_feature]`, so the work must not run in
                // one).
                let mut scratch = s.take();
                unit.run(simd, &mut scratch);
                s.replace(scratch);
            });
        });
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Per-thread buffers, grown on demand and never shrunk (a few hundred KB at long contexts).
#[derive(Default)]
struct Scratch {
    /// Keys, transposed: `head_dim` rows of `lp` positions.
    kt: Vec<f32>,
    /// Values: `len_max` rows of `head_dim`.
    v: Vec<f32>,
    /// Scores, then probabilities: `ROWS` rows of `lp`.
    p: Vec<f32>,
    /// `KB` keys converted from f16, before they are transposed into `kt`.
    keys: Vec<f32>,
}

/// The tokens of one chunk (consecutive, one sequence) × the query heads of KV head `kvh`.
struct Unit<'a> {
    c: &'a ModelConfig,
    cache: &'a KvCache,
    layer: usize,
    /// Positions of the chunk's tokens (increasing).
    pos: &'a [usize],
    /// The chunk's queries (tokens × n_embd).
    q: &'a [f32],
    /// The chunk's first output row.
    out: SyncPtr,
    kvh: usize,
}

impl Unit<'_> {
    fn run(&self, simd: Simd, s: &mut Scratch) {
        match simd {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `simd` is the selected `Kernels`' (see `Attention::run`): `v4`, the only
            // variant with `Simd::Avx512`, checked AVX-512F and FMA.
            Simd::Avx512 => unsafe { self.run_avx512(s) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above: `v3` and `v3vnni` checked AVX2 and FMA.
            Simd::Avx2 => unsafe { self.run_avx2(s) },
            // NEON is baseline on aarch64 and has `fmla`: 32 registers of 4 lanes.
            #[cfg(target_arch = "aarch64")]
            Simd::Baseline => self.body::<8, 16, true>(s),
            // SSE2 on x86-64: 16 registers of 4 lanes, no fused multiply-add.
            #[cfg(not(target_arch = "aarch64"))]
            Simd::Baseline => self.body::<8, 8, false>(s),
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,fma")]
    unsafe fn run_avx512(&self, s: &mut Scratch) {
        // 4 rows × 32 keys = 8 accumulators; 4 rows × 64 dims = 16 (of 32 registers).
        self.body::<32, 64, true>(s)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn run_avx2(&self, s: &mut Scratch) {
        // 4 rows × 16 keys = 8 accumulators; 4 rows × 16 dims = 8 (of 16 registers).
        self.body::<16, 16, true>(s)
    }

    /// `KB` keys per score block, `DB` value dimensions per output block; `FMA`: fused
    /// multiply-add is available (must only be set where the CPU has it: otherwise `mul_add`
    /// is a library call).
    #[inline(always)]
    fn body<const KB: usize, const DB: usize, const FMA: bool>(&self, s: &mut Scratch) {
        use half::slice::HalfFloatSliceExt;
        let c = self.c;
        let (hd, nkv) = (c.head_dim, c.n_head_kv);
        let (kvd, group, kvh) = (nkv * hd, c.n_head / nkv, self.kvh);
        let len_max = self.pos[self.pos.len() - 1] + 1;
        let lp = len_max.div_ceil(KB) * KB;
        let (kc, vc) = self.cache.layer(self.layer, len_max);
        grow(&mut s.kt, hd * lp);
        grow(&mut s.v, len_max * hd);
        grow(&mut s.p, ROWS * lp);
        grow(&mut s.keys, KB * hd);
        let (kt, v, keys) = (
            &mut s.kt[..hd * lp],
            &mut s.v[..len_max * hd],
            &mut s.keys[..KB * hd],
        );
        // Keys are transposed KB at a time, so every write is a KB-wide run of one dimension
        // (a key at a time would touch `hd` rows `lp` floats apart, a cache line and at long
        // contexts a page each). Padding keys are zero: they score 0 and are masked.
        for p0 in (0..lp).step_by(KB) {
            let n = KB.min(len_max.saturating_sub(p0));
            for (j, key) in keys.chunks_exact_mut(hd).enumerate() {
                if j < n {
                    let src = (p0 + j) * kvd + kvh * hd;
                    kc[src..src + hd].convert_to_f32_slice(key);
                } else {
                    key.fill(0.0);
                }
            }
            for (dd, run) in kt.chunks_exact_mut(lp).enumerate() {
                for (j, x) in run[p0..p0 + KB].iter_mut().enumerate() {
                    *x = keys[j * hd + dd];
                }
            }
        }
        for p in 0..len_max {
            let src = p * kvd + kvh * hd;
            vc[src..src + hd].convert_to_f32_slice(&mut v[p * hd..(p + 1) * hd]);
        }

        let scale = c.attn_scale;
        let n_rows = self.pos.len() * group;
        let mut r0 = 0;
        while r0 < n_rows {
            let take = ROWS.min(n_rows - r0);
            let (kt, v, p) = (&*kt, &*v, &mut s.p[..ROWS * lp]);
            let b = Block {
                unit: self,
                first: r0,
                lp,
                scale,
            };
            match take {
                4 => b.run::<4, KB, DB, FMA>(kt, v, p),
                3 => b.run::<3, KB, DB, FMA>(kt, v, p),
                2 => b.run::<2, KB, DB, FMA>(kt, v, p),
                _ => b.run::<1, KB, DB, FMA>(kt, v, p),
            }
            r0 += take;
        }
    }
}

/// Rows `first..first + R` of a unit (row = token index in the chunk × group + head in group).
struct Block<'a> {
    unit: &'a Unit<'a>,
    first: usize,
    lp: usize,
    scale: f32,
}

impl Block<'_> {
    #[inline(always)]
    fn run<const R: usize, const KB: usize, const DB: usize, const FMA: bool>(
        &self,
        kt: &[f32],
        v: &[f32],
        p: &mut [f32],
    ) {
        let u = self.unit;
        let c = u.c;
        let (d, hd) = (c.q_dim(), c.head_dim);
        let group = c.n_head / c.n_head_kv;
        let lp = self.lp;
        // (token in chunk, query head) of each row, its keys, and its query.
        let tok: [usize; R] = std::array::from_fn(|i| (self.first + i) / group);
        let head: [usize; R] = std::array::from_fn(|i| u.kvh * group + (self.first + i) % group);
        let lens: [usize; R] = std::array::from_fn(|i| u.pos[tok[i]] + 1);
        let qs: [&[f32]; R] = std::array::from_fn(|i| &u.q[tok[i] * d + head[i] * hd..][..hd]);
        // Rows are in token order, so the last one has the most keys.
        let nk = lens[R - 1].div_ceil(KB) * KB;

        // Scores, KB keys × R rows per step.
        let mut p0 = 0;
        while p0 < nk {
            let acc = outer_sum::<R, KB, FMA>(&qs, kt, lp, p0, hd);
            for (i, a) in acc.iter().enumerate() {
                let dst: &mut [f32; KB] =
                    (&mut p[i * lp + p0..i * lp + p0 + KB]).try_into().unwrap();
                for (o, &x) in dst.iter_mut().zip(a) {
                    *o = x * self.scale;
                }
            }
            p0 += KB;
        }
        // Probabilities, then weighted values, over the block's longest row only (not the
        // padded `nk`); shorter rows' weights past their own length are zero.
        let n = lens[R - 1];
        for (i, &len) in lens.iter().enumerate() {
            let row = &mut p[i * lp..i * lp + n];
            ops::softmax(&mut row[..len]);
            row[len..].fill(0.0);
        }

        // Weighted values, DB dimensions × R rows per step.
        let ps: [&[f32]; R] = std::array::from_fn(|i| &p[i * lp..i * lp + n]);
        // SAFETY: each (token, head) row of the chunk is written by exactly one block of one
        // unit (units own disjoint (chunk, KV head) pairs), and `att` outlives the region.
        let mut outs: [&mut [f32]; R] = std::array::from_fn(|i| unsafe {
            std::slice::from_raw_parts_mut(u.out.get().add(tok[i] * d + head[i] * hd), hd)
        });
        let mut d0 = 0;
        while d0 + DB <= hd {
            let acc = outer_sum::<R, DB, FMA>(&ps, v, hd, d0, n);
            for (o, a) in outs.iter_mut().zip(&acc) {
                o[d0..d0 + DB].copy_from_slice(a);
            }
            d0 += DB;
        }
        // Dimensions left over when DB does not divide the head size: 8 at a time, then one.
        while d0 + 8 <= hd {
            let acc = outer_sum::<R, 8, FMA>(&ps, v, hd, d0, n);
            for (o, a) in outs.iter_mut().zip(&acc) {
                o[d0..d0 + 8].copy_from_slice(a);
            }
            d0 += 8;
        }
        for (o, w) in outs.iter_mut().zip(&ps) {
            for (dd, o) in o.iter_mut().enumerate().skip(d0) {
                let mut acc = 0f32;
                for (pi, &wp) in w.iter().enumerate() {
                    acc = madd::<FMA>(wp, v[pi * hd + dd], acc);
                }
                *o = acc;
            }
        }
    }
}

/// `Σ_i a_r[i] · b[i·stride + off .. i·stride + off + W]` for `i < steps`, for `R` rows `a_r`:
/// `R × W` accumulators, one multiply-add chain each, every `b` load shared by the `R` rows.
/// Scores are `a` = queries, `b` = transposed keys (`stride` = padded key count, `off` = first
/// key, `steps` = head size); weighted values are `a` = probabilities, `b` = values (`stride` =
/// head size, `off` = first dimension, `steps` = keys).
#[inline(always)]
fn outer_sum<const R: usize, const W: usize, const FMA: bool>(
    a: &[&[f32]; R],
    b: &[f32],
    stride: usize,
    off: usize,
    steps: usize,
) -> [[f32; W]; R] {
    let mut acc = [[0f32; W]; R];
    let a: [&[f32]; R] = std::array::from_fn(|r| &a[r][..steps]);
    for i in 0..steps {
        let row: &[f32; W] = b[i * stride + off..i * stride + off + W]
            .try_into()
            .unwrap();
        for r in 0..R {
            let x = a[r][i];
            for j in 0..W {
                acc[r][j] = madd::<FMA>(x, row[j], acc[r][j]);
            }
        }
    }
    acc
}

#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

fn grow(v: &mut Vec<f32>, n: usize) {
    if v.len() < n {
        v.resize(n, 0.0);
    }
}

/// Splits the flattened batch into runs of consecutive tokens of the same sequence, at most
/// `max` long: `(first, end)` token indices.
fn chunks(seq: &[usize], max: usize) -> Vec<(usize, usize)> {
    let mut chunks = Vec::new();
    let mut t0 = 0;
    while t0 < seq.len() {
        let mut t1 = t0 + 1;
        while t1 < seq.len() && seq[t1] == seq[t0] && t1 - t0 < max {
            t1 += 1;
        }
        chunks.push((t0, t1));
        t0 = t1;
    }
    chunks
}

/// A raw pointer the pool's closures may share (each unit writes a disjoint range).
#[derive(Clone, Copy)]
struct SyncPtr(*mut f32);
unsafe impl Send for SyncPtr {}
unsafe impl Sync for SyncPtr {}

impl SyncPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Activation;
    use bitnet_rng::SplitMix64;

    /// A config whose model width is unrelated to the attention width (n_head · head_dim), as
    /// in the embedding models: attention must only use the latter.
    fn config(n_head: usize, n_head_kv: usize, head_dim: usize) -> ModelConfig {
        ModelConfig {
            arch: "qwen3".into(),
            name: None,
            n_vocab: 16,
            n_ctx_train: 512,
            n_embd: 24,
            n_layer: 2,
            n_head,
            n_head_kv,
            head_dim,
            n_ff: 16,
            rms_eps: 1e-5,
            rope_theta: 10_000.0,
            activation: Activation::Relu2,
            graph: crate::Graph::Qwen3,
            kind: crate::ModelKind::Generation,
            attn_scale: 1.0 / (head_dim as f32).sqrt(),
            embd_scale: 1.0,
        }
    }

    /// Causal grouped-query attention in f64, one (token, head) at a time, from the same f16
    /// cache rows.
    fn naive(
        c: &ModelConfig,
        layer: usize,
        caches: &[&KvCache],
        seq: &[usize],
        pos: &[usize],
        q: &[f32],
    ) -> Vec<f64> {
        let (d, hd, kvd) = (c.q_dim(), c.head_dim, c.n_head_kv * c.head_dim);
        let group = c.n_head / c.n_head_kv;
        let mut out = vec![0f64; seq.len() * d];
        for t in 0..seq.len() {
            let len = pos[t] + 1;
            let (k, v) = caches[seq[t]].layer(layer, len);
            for h in 0..c.n_head {
                let kv0 = (h / group) * hd;
                let qh = &q[t * d + h * hd..][..hd];
                let scores: Vec<f64> = (0..len)
                    .map(|p| {
                        let kr = &k[p * kvd + kv0..][..hd];
                        let dot: f64 = qh
                            .iter()
                            .zip(kr)
                            .map(|(&a, b)| f64::from(a) * f64::from(b.to_f32()))
                            .sum();
                        dot / (hd as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().fold(f64::NEG_INFINITY, |m, &s| m.max(s));
                let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f64 = e.iter().sum();
                for dd in 0..hd {
                    out[t * d + h * hd + dd] = (0..len)
                        .map(|p| e[p] / sum * f64::from(v[p * kvd + kv0 + dd].to_f32()))
                        .sum();
                }
            }
        }
        out
    }

    /// Every variant this CPU runs agrees with the f64 reference, for head sizes the block
    /// widths divide and do not (remainder paths), group sizes 1–5 (row blocks of 1–4), several
    /// sequences in one batch, prefill chunks longer than `CHUNK`, and decode after a prefix.
    #[test]
    fn every_variant_matches_a_naive_reference() {
        let mut rng = SplitMix64(7);
        let pool = ThreadPool::new(2);
        for (n_head, n_head_kv, hd) in
            [(20, 5, 128), (8, 2, 32), (3, 3, 20), (10, 2, 72), (5, 1, 8)]
        {
            let c = config(n_head, n_head_kv, hd);
            let kvd = n_head_kv * hd;
            // Sequence 0 had 37 tokens cached before; sequence 1 none; sequence 2 had 3.
            let before = [37usize, 0, 3];
            let new = [2usize, 70, 1];
            let mut caches: Vec<KvCache> = before
                .iter()
                .map(|_| KvCache::new(c.n_layer, kvd, 512))
                .collect();
            let mut rand =
                |n: usize| -> Vec<f32> { (0..n).map(|_| rng.uniform(-2.0, 2.0)).collect() };
            for (cache, &b) in caches.iter_mut().zip(&before) {
                for _ in 0..b {
                    for l in 0..c.n_layer {
                        cache.push(l, &rand(kvd), &rand(kvd));
                    }
                    cache.commit(1);
                }
            }
            let (mut seq, mut pos) = (Vec::new(), Vec::new());
            for (s, (&b, &n)) in before.iter().zip(&new).enumerate() {
                for j in 0..n {
                    seq.push(s);
                    pos.push(b + j);
                    for l in 0..c.n_layer {
                        caches[s].push(l, &rand(kvd), &rand(kvd));
                    }
                }
            }
            let q = rand(seq.len() * c.q_dim());
            let refs: Vec<&KvCache> = caches.iter().collect();
            let want = naive(&c, 1, &refs, &seq, &pos, &q);
            // One variant per code generation (AVX-512, AVX2, baseline) this CPU runs.
            let mut seen = Vec::new();
            for k in Kernels::available() {
                if seen.contains(&k.simd()) {
                    continue;
                }
                seen.push(k.simd());
                let variant = k.simd();
                let mut att = vec![f32::NAN; seq.len() * c.q_dim()];
                let batch = Attention {
                    c: &c,
                    layer: 1,
                    caches: &refs,
                    seq: &seq,
                    pos: &pos,
                    q: &q,
                };
                batch.run(k, &pool, &mut att);
                for (i, (&got, &want)) in att.iter().zip(&want).enumerate() {
                    assert!(
                        (f64::from(got) - want).abs() <= 1e-5 * (1.0 + want.abs()),
                        "{variant:?}, heads {n_head}/{n_head_kv}×{hd}: element {i} is {got}, reference {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn chunks_split_runs_of_one_sequence() {
        assert_eq!(chunks(&[], 4), vec![]);
        assert_eq!(
            chunks(&[0, 0, 0, 0, 0, 0, 1, 2, 2], 4),
            vec![(0, 4), (4, 6), (6, 7), (7, 9)]
        );
        assert_eq!(chunks(&[0, 1, 2], 16), vec![(0, 1), (1, 2), (2, 3)]);
    }
}
