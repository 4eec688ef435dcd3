//! Element-wise and per-row pieces of the forward pass (norms, RoPE, activations, the
//! exponential of attention's softmax).
//!
//! Plain loops the compiler vectorises; the matrix products are elsewhere (`linear`).

/// `y = x / sqrt(mean(x²) + eps) ⊙ w`, the sum of squares accumulated in f64 as ggml does.
#[inline(always)]
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, y: &mut [f32]) {
    let scale = rms_scale(x, eps);
    for ((y, &x), &w) in y.iter_mut().zip(x).zip(w) {
        *y = x * scale * w;
    }
}

/// [`rms_norm`] of `y` in place.
#[inline(always)]
pub fn rms_norm_in_place(y: &mut [f32], w: &[f32], eps: f32) {
    let scale = rms_scale(y, eps);
    for (y, &w) in y.iter_mut().zip(w) {
        *y = *y * scale * w;
    }
}

/// `1 / sqrt(mean(x²) + eps)`. The f64 sum runs in 32 interleaved partial sums so that it
/// vectorises into independent add chains (one chain, even eight lanes wide, waits out the add
/// latency on every vector: 8 partial sums made this loop most of a prefill's norm time); the
/// order differs from ggml's sequential sum only far below f32 precision.
#[inline(always)]
fn rms_scale(x: &[f32], eps: f32) -> f32 {
    let mut acc = [0f64; 32];
    let chunks = x.chunks_exact(32);
    let tail: f64 = chunks
        .remainder()
        .iter()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f64::from(v) * f64::from(v);
        }
    }
    let sum = acc.iter().sum::<f64>() + tail;
    let mean = sum / x.len() as f64;
    (1.0 / (mean + f64::from(eps)).sqrt()) as f32
}

/// NeoX-style rotary embedding: pairs `(i, i + d/2)` of each head rotate by
/// `pos · theta^(-2i/d)`. The frequencies are computed once per model.
#[derive(Debug, Clone)]
pub struct Rope {
    inv_freq: Vec<f64>,
}

impl Rope {
    pub fn new(head_dim: usize, theta: f32) -> Rope {
        let inv_freq = (0..head_dim / 2)
            .map(|i| (theta as f64).powf(-2.0 * i as f64 / head_dim as f64))
            .collect();
        Rope { inv_freq }
    }

    /// `(cos, sin)` of every pair's angle at position `pos`.
    pub fn angles(&self, pos: usize) -> Vec<(f32, f32)> {
        self.inv_freq
            .iter()
            .map(|f| {
                let a = pos as f64 * f;
                (a.cos() as f32, a.sin() as f32)
            })
            .collect()
    }

    /// Rotates every head of `heads` (consecutive `head_dim`-wide slices) in place.
    pub fn apply(angles: &[(f32, f32)], heads: &mut [f32]) {
        let half = angles.len();
        for head in heads.chunks_mut(2 * half) {
            let (lo, hi) = head.split_at_mut(half);
            for ((a, b), &(cos, sin)) in lo.iter_mut().zip(hi.iter_mut()).zip(angles) {
                let (x, y) = (*a, *b);
                *a = x * cos - y * sin;
                *b = x * sin + y * cos;
            }
        }
    }
}

/// `out = relu(g)² ⊙ u`.
#[inline(always)]
pub fn relu2_mul(g: &[f32], u: &[f32], out: &mut [f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(g).zip(u) {
        let r = g.max(0.0);
        *o = r * r * u;
    }
}

/// `out = silu(g) ⊙ u`.
#[inline]
pub fn silu_mul(g: &[f32], u: &[f32], out: &mut [f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(g).zip(u) {
        *o = g / (1.0 + (-g).exp()) * u;
    }
}

/// `out = gelu_tanh(g) ⊙ u`, with PyTorch's `gelu(approximate="tanh")`:
/// `0.5 · g · (1 + tanh(√(2/π) · (g + 0.044715 · g³)))`.
#[inline]
pub fn gelu_tanh_mul(g: &[f32], u: &[f32], out: &mut [f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(g).zip(u) {
        *o = gelu_tanh(g) * u;
    }
}

/// PyTorch's tanh-approximated GELU of one value (computed in f32, as PyTorch does for f32).
#[inline]
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let inner = SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x);
    0.5 * x * (1.0 + inner.tanh())
}

/// `e^x` for `x ≤ 0` (softmax arguments), within 2 ulp, branch-free so that loops of it
/// vectorise (`f32::exp` is a library call per element). Cephes' `expf` scheme: `x = n·ln2 + r`
/// with `|r| ≤ ln2/2` (ln 2 split in two so `n·ln2` is exact), a degree-7 polynomial for `e^r`,
/// and `2^n` built from its exponent bits. Below −87 the result is flushed to `e^−87` (~1.6e-38,
/// nothing next to a softmax sum ≥ 1), keeping `2^n` a normal number; NaN stays NaN.
#[inline(always)]
pub fn exp_nonpositive(x: f32) -> f32 {
    let x = if x < -87.0 { -87.0 } else { x };
    // n is an integer in [−126, 0], as a float and as an i32.
    let (n, n_bits) = bitnet_kernels::round_small(x * std::f32::consts::LOG2_E);
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_2e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 0.166_666_65)
        * r
        + 0.5;
    let e = p * (r * r) + r + 1.0;
    e * f32::from_bits(((n_bits + 127) << 23) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_unit() {
        let mut y = [0.0; 4];
        rms_norm(&[2.0, -2.0, 2.0, -2.0], &[1.0, 0.5, 1.0, 1.0], 0.0, &mut y);
        assert_eq!(y, [1.0, -0.5, 1.0, -1.0]);
    }

    #[test]
    fn rms_norm_matches_a_sequential_f64_sum_and_in_place() {
        // Odd length (tail after the 32-wide chunks), spread of magnitudes.
        let x: Vec<f32> = (0..2563)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 1e-3 * (1 + i % 13) as f32)
            .collect();
        let w: Vec<f32> = (0..x.len()).map(|i| 0.5 + (i % 5) as f32 * 0.25).collect();
        let eps = 1e-5;
        let sum: f64 = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        let scale = (1.0 / (sum / x.len() as f64 + f64::from(eps)).sqrt()) as f32;
        let want: Vec<f32> = x.iter().zip(&w).map(|(&x, &w)| x * scale * w).collect();
        let mut y = vec![0.0; x.len()];
        rms_norm(&x, &w, eps, &mut y);
        assert_eq!(y, want);
        let mut z = x.clone();
        rms_norm_in_place(&mut z, &w, eps);
        assert_eq!(z, want);
    }

    #[test]
    fn rope_rotates_pairs_half_apart() {
        let rope = Rope::new(4, 10_000.0);
        // Two heads of 4: i = 0 has angle pos·1, i = 1 has pos·10000^(-1/2) = pos/100.
        let mut h = [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0];
        Rope::apply(&rope.angles(1), &mut h);
        // element 0 pairs with element 2.
        assert!((h[0] - 1f32.cos()).abs() < 1e-6 && (h[2] - 1f32.sin()).abs() < 1e-6);
        assert_eq!(h[1], 0.0);
        assert!((h[5] - 0.01f32.cos()).abs() < 1e-6 && (h[7] - 0.01f32.sin()).abs() < 1e-6);
        let mut h = [1.0, 2.0, 3.0, 4.0];
        Rope::apply(&rope.angles(0), &mut h);
        assert_eq!(h, [1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn exp_nonpositive_is_within_2_ulp_of_exp() {
        let mut worst = 0f64;
        let mut x = 0f32;
        while x > -87.0 {
            let want = f64::from(x).exp();
            let got = f64::from(exp_nonpositive(x));
            let ulp = f64::from(f32::EPSILON) * want;
            worst = worst.max((got - want).abs() / ulp);
            x -= 0.000_37;
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert!(exp_nonpositive(-1000.0) < 1e-37 && exp_nonpositive(-1000.0) > 0.0);
        assert!(exp_nonpositive(f32::NEG_INFINITY) < 1e-37);
        assert!(exp_nonpositive(f32::NAN).is_nan());
    }

    /// Values of PyTorch's `gelu(x, approximate="tanh")` (float64 formula), to f32 precision.
    #[test]
    fn gelu_tanh_matches_the_formula() {
        for &x in &[
            -6.0f32, -3.0, -1.5, -0.5, -1e-3, 0.0, 1e-3, 0.5, 1.0, 2.5, 8.0,
        ] {
            let xd = f64::from(x);
            let want = 0.5
                * xd
                * (1.0
                    + ((2.0 / std::f64::consts::PI).sqrt() * (xd + 0.044715 * xd.powi(3))).tanh());
            let got = f64::from(gelu_tanh(x));
            assert!(
                (got - want).abs() <= 2e-7 * want.abs().max(1.0),
                "x={x}: {got} vs {want}"
            );
        }
        assert_eq!(gelu_tanh(0.0), 0.0);
        // gelu(1) ≈ 0.8412 and gelu(-1) ≈ -0.1588 (tanh form).
        assert!((gelu_tanh(1.0) - 0.841_192).abs() < 1e-5);
        assert!((gelu_tanh(-1.0) + 0.158_808).abs() < 1e-5);
        let mut out = [0.0; 2];
        gelu_tanh_mul(&[1.0, -1.0], &[2.0, 3.0], &mut out);
        assert_eq!(out, [2.0 * gelu_tanh(1.0), 3.0 * gelu_tanh(-1.0)]);
    }

    #[test]
    fn relu2() {
        let mut out = [f32::NAN; 3];
        relu2_mul(&[-1.0, 2.0, 3.0], &[5.0, 0.5, -1.0], &mut out);
        assert_eq!(out, [0.0, 2.0, -9.0]);
    }
}
