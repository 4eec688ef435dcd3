//! Causal multi-head attention with grouped KV heads, over the f16 KV cache, streamed in tiles
//! (flash-attention style).
//!
//! Work is split over the pool in units of (a run of at most [`CHUNK`] consecutive tokens of one
//! sequence, one KV head, a range of key positions). A unit's rows are its (token, query head)
//! pairs; they share every key and value it reads. The unit walks its keys [`TILE`] at a time:
//! it converts the tile's f16 keys and values to f32 once (32 KB at a head size of 128, which
//! stays in L1 or L2 while it is used; the next tile's rows are prefetched meanwhile), scores the
//! tile against every row, and folds the tile into each row's running softmax (running max and
//! sum; the output accumulated so far is rescaled when the max grows, "online softmax"). So the
//! cache is read once per unit and nothing of the context's length is written.
//!
//! A row's keys are cut into fixed ranges of [`RANGE`] positions, each with a softmax state of
//! its own, and the ranges' results are combined in order by the log-sum-exp rule (`Merged`).
//! With a given code generation, a row's result therefore depends only on its own query and
//! keys — not on which other tokens share the batch, how the work is cut or how many threads run
//! it — bit for bit (the embedding models promise that).
//!
//! Scores run with rows in the vector lanes: the queries are transposed once per unit (row-major
//! keys then need no transposition), and every query load is shared by several keys, each an
//! independent multiply-add chain. The weighted values run with head dimensions in the lanes,
//! every value load shared by [`ROWS`] rows. A decode step of one sequence has only `n_head_kv`
//! (token, KV head) pairs; when the batch has fewer than [`UNITS_PER_THREAD`] × threads of them,
//! each pair's ranges are shared out over several units (split-K, "flash decoding"), which
//! write every range's partial result; they are merged after the parallel region, in the same
//! order and with the same arithmetic as a unit that holds all of a row's ranges merges them.
//!
//! Block widths are chosen per instruction set (`x86_64`: AVX-512, AVX2+FMA+F16C or the SSE2
//! baseline; `aarch64`: NEON); the loops are written once and vectorised by the compiler inside
//! `#[target_feature]` entry points, which also convert f16 with the instruction set's own
//! instruction. Which one runs is not detected here: it is the [`Kernels::simd`] of the variant
//! the model was loaded with. Scratch buffers are per thread and reused across calls.
//!
//! It does not apply RoPE, project or store K/V (the forward pass in `super` does), and it keeps
//! no state between calls but the scratch.

use super::cache::KvCache;
use super::config::ModelConfig;
use super::ops;
use bitnet_kernels::{Kernels, Simd, ThreadPool};
use half::f16;
use std::cell::RefCell;
use std::ops::Range;

/// Most tokens of one sequence that share an attention unit: large enough that a prompt's
/// key tiles are shared by many rows, small enough that a 2-core pool still gets several units
/// per head.
const CHUNK: usize = 16;

/// Keys per tile: one tile's f32 keys and values (2 × 32 × head size floats, 32 KB at a head
/// size of 128) stay close (L1 or L2) while every row of the unit uses them. 16 and 64 measured
/// the same at decode.
const TILE: usize = 32;

/// (token, query head) rows that share each value load in the weighted sum.
const ROWS: usize = 4;

/// When a batch has fewer (chunk, KV head) pairs than this many per thread, their keys are
/// split so that the pool's dynamic hand-out can balance.
const UNITS_PER_THREAD: usize = 4;

/// Keys per softmax range (a multiple of [`TILE`]); also the fewest keys a split-K unit gets.
/// Merging a range costs a row `head_dim` multiply-adds, against `2 · RANGE · head_dim` for its
/// keys.
const RANGE: usize = 256;

/// Most partials (floats) a split may allocate for one call; past that the batch is not split
/// (the results are the same, only the balance between threads differs).
const MAX_PARTS: usize = 1 << 22;

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
        let (nkv, qd, nh, hd) = (c.n_head_kv, c.q_dim(), c.n_head, c.head_dim);
        let chunks = chunks(seq, CHUNK);
        let longest = chunks.iter().map(|&(_, t1)| pos[t1 - 1] + 1).max();
        let ranges = longest.unwrap_or(0).div_ceil(RANGE);
        // Split-K partials: per (token, query head, range) the unnormalised output, the max
        // score and the sum of exponentials; a range a unit did not reach keeps max −∞.
        let part = hd + 2;
        let mut split = split_factor(chunks.len() * nkv, pool.threads(), ranges);
        if seq.len() * nh * ranges * part > MAX_PARTS {
            split = 1;
        }
        let mut parts = if split > 1 {
            vec![f32::NEG_INFINITY; seq.len() * nh * ranges * part]
        } else {
            Vec::new()
        };
        let out = SyncPtr(att.as_mut_ptr());
        let parts_ptr = SyncPtr(parts.as_mut_ptr());
        pool.parallel_for(chunks.len() * nkv * split, |i| {
            let (piece, kvh) = (i % split, (i / split) % nkv);
            let (t0, t1) = chunks[i / (split * nkv)];
            let len = pos[t1 - 1] + 1;
            // Whole ranges per unit; the last units of a short chunk may get none.
            let step = len.div_ceil(RANGE).div_ceil(split) * RANGE;
            let keys = (piece * step).min(len)..((piece + 1) * step).min(len);
            let dest = if split == 1 {
                Dest::Out(SyncPtr(out.get().wrapping_add(t0 * qd)))
            } else {
                Dest::Part {
                    first: SyncPtr(parts_ptr.get().wrapping_add(t0 * nh * ranges * part)),
                    ranges,
                }
            };
            let unit = Unit {
                c,
                cache: caches[seq[t0]],
                layer,
                pos: &pos[t0..t1],
                q: &q[t0 * qd..t1 * qd],
                kvh,
                keys,
                dest,
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
        if split > 1 {
            for (row, out) in parts
                .chunks_exact(ranges * part)
                .zip(att.chunks_exact_mut(hd))
            {
                let mut acc = Merged::new(out);
                for p in row.chunks_exact(part) {
                    acc.add(&p[..hd], p[hd], p[hd + 1]);
                }
                acc.finish();
            }
        }
    }
}

/// How many units each (chunk, KV head) pair is shared out over: 1 when `pairs` already give
/// every one of `threads` threads [`UNITS_PER_THREAD`] units, else enough for that, but at most
/// one per range of the longest chunk (`ranges`).
fn split_factor(pairs: usize, threads: usize, ranges: usize) -> usize {
    let want = UNITS_PER_THREAD * threads.max(1);
    if pairs == 0 || pairs >= want {
        return 1;
    }
    want.div_ceil(pairs).min(ranges).max(1)
}

/// One row's ranges combined in key order: with `m_i` the max score, `l_i` the sum of
/// exponentials relative to it and `o_i` the unnormalised output of range `i`, the row is
/// `Σ o_i·e^(m_i−M) / Σ l_i·e^(m_i−M)`, `M = max m_i`, accumulated one range at a time (the
/// running sums are rescaled when the max grows). Units and the split-K merge both use it, range
/// by range in the same order, so a row's bits do not depend on how its ranges were shared out.
struct Merged<'a> {
    /// The running output (unnormalised until `finish`).
    o: &'a mut [f32],
    m: f32,
    l: f32,
}

impl<'a> Merged<'a> {
    fn new(o: &'a mut [f32]) -> Merged<'a> {
        Merged {
            o,
            m: f32::NEG_INFINITY,
            l: 0.0,
        }
    }

    /// Adds a range's unnormalised output `o`, max `m` and sum `l`; a range with no key for the
    /// row (max −∞) is skipped, the first one is taken as it is.
    #[inline(never)]
    fn add(&mut self, o: &[f32], m: f32, l: f32) {
        if m == f32::NEG_INFINITY {
            return;
        }
        if self.m == f32::NEG_INFINITY {
            self.o.copy_from_slice(o);
            (self.m, self.l) = (m, l);
            return;
        }
        let max = self.m.max(m);
        let (a, b) = ((self.m - max).exp(), (m - max).exp());
        for (x, &y) in self.o.iter_mut().zip(o) {
            *x = *x * a + y * b;
        }
        (self.m, self.l) = (max, self.l * a + l * b);
    }

    /// Divides the output by the sum.
    #[inline(never)]
    fn finish(self) {
        let inv = 1.0 / self.l;
        for x in self.o.iter_mut() {
            *x *= inv;
        }
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Per-thread buffers, grown on demand and never shrunk; their size depends on the head size and
/// the rows of a unit, not on the context length (about 100 KB for a prompt chunk of a
/// 20 × 128 model).
#[derive(Default)]
struct Scratch {
    /// The unit's queries, scaled and transposed: `head_dim` rows of `rp` (rows padded to 4).
    qt: Vec<f32>,
    /// One tile's keys, then values, in f32: `TILE` rows of `head_dim`.
    k: Vec<f32>,
    v: Vec<f32>,
    /// One tile's scores, then weights: `TILE` rows of `rp`; and each row's max, repeated per key.
    s: Vec<f32>,
    tb: Vec<f32>,
    /// Unnormalised outputs of the current range: `rp` rows of `head_dim`.
    o: Vec<f32>,
    /// Per row: max and sum of the ranges merged so far (`Merged`; the output row holds their
    /// output).
    run_m: Vec<f32>,
    run_l: Vec<f32>,
    /// Per row: running max score, running sum of exponentials, this tile's max, the factor
    /// that rescales the earlier tiles' output.
    m: Vec<f32>,
    l: Vec<f32>,
    mt: Vec<f32>,
    corr: Vec<f32>,
    /// Per row: keys below this position are its own (causal limit, cut at the unit's range).
    lim: Vec<usize>,
}

/// Where a unit's rows go.
#[derive(Clone, Copy)]
enum Dest {
    /// Normalised, into the chunk's first output row.
    Out(SyncPtr),
    /// Per range, unnormalised with max and sum, into the partials of the chunk's first token
    /// (`ranges` per (token, query head)).
    Part { first: SyncPtr, ranges: usize },
}

/// The tokens of one chunk (consecutive, one sequence) × the query heads of KV head `kvh`, over
/// key positions `keys`.
struct Unit<'a> {
    c: &'a ModelConfig,
    cache: &'a KvCache,
    layer: usize,
    /// Positions of the chunk's tokens (increasing).
    pos: &'a [usize],
    /// The chunk's queries (tokens × q_dim).
    q: &'a [f32],
    kvh: usize,
    keys: Range<usize>,
    dest: Dest,
}

/// f16 → f32 conversion of the entry points: `CV_AVX512` and `CV_F16C` use the instruction
/// set's conversion (only in the entry points whose variants checked it), `CV_ANY` `half`'s.
const CV_ANY: u8 = 0;
#[cfg(target_arch = "x86_64")]
const CV_F16C: u8 = 1;
#[cfg(target_arch = "x86_64")]
const CV_AVX512: u8 = 2;

impl Unit<'_> {
    fn run(&self, simd: Simd, s: &mut Scratch) {
        match simd {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `simd` is the selected `Kernels`' (see `Attention::run`): `v4`, the only
            // variant with `Simd::Avx512`, checked AVX-512F and FMA.
            Simd::Avx512 => unsafe { self.run_avx512(s) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above: `v3` and `v3vnni` checked AVX2, FMA and F16C.
            Simd::Avx2 => unsafe { self.run_avx2(s) },
            // NEON is baseline on aarch64 and has `fmla`: 32 registers of 4 lanes.
            #[cfg(target_arch = "aarch64")]
            Simd::Baseline => self.body::<16, 4, 16, true, CV_ANY>(s),
            // SSE2 on x86-64: 16 registers of 4 lanes, no fused multiply-add.
            #[cfg(not(target_arch = "aarch64"))]
            Simd::Baseline => self.body::<8, 4, 8, false, CV_ANY>(s),
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,fma")]
    unsafe fn run_avx512(&self, s: &mut Scratch) {
        // Scores: 8 keys × 32 rows = 16 accumulators; values: 4 rows × 64 dims = 16 (of 32).
        self.body::<32, 8, 64, true, CV_AVX512>(s)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn run_avx2(&self, s: &mut Scratch) {
        // Scores: 4 keys × 16 rows = 8 accumulators; values: 4 rows × 16 dims = 8 (of 16).
        self.body::<16, 4, 16, true, CV_F16C>(s)
    }

    /// `WMAX` rows per score block (scored against `RK` keys at a time; narrower blocks, for
    /// the last rows, take 8 keys), `DB` value dimensions per output block; `FMA`: fused
    /// multiply-add is available (must only be set where the CPU has it: otherwise `mul_add` is
    /// a library call); `CV`: how f16 is converted.
    #[inline(always)]
    fn body<const WMAX: usize, const RK: usize, const DB: usize, const FMA: bool, const CV: u8>(
        &self,
        s: &mut Scratch,
    ) {
        let c = self.c;
        let (hd, nkv, qd) = (c.head_dim, c.n_head_kv, c.q_dim());
        let (kvd, group, kvh) = (nkv * hd, c.n_head / nkv, self.kvh);
        let n_rows = self.pos.len() * group;
        let rp = n_rows.next_multiple_of(ROWS);
        for (buf, n) in [
            (&mut s.qt, hd * rp),
            (&mut s.k, TILE * hd),
            (&mut s.v, TILE * hd),
            (&mut s.s, TILE * rp),
            (&mut s.tb, TILE * rp),
            (&mut s.o, rp * hd),
            (&mut s.m, rp),
            (&mut s.l, rp),
            (&mut s.mt, rp),
            (&mut s.corr, rp),
            (&mut s.run_m, rp),
            (&mut s.run_l, rp),
        ] {
            grow(buf, n);
        }
        if s.lim.len() < rp {
            s.lim.resize(rp, 0);
        }
        let qt = &mut s.qt[..hd * rp];
        let (kf, vf, st) = (
            &mut s.k[..TILE * hd],
            &mut s.v[..TILE * hd],
            &mut s.s[..TILE * rp],
        );
        let o = &mut s.o[..rp * hd];
        let tb = &mut s.tb[..TILE * rp];
        let (m, l, mt, corr) = (
            &mut s.m[..rp],
            &mut s.l[..rp],
            &mut s.mt[..rp],
            &mut s.corr[..rp],
        );
        let lim = &mut s.lim[..rp];
        let (run_m, run_l) = (&mut s.run_m[..rp], &mut s.run_l[..rp]);

        // Row r is (token r / group, query head kvh · group + r % group). Padding rows copy the
        // last row's limit and have zero queries; their results are never written.
        let row = |r: usize| (r / group, kvh * group + r % group);
        let scale = c.attn_scale;
        for r in 0..rp {
            let (tok, head) = row(r.min(n_rows - 1));
            lim[r] = (self.pos[tok] + 1).min(self.keys.end);
            let qr = &self.q[tok * qd + head * hd..][..hd];
            for (d, &x) in qr.iter().enumerate() {
                qt[d * rp + r] = if r < n_rows { x * scale } else { 0.0 };
            }
        }
        // Rows are in token order: the first has the fewest keys, the last the most.
        let (all_valid_below, end) = (lim[0], lim[rp - 1]);
        let (kc, vc) = self.cache.layer(self.layer, end.max(self.keys.start));
        // Nothing merged yet: the first range is copied into the output row.
        run_m.fill(f32::NEG_INFINITY);
        run_l.fill(0.0);
        let mut rb = self.keys.start;
        while rb < end {
            o.fill(0.0);
            m.fill(f32::NEG_INFINITY);
            l.fill(0.0);
            let stop = (rb + RANGE).min(end);
            let mut kb = rb;
            while kb < stop {
                let nk = TILE.min(stop - kb);
                for j in 0..nk {
                    let src = (kb + j) * kvd + kvh * hd;
                    let dst = j * hd..(j + 1) * hd;
                    convert::<CV>(&kc[src..src + hd], &mut kf[dst.clone()]);
                    convert::<CV>(&vc[src..src + hd], &mut vf[dst]);
                    // The next tile's rows, while this one is computed.
                    if kb + j + TILE < end {
                        let ahead = src + TILE * kvd;
                        prefetch(&kc[ahead..ahead + hd]);
                        prefetch(&vc[ahead..ahead + hd]);
                    }
                }
                // Scores of keys nk..(a multiple of the key block) come from an earlier tile's
                // (or zeroed) rows and are never read.
                let t = Tile { kf, hd, qt, rp, nk };
                let mut r0 = 0;
                while r0 < rp {
                    let left = rp - r0;
                    r0 += if left >= WMAX {
                        t.scores::<RK, WMAX, FMA>(r0, st)
                    } else if WMAX > 16 && left >= 16 {
                        t.scores::<8, 16, FMA>(r0, st)
                    } else if WMAX > 8 && left >= 8 {
                        t.scores::<8, 8, FMA>(r0, st)
                    } else {
                        t.scores::<8, 4, FMA>(r0, st)
                    };
                }
                let st = &mut st[..nk * rp];
                // Keys past a row's limit (the causal boundary, or the end of the unit's keys).
                if kb + nk > all_valid_below {
                    for (j, sj) in st.chunks_exact_mut(rp).enumerate() {
                        for (x, &lim) in sj.iter_mut().zip(&*lim) {
                            if kb + j >= lim {
                                *x = f32::NEG_INFINITY;
                            }
                        }
                    }
                }
                online_softmax(st, tb, m, l, mt, corr);
                let mut r0 = 0;
                while r0 < rp {
                    let w = Weigh {
                        p: st,
                        rp,
                        r0,
                        v: vf,
                        hd,
                        nk,
                    };
                    let o = &mut o[r0 * hd..(r0 + ROWS) * hd];
                    let corr: &[f32; ROWS] = corr[r0..r0 + ROWS].try_into().unwrap();
                    let mut d0 = 0;
                    while d0 + DB <= hd {
                        w.values::<ROWS, DB, FMA>(d0, o, corr);
                        d0 += DB;
                    }
                    // Dimensions left over when DB does not divide the head size: 8 at a time,
                    // then one.
                    while d0 + 8 <= hd {
                        w.values::<ROWS, 8, FMA>(d0, o, corr);
                        d0 += 8;
                    }
                    while d0 < hd {
                        w.values::<ROWS, 1, FMA>(d0, o, corr);
                        d0 += 1;
                    }
                    r0 += ROWS;
                }
                kb += nk;
            }

            // The range is done: merged into the output row (which holds the earlier ranges'
            // running sum), or stored as a partial.
            for r in 0..n_rows {
                let (tok, head) = row(r);
                let src = &o[r * hd..(r + 1) * hd];
                // SAFETY: each (token, head) row of the chunk — or, split, each (token, head,
                // range) partial — is written by exactly one unit (units own disjoint (chunk,
                // KV head, ranges) triples), and `att` and the partials outlive the region.
                match self.dest {
                    Dest::Out(first) => {
                        let dst = unsafe {
                            let at = first.get().add(tok * qd + head * hd);
                            std::slice::from_raw_parts_mut(at, hd)
                        };
                        let mut acc = Merged {
                            o: dst,
                            m: run_m[r],
                            l: run_l[r],
                        };
                        acc.add(src, m[r], l[r]);
                        (run_m[r], run_l[r]) = (acc.m, acc.l);
                    }
                    Dest::Part { first, ranges } => {
                        let at = ((tok * c.n_head + head) * ranges + rb / RANGE) * (hd + 2);
                        let dst =
                            unsafe { std::slice::from_raw_parts_mut(first.get().add(at), hd + 2) };
                        dst[..hd].copy_from_slice(src);
                        dst[hd] = m[r];
                        dst[hd + 1] = l[r];
                    }
                }
            }
            rb = stop;
        }
        if let Dest::Out(first) = self.dest {
            for r in 0..n_rows {
                let (tok, head) = row(r);
                // SAFETY: as above.
                let dst = unsafe {
                    std::slice::from_raw_parts_mut(first.get().add(tok * qd + head * hd), hd)
                };
                Merged {
                    o: dst,
                    m: run_m[r],
                    l: run_l[r],
                }
                .finish();
            }
        }
    }
}

/// Folds one tile's scores (`st`: keys × rows, −∞ where masked) into the rows' running softmax:
/// `mt` becomes the new max, `corr` the factor for everything accumulated before (applied to `l`
/// here and to the outputs by the caller), `st` the weights `e^(s − max)` (0 where masked).
/// The exponentials run over the flat tile against `tb` (each row's max repeated per key), so
/// they vectorise at full width however few rows there are; the max and the sum run row by
/// row, key after key (the sum's order is the same for any number of rows).
#[inline(always)]
fn online_softmax(
    st: &mut [f32],
    tb: &mut [f32],
    m: &mut [f32],
    l: &mut [f32],
    mt: &mut [f32],
    corr: &mut [f32],
) {
    mt.copy_from_slice(m);
    for sj in st.chunks_exact(m.len()) {
        for (t, &x) in mt.iter_mut().zip(sj) {
            *t = t.max(x);
        }
    }
    for (((c, l), m), &t) in corr
        .iter_mut()
        .zip(l.iter_mut())
        .zip(m.iter_mut())
        .zip(&*mt)
    {
        // A row with no key yet keeps max −∞ and rescales nothing; from −∞ to a real max the
        // factor is ~0 (the exponential is flushed at e^−87) and multiplies zeros.
        *c = if t == f32::NEG_INFINITY {
            1.0
        } else {
            ops::exp_nonpositive(*m - t)
        };
        *l *= *c;
        *m = t;
    }
    let tb = &mut tb[..st.len()];
    for tj in tb.chunks_exact_mut(m.len()) {
        tj.copy_from_slice(mt);
    }
    for (x, &t) in st.iter_mut().zip(&*tb) {
        let e = ops::exp_nonpositive(*x - t);
        *x = if *x == f32::NEG_INFINITY { 0.0 } else { e };
    }
    for sj in st.chunks_exact(m.len()) {
        for (l, &x) in l.iter_mut().zip(sj) {
            *l += x;
        }
    }
}

/// One tile's keys against the unit's transposed queries.
struct Tile<'a> {
    /// Keys, f32, rows of `hd`; at least `nk` rounded up to the key block.
    kf: &'a [f32],
    hd: usize,
    /// Queries transposed: `hd` rows of `rp`.
    qt: &'a [f32],
    rp: usize,
    nk: usize,
}

impl Tile<'_> {
    /// Scores of rows `r0..r0 + W` against the tile's keys, `RK` keys × `W` rows per step, into
    /// `st` (keys × `rp`). Returns `W`.
    #[inline(always)]
    fn scores<const RK: usize, const W: usize, const FMA: bool>(
        &self,
        r0: usize,
        st: &mut [f32],
    ) -> usize {
        let (hd, rp) = (self.hd, self.rp);
        let mut j0 = 0;
        while j0 < self.nk {
            let keys: [&[f32]; RK] = std::array::from_fn(|j| &self.kf[(j0 + j) * hd..][..hd]);
            let acc = if W <= 4 {
                outer_sum_narrow::<RK, W, FMA>(&keys, self.qt, rp, r0, hd)
            } else {
                outer_sum::<RK, W, FMA>(&keys, self.qt, rp, r0, hd)
            };
            for (j, a) in acc.iter().enumerate() {
                st[(j0 + j) * rp + r0..][..W].copy_from_slice(a);
            }
            j0 += RK;
        }
        W
    }
}

/// One tile's weights against its values.
struct Weigh<'a> {
    /// Weights: keys × `rp`.
    p: &'a [f32],
    rp: usize,
    /// First row of the block.
    r0: usize,
    /// Values, f32, `nk` rows of `hd`.
    v: &'a [f32],
    hd: usize,
    nk: usize,
}

impl Weigh<'_> {
    /// `o_r[d0..d0 + W] = o_r[d0..d0 + W] · corr_r + Σ_j p[j][r] · v[j][d0..d0 + W]` for the `R`
    /// rows `o_r` of `o` (rows `r0..` of the unit): `R × W` accumulators, every value load shared
    /// by the `R` rows.
    #[inline(always)]
    fn values<const R: usize, const W: usize, const FMA: bool>(
        &self,
        d0: usize,
        o: &mut [f32],
        corr: &[f32; R],
    ) {
        let hd = self.hd;
        let mut acc: [[f32; W]; R] =
            std::array::from_fn(|r| std::array::from_fn(|w| o[r * hd + d0 + w] * corr[r]));
        for j in 0..self.nk {
            let row: &[f32; W] = self.v[j * hd + d0..j * hd + d0 + W].try_into().unwrap();
            let p: &[f32; R] = self.p[j * self.rp + self.r0..][..R].try_into().unwrap();
            for r in 0..R {
                for w in 0..W {
                    acc[r][w] = madd::<FMA>(p[r], row[w], acc[r][w]);
                }
            }
        }
        for (r, a) in acc.iter().enumerate() {
            o[r * hd + d0..r * hd + d0 + W].copy_from_slice(a);
        }
    }
}

/// `Σ_i a_r[i] · b[i·stride + off .. i·stride + off + W]` for `i < steps`, for `R` rows `a_r`:
/// `R × W` accumulators, one multiply-add chain each, every `b` load shared by the `R` rows.
/// Scores are `a` = keys, `b` = transposed queries (`stride` = padded row count, `off` = first
/// row, `steps` = head size).
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

/// [`outer_sum`] with the bounds checked once instead of per step, for narrow blocks (`W` ≤ 4,
/// decode's 4 rows): there, per-step checks of the `R` slices cost more registers and
/// instructions than the multiply-adds they guard. (For wide blocks the checked loop compiles
/// better.) The same multiply-adds in the same order, so the same bits.
#[inline(always)]
fn outer_sum_narrow<const R: usize, const W: usize, const FMA: bool>(
    a: &[&[f32]; R],
    b: &[f32],
    stride: usize,
    off: usize,
    steps: usize,
) -> [[f32; W]; R] {
    let mut acc = [[0f32; W]; R];
    if steps == 0 {
        return acc;
    }
    assert!(a.iter().all(|a| a.len() >= steps));
    assert!((steps - 1) * stride + off + W <= b.len());
    let a: [*const f32; R] = std::array::from_fn(|r| a[r].as_ptr());
    let b = b.as_ptr();
    for i in 0..steps {
        // SAFETY: `i < steps`, and the assertions above bound both reads.
        let row: &[f32; W] = unsafe { &*b.add(i * stride + off).cast::<[f32; W]>() };
        for r in 0..R {
            // SAFETY: as above.
            let x = unsafe { *a[r].add(i) };
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

/// f16 → f32 with the conversion `CV` names (see `CV_ANY`).
#[inline(always)]
fn convert<const CV: u8>(src: &[f16], dst: &mut [f32]) {
    match CV {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `CV_AVX512` is only passed by `run_avx512` (AVX-512F checked by its variant).
        CV_AVX512 => unsafe { x86::f16_to_f32_avx512(src, dst) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `CV_F16C` is only passed by `run_avx2` (F16C checked by its variants).
        CV_F16C => unsafe { x86::f16_to_f32_f16c(src, dst) },
        _ => {
            use half::slice::HalfFloatSliceExt;
            src.convert_to_f32_slice(dst)
        }
    }
}

/// Asks for `x`'s cache lines ahead of use (x86-64: `prefetcht0`, baseline SSE; elsewhere
/// nothing).
#[inline(always)]
fn prefetch(x: &[f16]) {
    #[cfg(target_arch = "x86_64")]
    for line in x.chunks(32) {
        // SAFETY: a prefetch never faults; the address is inside `x`.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                line.as_ptr().cast(),
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = x;
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use half::f16;
    use half::slice::HalfFloatSliceExt;
    use std::arch::x86_64::*;

    /// `dst = src` in f32, 16 values per `vcvtph2ps`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn f16_to_f32_avx512(src: &[f16], dst: &mut [f32]) {
        let n = src.len().min(dst.len());
        let mut i = 0;
        while i + 16 <= n {
            // SAFETY: `i + 16 <= n` elements of both slices; unaligned load and store.
            unsafe {
                let h = _mm256_loadu_si256(src.as_ptr().add(i).cast());
                _mm512_storeu_ps(dst.as_mut_ptr().add(i), _mm512_cvtph_ps(h));
            }
            i += 16;
        }
        src[i..n].convert_to_f32_slice(&mut dst[i..n]);
    }

    /// `dst = src` in f32, 8 values per `vcvtph2ps`.
    #[target_feature(enable = "avx,f16c")]
    pub(super) unsafe fn f16_to_f32_f16c(src: &[f16], dst: &mut [f32]) {
        let n = src.len().min(dst.len());
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: `i + 8 <= n` elements of both slices; unaligned load and store.
            unsafe {
                let h = _mm_loadu_si128(src.as_ptr().add(i).cast());
                _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
            }
            i += 8;
        }
        src[i..n].convert_to_f32_slice(&mut dst[i..n]);
    }
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
            n_ctx_train: 4096,
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

    /// Sequence `s` of a batch had `before[s]` tokens cached and adds `new[s]` (in that order in
    /// the batch): every variant this CPU runs must agree with the f64 reference.
    fn check(
        rng: &mut SplitMix64,
        pool: &ThreadPool,
        (n_head, n_head_kv, hd): (usize, usize, usize),
        before: &[usize],
        new: &[usize],
    ) {
        let c = config(n_head, n_head_kv, hd);
        let kvd = n_head_kv * hd;
        let mut caches: Vec<KvCache> = before
            .iter()
            .map(|_| KvCache::new(c.n_layer, kvd, 4096))
            .collect();
        let mut rand = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.uniform(-2.0, 2.0)).collect() };
        for (cache, &b) in caches.iter_mut().zip(before) {
            for _ in 0..b {
                for l in 0..c.n_layer {
                    cache.push(l, &rand(kvd), &rand(kvd));
                }
                cache.commit(1);
            }
        }
        let (mut seq, mut pos) = (Vec::new(), Vec::new());
        for (s, (&b, &n)) in before.iter().zip(new).enumerate() {
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
            batch.run(k, pool, &mut att);
            for (i, (&got, &want)) in att.iter().zip(&want).enumerate() {
                assert!(
                    (f64::from(got) - want).abs() <= 1e-5 * (1.0 + want.abs()),
                    "{variant:?}, heads {n_head}/{n_head_kv}×{hd}, cached {before:?}, new {new:?}: \
                     element {i} is {got}, reference {want}"
                );
            }
        }
    }

    /// Head sizes the block widths divide and do not (remainder paths), group sizes 1–5 (row
    /// counts that are and are not multiples of the row blocks).
    const SHAPES: [(usize, usize, usize); 5] =
        [(20, 5, 128), (8, 2, 32), (3, 3, 20), (10, 2, 72), (5, 1, 8)];

    /// Several sequences in one batch, prefill chunks longer than `CHUNK`, and decode after a
    /// short prefix; every key range fits in a few tiles, the last one partial.
    #[test]
    fn every_variant_matches_a_naive_reference() {
        let mut rng = SplitMix64(7);
        let pool = ThreadPool::new(2);
        for shape in SHAPES {
            // Sequence 0 had 37 tokens cached before; sequence 1 none; sequence 2 had 3.
            check(&mut rng, &pool, shape, &[37, 0, 3], &[2, 70, 1]);
        }
    }

    /// Long caches: decode of one sequence at depth 3,000 (its keys split over the pool, ~50
    /// tiles per range, a partial last tile), a prompt chunk on top of a long prefix, and a
    /// decode batch of sequences at very different depths (with one KV head the batch is split
    /// too, and the short sequences' later ranges are empty).
    #[test]
    fn long_caches_and_split_keys_match_the_reference() {
        let mut rng = SplitMix64(11);
        let pool = ThreadPool::new(2);
        assert!(split_factor(5, 2, 3001usize.div_ceil(RANGE)) > 1);
        for shape in SHAPES {
            check(&mut rng, &pool, shape, &[3000], &[1]);
            check(
                &mut rng,
                &pool,
                shape,
                &[1000, 5, 700, 31, 33],
                &[1, 1, 1, 1, 1],
            );
        }
        for shape in [(20, 5, 128), (5, 1, 8), (10, 2, 72)] {
            check(&mut rng, &pool, shape, &[610], &[21]);
        }
    }

    /// A row's result depends only on its query and its sequence's keys: the same bits whether
    /// its token decodes alone (keys split over a 2-thread pool), on one thread (not split), or
    /// in a batch with other sequences (not split), and whether a prompt's last token is computed
    /// with the rest of the prompt or after it.
    #[test]
    fn results_do_not_depend_on_the_batch_or_the_threads() {
        let mut rng = SplitMix64(5);
        let c = config(20, 5, 32);
        let kvd = 5 * 32;
        let depths = [2000usize, 40, 700, 3];
        let mut caches: Vec<KvCache> = depths
            .iter()
            .map(|_| KvCache::new(c.n_layer, kvd, 4096))
            .collect();
        for (cache, &d) in caches.iter_mut().zip(&depths) {
            for _ in 0..=d {
                for l in 0..c.n_layer {
                    let k: Vec<f32> = (0..kvd).map(|_| rng.uniform(-2.0, 2.0)).collect();
                    let v: Vec<f32> = (0..kvd).map(|_| rng.uniform(-2.0, 2.0)).collect();
                    cache.push(l, &k, &v);
                }
                cache.commit(1);
            }
        }
        let q: Vec<f32> = (0..4 * c.q_dim()).map(|_| rng.uniform(-2.0, 2.0)).collect();
        let refs: Vec<&KvCache> = caches.iter().collect();
        let (one, two) = (ThreadPool::new(1), ThreadPool::new(2));
        for k in Kernels::available() {
            let run = |seq: &[usize], pos: &[usize], q: &[f32], pool: &ThreadPool| {
                let mut att = vec![f32::NAN; seq.len() * c.q_dim()];
                let caches: Vec<&KvCache> = refs.clone();
                let batch = Attention {
                    c: &c,
                    layer: 1,
                    caches: &caches,
                    seq,
                    pos,
                    q,
                };
                batch.run(k, pool, &mut att);
                att
            };
            let qd = c.q_dim();
            let alone = run(&[0], &[2000], &q[..qd], &two);
            assert_eq!(
                alone,
                run(&[0], &[2000], &q[..qd], &one),
                "{:?}: 1 vs 2 threads",
                k.simd()
            );
            let batch = run(&[0, 1, 2, 3], &[2000, 40, 700, 3], &q, &two);
            assert_eq!(alone, batch[..qd], "{:?}: alone vs in a batch", k.simd());
            // Sequence 0's last 20 positions as one prompt chunk, the last row against the
            // decode above.
            let pos: Vec<usize> = (1981..=2000).collect();
            let prompt_q: Vec<f32> = (0..20 * qd).map(|i| q[i % qd]).collect();
            let prompt = run(&[0; 20], &pos, &prompt_q, &two);
            assert_eq!(
                alone,
                prompt[19 * qd..],
                "{:?}: decode vs end of a prompt",
                k.simd()
            );
        }
    }

    #[test]
    fn keys_are_split_only_when_units_are_few_and_long() {
        // 2B-4T decode (5 KV heads) at batch 1 on 2 threads, depth 4,096 (16 ranges): 2 units
        // per head.
        assert_eq!(split_factor(5, 2, 16), 2);
        // A context of one range is not split; at most one unit per range.
        assert_eq!(split_factor(5, 2, 1), 1);
        assert_eq!(split_factor(1, 2, 3), 3);
        // Enough units already (batch 2, or a prompt of several chunks).
        assert_eq!(split_factor(10, 2, 16), 1);
        assert_eq!(split_factor(0, 2, 0), 1);
        assert_eq!(split_factor(1, 1, 16), 4);
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

    /// Times one decode token of the 2B-4T attention shape (20 query heads, 5 KV heads × 128,
    /// 30 layers, so the cache does not sit in the last-level cache between runs) at several
    /// depths on a 2-thread pool, per layer. A measurement, not a check:
    /// `cargo test --release -p bitnet-model attention::tests::decode_timing -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn decode_timing() {
        use std::time::Instant;
        let mut c = config(20, 5, 128);
        c.n_layer = 30;
        let kvd = 5 * 128;
        let pool = ThreadPool::new(2);
        let k = Kernels::best();
        let mut rng = SplitMix64(3);
        for depth in [0usize, 1024, 4096] {
            let mut cache = KvCache::new(c.n_layer, kvd, depth + 1);
            for _ in 0..=depth {
                let row: Vec<f32> = (0..kvd).map(|_| rng.uniform(-1.0, 1.0)).collect();
                for l in 0..c.n_layer {
                    cache.push(l, &row, &row);
                }
                cache.commit(1);
            }
            let q: Vec<f32> = (0..c.q_dim()).map(|_| rng.uniform(-1.0, 1.0)).collect();
            let refs = [&cache];
            let mut att = vec![0f32; c.q_dim()];
            let reps = if depth == 0 { 200 } else { 10 };
            let token = |att: &mut [f32]| {
                for layer in 0..c.n_layer {
                    let batch = Attention {
                        c: &c,
                        layer,
                        caches: &refs,
                        seq: &[0],
                        pos: &[depth],
                        q: &q,
                    };
                    batch.run(k, &pool, att);
                }
            };
            token(&mut att);
            let t = Instant::now();
            for _ in 0..reps {
                token(&mut att);
            }
            let ms = t.elapsed().as_secs_f64() * 1e3 / (reps * c.n_layer) as f64;
            println!(
                "attention decode, depth {depth}: {ms:.4} ms per layer ({:?})",
                k.simd()
            );
        }
    }
}
