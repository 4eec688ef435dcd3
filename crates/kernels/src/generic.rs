//! Kernels written once over a small SIMD vocabulary ([`Isa`]) and instantiated per instruction
//! set inside `#[target_feature]` entry points (see `isa_entries!`). Everything here is
//! `#[inline(always)]` so that it is compiled with the entry point's features.
//!
//! * GEMV (few tokens): each weight vector is loaded once, split into four code vectors with
//!   shift+mask, and dotted with the matching activation vectors; the activations of a 256-column
//!   super-block are loaded once for 4 rows.
//! * GEMM (many tokens): a tile of rows is brought to 8-bit codes in `[k/4][row][4]` order, so
//!   that one vector holds 4 consecutive columns of `W/4` rows: I2_S and TQ2_0 bytes are
//!   transposed in 4-byte cells while still packed and then split into codes; TQ1_0 and tails are
//!   decoded row by row and the codes transposed. ISAs with `SPLIT_IN_MICRO` (AVX-512) keep a
//!   full tile transposed but packed, `[k/16][row][4 bytes]`, and split each cell vector in the
//!   micro-kernel: a quarter of the tile stores, the shifts and masks running beside the dots.
//!   The micro-kernel broadcasts 4 activation bytes of a token and accumulates `RV` row vectors ×
//!   `T` tokens in registers: no horizontal sums, and the TQ per-block epilogue runs lane-wise
//!   (lane = row) in exactly the scalar order.
//!
//! Closures must not appear on SIMD paths: a closure does not inherit the `#[target_feature]`s of
//! the entry point it is inlined into (its parent is the generic function), so intrinsics inside
//! it would become out-of-line calls. Hence the explicit loops below.
//!
//! What it does NOT do: pick a variant or split work over threads ([`super::Kernels`] does).

// Index loops over small register arrays are deliberate: they unroll into straight-line code.
#![allow(clippy::needless_range_loop)]

use std::cell::RefCell;

use half::f16;

use super::acts::AlignedBuf;
use super::q8::Q8_BLOCK;
use super::scalar::{i2s_epilogue, tq_block_step};
use super::{Out, Q8Acts, Q8Matrix, QuantActs, TernaryView};
use bitnet_gguf::quant::ternary::{
    self as codec, I2S_BLOCK, TQ_BLOCK, TQ1_BLOCK_BYTES, TQ1_SCALE, TQ2_BLOCK_BYTES, TQ2_SCALE,
};

pub(crate) const I2S: u8 = 0;
pub(crate) const TQ2: u8 = 1;
pub(crate) const TQ1: u8 = 2;

/// The operations the generic kernels need from one instruction set. `W` is the vector width in
/// bytes (16, 32 or 64); an `A` accumulator holds `W/4` int32 lanes once finished, an `F` holds
/// `W/4` f32 lanes. All functions are `unsafe`: callers guarantee the CPU features and that
/// pointers are valid for the bytes read or written.
pub(crate) trait Isa {
    const W: usize;
    type V: Copy;
    type A: Copy;
    type F: Copy;

    unsafe fn vzero() -> Self::V;
    /// Hint that the cache line at `p` will be read soon.
    #[inline(always)]
    unsafe fn prefetch(_p: *const u8) {}
    unsafe fn load(p: *const u8) -> Self::V;
    unsafe fn store(p: *mut u8, v: Self::V);
    /// `(v >> SH) & 3` in every byte.
    unsafe fn codes<const SH: i32>(v: Self::V) -> Self::V;
    /// The 4 bytes at `p` repeated across the vector.
    unsafe fn bcast4(p: *const u8) -> Self::V;
    /// `W == 64` only: 32 bytes from `lo` then 32 from `hi`.
    unsafe fn load_pair(lo: *const u8, hi: *const u8) -> Self::V;
    /// `W == 64` only: inverse of `load_pair`.
    unsafe fn store_pair(lo: *mut u8, hi: *mut u8, v: Self::V);
    unsafe fn azero() -> Self::A;
    /// Lane-wise sum of two accumulators.
    unsafe fn aadd(a: Self::A, b: Self::A) -> Self::A;
    /// Lane i += Σ_{k<4} u[4i+k] · s[4i+k] with `u` unsigned ≤ 3 and `s` signed.
    unsafe fn dot(acc: Self::A, u: Self::V, s: Self::V) -> Self::A;
    /// Like `dot`, both operands signed with `a` in [−127, 127].
    unsafe fn dot_ss(acc: Self::A, a: Self::V, b: Self::V) -> Self::A;
    unsafe fn hsum(acc: Self::A) -> i32;
    /// Largest token tile of the GEMV (4, 2 or 1): 4 rows × this many tokens of accumulators,
    /// plus 4 activation vectors per token, must fit the register file.
    const GEMV_TOKENS: usize = 2;
    /// ISAs whose `dot` is `pmaddubsw` + `pmaddwd` + add can instead sum the int16 pair
    /// products of up to this many `dot16` steps before widening (`|pair| ≤ 768` for codes ≤ 3,
    /// so 32 steps stay below 2¹⁵). 0: not used.
    const I16_STEPS: usize = 0;
    /// GEMM: keep full I2_S / TQ2_0 tiles transposed but still packed (2 bits a weight) and
    /// split each cell vector into codes inside the micro-kernel, instead of expanding the tile
    /// to one byte a weight first. Pays where the split's shifts and masks run beside the dot
    /// products and the expanded tile's stores were the cost (measured on AVX-512); requires
    /// `I16_STEPS == 0`.
    const SPLIT_IN_MICRO: bool = false;
    /// int16 lanes += the two u8·i8 products of each byte pair (`pmaddubsw` + add).
    #[inline(always)]
    unsafe fn dot16(_acc: Self::V, _u: Self::V, _s: Self::V) -> Self::V {
        unreachable!("dot16 is only used when I16_STEPS > 0")
    }
    /// `acc` + the int16 lanes of `acc16` summed in pairs into int32 lanes.
    #[inline(always)]
    unsafe fn widen(_acc: Self::A, _acc16: Self::V) -> Self::A {
        unreachable!("widen is only used when I16_STEPS > 0")
    }
    /// Four horizontal sums at once (x86 overrides this with a transpose-and-add).
    #[inline(always)]
    unsafe fn hsum4(a: [Self::A; 4]) -> [i32; 4] {
        unsafe {
            [
                Self::hsum(a[0]),
                Self::hsum(a[1]),
                Self::hsum(a[2]),
                Self::hsum(a[3]),
            ]
        }
    }
    /// Per lane: `(lane − x) as f32`.
    unsafe fn lanes_minus_f32(acc: Self::A, x: i32) -> Self::F;

    unsafe fn fzero() -> Self::F;
    unsafe fn fsplat(x: f32) -> Self::F;
    unsafe fn fload(p: *const f32) -> Self::F;
    /// Stores the first `n` (1..=W/4) lanes.
    unsafe fn fstore_n(p: *mut f32, v: Self::F, n: usize);
    unsafe fn fadd(a: Self::F, b: Self::F) -> Self::F;
    unsafe fn fsub(a: Self::F, b: Self::F) -> Self::F;
    unsafe fn fmul(a: Self::F, b: Self::F) -> Self::F;
    unsafe fn fdiv(a: Self::F, b: Self::F) -> Self::F;
    /// `a · b + c`, fused where the ISA has FMA.
    unsafe fn fmadd(a: Self::F, b: Self::F, c: Self::F) -> Self::F;
    unsafe fn fhsum(v: Self::F) -> f32;
    /// `W/4` fp16 values → f32.
    unsafe fn f16_load(p: *const u16) -> Self::F;
    /// Per-lane scale for the `W/4` int32 lanes of a Q8 dot whose `W` bytes start at a block
    /// boundary (`W == 64`: lanes 0..8 get `p[0]`, 8..16 get `p[1]`) or inside block `p[0]`.
    unsafe fn q8_scales(p: *const f32) -> Self::F;
    /// Transposes a `(W/4) × (W/4)` matrix of 4-byte cells: source row i at `src + i·ss`, result
    /// row j (cell j of every source row) at `dst + j·ds`.
    unsafe fn transpose(src: *const u8, ss: usize, dst: *mut u8, ds: usize);
    /// Decodes one 54-byte TQ1_0 block into 256 codes in column order.
    unsafe fn tq1_block(src: *const u8, dst: *mut u8);
    /// Two blocks at once (two rows); wide ISAs override this to fill their vectors.
    #[inline(always)]
    unsafe fn tq1_block2(a: *const u8, b: *const u8, da: *mut u8, db: *mut u8) {
        unsafe {
            Self::tq1_block(a, da);
            Self::tq1_block(b, db);
        }
    }
}

/// How far ahead (bytes) the GEMVs prefetch weights. The hardware prefetchers alone reach ~60%
/// of DRAM bandwidth on the short, interleaved row streams of a GEMV (kernel_bench: 18 → 28 GB/s
/// for one thread on a 2560×2560 I2_S matrix with it).
pub(crate) const PREFETCH_BYTES: usize = 8192;

/// Prefetch distance for rows of `row_bytes` processed `group` at a time: whole groups, ≥ 8 KiB.
#[inline(always)]
fn prefetch_distance(row_bytes: usize, group: usize) -> usize {
    PREFETCH_BYTES
        .div_ceil(row_bytes.max(1))
        .next_multiple_of(group)
        .max(group)
        * row_bytes
}

/// Tokens from which the GEMM path is used. Measured on v4 (2560×2560 I2_S, one thread, CPU
/// time): GEMV costs ~27 µs per token; GEMM ~12 µs per token plus ~190 µs per call to decode and
/// transpose the weights, so GEMM wins from about 12 tokens.
pub(crate) const GEMM_MIN_N: usize = 12;

#[repr(C, align(64))]
struct Codes256([u8; 256]);

/// The activation vector that meets group `g` of weight vector `sub` of a 256-column super-block
/// whose int8 activations start at `q` (see `bitnet_gguf::quant::ternary` for the packing).
#[inline(always)]
unsafe fn act<I: Isa>(q: *const u8, sub: usize, g: usize) -> I::V {
    unsafe {
        match I::W {
            64 => I::load_pair(q.add(32 * g), q.add(128 + 32 * g)),
            32 => I::load(q.add(128 * sub + 32 * g)),
            _ => I::load(q.add(128 * (sub / 2) + 32 * g + 16 * (sub % 2))),
        }
    }
}

/// Inverse of [`act`]: stores group `g` of weight vector `sub` at its natural column positions.
#[inline(always)]
unsafe fn store_natural<I: Isa>(dst: *mut u8, sub: usize, g: usize, v: I::V) {
    unsafe {
        match I::W {
            64 => I::store_pair(dst.add(32 * g), dst.add(128 + 32 * g), v),
            32 => I::store(dst.add(128 * sub + 32 * g), v),
            _ => I::store(dst.add(128 * (sub / 2) + 32 * g + 16 * (sub % 2)), v),
        }
    }
}

/// The four code vectors of a weight vector: I2_S keeps group 0 in the top bits, TQ2_0 in the
/// bottom bits.
#[inline(always)]
pub(crate) unsafe fn split<I: Isa, const TQ: bool>(v: I::V) -> [I::V; 4] {
    unsafe {
        if TQ {
            [
                I::codes::<0>(v),
                I::codes::<2>(v),
                I::codes::<4>(v),
                I::codes::<6>(v),
            ]
        } else {
            [
                I::codes::<6>(v),
                I::codes::<4>(v),
                I::codes::<2>(v),
                I::codes::<0>(v),
            ]
        }
    }
}

/// Group `g`'s codes of a packed I2_S / TQ2_0 vector (the `g`-th element of [`split`]).
#[inline(always)]
unsafe fn group_codes<I: Isa, const F: u8>(v: I::V, g: usize) -> I::V {
    unsafe {
        match (F == I2S, g) {
            (true, 0) | (false, 3) => I::codes::<6>(v),
            (true, 1) | (false, 2) => I::codes::<4>(v),
            (true, 2) | (false, 1) => I::codes::<2>(v),
            _ => I::codes::<0>(v),
        }
    }
}

/// Scalar dot of a 128-column I2_S block (the odd last block when `cols % 256 == 128`).
#[inline(always)]
fn i2s_tail_block(row: &[u8], q: &[i8], blk: usize) -> i32 {
    (blk * I2S_BLOCK..(blk + 1) * I2S_BLOCK)
        .map(|c| i32::from(codec::i2s_code(row, c)) * i32::from(q[c]))
        .sum()
}

/// fp16 bits → f32, exactly (normals and subnormals by rescaling 2¹¹², then inf/NaN), without
/// `half`'s per-call CPU-feature check.
#[inline(always)]
pub(crate) fn f16_bits_to_f32(h: u16) -> f32 {
    let sign = u32::from(h & 0x8000) << 16;
    let em = u32::from(h & 0x7fff);
    let v = if em >= 0x7c00 {
        f32::from_bits(0x7f80_0000 | (em & 0x3ff) << 13)
    } else {
        f32::from_bits(em << 13) * f32::from_bits(0x7780_0000) // × 2^112
    };
    f32::from_bits(v.to_bits() | sign)
}

#[inline(always)]
pub(crate) fn tq_scale(row: &[u8], at: usize) -> f32 {
    f16_bits_to_f32(u16::from_le_bytes([row[at], row[at + 1]]))
}

/// Horizontal sums of R accumulators (groups of four reduced together).
#[inline(always)]
unsafe fn hsums<I: Isa, const R: usize>(acc: &[I::A; R]) -> [i32; R] {
    let mut out = [0i32; R];
    let mut i = 0;
    unsafe {
        while i + 4 <= R {
            let s = I::hsum4([acc[i], acc[i + 1], acc[i + 2], acc[i + 3]]);
            out[i..i + 4].copy_from_slice(&s);
            i += 4;
        }
        while i < R {
            out[i] = I::hsum(acc[i]);
            i += 1;
        }
    }
    out
}

/// Dots one 256-column super-block (64 code bytes per row at `w[i]`) of R rows with TT tokens
/// (activations at `q[t]`): each weight vector is split into codes once for all tokens.
#[inline(always)]
unsafe fn superblock_tokens<I: Isa, const TQ: bool, const R: usize, const TT: usize>(
    acc: &mut [[I::A; TT]; R],
    w: &[*const u8; R],
    q: &[*const u8; TT],
) {
    unsafe {
        let mut acc16 = [[I::vzero(); TT]; R];
        // Few tiles with a one-instruction dot: one chain per group, or the dot latency (4–5
        // cycles per step on one accumulator) and not the loads would set the speed.
        let chains = I::I16_STEPS == 0 && R * TT < 4;
        let mut chain_acc = [[[I::azero(); 4]; TT]; R];
        for sub in 0..64 / I::W {
            let mut a = [[I::vzero(); 4]; TT];
            for t in 0..TT {
                for g in 0..4 {
                    a[t][g] = act::<I>(q[t], sub, g);
                }
            }
            for i in 0..R {
                let c = split::<I, TQ>(I::load(w[i].add(sub * I::W)));
                for t in 0..TT {
                    if I::I16_STEPS > 0 {
                        // ≤ 16 int16 steps per super-block (4 groups × 64/W), within I16_STEPS.
                        let mut s = acc16[i][t];
                        for g in 0..4 {
                            s = I::dot16(s, c[g], a[t][g]);
                        }
                        acc16[i][t] = s;
                    } else if chains {
                        for g in 0..4 {
                            chain_acc[i][t][g] = I::dot(chain_acc[i][t][g], c[g], a[t][g]);
                        }
                    } else {
                        let mut s = acc[i][t];
                        for g in 0..4 {
                            s = I::dot(s, c[g], a[t][g]);
                        }
                        acc[i][t] = s;
                    }
                }
            }
        }
        if I::I16_STEPS > 0 {
            for i in 0..R {
                for t in 0..TT {
                    acc[i][t] = I::widen(acc[i][t], acc16[i][t]);
                }
            }
        } else if chains {
            for i in 0..R {
                for t in 0..TT {
                    let [s0, s1, s2, s3] = chain_acc[i][t];
                    let s = I::aadd(I::aadd(s0, s1), I::aadd(s2, s3));
                    acc[i][t] = I::aadd(acc[i][t], s);
                }
            }
        }
    }
}

/// I2_S / TQ2_0 GEMV over rows `r..r+R` and tokens `t0..t0+TT`.
#[inline(always)]
unsafe fn gemv_tile<I: Isa, const F: u8, const R: usize, const TT: usize>(
    w: &TernaryView<'_>,
    a: &QuantActs,
    r: usize,
    t0: usize,
    out: Out,
) {
    let cols = w.cols;
    let rows: [&[u8]; R] = std::array::from_fn(|i| w.row(r + i));
    let ptrs: [*const u8; R] = std::array::from_fn(|i| rows[i].as_ptr());
    let q: [*const u8; TT] = std::array::from_fn(|t| a.q_ptr(t0 + t));
    // Weights come from DRAM only for the first token tile; later tiles find them in L1.
    let pf = prefetch_distance(w.row_bytes(), R);
    let mut y = [[0f32; TT]; R];
    unsafe {
        if F == I2S {
            let mut acc = [[I::azero(); TT]; R];
            for sb in 0..cols / 256 {
                let p = ptrs.map(|p| p.add(64 * sb));
                if t0 == 0 {
                    for pi in p {
                        I::prefetch(pi.wrapping_add(pf));
                    }
                }
                let qs = q.map(|q| q.add(256 * sb));
                superblock_tokens::<I, false, R, TT>(&mut acc, &p, &qs);
            }
            for t in 0..TT {
                let tok = t0 + t;
                let col: [I::A; R] = std::array::from_fn(|i| acc[i][t]);
                let sums = hsums::<I, R>(&col);
                for i in 0..R {
                    let mut s = sums[i];
                    if !cols.is_multiple_of(256) {
                        s += i2s_tail_block(rows[i], a.q(tok), cols / I2S_BLOCK - 1);
                    }
                    y[i][t] = i2s_epilogue(s, a.sum(tok), a.scale(tok), w.scale);
                }
            }
        } else {
            let mut f = [[0f32; TT]; R];
            for b in 0..cols / TQ_BLOCK {
                let mut acc = [[I::azero(); TT]; R];
                let p = ptrs.map(|p| p.add(TQ2_BLOCK_BYTES * b));
                if t0 == 0 {
                    for pi in p {
                        I::prefetch(pi.wrapping_add(pf));
                        I::prefetch(pi.wrapping_add(pf + 64));
                    }
                }
                let qs = q.map(|q| q.add(256 * b));
                superblock_tokens::<I, true, R, TT>(&mut acc, &p, &qs);
                let d: [f32; R] =
                    std::array::from_fn(|i| tq_scale(rows[i], TQ2_BLOCK_BYTES * b + TQ2_SCALE));
                for t in 0..TT {
                    let col: [I::A; R] = std::array::from_fn(|i| acc[i][t]);
                    let sums = hsums::<I, R>(&col);
                    let bsum = a.block_sums(t0 + t)[b];
                    for i in 0..R {
                        f[i][t] = tq_block_step(f[i][t], d[i], sums[i], bsum);
                    }
                }
            }
            for t in 0..TT {
                for i in 0..R {
                    y[i][t] = f[i][t] / a.scale(t0 + t);
                }
            }
        }
        for t in 0..TT {
            for i in 0..R {
                *out.ptr.add((t0 + t) * out.stride + r + i) = y[i][t];
            }
        }
    }
}

/// TQ1_0 GEMV over rows `r..r+R` and all tokens (fewer than [`GEMM_MIN_N`]): each block is
/// decoded to codes once and dotted with every token.
#[inline(always)]
unsafe fn gemv_tq1<I: Isa, const R: usize>(w: &TernaryView<'_>, a: &QuantActs, r: usize, out: Out) {
    let n = a.n();
    debug_assert!(n < GEMM_MIN_N);
    let rows: [&[u8]; R] = std::array::from_fn(|i| w.row(r + i));
    let ptrs: [*const u8; R] = std::array::from_fn(|i| rows[i].as_ptr());
    let mut buf = [const { Codes256([0; 256]) }; R];
    let pf = prefetch_distance(w.row_bytes(), R);
    let mut f = [[0f32; GEMM_MIN_N]; R];
    unsafe {
        for b in 0..w.cols / TQ_BLOCK {
            let off = TQ1_BLOCK_BYTES * b;
            for pi in ptrs {
                I::prefetch(pi.wrapping_add(pf + off));
            }
            let mut i = 0;
            while i + 1 < R {
                let (lo, hi) = buf.split_at_mut(i + 1);
                I::tq1_block2(
                    ptrs[i].add(off),
                    ptrs[i + 1].add(off),
                    lo[i].0.as_mut_ptr(),
                    hi[0].0.as_mut_ptr(),
                );
                i += 2;
            }
            if i < R {
                I::tq1_block(ptrs[i].add(off), buf[i].0.as_mut_ptr());
            }
            let d: [f32; R] = std::array::from_fn(|i| tq_scale(rows[i], off + TQ1_SCALE));
            for t in 0..n {
                let q = a.q_ptr(t).add(256 * b);
                let mut acc = [I::azero(); R];
                for k in 0..256 / I::W {
                    let av = I::load(q.add(k * I::W));
                    for i in 0..R {
                        acc[i] = I::dot(acc[i], I::load(buf[i].0.as_ptr().add(k * I::W)), av);
                    }
                }
                let sums = hsums::<I, R>(&acc);
                let bsum = a.block_sums(t)[b];
                for i in 0..R {
                    f[i][t] = tq_block_step(f[i][t], d[i], sums[i], bsum);
                }
            }
        }
        for t in 0..n {
            for i in 0..R {
                *out.ptr.add(t * out.stride + r + i) = f[i][t] / a.scale(t);
            }
        }
    }
}

/// GEMV rows `r..r+R`, all tokens in tiles of up to `I::GEMV_TOKENS`.
#[inline(always)]
unsafe fn gemv_rows<I: Isa, const F: u8, const R: usize>(
    w: &TernaryView<'_>,
    a: &QuantActs,
    r: usize,
    out: Out,
) {
    unsafe {
        if F == TQ1 {
            return gemv_tq1::<I, R>(w, a, r, out);
        }
        let n = a.n();
        let mut t0 = 0;
        if I::GEMV_TOKENS >= 4 {
            while t0 + 4 <= n {
                gemv_tile::<I, F, R, 4>(w, a, r, t0, out);
                t0 += 4;
            }
        }
        if I::GEMV_TOKENS >= 2 {
            while t0 + 2 <= n {
                gemv_tile::<I, F, R, 2>(w, a, r, t0, out);
                t0 += 2;
            }
        }
        while t0 < n {
            gemv_tile::<I, F, R, 1>(w, a, r, t0, out);
            t0 += 1;
        }
    }
}

/// Up to this many tokens the GEMV walks one row at a time: the weights are then one
/// sequential stream, which the hardware prefetchers follow at full speed, while four rows
/// side by side are four interleaved streams that they follow poorly. From more tokens on,
/// sharing each activation load over four rows matters more. Measured with `bitnet-server
/// bench` on the 2B-4T shape, 2 threads, Zen 4 (tok/s, four rows → one row): I2_S v4 1 token
/// 19.3 → 21.5, 2 tokens 30.7 → 33.5, 4 tokens 54.8 → 52.9, 8 tokens 69.1 → 59.1; 1 token on
/// v3 17.8 → 21.8, v2 11.8 → 12.2, TQ2_0 v4 18.0 → 21.5.
const GEMV_ONE_ROW_MAX_N: usize = 2;

#[inline(always)]
pub(crate) unsafe fn gemv<I: Isa, const F: u8>(
    w: &TernaryView<'_>,
    a: &QuantActs,
    r0: usize,
    r1: usize,
    out: Out,
) {
    let mut r = r0;
    unsafe {
        if a.n() > GEMV_ONE_ROW_MAX_N {
            while r + 4 <= r1 {
                gemv_rows::<I, F, 4>(w, a, r, out);
                r += 4;
            }
        }
        while r < r1 {
            gemv_rows::<I, F, 1>(w, a, r, out);
            r += 1;
        }
    }
}

thread_local! {
    static SCRATCH: RefCell<AlignedBuf> = RefCell::new(AlignedBuf::default());
}

/// Decodes the 256-column super-block `kb` (or the 128-column I2_S tail) of one row into codes in
/// natural order at `dst`.
#[inline(always)]
pub(crate) unsafe fn decode_superblock<I: Isa, const F: u8>(
    row: &[u8],
    cols: usize,
    kb: usize,
    dst: *mut u8,
) {
    unsafe {
        match F {
            I2S if 256 * kb + 256 > cols => {
                for c in 0..128 {
                    *dst.add(c) = codec::i2s_code(row, 256 * kb + c);
                }
            }
            I2S | TQ2 => {
                let src = if F == I2S {
                    64 * kb
                } else {
                    TQ2_BLOCK_BYTES * kb
                };
                let p = row.as_ptr().add(src);
                for sub in 0..64 / I::W {
                    let c = if F == I2S {
                        split::<I, false>(I::load(p.add(sub * I::W)))
                    } else {
                        split::<I, true>(I::load(p.add(sub * I::W)))
                    };
                    for g in 0..4 {
                        store_natural::<I>(dst, sub, g, c[g]);
                    }
                }
            }
            _ => I::tq1_block(row.as_ptr().add(TQ1_BLOCK_BYTES * kb), dst),
        }
    }
}

/// The GEMM micro-kernel: `RV` vectors of rows × `T` tokens starting at token `t0`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn micro<I: Isa, const F: u8, const RV: usize, const T: usize, const RAW: bool>(
    codes: *const u8,
    dbuf: *const f32,
    w: &TernaryView<'_>,
    a: &QuantActs,
    t0: usize,
    tile_r0: usize,
    nr: usize,
    out: Out,
) {
    let lanes = I::W / 4;
    let rt = RV * lanes;
    let nkq = w.cols / 4;
    let nblk = w.cols.div_ceil(256);
    unsafe {
        let q: [*const u8; T] = std::array::from_fn(|t| a.q_ptr(t0 + t));
        let mut acc = [[I::azero(); RV]; T];
        let mut facc = [[I::fzero(); RV]; T];
        for kb in 0..nblk {
            let end = (64 * kb + 64).min(nkq);
            if RAW {
                // `codes` holds packed cell vectors `[kb][m][v]` (see `pack_superblock`): cell m of
                // group g is k-step 64·kb + 32·(m/8) + 8·g + m%8.
                for m in 0..16 {
                    let base = codes.add((kb * 16 + m) * RV * I::W);
                    let mut p = [I::vzero(); RV];
                    for v in 0..RV {
                        p[v] = I::load(base.add(v * I::W));
                    }
                    for g in 0..4 {
                        let kq = 64 * kb + 32 * (m / 8) + 8 * g + m % 8;
                        let mut c = [I::vzero(); RV];
                        for v in 0..RV {
                            c[v] = group_codes::<I, F>(p[v], g);
                        }
                        for t in 0..T {
                            let b = I::bcast4(q[t].add(4 * kq));
                            for v in 0..RV {
                                acc[t][v] = I::dot(acc[t][v], c[v], b);
                            }
                        }
                    }
                }
            } else if I::I16_STEPS > 0 {
                // int16 partial sums, widened every I16_STEPS k-steps (exact, see I16_STEPS).
                let mut kq = 64 * kb;
                while kq < end {
                    let stop = (kq + I::I16_STEPS).min(end);
                    let mut acc16 = [[I::vzero(); RV]; T];
                    while kq < stop {
                        let base = codes.add(kq * rt * 4);
                        let mut c = [I::vzero(); RV];
                        for v in 0..RV {
                            c[v] = I::load(base.add(v * I::W));
                        }
                        for t in 0..T {
                            let b = I::bcast4(q[t].add(4 * kq));
                            for v in 0..RV {
                                acc16[t][v] = I::dot16(acc16[t][v], c[v], b);
                            }
                        }
                        kq += 1;
                    }
                    for t in 0..T {
                        for v in 0..RV {
                            acc[t][v] = I::widen(acc[t][v], acc16[t][v]);
                        }
                    }
                }
            } else {
                for kq in 64 * kb..end {
                    let base = codes.add(kq * rt * 4);
                    let mut c = [I::vzero(); RV];
                    for v in 0..RV {
                        c[v] = I::load(base.add(v * I::W));
                    }
                    for t in 0..T {
                        let b = I::bcast4(q[t].add(4 * kq));
                        for v in 0..RV {
                            acc[t][v] = I::dot(acc[t][v], c[v], b);
                        }
                    }
                }
            }
            if F != I2S {
                let mut d = [I::fzero(); RV];
                for v in 0..RV {
                    d[v] = I::fload(dbuf.add(kb * rt + v * lanes));
                }
                for t in 0..T {
                    let bs = *a.block_sums(t0 + t).get_unchecked(kb);
                    for v in 0..RV {
                        let x = I::lanes_minus_f32(acc[t][v], bs);
                        facc[t][v] = I::fadd(facc[t][v], I::fmul(d[v], x));
                        acc[t][v] = I::azero();
                    }
                }
            }
        }
        for t in 0..T {
            let tok = t0 + t;
            let s = I::fsplat(a.scale(tok));
            for v in 0..RV {
                let y = if F == I2S {
                    let x = I::fsub(
                        I::lanes_minus_f32(acc[t][v], 0),
                        I::fsplat(a.sum(tok) as f32),
                    );
                    I::fmul(I::fdiv(x, s), I::fsplat(w.scale))
                } else {
                    I::fdiv(facc[t][v], s)
                };
                let first = v * lanes;
                if first < nr {
                    let p = out.ptr.add(tok * out.stride + tile_r0 + first);
                    I::fstore_n(p, y, (nr - first).min(lanes));
                }
            }
        }
    }
}

/// Byte offset of super-block `kb` in an I2_S or TQ2_0 row.
#[inline(always)]
pub(crate) fn superblock_offset<const F: u8>(kb: usize) -> usize {
    if F == I2S {
        64 * kb
    } else {
        TQ2_BLOCK_BYTES * kb
    }
}

/// Prefetches the bytes at `off` of `rows` rows from `r0`: the super-block the next tile's
/// transposes will read, so that they find it in the cache.
#[inline(always)]
pub(crate) unsafe fn prefetch_tile<I: Isa>(
    w: &TernaryView<'_>,
    r0: usize,
    rows: usize,
    off: usize,
) {
    let rb = w.row_bytes();
    unsafe {
        for i in 0..rows {
            I::prefetch(w.data.as_ptr().add((r0 + i) * rb + off));
        }
    }
}

/// Writes super-block `kb` of the `RV·W/4` rows from `tile_r0` (all inside the matrix) into the
/// micro-kernel's layout, straight from the packed I2_S / TQ2_0 bytes: each `W`-byte chunk of
/// `W/4` rows is transposed as 4-byte cells while still packed (a quarter of the bytes that
/// transposing decoded codes moves). Byte `b` of a super-block holds columns
/// `128·(b/32) + 32·g + b%32` for groups g = 0..4 (see `act`), so cell `m` (bytes 4m..4m+4)
/// of group g is k-step `32·(m/8) + 8·g + m%8`.
/// - `RAW` (`Isa::SPLIT_IN_MICRO`): the transposed cell vectors are the result, `[kb][m][v]`
///   (`W` bytes each: cell `m` of the rows of vector `v`); the micro-kernel splits them.
/// - otherwise each transposed vector splits here into four code vectors, one k-step each, in
///   the `[k/4][row][4]` layout.
///
/// `next` (if any) is the first row of the next tile, whose same super-block is prefetched.
#[inline(always)]
unsafe fn pack_superblock<I: Isa, const F: u8, const RV: usize, const RAW: bool>(
    w: &TernaryView<'_>,
    tile_r0: usize,
    kb: usize,
    next: Option<usize>,
    tmp: *mut u8,
    codes: *mut u8,
) {
    let lanes = I::W / 4;
    let rt = RV * lanes;
    let rb = w.row_bytes();
    let off = superblock_offset::<F>(kb);
    unsafe {
        if let Some(r) = next {
            prefetch_tile::<I>(w, r, rt, off);
        }
        for v in 0..RV {
            let src = w.data.as_ptr().add((tile_r0 + v * lanes) * rb + off);
            for c in 0..64 / I::W {
                if RAW {
                    let dst = codes.add(((kb * 16 + c * lanes) * RV + v) * I::W);
                    I::transpose(src.add(c * I::W), rb, dst, RV * I::W);
                    continue;
                }
                I::transpose(src.add(c * I::W), rb, tmp, I::W);
                for j in 0..lanes {
                    let m = c * lanes + j;
                    let cell = I::load(tmp.add(j * I::W));
                    let groups = if F == I2S {
                        split::<I, false>(cell)
                    } else {
                        split::<I, true>(cell)
                    };
                    for g in 0..4 {
                        let kq = 64 * kb + 32 * (m / 8) + 8 * g + m % 8;
                        I::store(codes.add((kq * rt + v * lanes) * 4), groups[g]);
                    }
                }
            }
        }
    }
}

/// Decodes super-blocks `kbs` of rows `tile_r0..tile_r0+nr` into the micro-kernel's layout
/// through a row-major code buffer (TQ1_0, the I2_S 128-column tail, and a matrix's last
/// partial tile, whose missing rows are zero codes): each row is decoded as one sequential
/// stream, then `W/4 × W/4` blocks of 4-code cells are transposed into `codes`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn decode_rows<I: Isa, const F: u8, const RV: usize>(
    w: &TernaryView<'_>,
    tile_r0: usize,
    nr: usize,
    kbs: std::ops::Range<usize>,
    rowbuf: *mut u8,
    cp: usize,
    codes: *mut u8,
    dbuf: *mut f32,
) {
    let lanes = I::W / 4;
    let rt = RV * lanes;
    let cols = w.cols;
    let nblk = cols.div_ceil(256);
    unsafe {
        let mut i = 0;
        if F == TQ1 {
            // Two rows per call: the wide decoders fill a vector with both.
            while i + 1 < nr {
                let (ra, rb) = (w.row(tile_r0 + i), w.row(tile_r0 + i + 1));
                for kb in kbs.clone() {
                    let off = TQ1_BLOCK_BYTES * kb;
                    I::prefetch(ra.as_ptr().wrapping_add(off + PREFETCH_BYTES));
                    I::prefetch(rb.as_ptr().wrapping_add(off + PREFETCH_BYTES));
                    I::tq1_block2(
                        ra.as_ptr().add(off),
                        rb.as_ptr().add(off),
                        rowbuf.add(i * cp + 256 * kb),
                        rowbuf.add((i + 1) * cp + 256 * kb),
                    );
                    *dbuf.add(kb * rt + i) = tq_scale(ra, off + TQ1_SCALE);
                    *dbuf.add(kb * rt + i + 1) = tq_scale(rb, off + TQ1_SCALE);
                }
                i += 2;
            }
        }
        while i < rt {
            let dst = rowbuf.add(i * cp);
            if i < nr {
                let row = w.row(tile_r0 + i);
                let per_block = w.row_bytes().div_ceil(nblk);
                for kb in kbs.clone() {
                    I::prefetch(row.as_ptr().wrapping_add(per_block * kb + PREFETCH_BYTES));
                    decode_superblock::<I, F>(row, cols, kb, dst.add(256 * kb));
                    *dbuf.add(kb * rt + i) = match F {
                        TQ2 => tq_scale(row, TQ2_BLOCK_BYTES * kb + TQ2_SCALE),
                        TQ1 => tq_scale(row, TQ1_BLOCK_BYTES * kb + TQ1_SCALE),
                        _ => 0.0,
                    };
                }
            } else {
                for kb in kbs.clone() {
                    std::ptr::write_bytes(dst.add(256 * kb), 0, 256);
                    *dbuf.add(kb * rt + i) = 0.0;
                }
            }
            i += 1;
        }
        for kb in kbs {
            let kc = 256.min(cols - 256 * kb);
            for v in 0..RV {
                for chunk in 0..kc / I::W {
                    let kq0 = 64 * kb + chunk * lanes;
                    I::transpose(
                        rowbuf.add(v * lanes * cp + 256 * kb + chunk * I::W),
                        cp,
                        codes.add((kq0 * rt + v * lanes) * 4),
                        rt * 4,
                    );
                }
            }
        }
    }
}

#[inline(always)]
unsafe fn gemm<I: Isa, const F: u8, const RV: usize, const T: usize>(
    w: &TernaryView<'_>,
    a: &QuantActs,
    r0: usize,
    r1: usize,
    out: Out,
) {
    let lanes = I::W / 4;
    let rt = RV * lanes;
    let cols = w.cols;
    let nblk = cols.div_ceil(256);
    // Always true (activations have at least one column); stated so that the compiler knows
    // the micro-kernels' block loops run, and drops the zeroed stack copy of the accumulators it
    // otherwise keeps for the no-block path (a 1.5 KB memset per micro-kernel call).
    assert!(nblk > 0, "ternary GEMM on a matrix without columns");
    let cp = nblk * 256;
    let codes_len = cols * rt;
    let rowbuf_len = rt * cp;
    let dbuf_len = nblk * rt * 4;
    let tmp_len = lanes * I::W;
    let base = SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        s.ensure(codes_len + rowbuf_len + dbuf_len + tmp_len);
        s.as_mut_ptr()
    });
    // The buffer stays valid: nothing below re-enters `gemm` on this thread.
    unsafe {
        let bufs = TileBufs {
            codes: base,
            rowbuf: base.add(codes_len),
            cp,
            dbuf: base.add(codes_len + rowbuf_len).cast::<f32>(),
            tmp: base.add(codes_len + rowbuf_len + dbuf_len),
        };
        let mut tile_r0 = r0;
        while tile_r0 < r1 {
            let nr = rt.min(r1 - tile_r0);
            let next = (tile_r0 + 2 * rt <= r1).then_some(tile_r0 + rt);
            // Where the ISA splits in the micro-kernel, a full tile of whole super-blocks stays
            // packed.
            let raw = I::SPLIT_IN_MICRO
                && I::I16_STEPS == 0
                && F != TQ1
                && nr == rt
                && cols.is_multiple_of(256);
            if raw {
                tile::<I, F, RV, T, true>(w, a, tile_r0, nr, next, bufs, out);
            } else {
                tile::<I, F, RV, T, false>(w, a, tile_r0, nr, next, bufs, out);
            }
            tile_r0 += rt;
        }
    }
}

/// A GEMM's per-thread scratch: the tile's codes, the row-major code buffer (`cp` bytes a row)
/// and the TQ block scales of the decode path, and `pack_superblock`'s transpose buffer.
#[derive(Clone, Copy)]
struct TileBufs {
    codes: *mut u8,
    rowbuf: *mut u8,
    cp: usize,
    dbuf: *mut f32,
    tmp: *mut u8,
}

/// One tile of `nr` rows from `tile_r0`: its codes, then every token's products. Whole 256-column
/// super-blocks of a full tile are transposed while still packed (and with `RAW`, left packed);
/// the rest goes through the row-major code buffer. `next`: the next tile's first row.
#[inline(always)]
unsafe fn tile<I: Isa, const F: u8, const RV: usize, const T: usize, const RAW: bool>(
    w: &TernaryView<'_>,
    a: &QuantActs,
    tile_r0: usize,
    nr: usize,
    next: Option<usize>,
    b: TileBufs,
    out: Out,
) {
    let rt = RV * I::W / 4;
    let nblk = w.cols.div_ceil(256);
    let packed = if F != TQ1 && nr == rt {
        w.cols / 256
    } else {
        0
    };
    unsafe {
        for kb in 0..packed {
            pack_superblock::<I, F, RV, RAW>(w, tile_r0, kb, next, b.tmp, b.codes);
            if F == TQ2 {
                for i in 0..rt {
                    let at = (tile_r0 + i) * w.row_bytes() + superblock_offset::<F>(kb) + 64;
                    *b.dbuf.add(kb * rt + i) = tq_scale(w.data, at);
                }
            }
        }
        if packed < nblk {
            decode_rows::<I, F, RV>(
                w,
                tile_r0,
                nr,
                packed..nblk,
                b.rowbuf,
                b.cp,
                b.codes,
                b.dbuf,
            );
        }
        // Every token: `T` at a time, then the remainder in halving steps.
        let (codes, dbuf) = (b.codes.cast_const(), b.dbuf.cast_const());
        let n = a.n();
        let mut t0 = 0;
        while t0 + T <= n {
            micro::<I, F, RV, T, RAW>(codes, dbuf, w, a, t0, tile_r0, nr, out);
            t0 += T;
        }
        let mut rem = n - t0;
        if T > 8 && rem >= 8 {
            micro::<I, F, RV, 8, RAW>(codes, dbuf, w, a, t0, tile_r0, nr, out);
            t0 += 8;
            rem -= 8;
        }
        if T > 4 && rem >= 4 {
            micro::<I, F, RV, 4, RAW>(codes, dbuf, w, a, t0, tile_r0, nr, out);
            t0 += 4;
            rem -= 4;
        }
        if T > 2 && rem >= 2 {
            micro::<I, F, RV, 2, RAW>(codes, dbuf, w, a, t0, tile_r0, nr, out);
            t0 += 2;
            rem -= 2;
        }
        if rem >= 1 {
            micro::<I, F, RV, 1, RAW>(codes, dbuf, w, a, t0, tile_r0, nr, out);
        }
    }
}

/// Ternary entry: GEMV for few tokens, GEMM otherwise.
#[inline(always)]
pub(crate) unsafe fn ternary<I: Isa, const F: u8, const RV: usize, const T: usize>(
    w: &TernaryView<'_>,
    a: &QuantActs,
    r0: usize,
    r1: usize,
    out: Out,
) {
    unsafe {
        if a.n() < GEMM_MIN_N {
            gemv::<I, F>(w, a, r0, r1, out)
        } else {
            gemm::<I, F, RV, T>(w, a, r0, r1, out)
        }
    }
}

/// F16 × F32: `R` rows × `T` tokens per register tile.
#[inline(always)]
unsafe fn f16_tile<I: Isa, const R: usize, const T: usize>(
    w: *const u16,
    cols: usize,
    x: &[f32],
    r: usize,
    t0: usize,
    out: Out,
) {
    let lanes = I::W / 4;
    let main = cols / lanes * lanes;
    unsafe {
        let wr: [*const u16; R] = std::array::from_fn(|i| w.add((r + i) * cols));
        let xt: [*const f32; T] = std::array::from_fn(|t| x.as_ptr().add((t0 + t) * cols));
        let mut acc = [[I::fzero(); T]; R];
        // Weights come from DRAM only for the first token tile; later tiles hit the cache.
        let pf = if t0 == 0 {
            prefetch_distance(cols * 2, R)
        } else {
            0
        };
        let mut k = 0;
        while k < main {
            if pf != 0 && k % 32 == 0 {
                for i in 0..R {
                    I::prefetch(wr[i].cast::<u8>().wrapping_add(2 * k + pf));
                }
            }
            let mut xv = [I::fzero(); T];
            for t in 0..T {
                xv[t] = I::fload(xt[t].add(k));
            }
            for i in 0..R {
                let wv = I::f16_load(wr[i].add(k));
                for t in 0..T {
                    acc[i][t] = I::fmadd(wv, xv[t], acc[i][t]);
                }
            }
            k += lanes;
        }
        for i in 0..R {
            for t in 0..T {
                let mut s = I::fhsum(acc[i][t]);
                for j in main..cols {
                    s += f16::from_bits(*wr[i].add(j)).to_f32() * *xt[t].add(j);
                }
                *out.ptr.add((t0 + t) * out.stride + r + i) = s;
            }
        }
    }
}

#[inline(always)]
unsafe fn f16_rows<I: Isa, const R: usize, const T: usize>(
    w: *const u16,
    cols: usize,
    x: &[f32],
    r: usize,
    out: Out,
) {
    let n = x.len() / cols;
    let mut t0 = 0;
    unsafe {
        while t0 + T <= n {
            f16_tile::<I, R, T>(w, cols, x, r, t0, out);
            t0 += T;
        }
        if T > 3 && t0 + 3 <= n {
            f16_tile::<I, R, 3>(w, cols, x, r, t0, out);
            t0 += 3;
        }
        if T > 2 && t0 + 2 <= n {
            f16_tile::<I, R, 2>(w, cols, x, r, t0, out);
            t0 += 2;
        }
        while t0 < n {
            f16_tile::<I, R, 1>(w, cols, x, r, t0, out);
            t0 += 1;
        }
    }
}

/// F16 GEMV for few tokens: one row at a time, so the weights are read as a single sequential
/// stream (rows of 5 KiB read 4 at a time are 4 streams crossing a 4 KiB page each, which the
/// hardware prefetchers handle poorly). Each converted weight vector serves `TT` tokens; two
/// accumulators per token hide the FMA latency.
#[inline(always)]
unsafe fn f16_gemv_tile<I: Isa, const TT: usize>(
    wr: *const u16,
    cols: usize,
    x: &[f32],
    t0: usize,
    r: usize,
    out: Out,
) {
    let lanes = I::W / 4;
    let step = 2 * lanes;
    let main = cols / step * step;
    unsafe {
        let xt: [*const f32; TT] = std::array::from_fn(|t| x.as_ptr().add((t0 + t) * cols));
        let mut acc = [[I::fzero(); 2]; TT];
        let mut k = 0;
        while k < main {
            let w0 = I::f16_load(wr.add(k));
            let w1 = I::f16_load(wr.add(k + lanes));
            for t in 0..TT {
                acc[t][0] = I::fmadd(w0, I::fload(xt[t].add(k)), acc[t][0]);
                acc[t][1] = I::fmadd(w1, I::fload(xt[t].add(k + lanes)), acc[t][1]);
            }
            k += step;
        }
        if k + lanes <= cols {
            let w0 = I::f16_load(wr.add(k));
            for t in 0..TT {
                acc[t][0] = I::fmadd(w0, I::fload(xt[t].add(k)), acc[t][0]);
            }
            k += lanes;
        }
        for t in 0..TT {
            let mut s = I::fhsum(I::fadd(acc[t][0], acc[t][1]));
            for j in k..cols {
                s += f16::from_bits(*wr.add(j)).to_f32() * *xt[t].add(j);
            }
            *out.ptr.add((t0 + t) * out.stride + r) = s;
        }
    }
}

#[inline(always)]
unsafe fn f16_gemv<I: Isa>(w: *const u16, cols: usize, x: &[f32], r0: usize, r1: usize, out: Out) {
    let n = x.len() / cols;
    unsafe {
        for r in r0..r1 {
            let wr = w.add(r * cols);
            let mut t0 = 0;
            while t0 + 4 <= n {
                f16_gemv_tile::<I, 4>(wr, cols, x, t0, r, out);
                t0 += 4;
            }
            match n - t0 {
                3 => f16_gemv_tile::<I, 3>(wr, cols, x, t0, r, out),
                2 => f16_gemv_tile::<I, 2>(wr, cols, x, t0, r, out),
                1 => f16_gemv_tile::<I, 1>(wr, cols, x, t0, r, out),
                _ => {}
            }
        }
    }
}

/// Tokens from which the F16 kernel uses 4-row × T-token register tiles: from 3 tokens on, the
/// GEMV's one activation load per FMA (the activations of several tokens overflow L1) costs
/// more than the tiles' weaker weight streaming. Measured on v4, 2B-4T head, 2 threads
/// (`bitnet-server bench -b N`, aggregate decode tok/s, GEMV → tiles): 2 tokens 30.8 → 28.4,
/// 3 tokens 32.4 → 37.0, 4 tokens 41 → 56, 8 tokens 53 → 72.
const F16_TILE_MIN_N: usize = 3;

/// F16 entry: few tokens → [`f16_gemv`]; otherwise 4 rows × T tokens register tiles.
#[inline(always)]
pub(crate) unsafe fn f16<I: Isa, const T: usize>(
    w: *const u16,
    cols: usize,
    x: &[f32],
    r0: usize,
    r1: usize,
    out: Out,
) {
    let mut r = r0;
    unsafe {
        if x.len() / cols < F16_TILE_MIN_N {
            return f16_gemv::<I>(w, cols, x, r0, r1, out);
        }
        while r + 4 <= r1 {
            f16_rows::<I, 4, T>(w, cols, x, r, out);
            r += 4;
        }
        while r < r1 {
            f16_rows::<I, 1, T>(w, cols, x, r, out);
            r += 1;
        }
    }
}

/// Q8 head entry: per row and token, block dots scaled lane-wise and summed in f32.
#[inline(always)]
pub(crate) unsafe fn q8<I: Isa>(w: &Q8Matrix, a: &Q8Acts, r0: usize, r1: usize, out: Out) {
    let cols = w.cols();
    let nb = cols / Q8_BLOCK;
    let main = cols / I::W * I::W;
    let mut sc = vec![0f32; nb + 2];
    unsafe {
        for r in r0..r1 {
            let wq = w.q_ptr(r);
            let wd = w.row_d(r);
            for t in 0..a.n() {
                let xq = a.q_ptr(t);
                let xd = a.d(t);
                for b in 0..nb {
                    sc[b] = f16_bits_to_f32(wd[b].to_bits()) * xd[b];
                }
                let mut f = I::fzero();
                let mut k = 0;
                while k < main {
                    let p = I::dot_ss(I::azero(), I::load(wq.add(k)), I::load(xq.add(k)));
                    f = I::fmadd(
                        I::lanes_minus_f32(p, 0),
                        I::q8_scales(sc.as_ptr().add(k / 32)),
                        f,
                    );
                    k += I::W;
                }
                let mut s = I::fhsum(f);
                for b in main / 32..nb {
                    let mut dot = 0i32;
                    for j in 32 * b..32 * b + 32 {
                        dot += i32::from(*wq.add(j) as i8) * i32::from(*xq.add(j) as i8);
                    }
                    s += sc[b] * dot as f32;
                }
                *out.ptr.add(t * out.stride + r) = s;
            }
        }
    }
}

/// Defines the `#[target_feature]` entry points of one variant in the calling module:
/// `i2s`, `tq2`, `tq1`, `f16`, `q8` matching the function-pointer types of [`super::Kernels`].
macro_rules! isa_entries {
    ($isa:ty, $feat:literal, rv = $rv:literal, t = $t:literal, f16_t = $ft:literal) => {
        #[target_feature(enable = $feat)]
        pub(crate) unsafe fn i2s(
            w: &$crate::TernaryView<'_>,
            a: &$crate::QuantActs,
            r0: usize,
            r1: usize,
            out: $crate::Out,
        ) {
            use $crate::generic as g;
            unsafe { g::ternary::<$isa, { g::I2S }, $rv, $t>(w, a, r0, r1, out) }
        }
        #[target_feature(enable = $feat)]
        pub(crate) unsafe fn tq2(
            w: &$crate::TernaryView<'_>,
            a: &$crate::QuantActs,
            r0: usize,
            r1: usize,
            out: $crate::Out,
        ) {
            use $crate::generic as g;
            unsafe { g::ternary::<$isa, { g::TQ2 }, $rv, $t>(w, a, r0, r1, out) }
        }
        #[target_feature(enable = $feat)]
        pub(crate) unsafe fn tq1(
            w: &$crate::TernaryView<'_>,
            a: &$crate::QuantActs,
            r0: usize,
            r1: usize,
            out: $crate::Out,
        ) {
            use $crate::generic as g;
            unsafe { g::ternary::<$isa, { g::TQ1 }, $rv, $t>(w, a, r0, r1, out) }
        }
        #[target_feature(enable = $feat)]
        pub(crate) unsafe fn f16(
            w: *const u16,
            cols: usize,
            x: &[f32],
            r0: usize,
            r1: usize,
            out: $crate::Out,
        ) {
            unsafe { $crate::generic::f16::<$isa, $ft>(w, cols, x, r0, r1, out) }
        }
        #[target_feature(enable = $feat)]
        pub(crate) unsafe fn q8(
            w: &$crate::Q8Matrix,
            a: &$crate::Q8Acts,
            r0: usize,
            r1: usize,
            out: $crate::Out,
        ) {
            unsafe { $crate::generic::q8::<$isa>(w, a, r0, r1, out) }
        }
    };
}
pub(crate) use isa_entries;

#[cfg(test)]
mod tests {
    use super::f16_bits_to_f32;

    #[test]
    fn f16_conversion_is_exact_for_every_bit_pattern() {
        for h in 0..=u16::MAX {
            let want = half::f16::from_bits(h).to_f32();
            let got = f16_bits_to_f32(h);
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "{h:#06x}: {got:e} != {want:e}"
            );
        }
    }
}
