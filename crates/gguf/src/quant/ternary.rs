//! The ternary weight formats — I2_S, TQ2_0, TQ1_0 — as one codec each: block geometry, pack and
//! unpack, element by element, as plain scalar code (docs/formats.md#i2_s, docs/formats.md#tq2_0,
//! docs/formats.md#tq1_0).
//!
//! This module is the one *specification* of the formats: [`TernaryFormat`] owns the block
//! sizes (the GGUF size rules in `crate::types` and the kernels' constants are derived
//! from it), the bit layout ([`code`], [`encode_row`]) and the whole-tensor codec
//! ([`TernaryFormat::pack`], [`TernaryFormat::unpack`]) that the GGUF writer (`crate::writer`, used by `bitnet-synth`)
//! and the dequantizer use. The scalar reference kernel decodes rows with it, the SIMD kernels
//! are tested against it, and tests build random matrices with it.
//!
//! A *code* is the stored ternary digit: 0, 1 or 2, meaning −1, 0, +1 (value = code − 1).
//! I2_S and TQ2_0 can also store the bit pattern 3, which no quantizer writes; every kernel
//! treats it as the integer 3 (value +2), like bitnet.cpp's SIMD kernels do, and so does
//! [`TernaryFormat::unpack`], so every path agrees on such input.
//!
//! A tensor is `rows × cols` with rows contiguous (ggml `[ne0 = cols, ne1 = rows]`); rows are
//! whole blocks, so a tensor's bytes are its rows' bytes back to back (plus, for I2_S, a 32-byte
//! trailer holding the f32 tensor scale).
//!
//! What this module does NOT do: read GGUF files, locate tensors or multiply matrices.

use half::f16;
use std::fmt;

/// On-disk packing of a ternary matrix (one GGUF tensor type each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TernaryFormat {
    /// bitnet.cpp's I2_S (GGUF type 36): 2-bit codes, 128-element blocks of 32 bytes, one f32
    /// scale per tensor in a 32-byte trailer.
    I2S,
    /// ggml's TQ2_0 (type 35): 2-bit codes, 256-element blocks of 64 code bytes + fp16 scale.
    Tq2_0,
    /// ggml's TQ1_0 (type 34): base-3 packed trits, 256-element blocks of 48 + 4 bytes + fp16
    /// scale.
    Tq1_0,
}

impl TernaryFormat {
    /// All formats.
    pub const ALL: [TernaryFormat; 3] = [
        TernaryFormat::I2S,
        TernaryFormat::Tq2_0,
        TernaryFormat::Tq1_0,
    ];

    /// Elements per block (a row length must be a multiple of it).
    pub const fn block_elems(self) -> usize {
        match self {
            TernaryFormat::I2S => 128,
            TernaryFormat::Tq2_0 | TernaryFormat::Tq1_0 => 256,
        }
    }

    /// Bytes per block, its scale included for the TQ formats.
    pub(crate) const fn block_bytes(self) -> usize {
        match self {
            TernaryFormat::I2S => 32,
            // qs[64], d
            TernaryFormat::Tq2_0 => 64 + 2,
            // qs[48], qh[4], d
            TernaryFormat::Tq1_0 => 48 + 4 + 2,
        }
    }

    /// Offset of the fp16 block scale inside a block (`None` for I2_S, scaled per tensor).
    pub(crate) const fn scale_offset(self) -> Option<usize> {
        match self {
            TernaryFormat::I2S => None,
            // The fp16 `d` closes the block.
            TernaryFormat::Tq2_0 | TernaryFormat::Tq1_0 => Some(self.block_bytes() - 2),
        }
    }

    /// Bytes one row of `cols` elements takes (for I2_S without the tensor's trailer).
    pub const fn row_bytes(self, cols: usize) -> usize {
        cols / self.block_elems() * self.block_bytes()
    }

    /// Bytes a whole tensor of `n` elements takes: its rows, plus [`I2S_TRAILER`] for I2_S.
    pub const fn tensor_bytes(self, n: usize) -> usize {
        match self {
            TernaryFormat::I2S => self.row_bytes(n) + I2S_TRAILER,
            _ => self.row_bytes(n),
        }
    }

    /// Scales a tensor of `n` elements carries: 1 for I2_S, one per block for TQ.
    pub const fn scale_count(self, n: usize) -> usize {
        match self {
            TernaryFormat::I2S => 1,
            _ => n / self.block_elems(),
        }
    }

    /// The GGUF/ggml type name.
    pub fn name(self) -> &'static str {
        match self {
            TernaryFormat::I2S => "I2_S",
            TernaryFormat::Tq2_0 => "TQ2_0",
            TernaryFormat::Tq1_0 => "TQ1_0",
        }
    }

    /// Packs a whole tensor of values in −1..=1 (`values.len()` a multiple of the block size)
    /// into its GGUF bytes. `scales` has [`TernaryFormat::scale_count`] entries: the f32 tensor
    /// scale for I2_S (written to the trailer), or each block's scale for TQ (stored as fp16).
    ///
    /// # Panics
    /// If the length is not a whole number of blocks, `scales` has the wrong length, or a
    /// value is outside −1..=1.
    pub fn pack(self, values: &[i8], scales: &[f32]) -> Vec<u8> {
        let n = values.len();
        assert!(
            n.is_multiple_of(self.block_elems()),
            "{self} needs a multiple of {} elements",
            self.block_elems()
        );
        assert_eq!(scales.len(), self.scale_count(n), "{self}: scale count");
        let codes: Vec<u8> = values
            .iter()
            .map(|&v| {
                assert!((-1..=1).contains(&v), "ternary value out of range: {v}");
                (v + 1) as u8
            })
            .collect();
        if n == 0 {
            return if self == TernaryFormat::I2S {
                trailer(scales[0]).to_vec()
            } else {
                Vec::new()
            };
        }
        match self {
            TernaryFormat::I2S => {
                let mut out = encode_row(self, &codes, &[]);
                out.extend_from_slice(&trailer(scales[0]));
                out
            }
            _ => {
                let d: Vec<f16> = scales.iter().map(|&s| f16::from_f32(s)).collect();
                encode_row(self, &codes, &d)
            }
        }
    }

    /// Unpacks the `n` values of a tensor's GGUF bytes and its scales (the inverse of
    /// [`TernaryFormat::pack`]); a stored code 3 unpacks to +2 (see the module docs).
    ///
    /// # Panics
    /// If `data` is shorter than [`TernaryFormat::tensor_bytes`] or `n` is not a whole number of
    /// blocks.
    pub fn unpack(self, data: &[u8], n: usize) -> (Vec<i8>, Vec<f32>) {
        assert!(
            n.is_multiple_of(self.block_elems()),
            "{self} needs a multiple of {} elements",
            self.block_elems()
        );
        let body = &data[..self.row_bytes(n)];
        let mut codes = vec![0u8; n];
        decode_row(self, body, &mut codes);
        let values = codes.iter().map(|&c| c as i8 - 1).collect();
        let scales = match self {
            TernaryFormat::I2S => {
                let t = &data[body.len()..][..4];
                vec![f32::from_le_bytes(t.try_into().expect("4 bytes"))]
            }
            _ => (0..self.scale_count(n))
                .map(|b| block_scale(self, body, b).map_or(0.0, f16::to_f32))
                .collect(),
        };
        (values, scales)
    }
}

impl fmt::Display for TernaryFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Bytes after an I2_S tensor's codes: the f32 scale, little-endian, then 28 bytes of padding.
pub const I2S_TRAILER: usize = 32;
/// Elements per I2_S block.
pub const I2S_BLOCK: usize = TernaryFormat::I2S.block_elems();
/// Elements per TQ block (TQ2_0 and TQ1_0).
pub const TQ_BLOCK: usize = TernaryFormat::Tq2_0.block_elems();
/// Bytes per TQ2_0 block.
pub const TQ2_BLOCK_BYTES: usize = TernaryFormat::Tq2_0.block_bytes();
/// Bytes per TQ1_0 block.
pub const TQ1_BLOCK_BYTES: usize = TernaryFormat::Tq1_0.block_bytes();
/// Offset of the fp16 scale in a TQ2_0 block.
pub const TQ2_SCALE: usize = TQ2_BLOCK_BYTES - 2;
/// Offset of the fp16 scale in a TQ1_0 block.
pub const TQ1_SCALE: usize = TQ1_BLOCK_BYTES - 2;

const _: () = assert!(TernaryFormat::Tq1_0.block_elems() == TQ_BLOCK);

fn trailer(scale: f32) -> [u8; I2S_TRAILER] {
    let mut t = [0u8; I2S_TRAILER];
    t[..4].copy_from_slice(&scale.to_le_bytes());
    t
}

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
pub(crate) fn tq2_code(row: &[u8], c: usize) -> u8 {
    let block = &row[(c / TQ_BLOCK) * TQ2_BLOCK_BYTES..][..TQ2_BLOCK_BYTES];
    let e = c % TQ_BLOCK;
    let j = e / 128;
    let l = (e % 128) / 32;
    let m = e % 32;
    (block[32 * j + m] >> (2 * l)) & 3
}

/// Trit `n` (0..=4, 0 = most significant) of a TQ1_0 byte: `((b · 3ⁿ mod 256) · 3) >> 8`.
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
    let p = b * format.block_bytes() + format.scale_offset()?;
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
/// The layout is the inverse of [`code`].
///
/// # Panics
/// If `codes.len()` is not a positive multiple of the block size, a TQ1_0 code exceeds 2, or
/// `scales` is shorter than the number of blocks.
pub fn encode_row(format: TernaryFormat, codes: &[u8], scales: &[f16]) -> Vec<u8> {
    let cols = codes.len();
    assert!(
        cols > 0 && cols.is_multiple_of(format.block_elems()),
        "encode_row: {format} needs a positive multiple of {} columns, got {cols}",
        format.block_elems()
    );
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-computed bytes (docs/formats.md#i2_s-codes): element 0 = +1 (code 2) in the top bit
    /// pair of byte 0; element 32 = -1 (code 0); element 64 = 0 (code 1); element 96 = +1 (code 2):
    /// byte 0 = 10 00 01 10 = 0x86. Elements 1..31 and 33.. are 0 (code 1 in every pair: 0x55).
    #[test]
    fn i2s_hand_computed() {
        let mut v = vec![0i8; 128];
        v[0] = 1;
        v[32] = -1;
        v[64] = 0;
        v[96] = 1;
        v[127] = -1; // byte 31, group 3 (lowest pair): 01 01 01 00 = 0x54
        let bytes = TernaryFormat::I2S.pack(&v, &[0.5]);
        assert_eq!(bytes.len(), 64);
        assert_eq!(bytes[0], 0x86);
        assert_eq!(bytes[1], 0x55);
        assert_eq!(bytes[31], 0x54);
        assert_eq!(&bytes[32..36], &0.5f32.to_le_bytes());
        assert_eq!(&bytes[36..], &[0; 28]);
        assert_eq!(TernaryFormat::I2S.unpack(&bytes, 128), (v, vec![0.5]));
    }

    /// docs/formats.md#tq2_0: TQ2_0 puts group 0 in the low bits. Element 0 = +1,
    /// element 32 = -1, element 64 = 0, element 96 = +1 → byte 0 = 10 01 00 10 = 0x92;
    /// element 128 (second half) = -1 → qs[32] low pair 00: 01 01 01 00 = 0x54; d = 2.0 as fp16
    /// = 0x4000.
    #[test]
    fn tq2_0_hand_computed() {
        let mut v = vec![0i8; 256];
        v[0] = 1;
        v[32] = -1;
        v[96] = 1;
        v[128] = -1;
        let bytes = TernaryFormat::Tq2_0.pack(&v, &[2.0]);
        assert_eq!(bytes.len(), 66);
        assert_eq!(bytes[0], 0x92);
        assert_eq!(bytes[1], 0x55);
        assert_eq!(bytes[32], 0x54);
        assert_eq!(&bytes[64..66], &[0x00, 0x40]);
        assert_eq!(TernaryFormat::Tq2_0.unpack(&bytes, 256), (v, vec![2.0]));
    }

    /// docs/formats.md#tq1_0: base-3 packing. qs[0] holds elements 0, 32, 64, 96, 128 with
    /// element 0 most significant. Values +1, -1, 0, 0, +1 → trits 2,0,1,1,2
    /// → q = 2·81 + 0·27 + 1·9 + 1·3 + 2 = 176 → byte ceil(176·256/243) = ceil(185.41) = 186.
    /// All-zero trits (1,1,1,1,1) → q = 121 → ceil(121·256/243) = 128. qh[0] holds 240, 244,
    /// 248, 252: values -1,0,0,+1 → trits 0,1,1,2 → q = 0·27+1·9+1·3+2 = 14, ×3 = 42
    /// → ceil(42·256/243) = ceil(44.25) = 45.
    #[test]
    fn tq1_0_hand_computed() {
        let mut v = vec![0i8; 256];
        v[0] = 1;
        v[32] = -1;
        v[128] = 1;
        v[240] = -1;
        v[252] = 1;
        let bytes = TernaryFormat::Tq1_0.pack(&v, &[0.25]);
        assert_eq!(bytes.len(), 54);
        assert_eq!(bytes[0], 186);
        assert_eq!(bytes[1], 128);
        assert_eq!(bytes[32], 128);
        assert_eq!(bytes[48], 45);
        assert_eq!(bytes[49], ((40u16 * 3 * 256).div_ceil(243)) as u8); // 1,1,1,1 → 40
        assert_eq!(&bytes[52..54], &half::f16::from_f32(0.25).to_le_bytes());
        // Trit extraction as docs/formats.md#tq1_0 states it: ((uint8)(b·3^n)·3) >> 8.
        assert_eq!(
            (0..5).map(|n| tq1_trit(186, n)).collect::<Vec<_>>(),
            [2, 0, 1, 1, 2]
        );
        assert_eq!(TernaryFormat::Tq1_0.unpack(&bytes, 256), (v, vec![0.25]));
    }

    #[test]
    fn all_trit_combinations_round_trip() {
        // Every 5-trit pattern in every qs position class, and every 4-trit qh pattern.
        let mut vals = Vec::new();
        for p in 0..243u32 {
            let mut blk = vec![0i8; 256];
            let t = |k: u32| ((p / 3u32.pow(k)) % 3) as i8 - 1;
            for n in 0..5 {
                blk[n * 32] = t(n as u32);
                blk[160 + 5 + 16 * n] = t(4 - n as u32);
            }
            for n in 0..4 {
                blk[241 + 4 * n] = t(n as u32);
            }
            vals.extend(blk);
        }
        for f in TernaryFormat::ALL {
            let n = vals.len();
            let scales: Vec<f32> = (0..f.scale_count(n)).map(|i| i as f32 * 0.5).collect();
            let bytes = f.pack(&vals, &scales);
            assert_eq!(bytes.len(), f.tensor_bytes(n), "{f}");
            assert_eq!(f.unpack(&bytes, n), (vals.clone(), scales), "{f}");
        }
    }

    /// The constants the kernels use are the codec's geometry.
    #[test]
    fn block_geometry() {
        assert_eq!((I2S_BLOCK, TernaryFormat::I2S.block_bytes()), (128, 32));
        assert_eq!((TQ_BLOCK, TQ2_BLOCK_BYTES, TQ1_BLOCK_BYTES), (256, 66, 54));
        assert_eq!(TernaryFormat::Tq2_0.scale_offset(), Some(64));
        assert_eq!(TernaryFormat::Tq1_0.scale_offset(), Some(52));
        assert_eq!((TQ2_SCALE, TQ1_SCALE), (64, 52));
        assert_eq!(TernaryFormat::I2S.tensor_bytes(2560 * 2560), 1_638_432);
    }
}
