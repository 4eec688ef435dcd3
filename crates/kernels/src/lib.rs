//! Matrix kernels for the forward pass: ternary × int8 (I2_S, TQ2_0, TQ1_0), F16 × F32 and an
//! opt-in Q8 head, in one variant per instruction set, chosen once at start-up.
//!
//! # What is computed
//! For a ternary matrix `W` (rows × cols, codes c ∈ {0,1,2} meaning −1/0/+1) and activations
//! quantized per token by [`QuantActs`] (int8 `q`, scale `s`, `Σq`), every variant returns the
//! same f32 bits as the scalar reference:
//! * I2_S: `y = ((acc as f32) − (Σq as f32)) / s · scale` with `acc = Σ_j c_j·q_j` (i32) —
//!   bitnet.cpp's epilogue (`docs/model.md#the-ternary-matrix-product`).
//! * TQ2_0 / TQ1_0: `f = 0; for each 256-block b in order: f = f + d_b · ((acc_b − Σq_b) as f32)`,
//!   then `y = f / s`, with `d_b` the block's fp16 scale. (llama.cpp instead quantizes activations
//!   per 256-block, Q8_K; we keep BitNet's per-token scheme so all three formats agree.)
//!
//! Integer dot products are exact in every variant (no int16 saturation: codes ≤ 3), and the
//! float epilogue uses the same operations in the same order (no FMA contraction), so results are
//! bit-identical across variants and thread counts. F16 products accumulate in f32 with a
//! variant-dependent summation order (results agree to ~1e-6 relative); see [`Kernels::f16_matmul`].
//!
//! # Variants
//! `scalar` (reference, any CPU), `v2` (SSSE3/SSE4.1), `v3` (AVX2+FMA+F16C, `vpmaddubsw`),
//! `v3vnni` (v3 with AVX-VNNI `vpdpbusd`), `v4` (AVX-512 F/BW/VL + VNNI), `neon` (aarch64
//! baseline), `dotprod` (NEON + `sdot`, emitted with `asm!` because the intrinsic is unstable on
//! Rust 1.95), `i8mm` (`dotprod` with a prefill GEMM on `smmla`, `i8mm.rs`).
//! [`Kernels::select`] picks the best one the CPU supports (AVX-VNNI CPUs get `v3vnni`
//! automatically), or the one named by `BITNET_KERNEL` (`v3` then means plain AVX2).
//! AVX-512 CPUs without VNNI (Skylake-SP) get `v3`.
//!
//! The variant is the forward pass's only instruction-set decision: besides the matrix products
//! it fixes the code generation ([`Simd`], [`Kernels::simd`]) of activation quantization
//! ([`QuantActs::quantize_rows`]) and attention (`bitnet-model`'s `attention`), which take the variant
//! and detect nothing themselves. So `BITNET_KERNEL=scalar` runs portable code everywhere, `v3`
//! AVX2 everywhere, `v4` AVX-512 everywhere. All variants but `i8mm`'s GEMM are written
//! once over a small SIMD vocabulary (`generic.rs`), so the qemu-tested aarch64 code shares its
//! logic with the natively tested x86 code.
//!
//! # Shapes of the work
//! * Fewer than 12 tokens (decode, batched decode): a GEMV that splits each weight vector into
//!   codes in registers once and dots it with up to 4 tokens, 4 rows at a time, prefetching
//!   8 KiB ahead (the hardware prefetchers alone left it at ~60% of DRAM bandwidth). For I2_S and
//!   TQ2_0 it reads weights at about the machine's bandwidth on v4/v3vnni (v3: ~90%); TQ1_0's
//!   base-3 unpacking is compute-bound (~50% on v4).
//! * 12 tokens or more (prefill): a GEMM. A tile of rows is decoded once into 8-bit codes in
//!   `[k/4][row][4]` order (I2_S and TQ2_0 bytes are transposed while still packed, then split
//!   into codes), then a register-blocked micro-kernel broadcasts 4 activation bytes
//!   of a token and accumulates row vectors × tokens (v4: 32 rows × 12 tokens in 24 zmm,
//!   `vpdpbusd` at its peak of 2 per cycle). No horizontal sums, and the TQ per-block epilogue
//!   runs lane-wise in the scalar order.
//! * The F16 head reads one row at a time as a single stream (2–3 tokens share each converted
//!   weight), or 4-row × 4-token register tiles from 4 tokens.
//!
//! Weights are used in their on-disk packing; there is no load-time repacking: decode is
//! memory-bound with the file layout, and prefill's per-tile decode costs a few percent of a
//! 128-token GEMM without a second copy of the model in memory.
//!
//! Threads: [`ThreadPool`] hands out row chunks (multiples of the variant's GEMM tile, ~8 per
//! thread) dynamically; every chunk computes all tokens for its rows.
//!
//! # Cross-ISA testing
//! The tests in `crates/kernels/tests/kernels.rs` compare every variant the CPU has with `scalar`.
//! `crates/kernels/tests/kernels_cross.sh` runs the same test binary on CPUs this machine is not:
//! ```text
//! CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=rust-lld \
//!   cargo test -p bitnet-kernels --target aarch64-unknown-linux-musl --test kernels --no-run
//! BITNET_EXPECT_KERNELS=i8mm,dotprod,neon,scalar qemu-aarch64-static -cpu max <aarch64 binary>
//! BITNET_EXPECT_KERNELS=dotprod,neon,scalar qemu-aarch64-static -cpu neoverse-n1 <aarch64 binary>
//! BITNET_EXPECT_KERNELS=neon,scalar qemu-aarch64-static -cpu cortex-a72 <aarch64 binary>
//! BITNET_EXPECT_KERNELS=v3,v2,scalar qemu-x86_64-static -cpu Haswell-v4 <x86-64 binary>
//! BITNET_EXPECT_KERNELS=v2,scalar qemu-x86_64-static -cpu Nehalem-v2 <x86-64 binary>
//! ```
//! (`BITNET_EXPECT_KERNELS` makes the run fail if qemu exposes a different variant set.)
//!
//! # What this crate does NOT do
//! Read GGUF files, own weights, run attention or norms, or choose the thread count (beyond
//! [`ThreadPool`]'s physical-core default).

mod acts;
mod generic;
mod pool;
mod q8;
mod scalar;

#[cfg(target_arch = "aarch64")]
mod arm;
#[cfg(target_arch = "aarch64")]
mod i8mm;
#[cfg(target_arch = "x86_64")]
mod x86;

use bitnet_gguf::quant::ternary::I2S_TRAILER;
use std::fmt;

pub use acts::{QuantActs, round_small};
pub use bitnet_gguf::quant::ternary::TernaryFormat;
pub use pool::ThreadPool;
pub use q8::{Q8Acts, Q8Matrix};

/// Errors from kernel selection and from shape checks of weights handed to the kernels.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// `BITNET_KERNEL` (or `by_name`) named no known variant.
    #[error(
        "unknown kernel variant {name:?}; known variants: {known}. Unset BITNET_KERNEL to pick \
         the best one for this CPU"
    )]
    UnknownKernel { name: String, known: String },
    /// The named variant needs CPU features this machine lacks.
    #[error(
        "kernel variant {name:?} needs {needs}, which this CPU lacks; variants usable here: \
         {usable}. Unset BITNET_KERNEL to pick the best one automatically"
    )]
    Unsupported {
        name: String,
        needs: &'static str,
        usable: String,
    },
    /// A ternary matrix whose row length the format cannot hold.
    #[error("{format} needs the row length to be a multiple of {multiple}, but it is {cols}")]
    BadColumns {
        format: TernaryFormat,
        cols: usize,
        multiple: usize,
    },
    /// The byte slice of a matrix has the wrong length.
    #[error("{what}: a {rows}×{cols} matrix needs {need} bytes, but {got} were given")]
    BadLength {
        what: String,
        rows: usize,
        cols: usize,
        need: usize,
        got: usize,
    },
    /// A matrix dimension is zero or too large.
    #[error("{what}: invalid shape {rows}×{cols}: {why}")]
    BadShape {
        what: String,
        rows: usize,
        cols: usize,
        why: &'static str,
    },
}

/// Checks that rows of `cols` elements can be stored in `format`: a positive multiple of the
/// block size (I2_S 128, TQ 256).
pub fn check_cols(format: TernaryFormat, cols: usize) -> Result<(), KernelError> {
    let multiple = format.block_elems();
    if cols == 0 || !cols.is_multiple_of(multiple) {
        return Err(KernelError::BadColumns {
            format,
            cols,
            multiple,
        });
    }
    Ok(())
}

/// Position of `format`'s entry in [`Kernels`]' ternary table.
fn format_index(format: TernaryFormat) -> usize {
    match format {
        TernaryFormat::I2S => 0,
        TernaryFormat::Tq2_0 => 1,
        TernaryFormat::Tq1_0 => 2,
    }
}

/// A `rows × cols` ternary matrix in its on-disk packing (exactly the GGUF bytes).
/// Row `r` is `data[r · row_bytes ..][.. row_bytes]`. For I2_S `data` excludes the 32-byte
/// trailer and `scale` is the per-tensor f32 read from it; for TQ formats `scale` is 1.0 (block
/// scales are inline).
#[derive(Clone, Copy, Debug)]
pub struct TernaryView<'a> {
    pub format: TernaryFormat,
    pub rows: usize,
    pub cols: usize,
    pub data: &'a [u8],
    pub scale: f32,
}

impl<'a> TernaryView<'a> {
    /// A checked view: `cols` fits the format and `data` holds exactly `rows` rows.
    pub fn new(
        format: TernaryFormat,
        rows: usize,
        cols: usize,
        data: &'a [u8],
        scale: f32,
    ) -> Result<TernaryView<'a>, KernelError> {
        check_cols(format, cols)?;
        if rows == 0 {
            return Err(KernelError::BadShape {
                what: format!("{format} matrix"),
                rows,
                cols,
                why: "it has no rows",
            });
        }
        let need =
            rows.checked_mul(format.row_bytes(cols))
                .ok_or_else(|| KernelError::BadShape {
                    what: format!("{format} matrix"),
                    rows,
                    cols,
                    why: "its size overflows",
                })?;
        if data.len() != need {
            return Err(KernelError::BadLength {
                what: format!("{format} matrix"),
                rows,
                cols,
                need,
                got: data.len(),
            });
        }
        Ok(TernaryView {
            format,
            rows,
            cols,
            data,
            scale,
        })
    }

    /// A view of a whole I2_S tensor as stored in GGUF: `rows·cols/4` code bytes followed by the
    /// 32-byte trailer whose first 4 bytes are the little-endian f32 scale.
    pub fn from_i2s_tensor(
        rows: usize,
        cols: usize,
        tensor: &'a [u8],
    ) -> Result<TernaryView<'a>, KernelError> {
        check_cols(TernaryFormat::I2S, cols)?;
        let codes = rows.saturating_mul(TernaryFormat::I2S.row_bytes(cols));
        if codes == usize::MAX || tensor.len() != codes.saturating_add(I2S_TRAILER) {
            return Err(KernelError::BadLength {
                what: "I2_S tensor (codes + 32-byte trailer)".into(),
                rows,
                cols,
                need: codes.saturating_add(I2S_TRAILER),
                got: tensor.len(),
            });
        }
        let s = f32::from_le_bytes(tensor[codes..codes + 4].try_into().expect("4 bytes"));
        TernaryView::new(TernaryFormat::I2S, rows, cols, &tensor[..codes], s)
    }

    /// Bytes per row.
    pub fn row_bytes(&self) -> usize {
        self.format.row_bytes(self.cols)
    }

    /// Row `r`'s bytes.
    pub fn row(&self, r: usize) -> &'a [u8] {
        let rb = self.row_bytes();
        &self.data[r * rb..(r + 1) * rb]
    }
}

/// One matrix of a [`Kernels::ternary_matmul_many`] call and where its output goes.
pub struct TernaryJob<'a, 'b> {
    pub w: &'b TernaryView<'a>,
    pub y: &'b mut [f32],
    pub y_stride: usize,
}

/// Output pointer handed to kernels: element (token t, row r) lives at `ptr + t·stride + r`.
#[derive(Clone, Copy)]
pub(crate) struct Out {
    pub ptr: *mut f32,
    pub stride: usize,
}
// SAFETY: kernels running on different threads write disjoint row ranges.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

/// Ternary kernel: rows `r0..r1` of `w` times every token of `a`.
pub(crate) type TernaryFn = unsafe fn(&TernaryView<'_>, &QuantActs, usize, usize, Out);
/// F16 kernel: rows `r0..r1` of a row-major f16 matrix (`cols` wide) times n f32 tokens.
pub(crate) type F16Fn = unsafe fn(*const u16, usize, &[f32], usize, usize, Out);
/// Q8 head kernel: rows `r0..r1` of `w` times every token of `a`.
pub(crate) type Q8Fn = unsafe fn(&Q8Matrix, &Q8Acts, usize, usize, Out);

/// One kernel variant: a table of function pointers for one instruction set.
///
/// No load-time weight repacking is done: decode is memory-bound with the on-disk layout (the
/// weights are read once per token either way), and prefill re-packs each row tile into 8-bit
/// codes on the fly at a cost of a few percent, without a second copy of the model in memory.
pub struct Kernels {
    /// Short name, as accepted by `BITNET_KERNEL` and shown in `/health`.
    pub name: &'static str,
    /// One line: instruction set and what it uses.
    pub description: &'static str,
    /// CPU features it needs (for error messages).
    needs: &'static str,
    detect: fn() -> bool,
    ternary: [TernaryFn; 3],
    f16: F16Fn,
    q8: Q8Fn,
    /// Rows per GEMM tile; row chunks handed to threads are multiples of this.
    tile_rows: usize,
    /// Code generation of the per-token passes that run beside the matrix products.
    simd: Simd,
}

/// The code generation of the work outside the matrix products that still runs in SIMD entry
/// points: the fused norm + activation quantization ([`QuantActs::quantize_rows`]) and attention
/// (`model::attention`). It is part of the [`Kernels`] variant, so one decision (the variant,
/// which `BITNET_KERNEL` can force) fixes every instruction set the forward pass uses.
///
/// Every feature a width needs is implied by the features its variant checks (v4 has AVX-512F/BW
/// and FMA, v3 and v3vnni AVX2 and FMA), so a `Simd` read from a selected [`Kernels`] is safe
/// to run. All widths compute the same bits in quantization; attention agrees to float rounding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Simd {
    /// The architecture's baseline code generation: SSE2 on x86-64, NEON on aarch64, portable
    /// code elsewhere. Used by `scalar`, `v2` and every aarch64 variant.
    Baseline,
    /// AVX2 + FMA (`v3`, `v3vnni`).
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX-512F/BW + FMA (`v4`).
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl fmt::Debug for Kernels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kernels")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

fn always() -> bool {
    true
}

static SCALAR: Kernels = Kernels {
    name: "scalar",
    description: "portable scalar reference (any CPU)",
    needs: "nothing",
    detect: always,
    ternary: [scalar::i2s, scalar::tq2, scalar::tq1],
    f16: scalar::f16,
    q8: scalar::q8,
    tile_rows: 16,
    simd: Simd::Baseline,
};

/// Every variant compiled into this binary, best first (the last is always `scalar`).
fn table() -> &'static [&'static Kernels] {
    #[cfg(target_arch = "x86_64")]
    {
        static T: [&Kernels; 5] = [&x86::V4, &x86::V3VNNI, &x86::V3, &x86::V2, &SCALAR];
        &T
    }
    #[cfg(target_arch = "aarch64")]
    {
        static T: [&Kernels; 4] = [&i8mm::I8MM, &arm::DOTPROD, &arm::NEON, &SCALAR];
        &T
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        static T: [&Kernels; 1] = [&SCALAR];
        &T
    }
}

/// Names of variants that exist only for another architecture.
const OTHER_ARCH: &[(&str, &str)] = &[
    ("v2", "an x86-64 CPU"),
    ("v3", "an x86-64 CPU"),
    ("v3vnni", "an x86-64 CPU"),
    ("v4", "an x86-64 CPU"),
    ("neon", "an aarch64 CPU"),
    ("dotprod", "an aarch64 CPU"),
    ("i8mm", "an aarch64 CPU"),
];

impl Kernels {
    /// The variant named by `BITNET_KERNEL` if set (and non-empty), else the best one this CPU
    /// supports. Errors name the problem: unknown name, or features the CPU lacks.
    pub fn select() -> Result<&'static Kernels, KernelError> {
        let (k, how) = match std::env::var("BITNET_KERNEL") {
            Ok(name) if !name.trim().is_empty() => {
                (Kernels::by_name(name.trim())?, "BITNET_KERNEL")
            }
            _ => (Kernels::best(), "best for this CPU"),
        };
        tracing::info!(
            kernel = k.name,
            simd = ?k.simd,
            chosen_by = how,
            "matrix kernels: {}",
            k.description
        );
        Ok(k)
    }

    /// The best variant this CPU supports.
    pub fn best() -> &'static Kernels {
        table()
            .iter()
            .copied()
            .find(|k| (k.detect)())
            .unwrap_or(&SCALAR)
    }

    /// The variant called `name`, if this CPU supports it.
    pub fn by_name(name: &str) -> Result<&'static Kernels, KernelError> {
        let usable = || {
            Kernels::available()
                .iter()
                .map(|k| k.name)
                .collect::<Vec<_>>()
                .join(", ")
        };
        if let Some(k) = table().iter().find(|k| k.name == name) {
            if (k.detect)() {
                return Ok(k);
            }
            return Err(KernelError::Unsupported {
                name: name.into(),
                needs: k.needs,
                usable: usable(),
            });
        }
        if let Some((_, needs)) = OTHER_ARCH.iter().find(|(n, _)| *n == name) {
            return Err(KernelError::Unsupported {
                name: name.into(),
                needs,
                usable: usable(),
            });
        }
        let mut known: Vec<&str> = table().iter().map(|k| k.name).collect();
        for (n, _) in OTHER_ARCH {
            if !known.contains(n) {
                known.push(n);
            }
        }
        Err(KernelError::UnknownKernel {
            name: name.into(),
            known: known.join(", "),
        })
    }

    /// Every variant this CPU supports, best first (`scalar` last).
    pub fn available() -> Vec<&'static Kernels> {
        table().iter().copied().filter(|k| (k.detect)()).collect()
    }

    /// The scalar reference.
    pub fn scalar() -> &'static Kernels {
        &SCALAR
    }

    /// The code generation of activation quantization and attention with this variant (see
    /// [`Simd`]): `scalar`, `v2` and the aarch64 variants use the baseline, `v3`/`v3vnni` AVX2,
    /// `v4` AVX-512.
    pub fn simd(&self) -> Simd {
        self.simd
    }

    /// `y[t·y_stride + r] = (W · q_t)[r]` for every token `t` of `a` and every row `r` of `w`,
    /// with the epilogues in the module docs. Rows are split over the pool's threads.
    ///
    /// # Panics
    /// If `a.cols() != w.cols`, `y_stride < w.rows` (with more than one token) or `y` is too short.
    pub fn ternary_matmul(
        &self,
        pool: &ThreadPool,
        w: &TernaryView<'_>,
        a: &QuantActs,
        y: &mut [f32],
        y_stride: usize,
    ) {
        self.ternary_matmul_many(pool, a, &mut [TernaryJob { w, y, y_stride }]);
    }

    /// Several ternary matrices that read the same activations (Q/K/V, gate/up), computed in one
    /// parallel region to save the hand-off cost of separate regions.
    ///
    /// # Panics
    /// As [`Kernels::ternary_matmul`], for every job.
    pub fn ternary_matmul_many(&self, pool: &ThreadPool, a: &QuantActs, jobs: &mut [TernaryJob]) {
        let n = a.n();
        let mut plan = Vec::with_capacity(jobs.len());
        let mut total = 0usize;
        for job in jobs.iter_mut() {
            let w = job.w;
            assert_eq!(
                a.cols(),
                w.cols,
                "ternary_matmul: activations have {} columns, the {}×{} matrix {}",
                a.cols(),
                w.rows,
                w.cols,
                w.cols
            );
            check_out(job.y.len(), job.y_stride, w.rows, n, "ternary_matmul");
            assert!(
                w.data.len() >= w.rows * w.row_bytes(),
                "ternary_matmul: matrix data is shorter than {} rows",
                w.rows
            );
            let chunk = chunk_rows(w.rows, self.tile_rows, pool.threads());
            let out = Out {
                ptr: job.y.as_mut_ptr(),
                stride: job.y_stride,
            };
            plan.push((total, chunk, out, *w));
            total += w.rows.div_ceil(chunk);
        }
        if n == 0 {
            return;
        }
        pool.parallel_for(total, |c| {
            let j = plan.partition_point(|p| p.0 <= c) - 1;
            let (first, chunk, out, ref w) = plan[j];
            let r0 = (c - first) * chunk;
            let r1 = (r0 + chunk).min(w.rows);
            // SAFETY: the variant was detected on this CPU; shapes were checked above; chunks
            // write disjoint rows.
            unsafe { (self.ternary[format_index(w.format)])(w, a, r0, r1, out) };
        });
    }

    /// `y[t·y_stride + r] = Σ_j f32(w[r·cols + j]) · x[t·cols + j]` for the n = `x.len() / cols`
    /// tokens of `x`: the tied F16 output head (and any other F16 matrix).
    ///
    /// Weights are converted f16 → f32 exactly; `x` is used as f32 (ggml instead rounds `x` to
    /// f16 first, which loses ~3 decimal digits of the activations); products are accumulated in
    /// f32 with FMA where the CPU has it, in a variant-dependent order.
    ///
    /// # Panics
    /// If `w.len() != rows·cols`, `x.len()` is not a multiple of `cols`, or `y` is too short.
    #[allow(clippy::too_many_arguments)]
    pub fn f16_matmul(
        &self,
        pool: &ThreadPool,
        w: &[half::f16],
        rows: usize,
        cols: usize,
        x: &[f32],
        y: &mut [f32],
        y_stride: usize,
    ) {
        assert!(cols > 0, "f16_matmul: cols must be > 0");
        assert_eq!(
            w.len(),
            rows * cols,
            "f16_matmul: weight slice is not {rows}×{cols}"
        );
        assert!(
            x.len().is_multiple_of(cols),
            "f16_matmul: x is not a whole number of rows"
        );
        let n = x.len() / cols;
        check_out(y.len(), y_stride, rows, n, "f16_matmul");
        if n == 0 || rows == 0 {
            return;
        }
        let chunk = chunk_rows(rows, 16, pool.threads());
        let out = Out {
            ptr: y.as_mut_ptr(),
            stride: y_stride,
        };
        let wp = w.as_ptr().cast::<u16>(); // f16 is repr(transparent) over u16
        let wp = wp as usize;
        pool.parallel_for(rows.div_ceil(chunk), |c| {
            let r0 = c * chunk;
            let r1 = (r0 + chunk).min(rows);
            // SAFETY: as in ternary_matmul_many.
            unsafe { (self.f16)(wp as *const u16, cols, x, r0, r1, out) };
        });
    }

    /// `y[t·y_stride + r]` = row `r` of the Q8 head times token `t` of `x` (n = `x.len() / cols`).
    /// `x` is quantized to Q8 blocks of 32 (one f32 scale per block) first; see [`Q8Matrix`].
    ///
    /// # Panics
    /// If `x.len()` is not a multiple of `w.cols()`, or `y` is too short.
    pub fn q8_matmul(
        &self,
        pool: &ThreadPool,
        w: &Q8Matrix,
        x: &[f32],
        y: &mut [f32],
        y_stride: usize,
    ) {
        let a = Q8Acts::quantize(x, w.cols());
        self.q8_matmul_quantized(pool, w, &a, y, y_stride);
    }

    /// [`Kernels::q8_matmul`] with activations already quantized.
    pub fn q8_matmul_quantized(
        &self,
        pool: &ThreadPool,
        w: &Q8Matrix,
        a: &Q8Acts,
        y: &mut [f32],
        y_stride: usize,
    ) {
        assert_eq!(
            a.cols(),
            w.cols(),
            "q8_matmul: activation width differs from the matrix"
        );
        let (rows, n) = (w.rows(), a.n());
        check_out(y.len(), y_stride, rows, n, "q8_matmul");
        if n == 0 {
            return;
        }
        let chunk = chunk_rows(rows, 16, pool.threads());
        let out = Out {
            ptr: y.as_mut_ptr(),
            stride: y_stride,
        };
        pool.parallel_for(rows.div_ceil(chunk), |c| {
            let r0 = c * chunk;
            let r1 = (r0 + chunk).min(rows);
            // SAFETY: as in ternary_matmul_many.
            unsafe { (self.q8)(w, a, r0, r1, out) };
        });
    }
}

fn check_out(len: usize, stride: usize, rows: usize, n: usize, what: &str) {
    if n == 0 {
        return;
    }
    assert!(
        n == 1 || stride >= rows,
        "{what}: y_stride {stride} is smaller than the {rows} rows"
    );
    let need = (n - 1) * stride + rows;
    assert!(
        len >= need,
        "{what}: y has {len} elements, {n} tokens × stride {stride} need {need}"
    );
}

/// Rows per chunk: a multiple of `tile`, about 8 chunks per thread.
fn chunk_rows(rows: usize, tile: usize, threads: usize) -> usize {
    let per = rows.div_ceil(threads.max(1) * 8);
    per.div_ceil(tile).max(1) * tile
}
