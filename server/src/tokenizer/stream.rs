//! Incremental detokenization for streaming: text comes out piece by piece as tokens are
//! generated, and a UTF-8 character split across tokens is never cut in half.
//!
//! A byte-level token can end in the middle of a multi-byte character (an emoji is often two
//! or three tokens). [`Utf8Stream`] holds back such an incomplete tail until the next bytes
//! complete it, and emits invalid sequences as U+FFFD exactly where [`String::from_utf8_lossy`]
//! would, so the concatenation of everything emitted (including [`Utf8Stream::finish`]) equals
//! the lossy decoding of all bytes at once — no byte is dropped or duplicated.
//! [`StreamDecoder`] feeds it token bytes. Stop strings and end-of-generation are not handled
//! here; that is the generator's job.

use super::model::Tokenizer;
use std::borrow::Borrow;

/// UTF-8 reassembly across chunk boundaries.
#[derive(Debug, Clone, Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes; returns the text that is now complete, if any.
    pub fn push(&mut self, bytes: &[u8]) -> Option<String> {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        let mut consumed = 0;
        loop {
            let rest = &self.pending[consumed..];
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    consumed = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // Valid by construction: `valid_up_to` bytes were just checked.
                    out.push_str(std::str::from_utf8(&rest[..valid]).unwrap_or_default());
                    match e.error_len() {
                        // Invalid bytes: replaced, as from_utf8_lossy does.
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            consumed += valid + bad;
                        }
                        // An incomplete character at the end: wait for more bytes.
                        None => {
                            consumed += valid;
                            break;
                        }
                    }
                }
            }
        }
        self.pending.drain(..consumed);
        (!out.is_empty()).then_some(out)
    }

    /// Ends the stream: an incomplete character still held back becomes U+FFFD.
    pub fn finish(&mut self) -> Option<String> {
        if self.pending.is_empty() {
            return None;
        }
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        Some(out)
    }

    /// Bytes held back (an incomplete character).
    pub fn pending(&self) -> &[u8] {
        &self.pending
    }
}

/// Turns a stream of token ids into text pieces. Works with `&Tokenizer` or `Arc<Tokenizer>`.
#[derive(Debug, Clone)]
pub struct StreamDecoder<T: Borrow<Tokenizer>> {
    tokenizer: T,
    utf8: Utf8Stream,
    skip_control: bool,
}

impl<T: Borrow<Tokenizer>> StreamDecoder<T> {
    /// A decoder that renders every token, control tokens included (as their text).
    pub fn new(tokenizer: T) -> Self {
        Self {
            tokenizer,
            utf8: Utf8Stream::new(),
            skip_control: false,
        }
    }

    /// Whether control tokens (`<|eot_id|>`, `<|begin_of_text|>`, …) produce no text.
    pub fn skip_control(mut self, skip: bool) -> Self {
        self.skip_control = skip;
        self
    }

    /// Adds a generated token; returns the text that is now complete, if any. An id outside the
    /// vocabulary yields U+FFFD.
    pub fn push(&mut self, id: u32) -> Option<String> {
        let tok = self.tokenizer.borrow();
        if (id as usize) >= tok.vocab_size() {
            return self.utf8.push("\u{FFFD}".as_bytes());
        }
        if self.skip_control && tok.is_control(id) {
            return None;
        }
        self.utf8.push(tok.token_bytes(id))
    }

    /// Ends the stream, flushing an incomplete character (as U+FFFD).
    pub fn finish(&mut self) -> Option<String> {
        self.utf8.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn feed(chunks: &[&[u8]]) -> Vec<Option<String>> {
        let mut s = Utf8Stream::new();
        let mut out: Vec<_> = chunks.iter().map(|c| s.push(c)).collect();
        out.push(s.finish());
        out
    }

    #[test]
    fn holds_back_split_characters() {
        let euro = "€".as_bytes(); // E2 82 AC
        assert_eq!(
            feed(&[b"a", &euro[..1], &euro[1..2], &euro[2..], b"b"]),
            [
                Some("a".into()),
                None,
                None,
                Some("€".into()),
                Some("b".into()),
                None
            ]
        );
        let emoji = "😀".as_bytes();
        assert_eq!(
            feed(&[&[b'x', emoji[0], emoji[1]], &emoji[2..]]),
            [Some("x".into()), Some("😀".into()), None]
        );
    }

    #[test]
    fn invalid_bytes_become_replacement_chars() {
        // A lone continuation byte, then a truncated sequence interrupted by ASCII.
        assert_eq!(
            feed(&[&[0x80], &[0xE2, 0x82], b"A"]),
            [
                Some("\u{FFFD}".into()),
                None,
                Some("\u{FFFD}A".into()),
                None
            ]
        );
        // An incomplete character at the end is flushed by finish().
        assert_eq!(
            feed(&[b"ok", &[0xF0, 0x9F]]),
            [Some("ok".into()), None, Some("\u{FFFD}".into())]
        );
    }

    proptest! {
        /// Whatever the chunking, the pieces add up to the lossy decoding of all bytes.
        #[test]
        fn pieces_equal_lossy_decoding(
            bytes in proptest::collection::vec(any::<u8>(), 0..64),
            cuts in proptest::collection::vec(0usize..64, 0..8),
            text in "\\PC{0,12}",
        ) {
            let mut all = text.into_bytes();
            all.extend_from_slice(&bytes);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(all.len())).collect();
            cuts.sort_unstable();
            let mut s = Utf8Stream::new();
            let mut got = String::new();
            let mut prev = 0;
            for c in cuts.into_iter().chain([all.len()]) {
                got.extend(s.push(&all[prev..c]));
                prev = c;
            }
            got.extend(s.finish());
            prop_assert_eq!(got, String::from_utf8_lossy(&all).into_owned());
        }
    }
}
