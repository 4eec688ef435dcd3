//! Finding special tokens (such as `<|eot_id|>`) in text, so a prompt can contain them.
//!
//! The text is cut into ordinary stretches and special tokens, scanning left to right and taking
//! the longest special token that starts at a position (leftmost-longest). For vocabularies
//! where no special token contains another (LLaMA-3's `<|…|>` tokens) this is the same as
//! tiktoken's and llama.cpp's partitioning. Candidates are found in a byte-sorted list narrowed
//! one byte at a time, so a position costs O(length · log n) and only positions whose byte can
//! start a special token are examined. This module does not encode the ordinary stretches.

/// A piece of text: either ordinary text or a special token found in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment<'a> {
    Text(&'a str),
    Special(u32),
}

/// The special tokens to look for.
#[derive(Debug, Clone, Default)]
pub struct SpecialMatcher {
    /// (text, id), sorted by text bytes; no empty texts.
    tokens: Vec<(Box<[u8]>, u32)>,
    /// Whether a byte can start a special token.
    first: Box<[bool]>,
}

impl SpecialMatcher {
    /// Builds a matcher; empty texts are ignored, and for duplicate texts the lowest id wins.
    pub fn new(tokens: impl IntoIterator<Item = (Vec<u8>, u32)>) -> Self {
        let mut tokens: Vec<(Box<[u8]>, u32)> = tokens
            .into_iter()
            .filter(|(t, _)| !t.is_empty())
            .map(|(t, id)| (t.into_boxed_slice(), id))
            .collect();
        tokens.sort();
        tokens.dedup_by(|b, a| a.0 == b.0);
        let mut first = vec![false; 256].into_boxed_slice();
        for (t, _) in &tokens {
            first[t[0] as usize] = true;
        }
        Self { tokens, first }
    }

    /// The id of the special token whose text is exactly `text`.
    pub fn exact(&self, text: &[u8]) -> Option<u32> {
        let i = self
            .tokens
            .binary_search_by(|(t, _)| (**t).cmp(text))
            .ok()?;
        Some(self.tokens[i].1)
    }

    /// The longest special token at the start of `s`: (byte length, id).
    fn longest_at(&self, s: &[u8]) -> Option<(usize, u32)> {
        let (mut lo, mut hi) = (0, self.tokens.len());
        let mut best = None;
        for (k, &b) in s.iter().enumerate() {
            // Every entry in lo..hi starts with s[..k]; an entry equal to s[..k] sorts first.
            let range = &self.tokens[lo..hi];
            let start = range.partition_point(|(t, _)| t.len() <= k || t[k] < b);
            let end = range.partition_point(|(t, _)| t.len() <= k || t[k] <= b);
            if start == end {
                break;
            }
            (lo, hi) = (lo + start, lo + end);
            let (t, id) = &self.tokens[lo];
            if t.len() == k + 1 {
                best = Some((k + 1, *id));
            }
        }
        best
    }

    /// Cuts `text` into ordinary stretches and special tokens, calling `f` on each in order.
    /// Empty stretches are not reported.
    pub fn split<'a>(&self, text: &'a str, mut f: impl FnMut(Segment<'a>)) {
        if self.tokens.is_empty() {
            if !text.is_empty() {
                f(Segment::Text(text));
            }
            return;
        }
        let bytes = text.as_bytes();
        let mut plain_start = 0;
        let mut i = 0;
        while i < bytes.len() {
            if self.first[bytes[i] as usize]
                && let Some((len, id)) = self.longest_at(&bytes[i..])
            {
                // Special token texts are valid UTF-8, so i and i + len are char boundaries.
                if plain_start < i {
                    f(Segment::Text(&text[plain_start..i]));
                }
                f(Segment::Special(id));
                i += len;
                plain_start = i;
                continue;
            }
            i += 1;
        }
        if plain_start < bytes.len() {
            f(Segment::Text(&text[plain_start..]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segments<'a>(m: &SpecialMatcher, text: &'a str) -> Vec<Segment<'a>> {
        let mut out = Vec::new();
        m.split(text, |s| out.push(s));
        out
    }

    fn matcher(tokens: &[(&str, u32)]) -> SpecialMatcher {
        SpecialMatcher::new(tokens.iter().map(|(t, id)| (t.as_bytes().to_vec(), *id)))
    }

    #[test]
    fn finds_tokens_between_text() {
        let m = matcher(&[("<|eot_id|>", 9), ("<|begin_of_text|>", 0), ("<|end|>", 5)]);
        use Segment::*;
        assert_eq!(
            segments(&m, "<|begin_of_text|>Hi<|eot_id|><|eot_id|> x <|end"),
            [
                Special(0),
                Text("Hi"),
                Special(9),
                Special(9),
                Text(" x <|end")
            ]
        );
        assert_eq!(
            segments(&m, "no specials <| here"),
            [Text("no specials <| here")]
        );
        assert_eq!(segments(&m, ""), []);
        assert_eq!(segments(&m, "<|end|>"), [Special(5)]);
        assert_eq!(
            segments(&m, "é<|end|>ü"),
            [Text("é"), Special(5), Text("ü")]
        );
    }

    #[test]
    fn longest_match_wins_at_a_position() {
        let m = matcher(&[("<a>", 1), ("<a>b", 2), ("<ab", 3), ("", 4)]);
        use Segment::*;
        assert_eq!(segments(&m, "x<a>bc"), [Text("x"), Special(2), Text("c")]);
        assert_eq!(segments(&m, "<a>c"), [Special(1), Text("c")]);
        assert_eq!(segments(&m, "<abc<a"), [Special(3), Text("c<a")]);
    }

    #[test]
    fn empty_matcher_passes_text_through() {
        let m = SpecialMatcher::default();
        assert!(m.tokens.is_empty());
        assert_eq!(segments(&m, "<|eot_id|>"), [Segment::Text("<|eot_id|>")]);
    }
}
