//! Per-sequence key/value cache: f16 keys and values for every layer, grown on demand up to the
//! context limit. It stores and hands out rows; it does not compute attention.

use half::f16;

#[derive(Debug, Clone)]
pub struct KvCache {
    kv_dim: usize,
    max_len: usize,
    len: usize,
    /// Per layer: `len × kv_dim` keys, then values.
    k: Vec<Vec<f16>>,
    v: Vec<Vec<f16>>,
}

impl KvCache {
    /// An empty cache for a model with `n_layer` layers and `kv_dim` = KV heads × head dim,
    /// refusing to grow beyond `max_len` tokens.
    pub fn new(n_layer: usize, kv_dim: usize, max_len: usize) -> KvCache {
        KvCache {
            kv_dim,
            max_len,
            len: 0,
            k: vec![Vec::new(); n_layer],
            v: vec![Vec::new(); n_layer],
        }
    }

    /// Tokens stored.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The most tokens this cache may hold (the context limit).
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Forgets everything after the first `len` tokens (e.g. to reuse a shared prompt prefix).
    pub fn truncate(&mut self, len: usize) {
        if len < self.len {
            self.len = len;
            for l in self.k.iter_mut().chain(self.v.iter_mut()) {
                l.truncate(len * self.kv_dim);
            }
        }
    }

    /// Bytes held by the cache.
    pub fn bytes(&self) -> usize {
        self.k.iter().chain(&self.v).map(|l| l.capacity() * 2).sum()
    }

    /// Appends one token's K and V for `layer` (positions are appended in order, layer by layer;
    /// `commit` advances the length once every layer has its rows).
    pub(crate) fn push(&mut self, layer: usize, k: &[f32], v: &[f32]) {
        debug_assert_eq!(k.len(), self.kv_dim);
        push_f16(&mut self.k[layer], k);
        push_f16(&mut self.v[layer], v);
    }

    pub(crate) fn commit(&mut self, n: usize) {
        self.len += n;
        debug_assert!(self.k.iter().all(|l| l.len() == self.len * self.kv_dim));
    }

    /// Keys and values of `layer` for positions `0..n` (may include rows pushed but not yet
    /// committed during the current forward pass).
    pub(crate) fn layer(&self, layer: usize, n: usize) -> (&[f16], &[f16]) {
        (
            &self.k[layer][..n * self.kv_dim],
            &self.v[layer][..n * self.kv_dim],
        )
    }
}

fn push_f16(dst: &mut Vec<f16>, src: &[f32]) {
    use half::slice::HalfFloatSliceExt;
    let start = dst.len();
    dst.resize(start + src.len(), f16::ZERO);
    dst[start..].convert_from_f32_slice(src);
}
