//! aarch64 variants: `neon` (baseline: `smull` + `sadalp` widening dots) and `dotprod`
//! (`sdot`, emitted with `asm!` because `vdotq_s32` is unstable on Rust 1.95).
//!
//! Each variant implements the [`Isa`] vocabulary; the kernels live in [`super::generic`].
//! fp16 → f32 uses `fcvtl` (base ARMv8, no FP16 extension needed), also through `asm!` because
//! the `float16x4_t` intrinsics are unstable.
//!
//! The `i8mm` variant (`smmla` for prefill) is in `i8mm.rs`, on top of `Dotprod`.
//!
//! What it does NOT do: SVE.

#![allow(clippy::missing_safety_doc)]

use std::arch::aarch64::*;
use std::arch::asm;

use super::generic::{Isa, isa_entries};
use super::{Kernels, TernaryFn};

/// Trit n of every byte: `((v · m mod 256) · 3) >> 8`.
#[inline(always)]
unsafe fn trit(v: uint8x16_t, m: uint8x16_t) -> uint8x16_t {
    unsafe {
        let t = vmulq_u8(v, m);
        let three = vdup_n_u8(3);
        let lo = vmull_u8(vget_low_u8(t), three);
        let hi = vmull_high_u8(t, vdupq_n_u8(3));
        // The high byte of each 16-bit product is the trit.
        vuzp2q_u8(vreinterpretq_u8_u16(lo), vreinterpretq_u8_u16(hi))
    }
}

#[inline(always)]
unsafe fn tq1_block_neon(src: *const u8, dst: *mut u8) {
    const POW3: [u8; 5] = [1, 3, 9, 27, 81];
    const QH: [u8; 16] = [1, 1, 1, 1, 3, 3, 3, 3, 9, 9, 9, 9, 27, 27, 27, 27];
    unsafe {
        let a0 = vld1q_u8(src);
        let a1 = vld1q_u8(src.add(16));
        let lo = vld1q_u8(src.add(32));
        for (n, &m) in POW3.iter().enumerate() {
            let m = vdupq_n_u8(m);
            vst1q_u8(dst.add(32 * n), trit(a0, m));
            vst1q_u8(dst.add(32 * n + 16), trit(a1, m));
            vst1q_u8(dst.add(160 + 16 * n), trit(lo, m));
        }
        let qh = vreinterpretq_u8_u32(vdupq_n_u32(src.add(48).cast::<u32>().read_unaligned()));
        vst1q_u8(dst.add(240), trit(qh, vld1q_u8(QH.as_ptr())));
    }
}

#[inline(always)]
unsafe fn codes_neon<const SH: i32>(v: uint8x16_t) -> uint8x16_t {
    unsafe {
        let s = match SH {
            0 => v,
            2 => vshrq_n_u8::<2>(v),
            4 => vshrq_n_u8::<4>(v),
            _ => vshrq_n_u8::<6>(v),
        };
        vandq_u8(s, vdupq_n_u8(3))
    }
}

#[inline(always)]
unsafe fn f16x4_to_f32(p: *const u16) -> float32x4_t {
    unsafe {
        let h = vld1_u16(p);
        let r: float32x4_t;
        asm!("fcvtl {r:v}.4s, {h:v}.4h", r = out(vreg) r, h = in(vreg) h,
             options(pure, nomem, nostack, preserves_flags));
        r
    }
}

#[inline(always)]
unsafe fn transpose4(src: *const u8, ss: usize, dst: *mut u8, ds: usize) {
    unsafe {
        let r = [
            vld1q_u32(src.cast()),
            vld1q_u32(src.add(ss).cast()),
            vld1q_u32(src.add(2 * ss).cast()),
            vld1q_u32(src.add(3 * ss).cast()),
        ];
        let t0 = vtrn1q_u32(r[0], r[1]);
        let t1 = vtrn2q_u32(r[0], r[1]);
        let t2 = vtrn1q_u32(r[2], r[3]);
        let t3 = vtrn2q_u32(r[2], r[3]);
        let (t0, t1) = (vreinterpretq_u64_u32(t0), vreinterpretq_u64_u32(t1));
        let (t2, t3) = (vreinterpretq_u64_u32(t2), vreinterpretq_u64_u32(t3));
        let o0 = vtrn1q_u64(t0, t2);
        let o1 = vtrn1q_u64(t1, t3);
        let o2 = vtrn2q_u64(t0, t2);
        let o3 = vtrn2q_u64(t1, t3);
        vst1q_u64(dst.cast(), o0);
        vst1q_u64(dst.add(ds).cast(), o1);
        vst1q_u64(dst.add(2 * ds).cast(), o2);
        vst1q_u64(dst.add(3 * ds).cast(), o3);
    }
}

/// Float and shared integer operations of both variants.
macro_rules! neon_common {
    () => {
        #[inline(always)]
        unsafe fn prefetch(p: *const u8) {
            // A hint only: prfm never faults, whatever the address.
            unsafe {
                asm!("prfm pldl1keep, [{p}]", p = in(reg) p,
                     options(nostack, preserves_flags, readonly));
            }
        }
        #[inline(always)]
        unsafe fn vzero() -> uint8x16_t {
            unsafe { vdupq_n_u8(0) }
        }
        #[inline(always)]
        unsafe fn load(p: *const u8) -> uint8x16_t {
            unsafe { vld1q_u8(p) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut u8, v: uint8x16_t) {
            unsafe { vst1q_u8(p, v) }
        }
        #[inline(always)]
        unsafe fn codes<const SH: i32>(v: uint8x16_t) -> uint8x16_t {
            unsafe { codes_neon::<SH>(v) }
        }
        #[inline(always)]
        unsafe fn bcast4(p: *const u8) -> uint8x16_t {
            unsafe { vreinterpretq_u8_u32(vdupq_n_u32(p.cast::<u32>().read_unaligned())) }
        }
        #[inline(always)]
        unsafe fn load_pair(_: *const u8, _: *const u8) -> uint8x16_t {
            unreachable!("load_pair is only used with 64-byte vectors")
        }
        #[inline(always)]
        unsafe fn store_pair(_: *mut u8, _: *mut u8, _: uint8x16_t) {
            unreachable!("store_pair is only used with 64-byte vectors")
        }
        #[inline(always)]
        unsafe fn fzero() -> float32x4_t {
            unsafe { vdupq_n_f32(0.0) }
        }
        #[inline(always)]
        unsafe fn fsplat(x: f32) -> float32x4_t {
            unsafe { vdupq_n_f32(x) }
        }
        #[inline(always)]
        unsafe fn fload(p: *const f32) -> float32x4_t {
            unsafe { vld1q_f32(p) }
        }
        #[inline(always)]
        unsafe fn fstore_n(p: *mut f32, v: float32x4_t, n: usize) {
            unsafe {
                if n >= 4 {
                    vst1q_f32(p, v);
                } else {
                    let mut tmp = [0f32; 4];
                    vst1q_f32(tmp.as_mut_ptr(), v);
                    std::ptr::copy_nonoverlapping(tmp.as_ptr(), p, n);
                }
            }
        }
        #[inline(always)]
        unsafe fn fadd(a: float32x4_t, b: float32x4_t) -> float32x4_t {
            unsafe { vaddq_f32(a, b) }
        }
        #[inline(always)]
        unsafe fn fsub(a: float32x4_t, b: float32x4_t) -> float32x4_t {
            unsafe { vsubq_f32(a, b) }
        }
        #[inline(always)]
        unsafe fn fmul(a: float32x4_t, b: float32x4_t) -> float32x4_t {
            unsafe { vmulq_f32(a, b) }
        }
        #[inline(always)]
        unsafe fn fdiv(a: float32x4_t, b: float32x4_t) -> float32x4_t {
            unsafe { vdivq_f32(a, b) }
        }
        #[inline(always)]
        unsafe fn fmadd(a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
            unsafe { vfmaq_f32(c, a, b) }
        }
        #[inline(always)]
        unsafe fn fhsum(v: float32x4_t) -> f32 {
            unsafe { vaddvq_f32(v) }
        }
        #[inline(always)]
        unsafe fn f16_load(p: *const u16) -> float32x4_t {
            unsafe { f16x4_to_f32(p) }
        }
        #[inline(always)]
        unsafe fn q8_scales(p: *const f32) -> float32x4_t {
            unsafe { vdupq_n_f32(*p) }
        }
        #[inline(always)]
        unsafe fn transpose(src: *const u8, ss: usize, dst: *mut u8, ds: usize) {
            unsafe { transpose4(src, ss, dst, ds) }
        }
        #[inline(always)]
        unsafe fn tq1_block(src: *const u8, dst: *mut u8) {
            unsafe { tq1_block_neon(src, dst) }
        }
    };
}

/// Baseline NEON: the accumulator keeps pairwise sums (lanes 0,1 of `.0` belong to output lane
/// 0, …); `finish` adds the pairs so lane i holds the dot of bytes 4i..4i+4 like `sdot`.
pub(crate) struct Neon;

#[inline(always)]
unsafe fn finish(acc: (int32x4_t, int32x4_t)) -> int32x4_t {
    unsafe { vpaddq_s32(acc.0, acc.1) }
}

impl Isa for Neon {
    const W: usize = 16;
    // Accumulators are register pairs here.
    const GEMV_TOKENS: usize = 1;
    type V = uint8x16_t;
    type A = (int32x4_t, int32x4_t);
    type F = float32x4_t;

    neon_common!();

    #[inline(always)]
    unsafe fn azero() -> (int32x4_t, int32x4_t) {
        unsafe { (vdupq_n_s32(0), vdupq_n_s32(0)) }
    }
    #[inline(always)]
    unsafe fn aadd(a: Self::A, b: Self::A) -> Self::A {
        unsafe { (vaddq_s32(a.0, b.0), vaddq_s32(a.1, b.1)) }
    }
    #[inline(always)]
    unsafe fn dot(acc: Self::A, u: uint8x16_t, s: uint8x16_t) -> Self::A {
        unsafe {
            let (u, s) = (vreinterpretq_s8_u8(u), vreinterpretq_s8_u8(s));
            let lo = vmull_s8(vget_low_s8(u), vget_low_s8(s));
            let hi = vmull_high_s8(u, s);
            (vpadalq_s16(acc.0, lo), vpadalq_s16(acc.1, hi))
        }
    }
    #[inline(always)]
    unsafe fn dot_ss(acc: Self::A, a: uint8x16_t, b: uint8x16_t) -> Self::A {
        unsafe { Self::dot(acc, a, b) }
    }
    #[inline(always)]
    unsafe fn hsum(acc: Self::A) -> i32 {
        unsafe { vaddvq_s32(finish(acc)) }
    }
    #[inline(always)]
    unsafe fn lanes_minus_f32(acc: Self::A, x: i32) -> float32x4_t {
        unsafe { vcvtq_f32_s32(vsubq_s32(finish(acc), vdupq_n_s32(x))) }
    }
}

/// NEON with the dot-product extension.
pub(crate) struct Dotprod;

impl Isa for Dotprod {
    const W: usize = 16;
    type V = uint8x16_t;
    type A = int32x4_t;
    type F = float32x4_t;

    neon_common!();

    #[inline(always)]
    unsafe fn azero() -> int32x4_t {
        unsafe { vdupq_n_s32(0) }
    }
    #[inline(always)]
    unsafe fn aadd(a: int32x4_t, b: int32x4_t) -> int32x4_t {
        unsafe { vaddq_s32(a, b) }
    }
    #[inline(always)]
    unsafe fn dot(mut acc: int32x4_t, u: uint8x16_t, s: uint8x16_t) -> int32x4_t {
        // Codes are ≤ 3, so the signed form gives the same products as an unsigned one.
        unsafe {
            asm!("sdot {acc:v}.4s, {u:v}.16b, {s:v}.16b",
                 acc = inout(vreg) acc, u = in(vreg) u, s = in(vreg) s,
                 options(pure, nomem, nostack, preserves_flags));
        }
        acc
    }
    #[inline(always)]
    unsafe fn dot_ss(acc: int32x4_t, a: uint8x16_t, b: uint8x16_t) -> int32x4_t {
        unsafe { Self::dot(acc, a, b) }
    }
    #[inline(always)]
    unsafe fn hsum(acc: int32x4_t) -> i32 {
        unsafe { vaddvq_s32(acc) }
    }
    #[inline(always)]
    unsafe fn lanes_minus_f32(acc: int32x4_t, x: i32) -> float32x4_t {
        unsafe { vcvtq_f32_s32(vsubq_s32(acc, vdupq_n_s32(x))) }
    }
}

mod neon {
    super::isa_entries!(super::Neon, "neon", rv = 2, t = 4, f16_t = 4);
}
mod dotprod {
    super::isa_entries!(super::Dotprod, "neon,dotprod", rv = 4, t = 6, f16_t = 4);
}
/// The `dotprod` heads, shared with the `i8mm` variant.
pub(crate) use dotprod::{f16 as dotprod_f16, q8 as dotprod_q8};

fn has_neon() -> bool {
    std::arch::is_aarch64_feature_detected!("neon")
}
fn has_dotprod() -> bool {
    has_neon() && std::arch::is_aarch64_feature_detected!("dotprod")
}

const fn ternary(i2s: TernaryFn, tq2: TernaryFn, tq1: TernaryFn) -> [TernaryFn; 3] {
    [i2s, tq2, tq1]
}

pub(crate) static NEON: Kernels = Kernels {
    name: "neon",
    description: "aarch64 NEON (smull/sadalp widening dots)",
    needs: "NEON (every ARMv8-A CPU)",
    detect: has_neon,
    ternary: ternary(neon::i2s, neon::tq2, neon::tq1),
    f16: neon::f16,
    q8: neon::q8,
    tile_rows: 8,
    simd: super::Simd::Baseline,
};

pub(crate) static DOTPROD: Kernels = Kernels {
    name: "dotprod",
    description: "aarch64 NEON + dot product (sdot)",
    needs: "the ARMv8.2 dot-product extension (Cortex-A55/A76, Neoverse N1, Apple M1 or newer)",
    detect: has_dotprod,
    ternary: ternary(dotprod::i2s, dotprod::tq2, dotprod::tq1),
    f16: dotprod::f16,
    q8: dotprod::q8,
    tile_rows: 16,
    simd: super::Simd::Baseline,
};
