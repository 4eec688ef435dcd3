//! Ternary weight packings (docs/formats.md#i2_s, docs/formats.md#tq2_0, docs/formats.md#tq1_0).
//!
//! Values are `-1, 0, +1`; codes on disk are `value + 1`. A tensor is `rows × cols` with rows
//! contiguous (ggml `[ne0 = cols, ne1 = rows]`).

use half::f16;

/// I2_S: 2-bit codes in 128-element blocks of 32 bytes; byte `32b + m` holds elements
/// `128b + m`, `+32`, `+64`, `+96` from the most significant bit pair down; then the f32 tensor
/// scale and 28 bytes of padding (`n/4 + 32` bytes in all).
pub fn encode_i2s(values: &[i8], scale: f32) -> Vec<u8> {
    assert!(
        values.len().is_multiple_of(128),
        "I2_S needs a multiple of 128 elements"
    );
    let n = values.len();
    let mut out = vec![0u8; n / 4 + 32];
    for (e, &v) in values.iter().enumerate() {
        let (b, p) = (e / 128, e % 128);
        let (g, m) = (p / 32, p % 32);
        out[32 * b + m] |= code(v) << (6 - 2 * g);
    }
    out[n / 4..n / 4 + 4].copy_from_slice(&scale.to_le_bytes());
    out
}

/// Unpacks `n` I2_S values and the tensor scale.
pub fn decode_i2s(data: &[u8], n: usize) -> (Vec<i8>, f32) {
    let mut values = Vec::with_capacity(n);
    for e in 0..n {
        let (b, p) = (e / 128, e % 128);
        let (g, m) = (p / 32, p % 32);
        values.push(value((data[32 * b + m] >> (6 - 2 * g)) & 3));
    }
    let scale = f32::from_le_bytes(data[n / 4..n / 4 + 4].try_into().expect("4 bytes"));
    (values, scale)
}

/// Bytes of one TQ2_0 block (256 elements): `qs[64]` then the fp16 scale.
pub const TQ2_0_BLOCK: usize = 66;
/// Bytes of one TQ1_0 block (256 elements): `qs[48]`, `qh[4]`, then the fp16 scale.
pub const TQ1_0_BLOCK: usize = 54;

/// TQ2_0: per 256 elements, two 128-element halves `j`; element `128j + 32l + m` sits in
/// `qs[32j + m]` at bits `2l` (least significant first); then `d` as fp16.
/// `scales` holds one scale per block.
pub fn encode_tq2_0(values: &[i8], scales: &[f32]) -> Vec<u8> {
    assert!(
        values.len().is_multiple_of(256),
        "TQ2_0 needs a multiple of 256 elements"
    );
    assert_eq!(scales.len(), values.len() / 256);
    let mut out = Vec::with_capacity(values.len() / 256 * TQ2_0_BLOCK);
    for (blk, &d) in values.chunks(256).zip(scales) {
        let mut qs = [0u8; 64];
        for (e, &v) in blk.iter().enumerate() {
            let (j, l, m) = (e / 128, (e % 128) / 32, e % 32);
            qs[32 * j + m] |= code(v) << (2 * l);
        }
        out.extend_from_slice(&qs);
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
    }
    out
}

/// Unpacks TQ2_0 into values and one f32 scale per block.
pub fn decode_tq2_0(data: &[u8], n: usize) -> (Vec<i8>, Vec<f32>) {
    let mut values = Vec::with_capacity(n);
    let mut scales = Vec::with_capacity(n / 256);
    for blk in data.chunks(TQ2_0_BLOCK).take(n / 256) {
        for e in 0..256 {
            let (j, l, m) = (e / 128, (e % 128) / 32, e % 32);
            values.push(value((blk[32 * j + m] >> (2 * l)) & 3));
        }
        scales.push(f16::from_le_bytes([blk[64], blk[65]]).to_f32());
    }
    (values, scales)
}

/// TQ1_0: per 256 elements, base-3 packing, first trit most significant, each byte mapped
/// to `ceil(q·256/243)`. `qs[m]` (m < 32) holds elements `m + 32n` (n = 0..5); `qs[32 + m]`
/// (m < 16) holds `160 + m + 16n`; `qh[j]` holds `240 + j + 4n` (n = 0..4, shifted up one trit).
pub fn encode_tq1_0(values: &[i8], scales: &[f32]) -> Vec<u8> {
    assert!(
        values.len().is_multiple_of(256),
        "TQ1_0 needs a multiple of 256 elements"
    );
    assert_eq!(scales.len(), values.len() / 256);
    let pack = |trits: &mut dyn Iterator<Item = u8>, extra_shift: bool| -> u8 {
        let mut q: u16 = trits.fold(0, |q, t| q * 3 + t as u16);
        if extra_shift {
            q *= 3;
        }
        ((q * 256).div_ceil(243)) as u8
    };
    let mut out = Vec::with_capacity(values.len() / 256 * TQ1_0_BLOCK);
    for (blk, &d) in values.chunks(256).zip(scales) {
        let c = |e: usize| code(blk[e]);
        for m in 0..32 {
            out.push(pack(&mut (0..5).map(|n| c(m + 32 * n)), false));
        }
        for m in 0..16 {
            out.push(pack(&mut (0..5).map(|n| c(160 + m + 16 * n)), false));
        }
        for j in 0..4 {
            out.push(pack(&mut (0..4).map(|n| c(240 + j + 4 * n)), true));
        }
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
    }
    out
}

/// Trit `n` (0 = most significant) of a TQ1_0 byte.
pub fn tq1_trit(byte: u8, n: u32) -> u8 {
    let q = byte.wrapping_mul(3u8.pow(n));
    ((q as u16 * 3) >> 8) as u8
}

/// Unpacks TQ1_0 into values and one f32 scale per block.
pub fn decode_tq1_0(data: &[u8], n: usize) -> (Vec<i8>, Vec<f32>) {
    let mut values = vec![0i8; n];
    let mut scales = Vec::with_capacity(n / 256);
    for (bi, blk) in data.chunks(TQ1_0_BLOCK).take(n / 256).enumerate() {
        let out = &mut values[bi * 256..][..256];
        for m in 0..32 {
            for t in 0..5 {
                out[m + 32 * t] = value(tq1_trit(blk[m], t as u32));
            }
        }
        for m in 0..16 {
            for t in 0..5 {
                out[160 + m + 16 * t] = value(tq1_trit(blk[32 + m], t as u32));
            }
        }
        for j in 0..4 {
            for t in 0..4 {
                out[240 + j + 4 * t] = value(tq1_trit(blk[48 + j], t as u32));
            }
        }
        scales.push(f16::from_le_bytes([blk[52], blk[53]]).to_f32());
    }
    (values, scales)
}

fn code(v: i8) -> u8 {
    debug_assert!((-1..=1).contains(&v), "ternary value out of range: {v}");
    (v + 1) as u8
}

fn value(code: u8) -> i8 {
    // Code 3 is never written; the fork's dequantizer maps it to 0.
    [-1, 0, 1, 0][code as usize]
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
        let bytes = encode_i2s(&v, 0.5);
        assert_eq!(bytes.len(), 64);
        assert_eq!(bytes[0], 0x86);
        assert_eq!(bytes[1], 0x55);
        assert_eq!(bytes[31], 0x54);
        assert_eq!(&bytes[32..36], &0.5f32.to_le_bytes());
        assert_eq!(decode_i2s(&bytes, 128), (v, 0.5));
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
        let bytes = encode_tq2_0(&v, &[2.0]);
        assert_eq!(bytes.len(), 66);
        assert_eq!(bytes[0], 0x92);
        assert_eq!(bytes[1], 0x55);
        assert_eq!(bytes[32], 0x54);
        assert_eq!(&bytes[64..66], &[0x00, 0x40]);
        assert_eq!(decode_tq2_0(&bytes, 256), (v, vec![2.0]));
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
        let bytes = encode_tq1_0(&v, &[0.25]);
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
        assert_eq!(decode_tq1_0(&bytes, 256), (v, vec![0.25]));
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
        let scales = vec![1.0; vals.len() / 256];
        assert_eq!(
            decode_tq1_0(&encode_tq1_0(&vals, &scales), vals.len()).0,
            vals
        );
        assert_eq!(
            decode_tq2_0(&encode_tq2_0(&vals, &scales), vals.len()).0,
            vals
        );
        let (v, s) = decode_i2s(&encode_i2s(&vals, 3.0), vals.len());
        assert_eq!((v, s), (vals, 3.0));
    }
}
