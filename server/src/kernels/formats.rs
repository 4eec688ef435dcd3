//! The three ternary weight packings, element by element, as plain scalar code.
//!
//! This module is the *specification* the SIMD kernels are tested against: every function here
//! decodes or encodes one element or one row in the most direct way the format description
//! allows (`docs/formats.md#i2_s`, `docs/formats.md#tq2_0`, `docs/formats.md#tq1_0`; code 3:
//! `docs/formats.md#code-3`). It is used by the scalar reference kernel, by the row decoders of
//! the GEMM path on CPUs without a faster decoder, and by the tests (random matrices are built
//! with the encoders below).
//!
//! A *code* is the stored ternary digit: 0, 1 or 2, meaning −1, 0, +1. I2_S and TQ2_0 can also
//! store the bit pattern 3, which no quantizer writes; every kernel treats it as the integer 3
//! (value +2), like bitnet.cpp's SIMD kernels do, so all variants still agree on such input.
//!
//! What this module does NOT do: read GGUF files, locate tensors or read the I2_S trailer — that is
//! the GGUF reader's job ([`super::TernaryView::from_i2s_tensor`] only splits off the scale).

use half::f16;

use super::TernaryFormat;

/// Bytes per 256-element TQ2_0 block: 64 bytes of 2-bit codes + fp16 scale.
pub const TQ2_BLOCK_BYTES: usize = 66;
/// Bytes per 256-element TQ1_0 block: 48 bytes of 5-trit groups, 4 bytes of 4-trit groups, fp16 scale.
pub const TQ1_BLOCK_BYTES: usize = 54;
/// Elements per TQ block.
pub const TQ_BLOCK: usize = 256;
/// Elements per I2_S block (32 bytes).
pub const I2S_BLOCK: usize = 128;

/// Code (0..=3) of column `c` of one I2_S row.
///
/// Blocks of 128 elements occupy 32 bytes; byte `32·b + m` holds, from the most significant bit
/// pair down, elements `128b + m`, `128b + 32 + m`, `128b + 64 + m`, `128b + 96 + m`.
#[inline]
pub fn i2s_code(row: &[u8], c: usize) -> u8 {
    let b = c / 128;
    let p = c % 128;
    let g = p / 32;
    let m = p % 32;
    (row[32 * b + m] >> (6 - 2 * g)) & 3
}

/// Code (0..=3) of column `c` of one TQ2_0 row.
///
/// Per 256-element block (66 bytes): element `128j + 32l + m` is bit pair `l` (least significant
/// first) of `qs[32j + m]`; the fp16 scale follows the 64 code bytes.
#[inline]
pub fn tq2_code(row: &[u8], c: usize) -> u8 {
    let block = &row[(c / TQ_BLOCK) * TQ2_BLOCK_BYTES..][..TQ2_BLOCK_BYTES];
    let e = c % TQ_BLOCK;
    let j = e / 128;
    let l = (e % 128) / 32;
    let m = e % 32;
    (block[32 * j + m] >> (2 * l)) & 3
}

/// Trit `n` (0..=4) of a TQ1_0 byte: `((b · 3ⁿ mod 256) · 3) >> 8`.
#[inline]
pub fn tq1_trit(byte: u8, n: usize) -> u8 {
    const POW3: [u8; 5] = [1, 3, 9, 27, 81];
    let t = byte.wrapping_mul(POW3[n]);
    ((u16::from(t) * 3) >> 8) as u8
}

/// Code (0..=2) of column `c` of one TQ1_0 row.
///
/// Per 256-element block (54 bytes): `qs[0..32)` hold elements `32n + m` (trit n, n = 0..5),
/// `qs[32..48)` hold elements `160 + 16n + m`, `qh[0..4)` hold elements `240 + 4n + j`
/// (trit n of `qh[j]`, n = 0..4); the fp16 scale follows.
#[inline]
pub fn tq1_code(row: &[u8], c: usize) -> u8 {
    let block = &row[(c / TQ_BLOCK) * TQ1_BLOCK_BYTES..][..TQ1_BLOCK_BYTES];
    let e = c % TQ_BLOCK;
    if e < 160 {
        tq1_trit(block[e % 32], e / 32)
    } else if e < 240 {
        let e = e - 160;
        tq1_trit(block[32 + e % 16], e / 16)
    } else {
        let e = e - 240;
        tq1_trit(block[48 + e % 4], e / 4)
    }
}

/// Code of column `c` of a row in `format`.
#[inline]
pub fn code(format: TernaryFormat, row: &[u8], c: usize) -> u8 {
    match format {
        TernaryFormat::I2S => i2s_code(row, c),
        TernaryFormat::Tq2_0 => tq2_code(row, c),
        TernaryFormat::Tq1_0 => tq1_code(row, c),
    }
}

/// The fp16 scale of 256-element block `b` of a TQ row (`None` for I2_S, whose scale is per tensor).
#[inline]
pub fn block_scale(format: TernaryFormat, row: &[u8], b: usize) -> Option<f16> {
    let (stride, at) = match format {
        TernaryFormat::I2S => return None,
        TernaryFormat::Tq2_0 => (TQ2_BLOCK_BYTES, 64),
        TernaryFormat::Tq1_0 => (TQ1_BLOCK_BYTES, 52),
    };
    let p = b * stride + at;
    Some(f16::from_bits(u16::from_le_bytes([row[p], row[p + 1]])))
}

/// Decodes a whole row into one code per column (`out.len() == cols`).
pub fn decode_row(format: TernaryFormat, row: &[u8], out: &mut [u8]) {
    for (c, o) in out.iter_mut().enumerate() {
        *o = code(format, row, c);
    }
}

/// Dequantizes a row: `(code − 1) · scale` (per-tensor `scale` for I2_S, block scale for TQ).
pub fn dequantize_row(format: TernaryFormat, row: &[u8], scale: f32, out: &mut [f32]) {
    for (c, o) in out.iter_mut().enumerate() {
        let s = block_scale(format, row, c / TQ_BLOCK).map_or(scale, f16::to_f32);
        *o = (f32::from(code(format, row, c)) - 1.0) * s;
    }
}

/// Packs one row of codes (0..=3 for I2_S/TQ2_0, 0..=2 for TQ1_0) into `format`.
/// `scales` gives the fp16 scale of every 256-element block (ignored for I2_S).
/// Used by tests and benchmarks to build matrices; the layout is the inverse of [`code`].
///
/// # Panics
/// If `codes.len()` is not a valid column count for `format`, a TQ1_0 code exceeds 2, or
/// `scales` is shorter than the number of blocks.
pub fn encode_row(format: TernaryFormat, codes: &[u8], scales: &[f16]) -> Vec<u8> {
    let cols = codes.len();
    format
        .check_cols(cols)
        .expect("encode_row: bad column count");
    let mut out = vec![0u8; format.row_bytes(cols)];
    match format {
        TernaryFormat::I2S => {
            for (c, &v) in codes.iter().enumerate() {
                let (b, p) = (c / 128, c % 128);
                out[32 * b + p % 32] |= (v & 3) << (6 - 2 * (p / 32));
            }
        }
        TernaryFormat::Tq2_0 => {
            for (blk, chunk) in codes.chunks(TQ_BLOCK).enumerate() {
                let o = &mut out[blk * TQ2_BLOCK_BYTES..][..TQ2_BLOCK_BYTES];
                for (e, &v) in chunk.iter().enumerate() {
                    let (j, l, m) = (e / 128, (e % 128) / 32, e % 32);
                    o[32 * j + m] |= (v & 3) << (2 * l);
                }
                o[64..66].copy_from_slice(&scales[blk].to_bits().to_le_bytes());
            }
        }
        TernaryFormat::Tq1_0 => {
            for (blk, chunk) in codes.chunks(TQ_BLOCK).enumerate() {
                assert!(chunk.iter().all(|&v| v <= 2), "TQ1_0 codes must be 0..=2");
                let o = &mut out[blk * TQ1_BLOCK_BYTES..][..TQ1_BLOCK_BYTES];
                // Base-3 digits, first element most significant, then mapped onto a byte with
                // ceil(q · 256 / 243) so that the trit extraction above recovers them.
                let pack = |digits: &mut dyn Iterator<Item = u8>, extra_shift: bool| -> u8 {
                    let mut q: u16 = 0;
                    for d in digits {
                        q = q * 3 + u16::from(d);
                    }
                    if extra_shift {
                        q *= 3;
                    }
                    (q * 256).div_ceil(243) as u8
                };
                for m in 0..32 {
                    o[m] = pack(&mut (0..5).map(|n| chunk[32 * n + m]), false);
                }
                for m in 0..16 {
                    o[32 + m] = pack(&mut (0..5).map(|n| chunk[160 + 16 * n + m]), false);
                }
                for j in 0..4 {
                    o[48 + j] = pack(&mut (0..4).map(|n| chunk[240 + 4 * n + j]), true);
                }
                o[52..54].copy_from_slice(&scales[blk].to_bits().to_le_bytes());
            }
        }
    }
    out
}
