//! The scalar reference kernels: the definition every SIMD variant must reproduce.
//!
//! Written for obviousness, not speed: decode a row into codes with [`bitnet_gguf::quant::ternary`], take
//! integer dot products, apply the epilogue of the module docs. Also the production path on CPUs
//! with no SIMD variant.

use half::f16;

use super::q8::Q8_BLOCK;
use super::{Out, Q8Acts, Q8Matrix, QuantActs, TernaryFormat, TernaryView};
use bitnet_gguf::quant::ternary::{self as codec, TQ_BLOCK};

/// I2_S epilogue: `((acc as f32) − (Σq as f32)) / s · scale`.
#[inline(always)]
pub(crate) fn i2s_epilogue(acc: i32, sum: i32, s: f32, scale: f32) -> f32 {
    (acc as f32 - sum as f32) / s * scale
}

/// One step of the TQ epilogue: `f + d · ((acc_b − Σq_b) as f32)`; after all blocks, `f / s`.
#[inline(always)]
pub(crate) fn tq_block_step(f: f32, d: f32, acc: i32, bsum: i32) -> f32 {
    f + d * (acc - bsum) as f32
}

fn ternary(w: &TernaryView<'_>, a: &QuantActs, r0: usize, r1: usize, out: Out) {
    let mut codes = vec![0u8; w.cols];
    for r in r0..r1 {
        let row = w.row(r);
        codec::decode_row(w.format, row, &mut codes);
        for t in 0..a.n() {
            let q = a.q(t);
            let y = match w.format {
                TernaryFormat::I2S => {
                    let acc: i32 = codes
                        .iter()
                        .zip(q)
                        .map(|(&c, &v)| i32::from(c) * i32::from(v))
                        .sum();
                    i2s_epilogue(acc, a.sum(t), a.scale(t), w.scale)
                }
                TernaryFormat::Tq2_0 | TernaryFormat::Tq1_0 => {
                    let mut f = 0f32;
                    for (b, (cb, qb)) in codes.chunks(TQ_BLOCK).zip(q.chunks(TQ_BLOCK)).enumerate()
                    {
                        let acc: i32 = cb
                            .iter()
                            .zip(qb)
                            .map(|(&c, &v)| i32::from(c) * i32::from(v))
                            .sum();
                        let d = codec::block_scale(w.format, row, b).map_or(0.0, f16::to_f32);
                        f = tq_block_step(f, d, acc, a.block_sums(t)[b]);
                    }
                    f / a.scale(t)
                }
            };
            // SAFETY: the caller checked that (t, r) is inside y.
            unsafe { *out.ptr.add(t * out.stride + r) = y };
        }
    }
}

pub(crate) unsafe fn i2s(w: &TernaryView<'_>, a: &QuantActs, r0: usize, r1: usize, out: Out) {
    ternary(w, a, r0, r1, out)
}
pub(crate) unsafe fn tq2(w: &TernaryView<'_>, a: &QuantActs, r0: usize, r1: usize, out: Out) {
    ternary(w, a, r0, r1, out)
}
pub(crate) unsafe fn tq1(w: &TernaryView<'_>, a: &QuantActs, r0: usize, r1: usize, out: Out) {
    ternary(w, a, r0, r1, out)
}

/// `y = Σ_j f32(w_j) · x_j`, accumulated left to right in f32.
pub(crate) unsafe fn f16(w: *const u16, cols: usize, x: &[f32], r0: usize, r1: usize, out: Out) {
    let n = x.len() / cols;
    for r in r0..r1 {
        // SAFETY: the caller checked w holds rows × cols values.
        let row = unsafe { std::slice::from_raw_parts(w.add(r * cols), cols) };
        for t in 0..n {
            let xt = &x[t * cols..(t + 1) * cols];
            let mut acc = 0f32;
            for (&h, &v) in row.iter().zip(xt) {
                acc += f16::from_bits(h).to_f32() * v;
            }
            // SAFETY: the caller checked that (t, r) is inside y.
            unsafe { *out.ptr.add(t * out.stride + r) = acc };
        }
    }
}

/// `y = Σ_b (d_w,b · d_x,b) · (Σ_{j∈b} q_w,j · q_x,j)`, blocks left to right.
pub(crate) unsafe fn q8(w: &Q8Matrix, a: &Q8Acts, r0: usize, r1: usize, out: Out) {
    for r in r0..r1 {
        let (qw, dw) = (w.row_q(r), w.row_d(r));
        for t in 0..a.n() {
            let (qx, dx) = (a.q(t), a.d(t));
            let mut acc = 0f32;
            for (b, (wb, xb)) in qw.chunks(Q8_BLOCK).zip(qx.chunks(Q8_BLOCK)).enumerate() {
                let dot: i32 = wb
                    .iter()
                    .zip(xb)
                    .map(|(&p, &v)| i32::from(p) * i32::from(v))
                    .sum();
                acc += (dw[b].to_f32() * dx[b]) * dot as f32;
            }
            // SAFETY: the caller checked that (t, r) is inside y.
            unsafe { *out.ptr.add(t * out.stride + r) = acc };
        }
    }
}
