//! Element-wise and per-row pieces of the forward pass (norms, RoPE, activations, softmax).
//!
//! Plain loops the compiler vectorises; the matrix products are elsewhere (`linear`).

/// `y = x / sqrt(mean(x²) + eps) ⊙ w`, the sum of squares accumulated in f64 as ggml does.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, y: &mut [f32]) {
    let scale = rms_scale(x, eps);
    for ((y, &x), &w) in y.iter_mut().zip(x).zip(w) {
        *y = x * scale * w;
    }
}

/// [`rms_norm`] of `y` in place.
pub fn rms_norm_in_place(y: &mut [f32], w: &[f32], eps: f32) {
    let scale = rms_scale(y, eps);
    for (y, &w) in y.iter_mut().zip(w) {
        *y = *y * scale * w;
    }
}

/// `1 / sqrt(mean(x²) + eps)`. The f64 sum runs in eight interleaved partial sums so that it
/// vectorises (a single f64 add chain waits out the add latency on every element); the order
/// differs from ggml's sequential sum only far below f32 precision.
fn rms_scale(x: &[f32], eps: f32) -> f32 {
    let mut acc = [0f64; 8];
    let chunks = x.chunks_exact(8);
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

/// `relu(g)² ⊙ u` into `g`.
pub fn relu2_mul(g: &mut [f32], u: &[f32]) {
    for (g, &u) in g.iter_mut().zip(u) {
        let r = g.max(0.0);
        *g = r * r * u;
    }
}

/// `silu(g) ⊙ u` into `g`.
pub fn silu_mul(g: &mut [f32], u: &[f32]) {
    for (g, &u) in g.iter_mut().zip(u) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

/// Dot product with eight independent accumulators, so the compiler can vectorise it.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// In-place softmax.
#[inline]
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0.0f32;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
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
        // Odd length (tail after the 8-wide chunks), spread of magnitudes.
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
    fn relu2() {
        let mut g = [-1.0, 2.0, 3.0];
        relu2_mul(&mut g, &[5.0, 0.5, -1.0]);
        assert_eq!(g, [0.0, 2.0, -9.0]);
    }
}
