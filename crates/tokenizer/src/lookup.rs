//! Hash lookups on the encoding hot path: token bytes → id, and (left id, right id) → merge.
//!
//! Both use a small multiply-rotate hash (the kind rustc uses internally): the keys are not
//! attacker-chosen in a way that matters here (a vocabulary is fixed at load time; input text
//! only queries), and SipHash would cost a large share of encoding time. This module stores no
//! token data itself; [`BytesIndex`] indexes into a [`TokenStore`].

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

const K: u64 = 0x517c_c1b7_2722_0a95;

/// A fast non-cryptographic hasher for small keys.
#[derive(Default, Clone, Copy)]
pub struct FastHasher {
    hash: u64,
}

impl FastHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(K);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(w));
        }
        let tail = chunks.remainder();
        if !tail.is_empty() {
            let mut w = [0u8; 8];
            w[..tail.len()].copy_from_slice(tail);
            self.add(u64::from_le_bytes(w) ^ ((tail.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.add(n as u64);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // The product's low bits depend only on the input's low bits; hash tables index with
        // the low bits, so bring the well-mixed high bits down (else every pair with the same
        // right token would land in the same bucket).
        self.hash.rotate_left(26)
    }
}

/// `HashMap` with [`FastHasher`].
pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h = FastHasher::default();
    h.write(bytes);
    h.finish()
}

/// Token bytes by id, stored contiguously.
#[derive(Debug, Clone, Default)]
pub struct TokenStore {
    bytes: Vec<u8>,
    /// `ends[id]` is the end of token `id` in `bytes`; it starts where `id - 1` ends.
    ends: Vec<usize>,
}

impl TokenStore {
    pub fn push(&mut self, token: &[u8]) {
        self.bytes.extend_from_slice(token);
        self.ends.push(self.bytes.len());
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Bytes of `id`; empty for an id out of range.
    #[inline]
    pub fn get(&self, id: u32) -> &[u8] {
        let id = id as usize;
        let Some(&end) = self.ends.get(id) else {
            return &[];
        };
        let start = if id == 0 { 0 } else { self.ends[id - 1] };
        &self.bytes[start..end]
    }
}

/// Open-addressing index from token bytes to the id of a token in a [`TokenStore`].
#[derive(Debug, Clone)]
pub struct BytesIndex {
    /// `(id + 1, hash tag)`, or `(0, _)` for an empty slot. The tag (high hash bits) rejects
    /// most non-matching slots without reading token bytes. Length is a power of two, at least
    /// twice the entries.
    slots: Vec<(u32, u32)>,
    mask: usize,
}

impl BytesIndex {
    pub fn with_capacity(n: usize) -> Self {
        let size = (n.max(4) * 2).next_power_of_two();
        Self {
            slots: vec![(0, 0); size],
            mask: size - 1,
        }
    }

    /// Adds `id` (whose bytes are in `store`) unless a token with the same bytes is already
    /// indexed; returns whether it was added. Never call with more ids than the capacity.
    pub fn insert(&mut self, store: &TokenStore, id: u32) -> bool {
        let key = store.get(id);
        let h = hash_bytes(key);
        let tag = (h >> 32) as u32;
        let mut i = h as usize & self.mask;
        loop {
            match self.slots[i] {
                (0, _) => {
                    self.slots[i] = (id + 1, tag);
                    return true;
                }
                (s, t) if t == tag && store.get(s - 1) == key => return false,
                _ => i = (i + 1) & self.mask,
            }
        }
    }

    #[inline]
    pub fn get(&self, store: &TokenStore, key: &[u8]) -> Option<u32> {
        let h = hash_bytes(key);
        let tag = (h >> 32) as u32;
        let mut i = h as usize & self.mask;
        loop {
            match self.slots[i] {
                (0, _) => return None,
                (s, t) if t == tag && store.get(s - 1) == key => return Some(s - 1),
                _ => i = (i + 1) & self.mask,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_finds_every_token_and_keeps_the_first_duplicate() {
        let mut store = TokenStore::default();
        let words: Vec<Vec<u8>> = (0..1000u32).map(|i| format!("w{i}").into_bytes()).collect();
        for w in &words {
            store.push(w);
        }
        store.push(b"w7");
        let mut index = BytesIndex::with_capacity(store.len());
        for id in 0..store.len() as u32 {
            index.insert(&store, id);
        }
        for (id, w) in words.iter().enumerate() {
            assert_eq!(index.get(&store, w), Some(id as u32));
        }
        assert_eq!(index.get(&store, b"w7"), Some(7));
        assert_eq!(index.get(&store, b"nope"), None);
        assert_eq!(index.get(&store, b""), None);
        assert_eq!(store.get(5000), b"");
    }
}
