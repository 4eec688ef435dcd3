//! x86-64 variants: `v2` (SSSE3/SSE4.1, `pmaddubsw`), `v3` (AVX2+FMA+F16C, `vpmaddubsw`),
//! `v3vnni` (v3 + AVX-VNNI `vpdpbusd`), `v4` (AVX-512 F/BW/VL + VNNI `vpdpbusd` on 512 bits).
//!
//! Each variant implements the [`Isa`] vocabulary; the kernels themselves live in
//! [`super::generic`]. `pmaddubsw` saturates int16 pair sums, which cannot happen here: codes are
//! ≤ 3 (|pair| ≤ 768) and the Q8 operands are ≤ 127 in magnitude (|pair| ≤ 32258).
//!
//! What it does NOT do: use AVX-512 without VNNI (Skylake-SP runs `v3`), or AMX.

#![allow(clippy::missing_safety_doc)]

use std::arch::x86_64::*;

use super::generic::{Isa, isa_entries};
use super::{Kernels, TernaryFn};

// ---------------------------------------------------------------------------------------------
// TQ1_0 trit extraction, shared by the 256- and 128-bit variants.
//
// Trit n of byte b is ((b·3ⁿ mod 256) · 3) >> 8. x86 has no byte multiply, so even and odd bytes
// are handled in 16-bit lanes: for the even (low) byte, (v · (m << 8)) mod 2¹⁶ = t·256 and
// mulhi_epu16(t·256, 3) = (3t) >> 8; for the odd (high) byte, ((v & 0xFF00) · m) mod 2¹⁶ = t·256
// and mulhi_epu16(t·256, 768) = 3t, whose high byte is (3t) >> 8.

/// Per-byte multipliers of the eight 32-column units of a TQ1_0 block (see `quant::ternary::tq1_code`):
/// units 0–4 are trits 0–4 of qs[0..32]; unit 5 is trits 0|1 of qs[32..48]; unit 6 trits 2|3;
/// unit 7 is trit 4 of qs[32..48] then trit ⌊k/4⌋ of qh[k mod 4].
const UNIT5: [u8; 32] = concat16([1; 16], [3; 16]);
const UNIT6: [u8; 32] = concat16([9; 16], [27; 16]);
const UNIT7: [u8; 32] = concat16(
    [81; 16],
    [1, 1, 1, 1, 3, 3, 3, 3, 9, 9, 9, 9, 27, 27, 27, 27],
);
const POW3: [u8; 5] = [1, 3, 9, 27, 81];

const fn concat16(a: [u8; 16], b: [u8; 16]) -> [u8; 32] {
    let mut o = [0u8; 32];
    let mut i = 0;
    while i < 16 {
        o[i] = a[i];
        o[16 + i] = b[i];
        i += 1;
    }
    o
}

/// 16-bit lane constants for `trit*`: (even multiplier << 8, odd multiplier).
const fn split_mults<const N: usize, const H: usize>(m: &[u8; N]) -> ([u16; H], [u16; H]) {
    let mut e = [0u16; H];
    let mut o = [0u16; H];
    let mut k = 0;
    while k < H {
        e[k] = (m[2 * k] as u16) << 8;
        o[k] = m[2 * k + 1] as u16;
        k += 1;
    }
    (e, o)
}

const U5: ([u16; 16], [u16; 16]) = split_mults::<32, 16>(&UNIT5);
const U6: ([u16; 16], [u16; 16]) = split_mults::<32, 16>(&UNIT6);
const U7: ([u16; 16], [u16; 16]) = split_mults::<32, 16>(&UNIT7);
const QH_LO: ([u16; 8], [u16; 8]) = {
    let m = [1, 1, 1, 1, 3, 3, 3, 3, 9, 9, 9, 9, 27, 27, 27, 27];
    split_mults::<16, 8>(&m)
};

#[inline(always)]
unsafe fn trit256(v: __m256i, ce: __m256i, co: __m256i) -> __m256i {
    unsafe {
        let hi = _mm256_set1_epi16(0xFF00u16 as i16);
        let even = _mm256_mulhi_epu16(_mm256_mullo_epi16(v, ce), _mm256_set1_epi16(3));
        let odd = _mm256_mulhi_epu16(
            _mm256_mullo_epi16(_mm256_and_si256(v, hi), co),
            _mm256_set1_epi16(768),
        );
        _mm256_or_si256(even, _mm256_and_si256(odd, hi))
    }
}

#[inline(always)]
unsafe fn trit256_uniform(v: __m256i, m: u8) -> __m256i {
    unsafe {
        trit256(
            v,
            _mm256_set1_epi16((u16::from(m) << 8) as i16),
            _mm256_set1_epi16(i16::from(m)),
        )
    }
}

#[inline(always)]
unsafe fn trit256_mults(v: __m256i, m: &([u16; 16], [u16; 16])) -> __m256i {
    unsafe {
        trit256(
            v,
            _mm256_loadu_si256(m.0.as_ptr().cast()),
            _mm256_loadu_si256(m.1.as_ptr().cast()),
        )
    }
}

/// One TQ1_0 block → 256 codes with 256-bit vectors.
#[inline(always)]
unsafe fn tq1_block_avx2(src: *const u8, dst: *mut u8) {
    unsafe {
        let a = _mm256_loadu_si256(src.cast());
        for (n, &m) in POW3.iter().enumerate() {
            _mm256_storeu_si256(dst.add(32 * n).cast(), trit256_uniform(a, m));
        }
        let lo = _mm_loadu_si128(src.add(32).cast());
        let qh = _mm_set1_epi32(src.add(48).cast::<i32>().read_unaligned());
        let b = _mm256_set_m128i(lo, lo);
        _mm256_storeu_si256(dst.add(160).cast(), trit256_mults(b, &U5));
        _mm256_storeu_si256(dst.add(192).cast(), trit256_mults(b, &U6));
        _mm256_storeu_si256(
            dst.add(224).cast(),
            trit256_mults(_mm256_set_m128i(qh, lo), &U7),
        );
    }
}

#[inline(always)]
unsafe fn trit512(v: __m512i, ce: __m512i, co: __m512i) -> __m512i {
    unsafe {
        let hi = _mm512_set1_epi16(0xFF00u16 as i16);
        let even = _mm512_mulhi_epu16(_mm512_mullo_epi16(v, ce), _mm512_set1_epi16(3));
        let odd = _mm512_mulhi_epu16(
            _mm512_mullo_epi16(_mm512_and_si512(v, hi), co),
            _mm512_set1_epi16(768),
        );
        _mm512_or_si512(even, _mm512_and_si512(odd, hi))
    }
}

/// Both 32-byte halves use the same 16-bit lane constants `m`.
#[inline(always)]
unsafe fn trit512_mults(v: __m512i, m: &([u16; 16], [u16; 16])) -> __m512i {
    unsafe {
        let e = _mm256_loadu_si256(m.0.as_ptr().cast());
        let o = _mm256_loadu_si256(m.1.as_ptr().cast());
        trit512(v, _mm512_broadcast_i64x4(e), _mm512_broadcast_i64x4(o))
    }
}

#[inline(always)]
unsafe fn pair512(lo: __m256i, hi: __m256i) -> __m512i {
    unsafe { _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi) }
}

#[inline(always)]
unsafe fn store_halves(da: *mut u8, db: *mut u8, v: __m512i) {
    unsafe {
        _mm256_storeu_si256(da.cast(), _mm512_castsi512_si256(v));
        _mm256_storeu_si256(db.cast(), _mm512_extracti64x4_epi64::<1>(v));
    }
}

/// Two TQ1_0 blocks (two rows) → 2 × 256 codes: each 512-bit vector holds a unit of both rows.
/// (No closures here: they would not inherit the caller's target features.)
#[inline(always)]
unsafe fn tq1_block2_avx512(a: *const u8, b: *const u8, da: *mut u8, db: *mut u8) {
    unsafe {
        let q = pair512(_mm256_loadu_si256(a.cast()), _mm256_loadu_si256(b.cast()));
        for (n, &m) in POW3.iter().enumerate() {
            let ce = _mm512_set1_epi16((u16::from(m) << 8) as i16);
            let t = trit512(q, ce, _mm512_set1_epi16(i16::from(m)));
            store_halves(da.add(32 * n), db.add(32 * n), t);
        }
        let (la, lb) = (
            _mm_loadu_si128(a.add(32).cast()),
            _mm_loadu_si128(b.add(32).cast()),
        );
        let qa = _mm_set1_epi32(a.add(48).cast::<i32>().read_unaligned());
        let qb = _mm_set1_epi32(b.add(48).cast::<i32>().read_unaligned());
        let lo2 = pair512(_mm256_set_m128i(la, la), _mm256_set_m128i(lb, lb));
        store_halves(da.add(160), db.add(160), trit512_mults(lo2, &U5));
        store_halves(da.add(192), db.add(192), trit512_mults(lo2, &U6));
        let c = pair512(_mm256_set_m128i(qa, la), _mm256_set_m128i(qb, lb));
        store_halves(da.add(224), db.add(224), trit512_mults(c, &U7));
    }
}

#[inline(always)]
unsafe fn trit128(v: __m128i, ce: __m128i, co: __m128i) -> __m128i {
    unsafe {
        let hi = _mm_set1_epi16(0xFF00u16 as i16);
        let even = _mm_mulhi_epu16(_mm_mullo_epi16(v, ce), _mm_set1_epi16(3));
        let odd = _mm_mulhi_epu16(
            _mm_mullo_epi16(_mm_and_si128(v, hi), co),
            _mm_set1_epi16(768),
        );
        _mm_or_si128(even, _mm_and_si128(odd, hi))
    }
}

#[inline(always)]
unsafe fn trit128_uniform(v: __m128i, m: u8) -> __m128i {
    unsafe {
        trit128(
            v,
            _mm_set1_epi16((u16::from(m) << 8) as i16),
            _mm_set1_epi16(i16::from(m)),
        )
    }
}

/// One TQ1_0 block → 256 codes with 128-bit vectors.
#[inline(always)]
unsafe fn tq1_block_sse(src: *const u8, dst: *mut u8) {
    unsafe {
        let a0 = _mm_loadu_si128(src.cast());
        let a1 = _mm_loadu_si128(src.add(16).cast());
        for (n, &m) in POW3.iter().enumerate() {
            _mm_storeu_si128(dst.add(32 * n).cast(), trit128_uniform(a0, m));
            _mm_storeu_si128(dst.add(32 * n + 16).cast(), trit128_uniform(a1, m));
        }
        let lo = _mm_loadu_si128(src.add(32).cast());
        for (k, &m) in POW3.iter().enumerate() {
            _mm_storeu_si128(dst.add(160 + 16 * k).cast(), trit128_uniform(lo, m));
        }
        let qh = _mm_set1_epi32(src.add(48).cast::<i32>().read_unaligned());
        let t = trit128(
            qh,
            _mm_loadu_si128(QH_LO.0.as_ptr().cast()),
            _mm_loadu_si128(QH_LO.1.as_ptr().cast()),
        );
        _mm_storeu_si128(dst.add(240).cast(), t);
    }
}

// ---------------------------------------------------------------------------------------------
// v4: AVX-512BW + VNNI, 64-byte vectors.

pub(crate) struct Avx512;

impl Isa for Avx512 {
    const W: usize = 64;
    const GEMV_TOKENS: usize = 4;
    const SPLIT_IN_MICRO: bool = true;
    type V = __m512i;
    type A = __m512i;
    type F = __m512;

    #[inline(always)]
    unsafe fn prefetch(p: *const u8) {
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) }
    }
    #[inline(always)]
    unsafe fn vzero() -> __m512i {
        unsafe { _mm512_setzero_si512() }
    }
    #[inline(always)]
    unsafe fn load(p: *const u8) -> __m512i {
        unsafe { _mm512_loadu_si512(p.cast()) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut u8, v: __m512i) {
        unsafe { _mm512_storeu_si512(p.cast(), v) }
    }
    #[inline(always)]
    unsafe fn codes<const SH: i32>(v: __m512i) -> __m512i {
        unsafe {
            let s = match SH {
                0 => v,
                2 => _mm512_srli_epi16::<2>(v),
                4 => _mm512_srli_epi16::<4>(v),
                _ => _mm512_srli_epi16::<6>(v),
            };
            _mm512_and_si512(s, _mm512_set1_epi8(3))
        }
    }
    #[inline(always)]
    unsafe fn bcast4(p: *const u8) -> __m512i {
        unsafe { _mm512_set1_epi32(p.cast::<i32>().read_unaligned()) }
    }
    #[inline(always)]
    unsafe fn load_pair(lo: *const u8, hi: *const u8) -> __m512i {
        unsafe {
            _mm512_inserti64x4::<1>(
                _mm512_castsi256_si512(_mm256_loadu_si256(lo.cast())),
                _mm256_loadu_si256(hi.cast()),
            )
        }
    }
    #[inline(always)]
    unsafe fn store_pair(lo: *mut u8, hi: *mut u8, v: __m512i) {
        unsafe {
            _mm256_storeu_si256(lo.cast(), _mm512_castsi512_si256(v));
            _mm256_storeu_si256(hi.cast(), _mm512_extracti64x4_epi64::<1>(v));
        }
    }
    #[inline(always)]
    unsafe fn azero() -> __m512i {
        unsafe { _mm512_setzero_si512() }
    }
    #[inline(always)]
    unsafe fn aadd(a: __m512i, b: __m512i) -> __m512i {
        unsafe { _mm512_add_epi32(a, b) }
    }
    #[inline(always)]
    unsafe fn dot(acc: __m512i, u: __m512i, s: __m512i) -> __m512i {
        unsafe { _mm512_dpbusd_epi32(acc, u, s) }
    }
    #[inline(always)]
    unsafe fn dot_ss(acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
        unsafe {
            let neg = _mm512_movepi8_mask(a);
            let sb = _mm512_mask_sub_epi8(b, neg, _mm512_setzero_si512(), b);
            _mm512_dpbusd_epi32(acc, _mm512_abs_epi8(a), sb)
        }
    }
    #[inline(always)]
    unsafe fn hsum(acc: __m512i) -> i32 {
        unsafe { _mm512_reduce_add_epi32(acc) }
    }
    #[inline(always)]
    unsafe fn hsum4(a: [__m512i; 4]) -> [i32; 4] {
        unsafe {
            hsum4_128([
                fold256(fold512(a[0])),
                fold256(fold512(a[1])),
                fold256(fold512(a[2])),
                fold256(fold512(a[3])),
            ])
        }
    }
    #[inline(always)]
    unsafe fn lanes_minus_f32(acc: __m512i, x: i32) -> __m512 {
        unsafe { _mm512_cvtepi32_ps(_mm512_sub_epi32(acc, _mm512_set1_epi32(x))) }
    }
    #[inline(always)]
    unsafe fn fzero() -> __m512 {
        unsafe { _mm512_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn fsplat(x: f32) -> __m512 {
        unsafe { _mm512_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn fload(p: *const f32) -> __m512 {
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn fstore_n(p: *mut f32, v: __m512, n: usize) {
        unsafe { _mm512_mask_storeu_ps(p, ((1u32 << n) - 1) as __mmask16, v) }
    }
    #[inline(always)]
    unsafe fn fadd(a: __m512, b: __m512) -> __m512 {
        unsafe { _mm512_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn fsub(a: __m512, b: __m512) -> __m512 {
        unsafe { _mm512_sub_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn fmul(a: __m512, b: __m512) -> __m512 {
        unsafe { _mm512_mul_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn fdiv(a: __m512, b: __m512) -> __m512 {
        unsafe { _mm512_div_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn fmadd(a: __m512, b: __m512, c: __m512) -> __m512 {
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn fhsum(v: __m512) -> f32 {
        unsafe { _mm512_reduce_add_ps(v) }
    }
    #[inline(always)]
    unsafe fn f16_load(p: *const u16) -> __m512 {
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.cast())) }
    }
    #[inline(always)]
    unsafe fn q8_scales(p: *const f32) -> __m512 {
        unsafe {
            let lo = _mm256_set1_ps(*p);
            let hi = _mm256_set1_ps(*p.add(1));
            _mm512_castpd_ps(_mm512_insertf64x4::<1>(
                _mm512_castpd256_pd512(_mm256_castps_pd(lo)),
                _mm256_castps_pd(hi),
            ))
        }
    }
    #[inline(always)]
    unsafe fn transpose(src: *const u8, ss: usize, dst: *mut u8, ds: usize) {
        unsafe {
            let z = _mm512_setzero_si512();
            let mut r = [z; 16];
            for (i, ri) in r.iter_mut().enumerate() {
                *ri = _mm512_loadu_si512(src.add(i * ss).cast());
            }
            let mut t = [z; 16];
            for i in (0..16).step_by(2) {
                t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
                t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
            }
            // u[4k + j], 128-bit lane L = cell 4L + j of rows 4k..4k+4.
            let mut u = [z; 16];
            for k in 0..4 {
                u[4 * k] = _mm512_unpacklo_epi64(t[4 * k], t[4 * k + 2]);
                u[4 * k + 1] = _mm512_unpackhi_epi64(t[4 * k], t[4 * k + 2]);
                u[4 * k + 2] = _mm512_unpacklo_epi64(t[4 * k + 1], t[4 * k + 3]);
                u[4 * k + 3] = _mm512_unpackhi_epi64(t[4 * k + 1], t[4 * k + 3]);
            }
            for j in 0..4 {
                let v0 = _mm512_shuffle_i32x4::<0x44>(u[j], u[4 + j]);
                let v1 = _mm512_shuffle_i32x4::<0xEE>(u[j], u[4 + j]);
                let w0 = _mm512_shuffle_i32x4::<0x44>(u[8 + j], u[12 + j]);
                let w1 = _mm512_shuffle_i32x4::<0xEE>(u[8 + j], u[12 + j]);
                _mm512_storeu_si512(dst.add(j * ds).cast(), _mm512_shuffle_i32x4::<0x88>(v0, w0));
                _mm512_storeu_si512(
                    dst.add((4 + j) * ds).cast(),
                    _mm512_shuffle_i32x4::<0xDD>(v0, w0),
                );
                _mm512_storeu_si512(
                    dst.add((8 + j) * ds).cast(),
                    _mm512_shuffle_i32x4::<0x88>(v1, w1),
                );
                _mm512_storeu_si512(
                    dst.add((12 + j) * ds).cast(),
                    _mm512_shuffle_i32x4::<0xDD>(v1, w1),
                );
            }
        }
    }
    #[inline(always)]
    unsafe fn tq1_block(src: *const u8, dst: *mut u8) {
        unsafe { tq1_block_avx2(src, dst) }
    }
    #[inline(always)]
    unsafe fn tq1_block2(a: *const u8, b: *const u8, da: *mut u8, db: *mut u8) {
        unsafe { tq1_block2_avx512(a, b, da, db) }
    }
}

// ---------------------------------------------------------------------------------------------
// v3 / v3vnni: AVX2 (+ AVX-VNNI), 32-byte vectors.

pub(crate) struct Avx2<const VNNI: bool>;

#[inline(always)]
unsafe fn hsum256_epi32(v: __m256i) -> i32 {
    unsafe {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        hsum128_epi32(s)
    }
}

#[inline(always)]
unsafe fn hsum128_epi32(v: __m128i) -> i32 {
    unsafe {
        let s = _mm_add_epi32(v, _mm_shuffle_epi32::<0b01_00_11_10>(v));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
        _mm_cvtsi128_si32(s)
    }
}

/// Lane i of the result = sum of the four lanes of `a[i]`.
#[inline(always)]
unsafe fn hsum4_128(a: [__m128i; 4]) -> [i32; 4] {
    unsafe {
        let s01 = _mm_add_epi32(
            _mm_unpacklo_epi32(a[0], a[1]),
            _mm_unpackhi_epi32(a[0], a[1]),
        );
        let s23 = _mm_add_epi32(
            _mm_unpacklo_epi32(a[2], a[3]),
            _mm_unpackhi_epi32(a[2], a[3]),
        );
        let s = _mm_add_epi32(_mm_unpacklo_epi64(s01, s23), _mm_unpackhi_epi64(s01, s23));
        let mut out = [0i32; 4];
        _mm_storeu_si128(out.as_mut_ptr().cast(), s);
        out
    }
}

#[inline(always)]
unsafe fn fold256(v: __m256i) -> __m128i {
    unsafe { _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v)) }
}

#[inline(always)]
unsafe fn fold512(v: __m512i) -> __m256i {
    unsafe { _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64::<1>(v)) }
}

#[inline(always)]
unsafe fn hsum128_ps(v: __m128) -> f32 {
    unsafe {
        let s = _mm_add_ps(v, _mm_movehl_ps(v, v));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
        _mm_cvtss_f32(s)
    }
}

impl<const VNNI: bool> Isa for Avx2<VNNI> {
    const W: usize = 32;
    type V = __m256i;
    type A = __m256i;
    type F = __m256;

    #[inline(always)]
    unsafe fn prefetch(p: *const u8) {
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) }
    }
    #[inline(always)]
    unsafe fn vzero() -> __m256i {
        unsafe { _mm256_setzero_si256() }
    }
    #[inline(always)]
    unsafe fn load(p: *const u8) -> __m256i {
        unsafe { _mm256_loadu_si256(p.cast()) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut u8, v: __m256i) {
        unsafe { _mm256_storeu_si256(p.cast(), v) }
    }
    #[inline(always)]
    unsafe fn codes<const SH: i32>(v: __m256i) -> __m256i {
        unsafe { _mm256_and_si256(_mm256_srli_epi16::<SH>(v), _mm256_set1_epi8(3)) }
    }
    #[inline(always)]
    unsafe fn bcast4(p: *const u8) -> __m256i {
        unsafe { _mm256_set1_epi32(p.cast::<i32>().read_unaligned()) }
    }
    #[inline(always)]
    unsafe fn load_pair(_: *const u8, _: *const u8) -> __m256i {
        unreachable!("load_pair is only used with 64-byte vectors")
    }
    #[inline(always)]
    unsafe fn store_pair(_: *mut u8, _: *mut u8, _: __m256i) {
        unreachable!("store_pair is only used with 64-byte vectors")
    }
    #[inline(always)]
    unsafe fn azero() -> __m256i {
        unsafe { _mm256_setzero_si256() }
    }
    #[inline(always)]
    unsafe fn aadd(a: __m256i, b: __m256i) -> __m256i {
        unsafe { _mm256_add_epi32(a, b) }
    }
    #[inline(always)]
    unsafe fn dot(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
        unsafe {
            if VNNI {
                _mm256_dpbusd_avx_epi32(acc, u, s)
            } else {
                let p = _mm256_maddubs_epi16(u, s);
                _mm256_add_epi32(acc, _mm256_madd_epi16(p, _mm256_set1_epi16(1)))
            }
        }
    }
    #[inline(always)]
    unsafe fn dot_ss(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
        unsafe { Self::dot(acc, _mm256_abs_epi8(a), _mm256_sign_epi8(b, a)) }
    }
    const I16_STEPS: usize = if VNNI { 0 } else { 32 };
    #[inline(always)]
    unsafe fn dot16(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
        unsafe { _mm256_add_epi16(acc, _mm256_maddubs_epi16(u, s)) }
    }
    #[inline(always)]
    unsafe fn widen(acc: __m256i, acc16: __m256i) -> __m256i {
        unsafe { _mm256_add_epi32(acc, _mm256_madd_epi16(acc16, _mm256_set1_epi16(1))) }
    }
    #[inline(always)]
    unsafe fn hsum(acc: __m256i) -> i32 {
        unsafe { hsum256_epi32(acc) }
    }
    #[inline(always)]
    unsafe fn hsum4(a: [__m256i; 4]) -> [i32; 4] {
        unsafe { hsum4_128([fold256(a[0]), fold256(a[1]), fold256(a[2]), fold256(a[3])]) }
    }
    #[inline(always)]
    unsafe fn lanes_minus_f32(acc: __m256i, x: i32) -> __m256 {
        unsafe { _mm256_cvtepi32_ps(_mm256_sub_epi32(acc, _mm256_set1_epi32(x))) }
    }
    #[inline(always)]
    unsafe fn fzero() -> __m256 {
        unsafe { _mm256_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn fsplat(x: f32) -> __m256 {
        unsafe { _mm256_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn fload(p: *const f32) -> __m256 {
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn fstore_n(p: *mut f32, v: __m256, n: usize) {
        unsafe {
            if n >= 8 {
                _mm256_storeu_ps(p, v);
            } else {
                let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
                let m = _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), idx);
                _mm256_maskstore_ps(p, m, v);
            }
        }
    }
    #[inline(always)]
    unsafe fn fadd(a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn fsub(a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_sub_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn fmul(a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_mul_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn fdiv(a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_div_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn fmadd(a: __m256, b: __m256, c: __m256) -> __m256 {
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn fhsum(v: __m256) -> f32 {
        unsafe {
            hsum128_ps(_mm_add_ps(
                _mm256_castps256_ps128(v),
                _mm256_extractf128_ps::<1>(v),
            ))
        }
    }
    #[inline(always)]
    unsafe fn f16_load(p: *const u16) -> __m256 {
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast())) }
    }
    #[inline(always)]
    unsafe fn q8_scales(p: *const f32) -> __m256 {
        unsafe { _mm256_set1_ps(*p) }
    }
    #[inline(always)]
    unsafe fn transpose(src: *const u8, ss: usize, dst: *mut u8, ds: usize) {
        unsafe {
            let z = _mm256_setzero_si256();
            let mut r = [z; 8];
            for (i, ri) in r.iter_mut().enumerate() {
                *ri = _mm256_loadu_si256(src.add(i * ss).cast());
            }
            let mut t = [z; 8];
            for i in (0..8).step_by(2) {
                t[i] = _mm256_unpacklo_epi32(r[i], r[i + 1]);
                t[i + 1] = _mm256_unpackhi_epi32(r[i], r[i + 1]);
            }
            let mut u = [z; 8];
            for k in 0..2 {
                u[4 * k] = _mm256_unpacklo_epi64(t[4 * k], t[4 * k + 2]);
                u[4 * k + 1] = _mm256_unpackhi_epi64(t[4 * k], t[4 * k + 2]);
                u[4 * k + 2] = _mm256_unpacklo_epi64(t[4 * k + 1], t[4 * k + 3]);
                u[4 * k + 3] = _mm256_unpackhi_epi64(t[4 * k + 1], t[4 * k + 3]);
            }
            for j in 0..4 {
                _mm256_storeu_si256(
                    dst.add(j * ds).cast(),
                    _mm256_permute2x128_si256::<0x20>(u[j], u[4 + j]),
                );
                _mm256_storeu_si256(
                    dst.add((4 + j) * ds).cast(),
                    _mm256_permute2x128_si256::<0x31>(u[j], u[4 + j]),
                );
            }
        }
    }
    #[inline(always)]
    unsafe fn tq1_block(src: *const u8, dst: *mut u8) {
        unsafe { tq1_block_avx2(src, dst) }
    }
}

// ---------------------------------------------------------------------------------------------
// v2: SSSE3 + SSE4.1, 16-byte vectors.

pub(crate) struct Sse;

/// fp16 → f32 for 4 values without F16C: shift the exponent/mantissa into f32 position and
/// rescale by 2¹¹² (exact for normals and subnormals), patch infinities/NaNs, restore the sign.
#[inline(always)]
unsafe fn f16x4_to_f32_sse(p: *const u16) -> __m128 {
    unsafe {
        let h = _mm_cvtepu16_epi32(_mm_loadl_epi64(p.cast()));
        let sign = _mm_slli_epi32::<16>(_mm_and_si128(h, _mm_set1_epi32(0x8000)));
        let em = _mm_and_si128(h, _mm_set1_epi32(0x7fff));
        let bits = _mm_slli_epi32::<13>(em);
        let scaled = _mm_mul_ps(
            _mm_castsi128_ps(bits),
            _mm_set1_ps(f32::from_bits(0x7780_0000)),
        ); // 2^112
        let infnan = _mm_cmpgt_epi32(em, _mm_set1_epi32(0x7bff));
        let special = _mm_castsi128_ps(_mm_or_si128(bits, _mm_set1_epi32(0x7f80_0000)));
        let v = _mm_blendv_ps(scaled, special, _mm_castsi128_ps(infnan));
        _mm_or_ps(v, _mm_castsi128_ps(sign))
    }
}

impl Isa for Sse {
    const W: usize = 16;
    type V = __m128i;
    type A = __m128i;
    type F = __m128;

    #[inline(always)]
    unsafe fn prefetch(p: *const u8) {
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) }
    }
    #[inline(always)]
    unsafe fn vzero() -> __m128i {
        unsafe { _mm_setzero_si128() }
    }
    #[inline(always)]
    unsafe fn load(p: *const u8) -> __m128i {
        unsafe { _mm_loadu_si128(p.cast()) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut u8, v: __m128i) {
        unsafe { _mm_storeu_si128(p.cast(), v) }
    }
    #[inline(always)]
    unsafe fn codes<const SH: i32>(v: __m128i) -> __m128i {
        unsafe { _mm_and_si128(_mm_srli_epi16::<SH>(v), _mm_set1_epi8(3)) }
    }
    #[inline(always)]
    unsafe fn bcast4(p: *const u8) -> __m128i {
        unsafe { _mm_set1_epi32(p.cast::<i32>().read_unaligned()) }
    }
    #[inline(always)]
    unsafe fn load_pair(_: *const u8, _: *const u8) -> __m128i {
        unreachable!("load_pair is only used with 64-byte vectors")
    }
    #[inline(always)]
    unsafe fn store_pair(_: *mut u8, _: *mut u8, _: __m128i) {
        unreachable!("store_pair is only used with 64-byte vectors")
    }
    #[inline(always)]
    unsafe fn azero() -> __m128i {
        unsafe { _mm_setzero_si128() }
    }
    #[inline(always)]
    unsafe fn aadd(a: __m128i, b: __m128i) -> __m128i {
        unsafe { _mm_add_epi32(a, b) }
    }
    #[inline(always)]
    unsafe fn dot(acc: __m128i, u: __m128i, s: __m128i) -> __m128i {
        unsafe {
            _mm_add_epi32(
                acc,
                _mm_madd_epi16(_mm_maddubs_epi16(u, s), _mm_set1_epi16(1)),
            )
        }
    }
    #[inline(always)]
    unsafe fn dot_ss(acc: __m128i, a: __m128i, b: __m128i) -> __m128i {
        unsafe { Self::dot(acc, _mm_abs_epi8(a), _mm_sign_epi8(b, a)) }
    }
    const I16_STEPS: usize = 32;
    #[inline(always)]
    unsafe fn dot16(acc: __m128i, u: __m128i, s: __m128i) -> __m128i {
        unsafe { _mm_add_epi16(acc, _mm_maddubs_epi16(u, s)) }
    }
    #[inline(always)]
    unsafe fn widen(acc: __m128i, acc16: __m128i) -> __m128i {
        unsafe { _mm_add_epi32(acc, _mm_madd_epi16(acc16, _mm_set1_epi16(1))) }
    }
    #[inline(always)]
    unsafe fn hsum(acc: __m128i) -> i32 {
        unsafe { hsum128_epi32(acc) }
    }
    #[inline(always)]
    unsafe fn hsum4(a: [__m128i; 4]) -> [i32; 4] {
        unsafe { hsum4_128(a) }
    }
    #[inline(always)]
    unsafe fn lanes_minus_f32(acc: __m128i, x: i32) -> __m128 {
        unsafe { _mm_cvtepi32_ps(_mm_sub_epi32(acc, _mm_set1_epi32(x))) }
    }
    #[inline(always)]
    unsafe fn fzero() -> __m128 {
        unsafe { _mm_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn fsplat(x: f32) -> __m128 {
        unsafe { _mm_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn fload(p: *const f32) -> __m128 {
        unsafe { _mm_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn fstore_n(p: *mut f32, v: __m128, n: usize) {
        unsafe {
            if n >= 4 {
                _mm_storeu_ps(p, v);
            } else {
                let mut tmp = [0f32; 4];
                _mm_storeu_ps(tmp.as_mut_ptr(), v);
                std::ptr::copy_nonoverlapping(tmp.as_ptr(), p, n);
            }
        }
    }
    #[inline(always)]
    unsafe fn fadd(a: __m128, b: __m128) -> __m128 {
        unsafe { _mm_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn fsub(a: __m128, b: __m128) -> __m128 {
        unsafe { _mm_sub_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn fmul(a: __m128, b: __m128) -> __m128 {
        unsafe { _mm_mul_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn fdiv(a: __m128, b: __m128) -> __m128 {
        unsafe { _mm_div_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn fmadd(a: __m128, b: __m128, c: __m128) -> __m128 {
        unsafe { _mm_add_ps(_mm_mul_ps(a, b), c) }
    }
    #[inline(always)]
    unsafe fn fhsum(v: __m128) -> f32 {
        unsafe { hsum128_ps(v) }
    }
    #[inline(always)]
    unsafe fn f16_load(p: *const u16) -> __m128 {
        unsafe { f16x4_to_f32_sse(p) }
    }
    #[inline(always)]
    unsafe fn q8_scales(p: *const f32) -> __m128 {
        unsafe { _mm_set1_ps(*p) }
    }
    #[inline(always)]
    unsafe fn transpose(src: *const u8, ss: usize, dst: *mut u8, ds: usize) {
        unsafe {
            let r = [
                _mm_loadu_si128(src.cast()),
                _mm_loadu_si128(src.add(ss).cast()),
                _mm_loadu_si128(src.add(2 * ss).cast()),
                _mm_loadu_si128(src.add(3 * ss).cast()),
            ];
            let t0 = _mm_unpacklo_epi32(r[0], r[1]);
            let t1 = _mm_unpackhi_epi32(r[0], r[1]);
            let t2 = _mm_unpacklo_epi32(r[2], r[3]);
            let t3 = _mm_unpackhi_epi32(r[2], r[3]);
            _mm_storeu_si128(dst.cast(), _mm_unpacklo_epi64(t0, t2));
            _mm_storeu_si128(dst.add(ds).cast(), _mm_unpackhi_epi64(t0, t2));
            _mm_storeu_si128(dst.add(2 * ds).cast(), _mm_unpacklo_epi64(t1, t3));
            _mm_storeu_si128(dst.add(3 * ds).cast(), _mm_unpackhi_epi64(t1, t3));
        }
    }
    #[inline(always)]
    unsafe fn tq1_block(src: *const u8, dst: *mut u8) {
        unsafe { tq1_block_sse(src, dst) }
    }
}

// ---------------------------------------------------------------------------------------------
// Entry points and tables.

mod v4 {
    super::isa_entries!(
        super::Avx512,
        "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c,ssse3,sse4.1",
        rv = 2,
        t = 12,
        f16_t = 4
    );
}
mod v3vnni {
    super::isa_entries!(
        super::Avx2<true>,
        "avx2,fma,f16c,avxvnni",
        rv = 2,
        t = 6,
        f16_t = 2
    );
}
mod v3 {
    super::isa_entries!(
        super::Avx2<false>,
        "avx2,fma,f16c",
        rv = 2,
        t = 4,
        f16_t = 2
    );
}
mod v2 {
    super::isa_entries!(super::Sse, "ssse3,sse4.1", rv = 2, t = 4, f16_t = 2);
}

fn has_v4() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
        && has_v3()
}
fn has_v3vnni() -> bool {
    has_v3() && is_x86_feature_detected!("avxvnni")
}
fn has_v3() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
        && has_v2()
}
fn has_v2() -> bool {
    is_x86_feature_detected!("ssse3") && is_x86_feature_detected!("sse4.1")
}

const fn ternary(i2s: TernaryFn, tq2: TernaryFn, tq1: TernaryFn) -> [TernaryFn; 3] {
    [i2s, tq2, tq1]
}

pub(crate) static V4: Kernels = Kernels {
    name: "v4",
    description: "x86-64-v4: AVX-512BW + AVX512-VNNI (vpdpbusd on 512 bits)",
    needs: "AVX-512 F/BW/VL with AVX512-VNNI (Ice Lake, Cascade Lake, Zen 4 or newer)",
    detect: has_v4,
    ternary: ternary(v4::i2s, v4::tq2, v4::tq1),
    f16: v4::f16,
    q8: v4::q8,
    tile_rows: 32,
    simd: super::Simd::Avx512,
};

pub(crate) static V3VNNI: Kernels = Kernels {
    name: "v3vnni",
    description: "x86-64-v3 + AVX-VNNI (vpdpbusd on 256 bits)",
    needs: "AVX2, FMA, F16C and AVX-VNNI (Alder Lake, Sapphire Rapids, Zen 5 or newer)",
    detect: has_v3vnni,
    ternary: ternary(v3vnni::i2s, v3vnni::tq2, v3vnni::tq1),
    f16: v3vnni::f16,
    q8: v3vnni::q8,
    tile_rows: 16,
    simd: super::Simd::Avx2,
};

pub(crate) static V3: Kernels = Kernels {
    name: "v3",
    description: "x86-64-v3: AVX2 (vpmaddubsw) + FMA + F16C",
    needs: "AVX2, FMA and F16C (Haswell, Zen 1 or newer)",
    detect: has_v3,
    ternary: ternary(v3::i2s, v3::tq2, v3::tq1),
    f16: v3::f16,
    q8: v3::q8,
    tile_rows: 16,
    simd: super::Simd::Avx2,
};

pub(crate) static V2: Kernels = Kernels {
    name: "v2",
    description: "x86-64-v2: SSSE3 (pmaddubsw) + SSE4.1",
    needs: "SSSE3 and SSE4.1 (Nehalem or newer)",
    detect: has_v2,
    ternary: ternary(v2::i2s, v2::tq2, v2::tq1),
    f16: v2::f16,
    q8: v2::q8,
    tile_rows: 8,
    simd: super::Simd::Baseline,
};
