//! The model's weight matrices and their products with activations.
//!
//! Ternary matrices keep their on-disk packing (borrowed from the mapped file) and are
//! multiplied W1.58A8-style: each token's activations are quantized to int8 by absmax
//! (reference §2.2), the integer dot products are taken against the ternary codes, and the
//! result is rescaled by the activation and weight scales (§2.3).

use crate::gguf::{GgmlType, GgufFile, TensorInfo};
use half::f16;

/// A ternary weight matrix `[rows × cols]` in a GGUF file.
#[derive(Debug, Clone)]
pub struct TernaryTensor {
    pub name: String,
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    /// Absolute byte range of the packed codes (without the I2_S trailer).
    pub start: usize,
    pub len: usize,
    /// Per-tensor scale (I2_S); 1.0 for the TQ formats, whose block scales are inline.
    pub scale: f32,
}

impl TernaryTensor {
    pub fn new(file: &GgufFile, t: &TensorInfo) -> TernaryTensor {
        let (cols, rows) = (
            t.dims[0] as usize,
            t.dims.get(1).copied().unwrap_or(1) as usize,
        );
        let start = (file.data_offset() + t.offset) as usize;
        let (len, scale) = match t.ty {
            GgmlType::I2S => {
                let n = rows * cols / 4;
                let s = &file.bytes()[start + n..start + n + 4];
                (n, f32::from_le_bytes(s.try_into().expect("4 bytes")))
            }
            _ => (t.size as usize, 1.0),
        };
        TernaryTensor {
            name: t.name.clone(),
            ty: t.ty,
            rows,
            cols,
            start,
            len,
            scale,
        }
    }

    /// Bytes of one packed row.
    pub fn row_bytes(&self) -> usize {
        match self.ty {
            GgmlType::I2S => self.cols / 4,
            GgmlType::Tq2_0 => self.cols / 256 * 66,
            _ => self.cols / 256 * 54,
        }
    }
}

/// Per-token int8 activations: `q`, the scale `s = 127 / amax` and `Σq` (reference §2.2).
pub struct QuantRow {
    pub q: Vec<i8>,
    pub scale: f32,
}

/// Quantizes one token's activations exactly as bitnet.cpp's `quantize_row_i8_s`.
pub fn quantize_row(x: &[f32]) -> QuantRow {
    let amax = x.iter().fold(1e-5f64, |m, &v| m.max((v as f64).abs()));
    let scale = (127.0 / amax) as f32;
    let q = x
        .iter()
        .map(|&v| (v * scale).round_ties_even().clamp(-128.0, 127.0) as i8)
        .collect();
    QuantRow { q, scale }
}

/// `y[t·rows + r] = Σ_j W[r, j] · x[t·cols + j]` for `n` tokens, with W1.58A8 numerics.
pub fn ternary_matmul(file: &GgufFile, w: &TernaryTensor, x: &[f32], n: usize, y: &mut [f32]) {
    let data = &file.bytes()[w.start..w.start + w.len];
    let rb = w.row_bytes();
    let mut codes = vec![0i8; w.cols];
    let mut block_scales = vec![0f32; w.cols / 128];
    let acts: Vec<QuantRow> = x.chunks(w.cols).take(n).map(quantize_row).collect();
    for r in 0..w.rows {
        let row = &data[r * rb..(r + 1) * rb];
        unpack_row(w.ty, row, &mut codes, &mut block_scales);
        for (t, a) in acts.iter().enumerate() {
            y[t * w.rows + r] = match w.ty {
                GgmlType::I2S => {
                    let acc: i32 = codes
                        .iter()
                        .zip(&a.q)
                        .map(|(&c, &q)| c as i32 * q as i32)
                        .sum();
                    acc as f32 / a.scale * w.scale
                }
                _ => {
                    let mut sum = 0f32;
                    for (b, (cb, qb)) in codes.chunks(256).zip(a.q.chunks(256)).enumerate() {
                        let acc: i32 = cb.iter().zip(qb).map(|(&c, &q)| c as i32 * q as i32).sum();
                        sum += block_scales[b] * acc as f32;
                    }
                    sum / a.scale
                }
            };
        }
    }
}

/// Unpacks one row's values (-1/0/+1) and, for TQ formats, its per-256 block scales.
fn unpack_row(ty: GgmlType, row: &[u8], out: &mut [i8], scales: &mut [f32]) {
    use crate::quant::ternary;
    let n = out.len();
    match ty {
        GgmlType::I2S => {
            for (e, o) in out.iter_mut().enumerate() {
                let (b, p) = (e / 128, e % 128);
                let code = (row[32 * b + p % 32] >> (6 - 2 * (p / 32))) & 3;
                *o = code as i8 - 1;
            }
        }
        GgmlType::Tq2_0 => {
            let (v, s) = ternary::decode_tq2_0(row, n);
            out.copy_from_slice(&v);
            scales[..s.len()].copy_from_slice(&s);
        }
        _ => {
            let (v, s) = ternary::decode_tq1_0(row, n);
            out.copy_from_slice(&v);
            scales[..s.len()].copy_from_slice(&s);
        }
    }
}

/// `y[t·rows + r] = Σ_j E[r, j] · x[t·cols + j]` for an f16 matrix (the tied output head).
pub fn f16_matmul(e: &[f16], rows: usize, cols: usize, x: &[f32], n: usize, y: &mut [f32]) {
    let mut row = vec![0f32; cols];
    for r in 0..rows {
        use half::slice::HalfFloatSliceExt;
        e[r * cols..(r + 1) * cols].convert_to_f32_slice(&mut row);
        for t in 0..n {
            let xt = &x[t * cols..(t + 1) * cols];
            y[t * rows + r] = row.iter().zip(xt).map(|(a, b)| a * b).sum();
        }
    }
}
