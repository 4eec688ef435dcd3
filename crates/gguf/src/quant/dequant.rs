//! Any supported tensor type to f32, row by row.

use crate::GgmlType;
use half::{bf16, f16};

/// Dequantizes `n` elements of a tensor stored as `ty` (`n` must be a whole number of rows).
pub fn dequantize(ty: GgmlType, data: &[u8], n: usize) -> Vec<f32> {
    let mut out = vec![0.0; n];
    dequantize_row_into(ty, data, &mut out);
    out
}

/// Dequantizes `out.len()` elements from the start of `data` (block-aligned).
///
/// For ternary types this is value × scale, the weight the model multiplies by.
pub fn dequantize_row_into(ty: GgmlType, data: &[u8], out: &mut [f32]) {
    let n = out.len();
    match ty {
        GgmlType::F32 => {
            for (o, c) in out.iter_mut().zip(data.chunks_exact(4)) {
                *o = f32::from_le_bytes(c.try_into().expect("4 bytes"));
            }
        }
        GgmlType::F16 => {
            for (o, c) in out.iter_mut().zip(data.chunks_exact(2)) {
                *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        GgmlType::BF16 => {
            for (o, c) in out.iter_mut().zip(data.chunks_exact(2)) {
                *o = bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        GgmlType::Q8_0 => {
            for (o, blk) in out.chunks_mut(32).zip(data.chunks_exact(34)) {
                let d = f16::from_le_bytes([blk[0], blk[1]]).to_f32();
                for (x, &q) in o.iter_mut().zip(&blk[2..]) {
                    *x = d * (q as i8) as f32;
                }
            }
        }
        GgmlType::Q6K => {
            for (o, blk) in out.chunks_mut(256).zip(data.chunks_exact(210)) {
                dequant_q6k_block(blk, o);
            }
        }
        GgmlType::I2S | GgmlType::Tq2_0 | GgmlType::Tq1_0 => {
            let f = ty.ternary_format().expect("a ternary type");
            let (v, s) = f.unpack(data, n);
            let per_scale = if s.len() == 1 {
                n.max(1)
            } else {
                f.block_elems()
            };
            for (i, (o, v)) in out.iter_mut().zip(v).enumerate() {
                *o = f32::from(v) * s[i / per_scale];
            }
        }
    }
}

/// Q6_K block layout: `ql[128]` (low 4 bits), `qh[64]` (high 2 bits), `scales[16]` (i8, one
/// per 16 elements), `d` (fp16). Each 128-element half uses 64 ql, 32 qh and 8 scales.
fn dequant_q6k_block(blk: &[u8], out: &mut [f32]) {
    let d = f16::from_le_bytes([blk[208], blk[209]]).to_f32();
    for half in 0..2 {
        let ql = &blk[64 * half..];
        let qh = &blk[128 + 32 * half..];
        let sc = &blk[192 + 8 * half..];
        let y = &mut out[128 * half..];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            y[l] = d * (sc[is] as i8) as f32 * q1 as f32;
            y[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
            y[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
            y[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
        }
    }
}

/// Quantizes f32 rows to Q8_0 (one fp16 scale per 32 values): for the quantized head and tests.
pub fn quantize_q8_0(x: &[f32]) -> Vec<u8> {
    assert!(x.len().is_multiple_of(32));
    let mut out = Vec::with_capacity(x.len() / 32 * 34);
    for blk in x.chunks(32) {
        let amax = blk.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        out.extend(
            blk.iter()
                .map(|v| (v * id).round().clamp(-127.0, 127.0) as i8 as u8),
        );
    }
    out
}

/// Quantizes f32 rows to Q6_K (a simple absmax quantizer; enough to produce valid files).
pub fn quantize_q6k(x: &[f32]) -> Vec<u8> {
    assert!(x.len().is_multiple_of(256));
    let mut out = Vec::with_capacity(x.len() / 256 * 210);
    for blk in x.chunks(256) {
        let group_scale: Vec<f32> = blk
            .chunks(16)
            .map(|g| g.iter().fold(0f32, |m, v| m.max(v.abs())) / 31.0)
            .collect();
        let max_scale = group_scale.iter().fold(0f32, |m, &s| m.max(s));
        let d = max_scale / 127.0;
        let d16 = f16::from_f32(d);
        let d = d16.to_f32();
        let sc: Vec<i8> = group_scale
            .iter()
            .map(|&s| {
                if d > 0.0 {
                    (s / d).round().clamp(-128.0, 127.0) as i8
                } else {
                    0
                }
            })
            .collect();
        let mut q = [0u8; 256];
        for (i, v) in blk.iter().enumerate() {
            let s = d * sc[i / 16] as f32;
            let qi = if s != 0.0 {
                (v / s).round().clamp(-32.0, 31.0) as i32
            } else {
                0
            };
            q[i] = (qi + 32) as u8;
        }
        let mut ql = [0u8; 128];
        let mut qh = [0u8; 64];
        for half in 0..2 {
            let q = &q[128 * half..];
            for l in 0..32 {
                let (q1, q2, q3, q4) = (q[l], q[l + 32], q[l + 64], q[l + 96]);
                ql[64 * half + l] = (q1 & 0xF) | ((q3 & 0xF) << 4);
                ql[64 * half + l + 32] = (q2 & 0xF) | ((q4 & 0xF) << 4);
                qh[32 * half + l] =
                    (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
            }
        }
        out.extend_from_slice(&ql);
        out.extend_from_slice(&qh);
        out.extend(sc.iter().map(|&s| s as u8));
        out.extend_from_slice(&d16.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_hand_computed() {
        let mut blk = vec![0u8; 34];
        blk[..2].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
        blk[2] = 4;
        blk[3] = (-6i8) as u8;
        blk[33] = 127;
        let y = dequantize(GgmlType::Q8_0, &blk, 32);
        assert_eq!((y[0], y[1], y[2], y[31]), (2.0, -3.0, 0.0, 63.5));
    }

    /// One Q6_K block by hand: d = 1, scales[0] = 2 (elements 0..16), element 0 has ql low
    /// nibble 5 and qh bits 0..2 = 2 → q = 5 | 2<<4 = 37 → 37 - 32 = 5 → 2·5 = 10.
    /// Element 64 reads ql[0]'s high nibble (3) and qh[0] bits 4..6 (1): q = 3 | 16 = 19 → -13,
    /// scale scales[4] = -1 → 13.
    #[test]
    fn q6k_hand_computed() {
        let mut blk = vec![0u8; 210];
        blk[0] = 0x35;
        blk[128] = 0b0001_0010;
        blk[192] = 2;
        blk[196] = (-1i8) as u8;
        blk[208..210].copy_from_slice(&f16::from_f32(1.0).to_le_bytes());
        let y = dequantize(GgmlType::Q6K, &blk, 256);
        assert_eq!(y[0], 10.0);
        assert_eq!(y[64], 13.0);
        assert_eq!(y[1], 2.0 * -32.0); // ql 0, qh 0 → q = -32
    }

    #[test]
    fn quantizers_round_trip_closely() {
        let x: Vec<f32> = (0..512)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0)
            .collect();
        for (ty, bytes, tol) in [
            (GgmlType::Q8_0, quantize_q8_0(&x), 0.02),
            (GgmlType::Q6K, quantize_q6k(&x), 0.1),
        ] {
            let y = dequantize(ty, &bytes, x.len());
            for (a, b) in x.iter().zip(&y) {
                assert!((a - b).abs() <= tol, "{ty}: {a} vs {b}");
            }
        }
    }
}
