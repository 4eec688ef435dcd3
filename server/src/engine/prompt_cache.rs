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
//! A snapshot also knows how many of its tokens were its prompt. When a new prompt matches all
//! of that prompt but its last token, and differs only in what the snapshot generated, the new
//! request continues that conversation: the snapshot is moved out too, cut to the match, rather
//! than copied. This is the chat case as real templates make it: BitNet's generation prompt
//! ends with `"Assistant: "`, whose trailing space is its own token, while the next turn
//! renders `"Assistant: Hello"`, where the space belongs to the reply's first token, so the
//! previous sequence is never a whole prefix of the next prompt. Copying there would leave a
//! snapshot per turn in the pool, each holding the whole conversation so far (a 10-turn chat
//! would keep the sum of all its lengths); moving keeps one per conversation.
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
    /// Forget every token after the first `len`.
    fn truncate(&mut self, len: usize);
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
    fn truncate(&mut self, len: usize) {
        KvCache::truncate(self, len)
    }
}

struct Entry<S> {
    tokens: Vec<u32>,
    /// How many of `tokens` were the prompt (the rest were generated).
    prompt_len: usize,
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
    /// a first token with it. A snapshot that is wholly a prefix of the prompt, or whose own
    /// prompt the match covers but for at most its last token (the prompt continues its
    /// conversation), is moved out of the cache, cut to the match; otherwise its first rows are
    /// copied and it stays, as the most recently used. Among equally long matches the most
    /// recently used wins.
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
        let entry = &self.entries[index];
        if reuse == entry.tokens.len() || reuse + 1 >= entry.prompt_len {
            let mut entry = self.entries.remove(index);
            self.bytes -= entry.bytes;
            entry.kv.truncate(reuse);
            return Some((entry.kv, reuse));
        }
        let entry = self.entries.remove(index);
        let kv = entry.kv.prefix(reuse);
        self.entries.push(entry);
        Some((kv, reuse))
    }

    /// Keep `kv` under the tokens it holds, `tokens[..kv.tokens()]` (`tokens` may go further:
    /// the last sampled token was never fed), of which the first `prompt_len` were its prompt,
    /// evicting the least recently used snapshots to make room. Not kept: an empty state, one `tokens` cannot name, one larger than the
    /// whole budget, or one that a kept snapshot already contains (that one becomes the most
    /// recently used). Kept snapshots that are a prefix of the new one are dropped: it serves
    /// every prompt they would, as far or further.
    pub fn insert(&mut self, tokens: &[u32], prompt_len: usize, mut kv: S) {
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
            prompt_len: prompt_len.min(n),
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
        fn truncate(&mut self, len: usize) {
            self.rows.truncate(len);
        }
    }

    /// Keep `rows` as a sequence whose whole token list was its prompt.
    fn keep(c: &mut PromptCache<Fake>, rows: &[u32]) {
        c.insert(rows, rows.len(), fake(rows));
    }

    #[test]
    fn a_whole_snapshot_is_moved_and_a_partial_one_copied() {
        let mut c = PromptCache::new(1000);
        c.insert(&[1, 2, 3, 9], 3, fake(&[1, 2, 3]));
        assert_eq!((c.len(), c.bytes()), (1, 30), "trimmed, under its 3 tokens");
        // A prompt diverging early in the entry's prompt: the matching row is copied, the
        // entry stays.
        let (kv, k) = c.take(&[1, 7, 7]).unwrap();
        assert_eq!((kv.rows, kv.copied, k), (vec![1], true, 1));
        assert_eq!(c.len(), 1);
        // The next turn of a chat: the whole entry is a prefix, so it is moved out.
        let (kv, k) = c.take(&[1, 2, 3, 4, 5]).unwrap();
        assert_eq!((kv.rows, kv.copied, k), (vec![1, 2, 3], false, 3));
        assert_eq!((c.len(), c.bytes()), (0, 0));
    }

    /// A chat's next turn as templates render it: the new prompt matches the previous prompt
    /// but its last token, not the reply the cache holds after it. The entry is moved out, cut
    /// to the match, instead of being copied and kept beside the new sequence.
    #[test]
    fn a_prompt_continuing_a_snapshot_past_its_prompt_takes_it() {
        let mut c = PromptCache::new(1000);
        // Prompt [1, 2, 3, 4] (ending "Assistant: "), then the reply [5, 6] it generated.
        c.insert(&[1, 2, 3, 4, 5, 6, 7], 4, fake(&[1, 2, 3, 4, 5, 6]));
        let (kv, k) = c.take(&[1, 2, 3, 8, 6, 9]).unwrap();
        assert_eq!((kv.rows, kv.copied, k), (vec![1, 2, 3], false, 3));
        assert_eq!((c.len(), c.bytes()), (0, 0));
        // Diverging earlier in its prompt (another question after shared passages): copied.
        c.insert(&[1, 2, 3, 4, 5, 6, 7], 4, fake(&[1, 2, 3, 4, 5, 6]));
        let (kv, k) = c.take(&[1, 2, 9, 9]).unwrap();
        assert_eq!((kv.rows, kv.copied, k), (vec![1, 2], true, 2));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn one_prompt_token_is_always_left_to_compute() {
        let mut c = PromptCache::new(1000);
        keep(&mut c, &[1, 2, 3]);
        // The same prompt again: all but its last token, taken from the entry.
        let (kv, k) = c.take(&[1, 2, 3]).unwrap();
        assert_eq!((kv.rows, kv.copied, k), (vec![1, 2], false, 2));
        keep(&mut c, &[1, 2, 3]);
        assert!(c.take(&[1]).is_none(), "a one-token prompt reuses nothing");
        assert!(c.take(&[]).is_none());
        assert!(c.take(&[5, 1, 2]).is_none(), "no shared first token");
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn the_longest_match_wins_then_the_most_recent() {
        let mut c = PromptCache::new(1000);
        keep(&mut c, &[1, 2, 3, 4, 0]);
        keep(&mut c, &[1, 2, 5, 6, 0]);
        keep(&mut c, &[1, 2, 7, 8, 0]);
        let (kv, k) = c.take(&[1, 2, 5, 9, 9]).unwrap();
        assert_eq!((kv.rows, kv.copied, k), (vec![1, 2, 5], true, 3));
        // Tie on two tokens: the most recently used ([1, 2, 5, ...], just touched) is copied.
        let (kv, _) = c.take(&[1, 2, 0]).unwrap();
        assert_eq!(kv.rows, vec![1, 2]);
        assert_eq!(c.entries.last().unwrap().tokens, vec![1, 2, 5, 6, 0]);
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn least_recently_used_snapshots_are_evicted_to_fit_the_budget() {
        let mut c = PromptCache::new(100);
        keep(&mut c, &[1, 1, 1, 1]); // 40 bytes
        keep(&mut c, &[2, 2, 2, 2]); // 80
        let _ = c.take(&[1, 0]); // [1, ...] is now the most recently used
        keep(&mut c, &[3, 3, 3]); // 110 > 100: [2, ...] goes
        assert_eq!(c.bytes(), 70);
        assert!(c.take(&[2, 2, 0]).is_none());
        assert!(c.take(&[1, 0]).is_some());
        keep(&mut c, &[4; 11]); // 110 bytes: larger than the budget, not kept
        assert_eq!((c.len(), c.bytes()), (2, 70));
        c.set_budget(45);
        assert_eq!(
            (c.len(), c.bytes()),
            (1, 40),
            "[3, ...], the least recently used, went"
        );
        c.set_budget(0);
        assert_eq!((c.len(), c.bytes()), (0, 0));
        keep(&mut c, &[5]);
        assert!(c.is_empty(), "budget 0 keeps nothing");
    }

    #[test]
    fn contained_and_containing_snapshots_are_not_kept_twice() {
        let mut c = PromptCache::new(1000);
        keep(&mut c, &[1, 2]);
        keep(&mut c, &[1, 2, 3, 4]);
        assert_eq!(
            (c.len(), c.bytes()),
            (1, 40),
            "the prefix [1, 2] is dropped"
        );
        keep(&mut c, &[1, 2, 3]);
        assert_eq!((c.len(), c.bytes()), (1, 40), "[1, 2, 3] is already there");
        keep(&mut c, &[]);
        c.insert(&[7], 1, fake(&[7, 8]));
        assert_eq!(c.len(), 1, "empty, or more rows than tokens: not kept");
    }
}
