//! The opt-in quantized output head: Q8_0-style rows (blocks of 32 int8 with an fp16 scale)
//! built from the F16 embedding at load, and per-block int8 activations.
//!
//! Weights: for each 32-element block, `d = amax / 127` (stored as fp16), `q = rne(w / d)` clamped
//! to ±127 (ggml's Q8_0 rule, except ties round to even). Activations: the same per block with an
//! f32 scale. The head is then `y = Σ_b d_w,b · d_x,b · Σ_{j∈b} q_w,j · q_x,j`, which halves the
//! bytes the head reads per token (1.0625 instead of 2 per weight). Its error against the F16
//! head is measured by the tests and the `kernel_bench` example (`--head-error`).
//!
//! What it does NOT do: decide whether the head is quantized (the CLI's `--head` does), or
//! quantize anything but f16 input.

use half::f16;

use super::acts::{AlignedBuf, quantize_value};
use super::{KernelError, ThreadPool};

/// Elements per Q8 block.
pub const Q8_BLOCK: usize = 32;

/// A `rows × cols` matrix in Q8 blocks: `cols` int8 per row (64-byte aligned rows) and
/// `cols / 32` fp16 scales per row.
pub struct Q8Matrix {
    rows: usize,
    cols: usize,
    qs: AlignedBuf,
    d: Vec<f16>,
}

impl Q8Matrix {
    /// Quantizes a row-major f16 matrix, rows split over `pool`.
    pub fn from_f16(
        pool: &ThreadPool,
        w: &[f16],
        rows: usize,
        cols: usize,
    ) -> Result<Q8Matrix, KernelError> {
        let what = || "Q8 head".to_string();
        if rows == 0 || cols == 0 || !cols.is_multiple_of(Q8_BLOCK) {
            return Err(KernelError::BadShape {
                what: what(),
                rows,
                cols,
                why: "rows must be > 0 and the row length a non-zero multiple of 32",
            });
        }
        let need = rows
            .checked_mul(cols)
            .ok_or_else(|| KernelError::BadShape {
                what: what(),
                rows,
                cols,
                why: "its size overflows",
            })?;
        if w.len() != need {
            return Err(KernelError::BadLength {
                what: what(),
                rows,
                cols,
                need,
                got: w.len(),
            });
        }
        let mut qs = AlignedBuf::zeroed(need);
        let mut d = vec![f16::ZERO; need / Q8_BLOCK];
        let chunk = 256usize;
        let qp = qs.as_mut_ptr() as usize;
        let dp = d.as_mut_ptr() as usize;
        pool.parallel_for(rows.div_ceil(chunk), |c| {
            let r0 = c * chunk;
            let r1 = (r0 + chunk).min(rows);
            // SAFETY: chunks cover disjoint rows of both buffers, which outlive the region.
            let (q, dd) = unsafe {
                (
                    std::slice::from_raw_parts_mut(
                        (qp as *mut i8).add(r0 * cols),
                        (r1 - r0) * cols,
                    ),
                    std::slice::from_raw_parts_mut(
                        (dp as *mut f16).add(r0 * cols / Q8_BLOCK),
                        (r1 - r0) * cols / Q8_BLOCK,
                    ),
                )
            };
            let src = &w[r0 * cols..r1 * cols];
            let mut tmp = [0f32; Q8_BLOCK];
            for ((blk, qb), db) in src
                .chunks_exact(Q8_BLOCK)
                .zip(q.chunks_exact_mut(Q8_BLOCK))
                .zip(dd)
            {
                for (t, v) in tmp.iter_mut().zip(blk) {
                    *t = v.to_f32();
                }
                *db = f16::from_f32(quantize_block(&tmp, qb));
            }
        });
        Ok(Q8Matrix { rows, cols, qs, d })
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes held (int8 values + scales).
    pub fn bytes(&self) -> usize {
        self.rows * self.cols + self.d.len() * 2
    }

    /// Row `r`'s int8 values.
    pub fn row_q(&self, r: usize) -> &[i8] {
        let s = &self.qs.as_slice()[r * self.cols..(r + 1) * self.cols];
        // SAFETY: same layout.
        unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<i8>(), s.len()) }
    }

    /// Row `r`'s block scales.
    pub fn row_d(&self, r: usize) -> &[f16] {
        let nb = self.cols / Q8_BLOCK;
        &self.d[r * nb..(r + 1) * nb]
    }

    pub(crate) fn q_ptr(&self, r: usize) -> *const u8 {
        // SAFETY: callers pass r < rows.
        unsafe { self.qs.as_ptr().add(r * self.cols) }
    }
}

/// Quantizes 32 values to int8 in `q`; returns the scale `d = amax / 127` (0 for an all-zero
/// block, whose values are then all 0).
fn quantize_block(x: &[f32], q: &mut [i8]) -> f32 {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d > 0.0 { 1.0 / d } else { 0.0 };
    for (o, &v) in q.iter_mut().zip(x) {
        *o = quantize_value(v * id, -127.0, 127.0) as i8;
    }
    d
}

/// n tokens quantized to Q8 blocks of 32 (f32 scale per block) for [`Q8Matrix`] products.
pub struct Q8Acts {
    n: usize,
    cols: usize,
    q: AlignedBuf,
    d: Vec<f32>,
}

impl Q8Acts {
    /// Quantizes `x` (n × cols).
    ///
    /// # Panics
    /// If `cols` is not a non-zero multiple of 32 or `x.len()` not a multiple of `cols`.
    pub fn quantize(x: &[f32], cols: usize) -> Q8Acts {
        assert!(
            cols > 0 && cols.is_multiple_of(Q8_BLOCK),
            "Q8Acts: cols must be a multiple of 32"
        );
        assert!(
            x.len().is_multiple_of(cols),
            "Q8Acts: x is not a whole number of rows"
        );
        let n = x.len() / cols;
        let mut q = AlignedBuf::zeroed(n * cols);
        let mut d = Vec::with_capacity(n * cols / Q8_BLOCK);
        // SAFETY: same layout.
        let qs = unsafe { std::slice::from_raw_parts_mut(q.as_mut_ptr().cast::<i8>(), n * cols) };
        for (xb, qb) in x.chunks_exact(Q8_BLOCK).zip(qs.chunks_exact_mut(Q8_BLOCK)) {
            d.push(quantize_block(xb, qb));
        }
        Q8Acts { n, cols, q, d }
    }

    /// Tokens.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Token `t`'s int8 values.
    pub fn q(&self, t: usize) -> &[i8] {
        let s = &self.q.as_slice()[t * self.cols..(t + 1) * self.cols];
        // SAFETY: same layout.
        unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<i8>(), s.len()) }
    }

    /// Token `t`'s block scales.
    pub fn d(&self, t: usize) -> &[f32] {
        let nb = self.cols / Q8_BLOCK;
        &self.d[t * nb..(t + 1) * nb]
    }

    pub(crate) fn q_ptr(&self, t: usize) -> *const u8 {
        // SAFETY: callers pass t < n.
        unsafe { self.q.as_ptr().add(t * self.cols) }
    }
}
