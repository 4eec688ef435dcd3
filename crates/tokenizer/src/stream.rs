//! Generated text as it is safe to send: the one output stream of every generation (the
//! engine's scheduler, for the HTTP server and the CLI alike).
//!
//! A byte-level token can end in the middle of a multi-byte character (an emoji is often two
//! or three tokens). [`Utf8Stream`] holds back such an incomplete tail until the next bytes
//! complete it, and emits invalid sequences as U+FFFD exactly where [`String::from_utf8_lossy`]
//! would, so the concatenation of everything emitted (including [`Utf8Stream::finish`]) equals
//! the lossy decoding of all bytes at once — no byte is dropped or duplicated.
//! [`TextStream`] feeds token bytes through it and then through a [`StopMatcher`]: text that
//! could be the start of a stop string is held until it completes the stop string (generation
//! ends before it) or stops matching (it is released).
//!
//! This module does NOT know token ids: which tokens produce text (control tokens do not) and
//! end-of-generation tokens are the scheduler's decisions.

use crate::stop::{StopMatcher, StopResult};

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

/// The outcome of feeding one token's bytes to a [`TextStream`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pushed {
    /// Text that can be sent now.
    pub text: String,
    /// A stop string completed: generation must end, nothing after `text` is sent.
    pub stop: Option<String>,
}

/// Token bytes in, sendable text out: whole UTF-8 characters only, and never any part of a stop
/// string.
#[derive(Debug, Clone)]
pub struct TextStream {
    utf8: Utf8Stream,
    stops: StopMatcher,
}

impl TextStream {
    /// `stops`: stop strings; empty ones are ignored.
    pub fn new(stops: &[String]) -> Self {
        Self {
            utf8: Utf8Stream::new(),
            stops: StopMatcher::new(stops.iter().cloned()),
        }
    }

    /// Feed the bytes of one token.
    pub fn push(&mut self, bytes: &[u8]) -> Pushed {
        let decoded = self.utf8.push(bytes).unwrap_or_default();
        match self.stops.push(&decoded) {
            StopResult::Continue(text) => Pushed { text, stop: None },
            StopResult::Stopped { text, stop } => Pushed {
                text,
                stop: Some(stop),
            },
        }
    }

    /// The end of generation: whatever is held, with an incomplete trailing character replaced
    /// by U+FFFD (text after a stop string completed by that flush is dropped).
    pub fn finish(&mut self) -> String {
        let rest = self.utf8.finish().unwrap_or_default();
        match self.stops.push(&rest) {
            StopResult::Continue(text) => text + &self.stops.finish(),
            StopResult::Stopped { text, .. } => text,
        }
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

    fn stops(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    fn stopped(text: &str, stop: &str) -> Pushed {
        Pushed {
            text: text.into(),
            stop: Some(stop.into()),
        }
    }

    #[test]
    fn text_stream_holds_multibyte_characters() {
        let mut t = TextStream::new(&[]);
        let euro = "€".as_bytes(); // 3 bytes
        assert_eq!(t.push(&euro[..1]).text, "");
        assert_eq!(t.push(&euro[1..2]).text, "");
        assert_eq!(t.push(&euro[2..]).text, "€");
        assert_eq!(t.push(b"ab").text, "ab");
    }

    #[test]
    fn text_stream_replaces_invalid_bytes() {
        let mut t = TextStream::new(&[]);
        assert_eq!(t.push(&[b'a', 0xff, b'b']).text, "a\u{fffd}b");
        assert_eq!(t.push(&[0xe2, 0x82]).text, "");
        assert_eq!(t.finish(), "\u{fffd}");
    }

    #[test]
    fn stop_string_inside_one_token() {
        let mut t = TextStream::new(&stops(&["END"]));
        assert_eq!(t.push(b"hello END world"), stopped("hello ", "END"));
    }

    #[test]
    fn stop_string_across_tokens_is_never_leaked() {
        let mut t = TextStream::new(&stops(&["</s>"]));
        assert_eq!(t.push(b"ab<").text, "ab");
        assert_eq!(t.push(b"/").text, "");
        assert_eq!(t.push(b"s>tail"), stopped("", "</s>"));
    }

    #[test]
    fn held_prefix_is_released_when_it_stops_matching() {
        let mut t = TextStream::new(&stops(&["</s>"]));
        assert_eq!(t.push(b"a</").text, "a");
        assert_eq!(t.push(b"x").text, "</x");
        assert_eq!(t.push(b"<").text, "");
        assert_eq!(t.finish(), "<");
    }

    #[test]
    fn stop_string_split_inside_a_character_across_tokens() {
        // "é" is C3 A9: the stop string "é!" starts in the middle of a token and its first
        // character is cut between two tokens. Nothing of it is shown, "caf" is not delayed.
        let mut t = TextStream::new(&stops(&["é!"]));
        assert_eq!(t.push(b"caf\xC3").text, "caf");
        assert_eq!(t.push(b"\xA9").text, "");
        assert_eq!(t.push(b"!!"), stopped("", "é!"));
        // Another character after "é" releases it.
        let mut t = TextStream::new(&stops(&["é!"]));
        assert_eq!(t.push(b"caf\xC3").text, "caf");
        assert_eq!(t.push(b"\xA9").text, "");
        assert_eq!(t.push(b"?").text, "é?");
        assert_eq!(t.finish(), "");
    }
}
