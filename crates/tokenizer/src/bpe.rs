//! Rank-based BPE merging of one pre-split piece.
//!
//! A piece starts as one symbol per byte; then, repeatedly, the adjacent pair whose merge has
//! the lowest rank (its index in `tokenizer.ggml.merges`) is replaced by the merged token, the
//! leftmost pair first when the same merge applies in several places, until no adjacent pair
//! has a merge. Short pieces (nearly all of them) use a simple scan over a small array; long
//! ones (a 50 KB run of letters is one piece) use a heap over a linked list, O(n log n).
//! Both give identical results. This module knows nothing about text, vocabularies or
//! pre-splitting.

use super::lookup::FastMap;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Pieces up to this many bytes use the quadratic scan; longer ones the heap.
const SMALL: usize = 48;
const NONE: u32 = u32::MAX;

/// The merge table: `(left id, right id)` → `(rank, merged id)`.
#[derive(Debug, Clone, Default)]
pub struct Merges {
    map: FastMap<u64, u64>,
}

#[inline]
fn key(left: u32, right: u32) -> u64 {
    ((left as u64) << 32) | right as u64
}

impl Merges {
    pub fn with_capacity(n: usize) -> Self {
        Self {
            map: FastMap::with_capacity_and_hasher(n, Default::default()),
        }
    }

    /// Records a merge; the first one recorded for a pair wins (it has the lowest rank).
    pub fn insert(&mut self, left: u32, right: u32, rank: u32, merged: u32) {
        self.map
            .entry(key(left, right))
            .or_insert(((rank as u64) << 32) | merged as u64);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// `(rank << 32) | merged` for the pair, or `u64::MAX` if it does not merge. Comparing the
    /// packed values compares ranks.
    #[inline]
    fn packed(&self, left: u32, right: u32) -> u64 {
        self.map.get(&key(left, right)).copied().unwrap_or(u64::MAX)
    }

    /// Merges `symbols` (initial token ids, usually one per byte) and appends the result to
    /// `out`. `scratch` holds reusable buffers.
    pub fn apply(&self, symbols: &[u32], scratch: &mut Scratch, out: &mut Vec<u32>) {
        match symbols.len() {
            0 => {}
            1 => out.push(symbols[0]),
            n if n <= SMALL => self.apply_small(symbols, scratch, out),
            _ => self.apply_heap(symbols, scratch, out),
        }
    }

    fn apply_small(&self, symbols: &[u32], scratch: &mut Scratch, out: &mut Vec<u32>) {
        let ids = &mut scratch.ids;
        let pairs = &mut scratch.pairs;
        ids.clear();
        ids.extend_from_slice(symbols);
        pairs.clear();
        pairs.extend(ids.windows(2).map(|w| self.packed(w[0], w[1])));
        loop {
            let mut best = u64::MAX;
            let mut at = 0;
            for (i, &p) in pairs.iter().enumerate() {
                if p < best {
                    best = p;
                    at = i;
                }
            }
            if best == u64::MAX {
                break;
            }
            ids[at] = best as u32;
            ids.remove(at + 1);
            pairs.remove(at);
            if at > 0 {
                pairs[at - 1] = self.packed(ids[at - 1], ids[at]);
            }
            if at + 1 < ids.len() {
                pairs[at] = self.packed(ids[at], ids[at + 1]);
            }
        }
        out.extend_from_slice(ids);
    }

    fn apply_heap(&self, symbols: &[u32], scratch: &mut Scratch, out: &mut Vec<u32>) {
        let nodes = &mut scratch.nodes;
        let heap = &mut scratch.heap;
        nodes.clear();
        heap.clear();
        let n = symbols.len() as u32;
        nodes.extend(symbols.iter().enumerate().map(|(i, &id)| Node {
            id,
            prev: if i == 0 { NONE } else { i as u32 - 1 },
            next: if i as u32 + 1 == n {
                NONE
            } else {
                i as u32 + 1
            },
            alive: true,
        }));
        for i in 0..nodes.len().saturating_sub(1) {
            let p = self.packed(nodes[i].id, nodes[i + 1].id);
            if p != u64::MAX {
                heap.push(Reverse(((p >> 32) as u32, i as u32)));
            }
        }
        while let Some(Reverse((rank, pos))) = heap.pop() {
            let node = nodes[pos as usize];
            if !node.alive || node.next == NONE {
                continue;
            }
            let right = nodes[node.next as usize];
            let p = self.packed(node.id, right.id);
            // A rank names exactly one pair, so an entry whose pair changed is stale.
            if p == u64::MAX || (p >> 32) as u32 != rank {
                continue;
            }
            let merged = p as u32;
            nodes[node.next as usize].alive = false;
            let cur = &mut nodes[pos as usize];
            cur.id = merged;
            cur.next = right.next;
            if right.next != NONE {
                nodes[right.next as usize].prev = pos;
                let q = self.packed(merged, nodes[right.next as usize].id);
                if q != u64::MAX {
                    heap.push(Reverse(((q >> 32) as u32, pos)));
                }
            }
            if node.prev != NONE {
                let q = self.packed(nodes[node.prev as usize].id, merged);
                if q != u64::MAX {
                    heap.push(Reverse(((q >> 32) as u32, node.prev)));
                }
            }
        }
        // The first symbol is never merged away (merges keep the left position).
        let mut at = 0u32;
        while at != NONE {
            out.push(nodes[at as usize].id);
            at = nodes[at as usize].next;
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Node {
    id: u32,
    prev: u32,
    next: u32,
    alive: bool,
}

/// Reusable buffers for [`Merges::apply`].
#[derive(Debug, Default)]
pub struct Scratch {
    ids: Vec<u32>,
    pairs: Vec<u64>,
    nodes: Vec<Node>,
    heap: BinaryHeap<Reverse<(u32, u32)>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Alphabet a=0 b=1 c=2; merges in rank order.
    fn toy() -> Merges {
        let mut m = Merges::default();
        // ab=3, bc=4, abc=5 (ab+c), aa=6, aaaa=7 (aa+aa), ca=8
        for (rank, (l, r, merged)) in [
            (0, 1, 3),
            (1, 2, 4),
            (3, 2, 5),
            (0, 0, 6),
            (6, 6, 7),
            (2, 0, 8),
        ]
        .into_iter()
        .enumerate()
        {
            m.insert(l, r, rank as u32, merged);
        }
        m
    }

    fn run(m: &Merges, syms: &[u32], heap: bool) -> Vec<u32> {
        let mut out = Vec::new();
        let mut s = Scratch::default();
        if heap {
            m.apply_heap(syms, &mut s, &mut out);
        } else {
            m.apply_small(syms, &mut s, &mut out);
        }
        out
    }

    #[test]
    fn lowest_rank_first_then_leftmost() {
        let m = toy();
        for heap in [false, true] {
            // abc: ab (rank 0) beats bc (rank 1), then ab+c.
            assert_eq!(run(&m, &[0, 1, 2], heap), [5]);
            // bca: bc first, then nothing merges bc+a.
            assert_eq!(run(&m, &[1, 2, 0], heap), [4, 0]);
            // aaa: leftmost aa first.
            assert_eq!(run(&m, &[0, 0, 0], heap), [6, 0]);
            // aaaaa: aa aa a → aaaa a.
            assert_eq!(run(&m, &[0, 0, 0, 0, 0], heap), [7, 0]);
            // cab: ab (rank 0) beats ca (rank 5).
            assert_eq!(run(&m, &[2, 0, 1], heap), [2, 3]);
            assert_eq!(run(&m, &[2], heap), [2]);
        }
    }

    proptest! {
        #[test]
        fn heap_and_scan_agree(syms in proptest::collection::vec(0u32..3, 1..200)) {
            let m = toy();
            prop_assert_eq!(run(&m, &syms, false), run(&m, &syms, true));
        }
    }
}
