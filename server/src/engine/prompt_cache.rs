//! The prompt cache: KV snapshots of ended sequences, each under the exact tokens it holds,
//! kept in least-recently-used order within a byte budget, and found again by the longest
//! common prefix with a new prompt.
//!
//! Why whole snapshots and not a radix tree of shared blocks: a sequence's KV is one contiguous
//! buffer per layer, which the attention kernel reads as one slice. Sharing blocks between
//! sequences would need a paged cache (and a kernel that walks pages). A pool of whole
//! snapshots with a longest-prefix lookup serves the two patterns that matter without that:
//! - a chat client resends the conversation each turn, so the previous turn's sequence (prompt
//!   plus the reply it generated) is a prefix of the new prompt: the snapshot is moved out of
//!   the pool into the new sequence, no copy at all;
//! - RAG clients send the same system prompt and passages with a different question: the rows
//!   of the shared prefix are copied out of the best snapshot, which stays in the pool (a
//!   memcpy of milliseconds against seconds of prefill).
//!
//! A lookup always leaves at least one prompt token to compute, since the caller needs the
//! logits after the last prompt token. Snapshots are stored without spare capacity, so the
//! budget counts the memory they really take; a snapshot larger than the whole budget is not
//! kept, and the sequences being generated do not count against it (`--parallel` × context
//! bounds them). This module owns the bookkeeping only: the KV type is any [`Snapshot`]
//! (`bitnet_model::KvCache` in the real backend).

use bitnet_model::KvCache;

/// A KV state the cache can keep: its length in tokens, its size, a copy of its first rows.
pub trait Snapshot: Sized {
    /// Tokens held.
    fn tokens(&self) -> usize;
    /// Bytes held.
    fn bytes(&self) -> usize;
    /// A copy of the first `len` tokens' state.
    fn prefix(&self, len: usize) -> Self;
    /// Give back spare capacity, so that [`Snapshot::bytes`] is what the tokens take.
    fn shrink_to_fit(&mut self);
}

impl Snapshot for KvCache {
    fn tokens(&self) -> usize {
        self.len()
    }
    fn bytes(&self) -> usize {
        KvCache::bytes(self)
    }
    fn prefix(&self, len: usize) -> Self {
        KvCache::prefix(self, len)
    }
    fn shrink_to_fit(&mut self) {
        KvCache::shrink_to_fit(self)
    }
}

struct Entry<S> {
    tokens: Vec<u32>,
    kv: S,
    bytes: usize,
}

/// Snapshots in least-recently-used order (the front is evicted first), at most `budget` bytes
/// in all.
pub struct PromptCache<S> {
    budget: usize,
    bytes: usize,
    entries: Vec<Entry<S>>,
}

impl<S> Default for PromptCache<S> {
    /// An empty cache with no budget (keeps nothing).
    fn default() -> Self {
        PromptCache {
            budget: 0,
            bytes: 0,
            entries: Vec::new(),
        }
    }
}

impl<S: Snapshot> PromptCache<S> {
    /// An empty cache that may keep `budget` bytes.
    pub fn new(budget: usize) -> Self {
        PromptCache {
            budget,
            ..Self::default()
        }
    }

    /// Change the budget, evicting the least recently used snapshots beyond it (0: all).
    pub fn set_budget(&mut self, budget: usize) {
        self.budget = budget;
        self.evict_until(0);
    }

    /// Snapshots kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes the kept snapshots take.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The state of the longest reusable prefix of `prompt`, and its length in tokens: at most
    /// `prompt.len() - 1` (one token is always left to compute), `None` when no snapshot shares
    /// a first token with it. A snapshot that is wholly a prefix of the prompt is moved out of
    /// the cache; otherwise its first rows are copied and it stays, as the most recently used.
    /// Among equally long matches the most recently used wins.
    pub fn take(&mut self, prompt: &[u32]) -> Option<(S, usize)> {
        let limit = prompt.len().checked_sub(1)?;
        let (index, reuse) = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (i, common_prefix(&e.tokens, prompt).min(limit)))
            .max_by_key(|&(i, k)| (k, i))?;
        if reuse == 0 {
            return None;
        }
        if reuse == self.entries[index].tokens.len() {
            let entry = self.entries.remove(index);
            self.bytes -= entry.bytes;
            return Some((entry.kv, reuse));
        }
        let entry = self.entries.remove(index);
        let kv = entry.kv.prefix(reuse);
        self.entries.push(entry);
        Some((kv, reuse))
    }

    /// Keep `kv` under the tokens it holds, `tokens[..kv.tokens()]` (`tokens` may go further:
    /// the last sampled token was never fed), evicting the least recently used snapshots to
    /// make room. Not kept: an empty state, one `tokens` cannot name, one larger than the
    /// whole budget, or one that a kept snapshot already contains (that one becomes the most
    /// recently used). Kept snapshots that are a prefix of the new one are dropped: it serves
    /// every prompt they would, as far or further.
    pub fn insert(&mut self, tokens: &[u32], mut kv: S) {
        let n = kv.tokens();
        if n == 0 || n > tokens.len() || self.budget == 0 {
            return;
        }
        let tokens = &tokens[..n];
        if let Some(i) = self
            .entries
            .iter()
            .position(|e| e.tokens.len() >= n && e.tokens[..n] == *tokens)
        {
            let entry = self.entries.remove(i);
            self.entries.push(entry);
            return;
        }
        kv.shrink_to_fit();
        let bytes = kv.bytes();
        if bytes > self.budget {
            return;
        }
        let mut freed = 0;
        self.entries.retain(|e| {
            let dominated = tokens.starts_with(&e.tokens);
            if dominated {
                freed += e.bytes;
            }
            !dominated
        });
        self.bytes -= freed;
        self.evict_until(bytes);
        self.bytes += bytes;
        self.entries.push(Entry {
            tokens: tokens.to_vec(),
            kv,
            bytes,
        });
    }

    /// Evict from the least recently used end until `room` more bytes fit the budget.
    fn evict_until(&mut self, room: usize) {
        let mut evict = 0;
        while self.bytes + room > self.budget && evict < self.entries.len() {
            self.bytes -= self.entries[evict].bytes;
            evict += 1;
        }
        self.entries.drain(..evict);
    }
}

/// How many leading tokens `a` and `b` share.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in KV state: the token values it "holds", 10 bytes per token, with a flag that
    /// tells a copy from a moved original.
    #[derive(Debug, Clone, PartialEq)]
    struct Fake {
        rows: Vec<u32>,
        copied: bool,
        spare: usize,
    }

    fn fake(rows: &[u32]) -> Fake {
        Fake {
            rows: rows.to_vec(),
            copied: false,
            spare: 5,
        }
    }

    impl Snapshot for Fake {
        fn tokens(&self) -> usize {
            self.rows.len()
        }
        fn bytes(&self) -> usize {
            (self.rows.len() + self.spare) * 10
        }
        fn prefix(&self, len: usize) -> Self {
            Fake {
                rows: self.rows[..len].to_vec(),
                copied: true,
                spare: 0,
            }
        }
        fn shrink_to_fit(&mut self) {
            self.spare = 0;
        }
    }

    #[test]
    fn a_whole_snapshot_is_moved_and_a_partial_one_copied() {
        let mut c = PromptCache::new(1000);
        c.insert(&[1, 2, 3, 9], fake(&[1, 2, 3]));
        assert_eq!(
            (c.len(), c.bytes()),
            (1, 30),
            "stored trimmed, under its 3 tokens"
        );
        // A prompt diverging after two tokens: the first two rows are copied, the entry stays.
        let (kv, k) = c.take(&[1, 2, 7, 7]).unwrap();
        assert_eq!((kv.rows, kv.copied, k), (vec![1, 2], true, 2));
        assert_eq!(c.len(), 1);
        // The next turn of a chat: the whole entry is a prefix, so it is moved out.
        let (kv, k) = c.take(&[1, 2, 3, 4, 5]).unwrap();
        assert_eq!((kv.rows, kv.copied, k), (vec![1, 2, 3], false, 3));
        assert_eq!((c.len(), c.bytes()), (0, 0));
    }

    #[test]
    fn one_prompt_token_is_always_left_to_compute() {
        let mut c = PromptCache::new(1000);
        c.insert(&[1, 2, 3], fake(&[1, 2, 3]));
        let (kv, k) = c.take(&[1, 2, 3]).unwrap();
        assert_eq!((kv.rows, kv.copied, k), (vec![1, 2], true, 2));
        assert!(c.take(&[1]).is_none(), "a one-token prompt reuses nothing");
        assert!(c.take(&[]).is_none());
        assert!(c.take(&[5, 1, 2]).is_none(), "no shared first token");
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn the_longest_match_wins_then_the_most_recent() {
        let mut c = PromptCache::new(1000);
        c.insert(&[1, 2, 3, 4], fake(&[1, 2, 3, 4]));
        c.insert(&[1, 2, 5, 6], fake(&[1, 2, 5, 6]));
        c.insert(&[1, 2, 7, 8], fake(&[1, 2, 7, 8]));
        let (kv, k) = c.take(&[1, 2, 5, 0, 0]).unwrap();
        assert_eq!((kv.rows, k), (vec![1, 2, 5], 3));
        // Tie on two tokens: the most recently used ([1, 2, 5, 6], just touched) is copied.
        let (kv, _) = c.take(&[1, 2, 0]).unwrap();
        assert_eq!(kv.rows, vec![1, 2]);
        assert_eq!(c.entries.last().unwrap().tokens, vec![1, 2, 5, 6]);
    }

    #[test]
    fn least_recently_used_snapshots_are_evicted_to_fit_the_budget() {
        let mut c = PromptCache::new(100);
        c.insert(&[1, 1, 1, 1], fake(&[1, 1, 1, 1])); // 40 bytes
        c.insert(&[2, 2, 2, 2], fake(&[2, 2, 2, 2])); // 80
        let _ = c.take(&[1, 1, 0]); // [1, ...] is now the most recently used
        c.insert(&[3, 3, 3], fake(&[3, 3, 3])); // 110 > 100: [2, ...] goes
        assert_eq!(c.bytes(), 70);
        assert!(c.take(&[2, 2, 0]).is_none());
        assert!(c.take(&[1, 1, 0]).is_some());
        c.insert(&[4; 11], fake(&[4; 11])); // 110 bytes: larger than the budget, not kept
        assert_eq!((c.len(), c.bytes()), (2, 70));
        c.set_budget(45);
        assert_eq!(
            (c.len(), c.bytes()),
            (1, 40),
            "[3, ...], the least recently used, went"
        );
        c.set_budget(0);
        assert_eq!((c.len(), c.bytes()), (0, 0));
        c.insert(&[5], fake(&[5]));
        assert!(c.is_empty(), "budget 0 keeps nothing");
    }

    #[test]
    fn contained_and_containing_snapshots_are_not_kept_twice() {
        let mut c = PromptCache::new(1000);
        c.insert(&[1, 2], fake(&[1, 2]));
        c.insert(&[1, 2, 3, 4], fake(&[1, 2, 3, 4]));
        assert_eq!(
            (c.len(), c.bytes()),
            (1, 40),
            "the prefix [1, 2] is dropped"
        );
        c.insert(&[1, 2, 3], fake(&[1, 2, 3]));
        assert_eq!((c.len(), c.bytes()), (1, 40), "[1, 2, 3] is already there");
        c.insert(&[], fake(&[]));
        c.insert(&[7], fake(&[7, 8]));
        assert_eq!(c.len(), 1, "empty, or more rows than tokens: not kept");
    }
}
