//! Per-token int8 activation quantization (the "A8" of W1.58A8) and 64-byte aligned buffers.
//!
//! [`QuantActs`] holds n tokens' activations quantized exactly like bitnet.cpp's
//! `quantize_row_i8_s` (`docs/model.md#activation-quantization`):
//! `amax = max(1e-5, max |x|)` in f64, `s = (127 / amax) as f32`, `q = clamp(rne(x · s), −128, 127)`
//! where `x · s` is an f32 product and `rne` rounds half to even, plus `Σq` per token and per
//! 256-element block (the TQ epilogues need the block sums).
//!
//! What it does NOT do: choose which matrix the activations feed, or keep f32 copies of them.

use super::pool::ThreadPool;
use super::{Kernels, Simd};
use std::alloc::{Layout, alloc_zeroed, dealloc, handle_alloc_error};
use std::ptr::NonNull;

/// Bytes, 64-byte aligned, zero-initialised, length a multiple of 64.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: AlignedBuf owns its allocation exclusively, like Vec<u8>.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access only hands out `&[u8]`.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// Alignment of every buffer (one cache line, one AVX-512 register).
    pub(crate) const ALIGN: usize = 64;

    /// A zeroed buffer of at least `len` bytes (rounded up to a multiple of 64).
    pub fn zeroed(len: usize) -> AlignedBuf {
        let len = len.div_ceil(Self::ALIGN) * Self::ALIGN;
        if len == 0 {
            return AlignedBuf {
                ptr: NonNull::<[u8; 64]>::dangling().cast(),
                len: 0,
            };
        }
        let layout = Layout::from_size_align(len, Self::ALIGN).expect("buffer size overflows");
        // SAFETY: layout has non-zero size.
        let p = unsafe { alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(p) else {
            handle_alloc_error(layout)
        };
        AlignedBuf { ptr, len }
    }

    /// Grows (re-allocating, contents discarded and re-zeroed) so that at least `len` bytes fit.
    pub fn ensure(&mut self, len: usize) {
        if self.len < len {
            *self = AlignedBuf::zeroed(len);
        }
    }

    /// Raw pointer to the first byte.
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// Raw mutable pointer to the first byte.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr is valid for len initialised bytes (zeroed at allocation).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The bytes, mutably.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and we hold &mut self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.len != 0 {
            let layout = Layout::from_size_align(self.len, Self::ALIGN).expect("layout was valid");
            // SAFETY: allocated in `zeroed` with this layout.
            unsafe { dealloc(self.ptr.as_ptr(), layout) };
        }
    }
}

impl Default for AlignedBuf {
    fn default() -> Self {
        AlignedBuf::zeroed(0)
    }
}

/// 1.5 · 2²³: adding it leaves a value of magnitude ≤ 2²² in [2²³, 2²⁴), where one ulp is 1,
/// so the float rounds to nearest, ties to even — the trick bitnet.cpp's `nearest_int` uses,
/// equal to `f32::round_ties_even` on that range.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// `v` rounded to the nearest integer, ties to even, as a float and as an integer, for finite
/// `|v| ≤ 2²²`. The integer is read from the bits of `v + 1.5·2²³` minus the bits of the bias:
/// unlike `as i32` (saturating and NaN-checking, so scalar code) this is plain arithmetic and
/// vectorises. Used by the quantizers and by the softmax's `exp` (`bitnet-model`'s `ops`), which
/// is why it is public.
#[inline(always)]
pub fn round_small(v: f32) -> (f32, i32) {
    let t = v + ROUND_MAGIC;
    (
        t - ROUND_MAGIC,
        t.to_bits() as i32 - ROUND_MAGIC.to_bits() as i32,
    )
}

/// `v` clamped to `[lo, hi]` and rounded half to even, as an integer; NaN gives 0 (as `as i32`
/// would). `lo`/`hi` must be integers with magnitude ≤ 2²². Clamping before rounding is
/// equivalent (the bounds are integers) and keeps [`round_small`] in range.
#[inline(always)]
pub(crate) fn quantize_value(v: f32, lo: f32, hi: f32) -> i32 {
    let v = if v.is_nan() { 0.0 } else { v.clamp(lo, hi) };
    round_small(v).1
}

/// n tokens' activations quantized to int8, one scale per token.
///
/// Row `t` of `q` starts at byte `t · stride`; `stride` is the column count rounded up to 64 and
/// the padding is zero, so kernels may read whole 64-byte vectors.
#[derive(Default)]
pub struct QuantActs {
    cols: usize,
    n: usize,
    stride: usize,
    q: AlignedBuf,
    scale: Vec<f32>,
    sum: Vec<i32>,
    blocks: usize,
    block_sums: Vec<i32>,
    /// The `i8mm` GEMM's layout of these activations (token pairs interleaved), built by the
    /// first matrix product that needs it and shared by every later one until the next
    /// quantization.
    #[cfg(target_arch = "aarch64")]
    pairs: std::sync::OnceLock<AlignedBuf>,
}

impl QuantActs {
    /// Elements per block of [`QuantActs::block_sums`].
    pub const BLOCK: usize = 256;

    /// An empty set (0 tokens); fill it with [`QuantActs::quantize_into`].
    pub fn new() -> QuantActs {
        QuantActs::default()
    }

    /// Quantizes `x` (n × cols, row-major) token by token, with the baseline code generation
    /// (the same bits as every other width; the forward pass uses [`QuantActs::quantize_rows`]
    /// with its [`Kernels`]).
    ///
    /// # Panics
    /// If `cols` is 0 or `x.len()` is not a multiple of `cols`.
    pub fn quantize(x: &[f32], cols: usize) -> QuantActs {
        let mut a = QuantActs::new();
        a.quantize_into(x, cols);
        a
    }

    /// Like [`QuantActs::quantize`], reusing this value's buffers.
    ///
    /// # Panics
    /// If `cols` is 0 or `x.len()` is not a multiple of `cols`.
    pub fn quantize_into(&mut self, x: &[f32], cols: usize) {
        assert!(cols > 0, "QuantActs::quantize: cols must be > 0");
        assert!(
            x.len().is_multiple_of(cols),
            "QuantActs::quantize: {} values are not a whole number of {cols}-wide rows",
            x.len()
        );
        self.quantize_rows(Kernels::scalar(), None, x.len() / cols, cols, |t, row| {
            row.copy_from_slice(&x[t * cols..(t + 1) * cols]);
        });
    }

    /// Quantizes `n` tokens of `cols` values each, where `fill(t, row)` writes token `t`'s
    /// values into `row` (so a norm or an activation can be fused into the same pass). With a
    /// pool, tokens are spread over its threads; `fill` runs once per token, in any order.
    /// The pass runs with the code generation of `kernels` ([`Kernels::simd`]); every width
    /// writes the same bits.
    ///
    /// # Panics
    /// If `cols` is 0.
    pub fn quantize_rows<F: Fn(usize, &mut [f32]) + Sync>(
        &mut self,
        kernels: &Kernels,
        pool: Option<&ThreadPool>,
        n: usize,
        cols: usize,
        fill: F,
    ) {
        assert!(cols > 0, "QuantActs::quantize: cols must be > 0");
        let stride = cols.div_ceil(64) * 64;
        let blocks = cols.div_ceil(Self::BLOCK);
        self.cols = cols;
        self.n = n;
        self.stride = stride;
        self.blocks = blocks;
        self.q.ensure(n * stride);
        self.scale.clear();
        self.scale.resize(n, 0.0);
        self.sum.clear();
        self.sum.resize(n, 0);
        self.block_sums.clear();
        self.block_sums.resize(n * blocks, 0);
        #[cfg(target_arch = "aarch64")]
        self.pairs.take();
        let out = RowsOut {
            q: self.q.as_mut_slice().as_mut_ptr(),
            scale: self.scale.as_mut_ptr(),
            sum: self.sum.as_mut_ptr(),
            block_sums: self.block_sums.as_mut_ptr(),
        };
        let per_chunk = QUANT_TOKENS_PER_CHUNK;
        let geometry = RowsGeometry {
            cols,
            stride,
            blocks,
        };
        // Borrow the whole struct: a closure would otherwise capture its (non-Sync) fields.
        let (out, fill) = (&out, &fill);
        let simd = kernels.simd();
        let chunk = |ci: usize| {
            let tokens = ci * per_chunk..(ci * per_chunk + per_chunk).min(n);
            ROW.with(|cell| {
                // Taken out of the cell so the row is a plain `&mut` for the SIMD entry points.
                let mut row = cell.take();
                if row.len() < cols {
                    row.resize(cols, 0.0);
                }
                quantize_tokens(simd, fill, out, geometry, tokens, &mut row[..cols]);
                cell.replace(row);
            });
        };
        let n_chunks = n.div_ceil(per_chunk);
        match pool {
            Some(pool) => pool.parallel_for(n_chunks, chunk),
            None => (0..n_chunks).for_each(chunk),
        }
    }

    /// Number of tokens.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Columns (elements per token).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes between consecutive tokens' rows in the int8 buffer.
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// Token `t`'s int8 values (`cols` of them).
    pub fn q(&self, t: usize) -> &[i8] {
        let row = &self.q.as_slice()[t * self.stride..][..self.cols];
        // SAFETY: i8 and u8 have the same layout.
        unsafe { std::slice::from_raw_parts(row.as_ptr().cast::<i8>(), row.len()) }
    }

    /// Token `t`'s scale `s = 127 / amax` (the quantized value is `x · s`).
    pub fn scale(&self, t: usize) -> f32 {
        self.scale[t]
    }

    /// Token `t`'s `Σ q`.
    pub fn sum(&self, t: usize) -> i32 {
        self.sum[t]
    }

    /// Token `t`'s `Σ q` over each 256-element block (the last one may be partial).
    pub fn block_sums(&self, t: usize) -> &[i32] {
        &self.block_sums[t * self.blocks..(t + 1) * self.blocks]
    }

    /// The activations in the layout `build` makes from them, built once per quantization (the
    /// first caller builds it while concurrent ones wait).
    #[cfg(target_arch = "aarch64")]
    pub(crate) fn token_pairs(&self, build: impl FnOnce(&QuantActs) -> AlignedBuf) -> &AlignedBuf {
        self.pairs.get_or_init(|| build(self))
    }

    /// Pointer to token `t`'s row (64-byte aligned, zero padded to `stride`).
    pub(crate) fn q_ptr(&self, t: usize) -> *const u8 {
        debug_assert!(t < self.n);
        // SAFETY: t < n, so the offset stays inside the buffer.
        unsafe { self.q.as_ptr().add(t * self.stride) }
    }
}

/// Tokens per parallel chunk of [`QuantActs::quantize_rows`]: a 128-token prefill makes 32
/// chunks, enough to balance two to eight threads.
const QUANT_TOKENS_PER_CHUNK: usize = 4;

/// Raw views of a [`QuantActs`]'s buffers, shared by the chunks of one `quantize_rows` call
/// (each writes only its own tokens' slots).
struct RowsOut {
    q: *mut u8,
    scale: *mut f32,
    sum: *mut i32,
    block_sums: *mut i32,
}
// SAFETY: see `quantize_rows`: chunks write disjoint slots, and the call outlives them.
unsafe impl Sync for RowsOut {}

#[derive(Clone, Copy)]
struct RowsGeometry {
    cols: usize,
    stride: usize,
    blocks: usize,
}

thread_local! {
    /// Each thread's f32 row for `quantize_rows` (grown to the widest row seen, then reused:
    /// a fresh zeroed row per chunk was ~1% of a prefill).
    static ROW: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Fills and quantizes `tokens` with the code generation `simd` (the selected kernel
/// variant's): the per-token pass (the fused norm or activation, the max, the rounding, the
/// block sums) is most of a prefill's work outside the matrix products, and the crate itself is
/// compiled for the architecture's baseline. `fill` is inlined into the entry point, so it gets
/// the same code generation. Every entry point computes the same bits: the operations are exact
/// or element-wise IEEE, and the f64 sum of `rms_norm` keeps its lane order at every width.
fn quantize_tokens<F: Fn(usize, &mut [f32])>(
    simd: Simd,
    fill: &F,
    out: &RowsOut,
    g: RowsGeometry,
    tokens: std::ops::Range<usize>,
    row: &mut [f32],
) {
    match simd {
        // SAFETY: `simd` comes from a selected `Kernels` (`quantize_rows` takes the variant, not
        // a `Simd`), whose CPU check implies AVX-512F/BW.
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 => unsafe { quantize_tokens_avx512(fill, out, g, tokens, row) },
        // SAFETY: as above, for AVX2.
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => unsafe { quantize_tokens_avx2(fill, out, g, tokens, row) },
        Simd::Baseline => quantize_tokens_body(fill, out, g, tokens, row),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn quantize_tokens_avx512<F: Fn(usize, &mut [f32])>(
    fill: &F,
    out: &RowsOut,
    g: RowsGeometry,
    tokens: std::ops::Range<usize>,
    row: &mut [f32],
) {
    quantize_tokens_body(fill, out, g, tokens, row)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantize_tokens_avx2<F: Fn(usize, &mut [f32])>(
    fill: &F,
    out: &RowsOut,
    g: RowsGeometry,
    tokens: std::ops::Range<usize>,
    row: &mut [f32],
) {
    quantize_tokens_body(fill, out, g, tokens, row)
}

#[inline(always)]
fn quantize_tokens_body<F: Fn(usize, &mut [f32])>(
    fill: &F,
    out: &RowsOut,
    g: RowsGeometry,
    tokens: std::ops::Range<usize>,
    row: &mut [f32],
) {
    let RowsGeometry {
        cols,
        stride,
        blocks,
    } = g;
    for t in tokens {
        fill(t, row);
        // SAFETY: token t's slots (its q row, scale, sum and block sums) are written by this
        // call only, and the buffers were sized for n tokens by `quantize_rows`.
        let (qt, scale, sum, bsums) = unsafe {
            (
                std::slice::from_raw_parts_mut(out.q.add(t * stride), stride),
                &mut *out.scale.add(t),
                &mut *out.sum.add(t),
                std::slice::from_raw_parts_mut(out.block_sums.add(t * blocks), blocks),
            )
        };
        (*scale, *sum) = quantize_row(row, &mut qt[..cols]);
        qt[cols..].fill(0);
        for (bs, b) in bsums.iter_mut().zip(qt[..cols].chunks(QuantActs::BLOCK)) {
            *bs = b.iter().map(|&v| i32::from(v as i8)).sum();
        }
    }
}

/// The bits of `max |x|` over the non-NaN values of `x` (0 if there are none). For
/// non-negative floats the order of the bit patterns is the order of the values, so this is an
/// integer max: one-cycle, in 32 independent lanes, where `f32::max`'s NaN handling made the
/// loop one compare-and-blend chain (a third of the fused norm-and-quantize pass).
#[inline(always)]
fn abs_max_bits(x: &[f32]) -> u32 {
    #[inline(always)]
    fn abs_bits(v: f32) -> u32 {
        let a = v.to_bits() & 0x7fff_ffff;
        // Above the infinity pattern are the NaNs.
        if a > 0x7f80_0000 { 0 } else { a }
    }
    let mut lanes = [0u32; 32];
    let chunks = x.chunks_exact(32);
    let tail = chunks
        .remainder()
        .iter()
        .fold(0, |m, &v| m.max(abs_bits(v)));
    for c in chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l = (*l).max(abs_bits(v));
        }
    }
    lanes.iter().fold(tail, |m, &l| m.max(l))
}

/// Quantizes one token: returns `(s, Σq)`.
#[inline(always)]
fn quantize_row(x: &[f32], q: &mut [u8]) -> (f32, i32) {
    // max |x| in f32 is exact; comparing in f64 from 1e-5 upward gives the same maximum as
    // bitnet.cpp's double loop. NaNs are skipped (as f32::max skips them).
    let m = f32::from_bits(abs_max_bits(x));
    let amax = f64::max(1e-5, f64::from(m));
    let s = (127.0 / amax) as f32;
    let mut sum = 0i32;
    for (o, &v) in q.iter_mut().zip(x) {
        // NaN (inf · 0 when amax is inf) quantizes to 0.
        let r = quantize_value(v * s, -128.0, 127.0);
        sum += r;
        *o = r as i8 as u8;
    }
    (s, sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The token-parallel path writes exactly what the sequential baseline one does, for every
    /// token, with every variant's code generation (AVX-512, AVX2, baseline), including odd
    /// widths (partial last block) and token counts that leave a short chunk.
    #[test]
    fn quantize_rows_on_a_pool_equals_the_sequential_path() {
        let pool = ThreadPool::new(3);
        for (n, cols) in [(1, 64), (7, 300), (13, 2560)] {
            let x: Vec<f32> = (0..n * cols)
                .map(|i| ((i * 2654435761usize) % 2001) as f32 / 1000.0 - 1.0)
                .collect();
            let seq = QuantActs::quantize(&x, cols);
            for k in Kernels::available() {
                let mut par = QuantActs::new();
                par.quantize_rows(k, Some(&pool), n, cols, |t, row| {
                    row.copy_from_slice(&x[t * cols..(t + 1) * cols]);
                });
                assert_eq!((par.n(), par.cols(), par.stride()), (n, cols, seq.stride()));
                for t in 0..n {
                    let at = format!("{} ({:?}), token {t}", k.name, k.simd());
                    assert_eq!(par.q(t), seq.q(t), "{at}");
                    assert_eq!(par.scale(t), seq.scale(t), "{at}");
                    assert_eq!(par.sum(t), seq.sum(t), "{at}");
                    assert_eq!(par.block_sums(t), seq.block_sums(t), "{at}");
                }
            }
        }
    }
}
