//! aarch64 `i8mm` variant: the prefill GEMM on `smmla`, which multiplies a 2×8 int8 matrix by
//! an 8×2 one into a 2×2 int32 block — 32 multiply-adds per instruction, twice `sdot`'s 16 (the
//! instruction Arm's KleidiAI and llama.cpp use for their int8 GEMMs on these cores). Everything
//! else (the GEMV of decode, the F16 and Q8 heads) is the `dotprod` variant's code: one token
//! at a time there is no second token to pair.
//!
//! Its results are checked under `qemu-aarch64-static -cpu max` (see `kernels_cross.sh`); its
//! speed has not been measured on hardware with the extension.
//!
//! Layouts: a tile of 8 weight rows is stored as `[k/8][row pair][2 rows × 8 codes]` (16 bytes
//! per row pair and 8 columns), and the activations of each pair of tokens as
//! `[token pair][k/8][2 tokens × 8 bytes]`, built once per quantization of the activations
//! (`QuantActs::token_pairs`) and shared by every matrix and thread that reads them. One `smmla`
//! of row pair `p` and token pair `q` accumulates `[r0·t0, r0·t1, r1·t0, r1·t1]`. The
//! epilogues are the scalar reference's operations, lane by lane, so the results are the same
//! f32 bits.
//!
//! `smmla` is emitted with `asm!` (its intrinsic is unstable on Rust 1.95), like `sdot`.
//!
//! What it does NOT do: the GEMV (no gain with one token), or SVE/SME.

#![allow(clippy::missing_safety_doc, clippy::needless_range_loop)]

use std::arch::aarch64::*;
use std::arch::asm;
use std::cell::RefCell;

use super::acts::AlignedBuf;
use super::arm::Dotprod;
use super::generic::{
    self, GEMM_MIN_N, I2S, TQ1, TQ2, decode_superblock, prefetch_tile, split, superblock_offset,
    tq_scale,
};
use super::{Kernels, Out, QuantActs, TernaryView};
use bitnet_gguf::quant::ternary::{TQ1_BLOCK_BYTES, TQ1_SCALE, TQ2_BLOCK_BYTES, TQ2_SCALE};

/// Row pairs per tile (8 rows).
const RP: usize = 4;
/// Rows per tile.
pub(crate) const ROWS: usize = 2 * RP;
/// Token pairs per micro-kernel call (8 tokens): 16 accumulators + 4 code + 4 activation
/// registers of the 32.
const TP: usize = 4;

thread_local! {
    static SCRATCH: RefCell<AlignedBuf> = RefCell::new(AlignedBuf::default());
}

/// `acc += a · bᵀ` for the 2×8 int8 matrices `a` (rows) and `b` (columns).
#[inline(always)]
unsafe fn smmla(mut acc: int32x4_t, a: uint8x16_t, b: uint8x16_t) -> int32x4_t {
    // Codes are ≤ 3, so the signed form gives the same products as a mixed-sign one.
    unsafe {
        asm!("smmla {acc:v}.4s, {a:v}.16b, {b:v}.16b",
             acc = inout(vreg) acc, a = in(vreg) a, b = in(vreg) b,
             options(pure, nomem, nostack, preserves_flags));
    }
    acc
}

/// Activations of token pairs, `[pair][k/8][16]`; an odd last token is paired with zeros.
fn pair_tokens(a: &QuantActs) -> AlignedBuf {
    let (n, nk8) = (a.n(), a.cols() / 8);
    let mut buf = AlignedBuf::zeroed(n.div_ceil(2) * nk8 * 16);
    let dst = buf.as_mut_ptr();
    // SAFETY: token rows hold `cols` bytes, `buf` one 16-byte cell per pair and k-step.
    unsafe {
        for q in 0..n.div_ceil(2) {
            let t0 = a.q_ptr(2 * q);
            let t1 = (2 * q + 1 < n).then(|| a.q_ptr(2 * q + 1));
            let d = dst.add(q * nk8 * 16);
            for k8 in 0..nk8 {
                let lo = vld1_u8(t0.add(8 * k8));
                let hi = match t1 {
                    Some(p) => vld1_u8(p.add(8 * k8)),
                    None => vdup_n_u8(0),
                };
                vst1q_u8(d.add(16 * k8), vcombine_u8(lo, hi));
            }
        }
    }
    buf
}

/// Super-block `kb` of the tile's 8 rows (all inside the matrix) straight from the packed
/// I2_S / TQ2_0 bytes: 16 bytes of two rows are two 8-byte cells each, interleaved with one
/// `trn` per cell and split into four code vectors. Byte `b` of a super-block holds columns
/// `128·(b/32) + 32·g + b%32` for groups g = 0..4, so cell `m` (bytes 8m..8m+8) of group g is
/// k-step `16·(m/4) + 4·g + m%4` (in steps of 8 columns).
#[inline(always)]
unsafe fn pack_superblock<const F: u8>(
    w: &TernaryView<'_>,
    tile_r0: usize,
    kb: usize,
    next: Option<usize>,
    codes: *mut u8,
) {
    let rb = w.row_bytes();
    let off = superblock_offset::<F>(kb);
    unsafe {
        let base = w.data.as_ptr();
        if let Some(r) = next {
            prefetch_tile::<Dotprod>(w, r, ROWS, off);
        }
        for p in 0..RP {
            let r0 = base.add((tile_r0 + 2 * p) * rb + off);
            let r1 = r0.add(rb);
            for c in 0..4 {
                let (x, y) = (
                    vreinterpretq_u64_u8(vld1q_u8(r0.add(16 * c))),
                    vreinterpretq_u64_u8(vld1q_u8(r1.add(16 * c))),
                );
                let cells = [vtrn1q_u64(x, y), vtrn2q_u64(x, y)];
                for (h, &cell) in cells.iter().enumerate() {
                    let m = 2 * c + h;
                    let cell = vreinterpretq_u8_u64(cell);
                    let groups = if F == I2S {
                        split::<Dotprod, false>(cell)
                    } else {
                        split::<Dotprod, true>(cell)
                    };
                    for g in 0..4 {
                        let k8 = 32 * kb + 16 * (m / 4) + 4 * g + m % 4;
                        vst1q_u8(codes.add((k8 * RP + p) * 16), groups[g]);
                    }
                }
            }
        }
    }
}

/// Super-blocks `kbs` of rows `tile_r0..tile_r0+nr` (TQ1_0, the I2_S 128-column tail, the last
/// partial tile): decoded row by row into `rowbuf` (missing rows as zero codes), then row pairs
/// interleaved in 8-column cells.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn decode_rows<const F: u8>(
    w: &TernaryView<'_>,
    tile_r0: usize,
    nr: usize,
    kbs: std::ops::Range<usize>,
    rowbuf: *mut u8,
    cp: usize,
    codes: *mut u8,
    dbuf: *mut f32,
) {
    let cols = w.cols;
    unsafe {
        for i in 0..ROWS {
            let dst = rowbuf.add(i * cp);
            for kb in kbs.clone() {
                if i < nr {
                    let row = w.row(tile_r0 + i);
                    decode_superblock::<Dotprod, F>(row, cols, kb, dst.add(256 * kb));
                    *dbuf.add(kb * ROWS + i) = block_scale::<F>(row, kb);
                } else {
                    std::ptr::write_bytes(dst.add(256 * kb), 0, 256);
                    *dbuf.add(kb * ROWS + i) = 0.0;
                }
            }
        }
        for kb in kbs {
            let kc = 256.min(cols - 256 * kb);
            for p in 0..RP {
                for k16 in 0..kc / 16 {
                    let col = 256 * kb + 16 * k16;
                    let x = vreinterpretq_u64_u8(vld1q_u8(rowbuf.add(2 * p * cp + col)));
                    let y = vreinterpretq_u64_u8(vld1q_u8(rowbuf.add((2 * p + 1) * cp + col)));
                    let k8 = col / 8;
                    vst1q_u8(
                        codes.add((k8 * RP + p) * 16),
                        vreinterpretq_u8_u64(vtrn1q_u64(x, y)),
                    );
                    vst1q_u8(
                        codes.add(((k8 + 1) * RP + p) * 16),
                        vreinterpretq_u8_u64(vtrn2q_u64(x, y)),
                    );
                }
            }
        }
    }
}

/// The fp16 scale of TQ block `kb` of `row` (0 for I2_S, whose scale is per tensor).
#[inline(always)]
fn block_scale<const F: u8>(row: &[u8], kb: usize) -> f32 {
    match F {
        TQ2 => tq_scale(row, TQ2_BLOCK_BYTES * kb + TQ2_SCALE),
        TQ1 => tq_scale(row, TQ1_BLOCK_BYTES * kb + TQ1_SCALE),
        _ => 0.0,
    }
}

/// `[x0, x1, x0, x1]`: per-token values in the lane order of an `smmla` block.
#[inline(always)]
unsafe fn tokens2(x0: f32, x1: f32) -> float32x4_t {
    unsafe { vld1q_f32([x0, x1, x0, x1].as_ptr()) }
}

/// The micro-kernel: the tile's 8 rows × the `Q` token pairs from pair `q0`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn micro<const F: u8, const Q: usize>(
    codes: *const u8,
    acts: *const u8,
    dbuf: *const f32,
    w: &TernaryView<'_>,
    a: &QuantActs,
    q0: usize,
    tile_r0: usize,
    nr: usize,
    out: Out,
) {
    let (n, nk8) = (a.n(), w.cols / 8);
    let nblk = w.cols.div_ceil(256);
    // Token 2q+1 may be the zero padding of an odd count: sums 0, scale 1, never stored.
    let tok = |q: usize, h: usize| 2 * (q0 + q) + h;
    unsafe {
        let zero = vdupq_n_s32(0);
        let mut acc = [[zero; RP]; Q];
        let mut facc = [[vdupq_n_f32(0.0); RP]; Q];
        for kb in 0..nblk {
            let end = (32 * kb + 32).min(nk8);
            for k8 in 32 * kb..end {
                let mut c = [vdupq_n_u8(0); RP];
                for p in 0..RP {
                    c[p] = vld1q_u8(codes.add((k8 * RP + p) * 16));
                }
                for q in 0..Q {
                    let av = vld1q_u8(acts.add(((q0 + q) * nk8 + k8) * 16));
                    for p in 0..RP {
                        acc[q][p] = smmla(acc[q][p], c[p], av);
                    }
                }
            }
            if F != I2S {
                for q in 0..Q {
                    let bs = |h: usize| {
                        let t = tok(q, h);
                        if t < n { a.block_sums(t)[kb] } else { 0 }
                    };
                    let (b0, b1) = (bs(0), bs(1));
                    let bsum = vld1q_s32([b0, b1, b0, b1].as_ptr());
                    for p in 0..RP {
                        let (d0, d1) = (
                            *dbuf.add(kb * ROWS + 2 * p),
                            *dbuf.add(kb * ROWS + 2 * p + 1),
                        );
                        let d = vld1q_f32([d0, d0, d1, d1].as_ptr());
                        let x = vcvtq_f32_s32(vsubq_s32(acc[q][p], bsum));
                        facc[q][p] = vaddq_f32(facc[q][p], vmulq_f32(d, x));
                        acc[q][p] = zero;
                    }
                }
            }
        }
        for q in 0..Q {
            let (t0, t1) = (tok(q, 0), tok(q, 1));
            let s = tokens2(a.scale(t0), if t1 < n { a.scale(t1) } else { 1.0 });
            let sum = tokens2(
                a.sum(t0) as f32,
                if t1 < n { a.sum(t1) as f32 } else { 0.0 },
            );
            for p in 0..RP {
                let y = if F == I2S {
                    let x = vsubq_f32(vcvtq_f32_s32(acc[q][p]), sum);
                    vmulq_f32(vdivq_f32(x, s), vdupq_n_f32(w.scale))
                } else {
                    vdivq_f32(facc[q][p], s)
                };
                let mut v = [0f32; 4];
                vst1q_f32(v.as_mut_ptr(), y);
                for (e, &ve) in v.iter().enumerate() {
                    let (r, t) = (2 * p + e / 2, tok(q, e % 2));
                    if r < nr && t < n {
                        *out.ptr.add(t * out.stride + tile_r0 + r) = ve;
                    }
                }
            }
        }
    }
}

#[inline(always)]
unsafe fn gemm<const F: u8>(w: &TernaryView<'_>, a: &QuantActs, r0: usize, r1: usize, out: Out) {
    let cols = w.cols;
    let nblk = cols.div_ceil(256);
    assert!(nblk > 0, "ternary GEMM on a matrix without columns");
    let pairs = a.n().div_ceil(2);
    let cp = nblk * 256;
    let codes_len = cols * ROWS;
    let rowbuf_len = ROWS * cp;
    let dbuf_len = nblk * ROWS * 4;
    let acts = a.token_pairs(pair_tokens).as_ptr();
    let base = SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        s.ensure(codes_len + rowbuf_len + dbuf_len);
        s.as_mut_ptr()
    });
    // The buffer stays valid: nothing below re-enters `gemm` on this thread.
    unsafe {
        let codes = base;
        let rowbuf = codes.add(codes_len);
        let dbuf = rowbuf.add(rowbuf_len).cast::<f32>();
        let mut tile_r0 = r0;
        while tile_r0 < r1 {
            let nr = ROWS.min(r1 - tile_r0);
            let packed = if F != TQ1 && nr == ROWS {
                cols / 256
            } else {
                0
            };
            let next = (tile_r0 + 2 * ROWS <= r1).then_some(tile_r0 + ROWS);
            for kb in 0..packed {
                pack_superblock::<F>(w, tile_r0, kb, next, codes);
                for i in 0..ROWS {
                    *dbuf.add(kb * ROWS + i) = block_scale::<F>(w.row(tile_r0 + i), kb);
                }
            }
            if packed < nblk {
                decode_rows::<F>(w, tile_r0, nr, packed..nblk, rowbuf, cp, codes, dbuf);
            }
            let mut q = 0;
            while q + TP <= pairs {
                micro::<F, TP>(codes, acts, dbuf, w, a, q, tile_r0, nr, out);
                q += TP;
            }
            if q + 2 <= pairs {
                micro::<F, 2>(codes, acts, dbuf, w, a, q, tile_r0, nr, out);
                q += 2;
            }
            if q < pairs {
                micro::<F, 1>(codes, acts, dbuf, w, a, q, tile_r0, nr, out);
            }
            tile_r0 += ROWS;
        }
    }
}

#[inline(always)]
unsafe fn ternary<const F: u8>(w: &TernaryView<'_>, a: &QuantActs, r0: usize, r1: usize, out: Out) {
    unsafe {
        if a.n() < GEMM_MIN_N {
            generic::gemv::<Dotprod, F>(w, a, r0, r1, out)
        } else {
            gemm::<F>(w, a, r0, r1, out)
        }
    }
}

macro_rules! entry {
    ($name:ident, $f:expr) => {
        #[target_feature(enable = "neon,dotprod,i8mm")]
        pub(crate) unsafe fn $name(
            w: &TernaryView<'_>,
            a: &QuantActs,
            r0: usize,
            r1: usize,
            out: Out,
        ) {
            unsafe { ternary::<{ $f }>(w, a, r0, r1, out) }
        }
    };
}
entry!(i2s, I2S);
entry!(tq2, TQ2);
entry!(tq1, TQ1);

fn has_i8mm() -> bool {
    std::arch::is_aarch64_feature_detected!("dotprod")
        && std::arch::is_aarch64_feature_detected!("i8mm")
}

pub(crate) static I8MM: Kernels = Kernels {
    name: "i8mm",
    description: "aarch64 NEON + int8 matrix multiply (smmla for prefill, sdot for decode)",
    needs: "the int8 matrix-multiply extension with dot product (Neoverse V1/N2/V2, Graviton 3 \
            or newer, Cortex-A510/A710 or newer, Apple M2 or newer)",
    detect: has_i8mm,
    ternary: [i2s, tq2, tq1],
    f16: super::arm::dotprod_f16,
    q8: super::arm::dotprod_q8,
    tile_rows: ROWS,
    simd: super::Simd::Baseline,
};
