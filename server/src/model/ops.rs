//! Element-wise and per-row pieces of the forward pass (norms, RoPE, activations, softmax).
//!
//! Plain loops the compiler vectorises; the matrix products are elsewhere (`linear`).

/// `y = x / sqrt(mean(x²) + eps) ⊙ w`, the sum of squares accumulated in f64 as ggml does.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, y: &mut [f32]) {
    let sum: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
    let mean = sum / x.len() as f64;
    let scale = (1.0 / (mean + eps as f64).sqrt()) as f32;
    for ((y, &x), &w) in y.iter_mut().zip(x).zip(w) {
        *y = x * scale * w;
    }
}

/// NeoX-style rotary embedding of one head in place: pairs `(i, i + d/2)` rotate by
/// `pos · theta^(-2i/d)`.
pub fn rope_neox(head: &mut [f32], pos: usize, theta: f32) {
    let d = head.len();
    let half = d / 2;
    for i in 0..half {
        let freq = (theta as f64).powf(-2.0 * i as f64 / d as f64);
        let angle = pos as f64 * freq;
        let (sin, cos) = (angle.sin() as f32, angle.cos() as f32);
        let (a, b) = (head[i], head[i + half]);
        head[i] = a * cos - b * sin;
        head[i + half] = a * sin + b * cos;
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

/// In-place softmax.
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
    fn rope_rotates_pairs_half_apart() {
        let mut h = [1.0, 0.0, 0.0, 0.0];
        rope_neox(&mut h, 1, 10_000.0);
        // i = 0: angle = 1 rad; element 0 pairs with element 2.
        assert!((h[0] - 1f32.cos()).abs() < 1e-6 && (h[2] - 1f32.sin()).abs() < 1e-6);
        assert_eq!(h[1], 0.0);
        let mut h = [1.0, 2.0, 3.0, 4.0];
        rope_neox(&mut h, 0, 10_000.0);
        assert_eq!(h, [1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn relu2() {
        let mut g = [-1.0, 2.0, 3.0];
        relu2_mul(&mut g, &[5.0, 0.5, -1.0]);
        assert_eq!(g, [0.0, 2.0, -9.0]);
    }
}
