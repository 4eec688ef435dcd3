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

    /// A new cache holding a copy of the first `len` tokens (all of them when `len` is larger),
    /// with no spare capacity: the rows of a shared prompt prefix, copied out of a cache that
    /// stays where it is.
    pub fn prefix(&self, len: usize) -> KvCache {
        let len = len.min(self.len);
        let rows = |layers: &[Vec<f16>]| -> Vec<Vec<f16>> {
            layers
                .iter()
                .map(|l| l[..len * self.kv_dim].to_vec())
                .collect()
        };
        KvCache {
            kv_dim: self.kv_dim,
            max_len: self.max_len,
            len,
            k: rows(&self.k),
            v: rows(&self.v),
        }
    }

    /// Gives back the spare capacity the cache grew into, so that [`KvCache::bytes`] is what
    /// its stored tokens take (for a cache kept idle, e.g. in a prompt cache). Rows pushed but
    /// never committed (a forward pass that failed half way) are dropped too.
    pub fn shrink_to_fit(&mut self) {
        let rows = self.len * self.kv_dim;
        for l in self.k.iter_mut().chain(self.v.iter_mut()) {
            l.truncate(rows);
            l.shrink_to_fit();
        }
    }

    /// Bytes held by the cache (its capacity, spare room included).
    pub fn bytes(&self) -> usize {
        self.k.iter().chain(&self.v).map(|l| l.capacity() * 2).sum()
    }

    /// Appends one token's K and V for `layer` (positions are appended in order, layer by layer;
    /// `commit` advances the length once every layer has its rows).
    pub(crate) fn push(&mut self, layer: usize, k: &[f32], v: &[f32]) {
        debug_assert_eq!(k.len(), self.kv_dim);
        let limit = self.max_len * self.kv_dim;
        push_f16(&mut self.k[layer], k, limit);
        push_f16(&mut self.v[layer], v, limit);
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

/// Appends `src` as f16. Capacity grows geometrically (appends stay amortised O(1)) but never
/// past `limit` values (the context's rows), so a cache never holds more than the memory check
/// counted for it (`Vec`'s own doubling would reach up to twice that for a context that is not
/// a power of two).
fn push_f16(dst: &mut Vec<f16>, src: &[f32], limit: usize) {
    use half::slice::HalfFloatSliceExt;
    let start = dst.len();
    let need = start + src.len();
    if need > dst.capacity() {
        let target = (dst.capacity() * 2).max(need).min(limit.max(need));
        dst.reserve_exact(target - start);
    }
    dst.resize(need, f16::ZERO);
    dst[start..].convert_from_f32_slice(src);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(n_layer: usize, kv_dim: usize, tokens: usize) -> KvCache {
        let mut c = KvCache::new(n_layer, kv_dim, 64);
        for t in 0..tokens {
            for layer in 0..n_layer {
                let k: Vec<f32> = (0..kv_dim)
                    .map(|i| (t * 100 + layer * 10 + i) as f32)
                    .collect();
                let v: Vec<f32> = k.iter().map(|x| -x).collect();
                c.push(layer, &k, &v);
            }
            c.commit(1);
        }
        c
    }

    #[test]
    fn a_prefix_copies_exactly_the_first_rows_and_holds_no_spare_room() {
        let (n_layer, kv_dim) = (3, 4);
        let full = filled(n_layer, kv_dim, 7);
        let p = full.prefix(5);
        let mut truncated = full.clone();
        truncated.truncate(5);
        assert_eq!(p.len(), 5);
        for layer in 0..n_layer {
            assert_eq!(p.layer(layer, 5), truncated.layer(layer, 5));
        }
        assert_eq!(p.bytes(), n_layer * 2 * 5 * kv_dim * 2);
        // The source is untouched, and a prefix longer than the cache is the whole cache.
        assert_eq!(full.len(), 7);
        assert_eq!(full.prefix(99).len(), 7);
        let mut shrunk = full.clone();
        shrunk.shrink_to_fit();
        assert_eq!(shrunk.bytes(), n_layer * 2 * 7 * kv_dim * 2);
        assert!(full.bytes() >= shrunk.bytes());
    }

    /// Growing a cache token by token to a context that is not a power of two never reserves
    /// more rows than the context holds.
    #[test]
    fn growth_stops_at_the_context() {
        let (n_layer, kv_dim, max_len) = (2, 8, 100);
        let mut c = KvCache::new(n_layer, kv_dim, max_len);
        let row = vec![1.0f32; kv_dim];
        for _ in 0..max_len {
            for layer in 0..n_layer {
                c.push(layer, &row, &row);
            }
            c.commit(1);
        }
        assert_eq!(c.len(), max_len);
        assert!(
            c.bytes() <= n_layer * 2 * max_len * kv_dim * 2,
            "{} bytes for {max_len} rows",
            c.bytes()
        );
    }
}
