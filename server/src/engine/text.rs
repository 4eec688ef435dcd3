//! Turning a stream of token bytes into text that is safe to send: whole UTF-8 characters only,
//! and never any part of a stop string.
//!
//! Byte-level BPE tokens can split a multi-byte character; such bytes are held until the
//! character completes (invalid sequences become U+FFFD). Text that could be the start of a stop
//! string is held until it either completes the stop string (generation ends before it) or
//! stops matching (it is released).
//!
//! This module does NOT know about tokens or sampling: it sees bytes in, text out.

/// The outcome of feeding one token's bytes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pushed {
    /// Text that can be sent now.
    pub text: String,
    /// A stop string completed: generation must end, nothing after `text` is sent.
    pub stop: Option<String>,
}

/// Incremental UTF-8 decoder with stop-string hold-back.
#[derive(Debug, Default)]
pub struct TextStream {
    incomplete: Vec<u8>,
    held: String,
    stops: Vec<String>,
}

impl TextStream {
    /// `stops`: stop strings; empty ones are ignored.
    pub fn new(stops: &[String]) -> Self {
        Self {
            incomplete: Vec::new(),
            held: String::new(),
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
        }
    }

    /// Feed the bytes of one token.
    pub fn push(&mut self, bytes: &[u8]) -> Pushed {
        self.incomplete.extend_from_slice(bytes);
        let decoded = take_complete_utf8(&mut self.incomplete);
        self.held.push_str(&decoded);
        self.release()
    }

    /// The end of generation: whatever is held, with an incomplete trailing character replaced
    /// by U+FFFD.
    pub fn finish(&mut self) -> String {
        if !self.incomplete.is_empty() {
            self.held
                .push_str(&String::from_utf8_lossy(&self.incomplete));
            self.incomplete.clear();
        }
        std::mem::take(&mut self.held)
    }

    fn release(&mut self) -> Pushed {
        // The earliest complete stop string wins (ties: the longer one, it started first too).
        let found = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()).map(|at| (at, s)))
            .min_by_key(|(at, s)| (*at, usize::MAX - s.len()));
        if let Some((at, stop)) = found {
            let stop = stop.clone();
            let text = self.held[..at].to_string();
            self.held.clear();
            return Pushed {
                text,
                stop: Some(stop),
            };
        }
        let keep = self.longest_stop_prefix_suffix();
        let cut = self.held.len() - keep;
        let text = self.held[..cut].to_string();
        self.held.drain(..cut);
        Pushed { text, stop: None }
    }

    /// The length in bytes of the longest suffix of `held` that is a proper prefix of a stop.
    fn longest_stop_prefix_suffix(&self) -> usize {
        let mut best = 0;
        for (start, _) in self.held.char_indices() {
            let suffix = &self.held[start..];
            if self
                .stops
                .iter()
                .any(|s| s.len() > suffix.len() && s.starts_with(suffix))
            {
                best = best.max(suffix.len());
                break; // earlier starts are longer suffixes
            }
        }
        best
    }
}

/// Remove and return the longest decodable prefix of `buf`; invalid sequences become U+FFFD and
/// an incomplete character at the end stays in `buf`.
fn take_complete_utf8(buf: &mut Vec<u8>) -> String {
    let mut out = String::new();
    let mut start = 0;
    loop {
        match std::str::from_utf8(&buf[start..]) {
            Ok(s) => {
                out.push_str(s);
                start = buf.len();
                break;
            }
            Err(e) => {
                let valid = e.valid_up_to();
                // SAFETY-free: from_utf8 just validated this range.
                out.push_str(std::str::from_utf8(&buf[start..start + valid]).unwrap_or_default());
                match e.error_len() {
                    Some(bad) => {
                        out.push(char::REPLACEMENT_CHARACTER);
                        start += valid + bad;
                    }
                    None => {
                        start += valid;
                        break;
                    }
                }
            }
        }
    }
    buf.drain(..start);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stops(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn multibyte_characters_are_held_until_complete() {
        let mut t = TextStream::new(&[]);
        let euro = "€".as_bytes(); // 3 bytes
        assert_eq!(t.push(&euro[..1]).text, "");
        assert_eq!(t.push(&euro[1..2]).text, "");
        assert_eq!(t.push(&euro[2..]).text, "€");
        assert_eq!(t.push(b"ab").text, "ab");
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let mut t = TextStream::new(&[]);
        assert_eq!(t.push(&[b'a', 0xff, b'b']).text, "a\u{fffd}b");
        assert_eq!(t.push(&[0xe2, 0x82]).text, "");
        assert_eq!(t.finish(), "\u{fffd}");
    }

    #[test]
    fn stop_string_inside_one_token() {
        let mut t = TextStream::new(&stops(&["END"]));
        let p = t.push(b"hello END world");
        assert_eq!(
            p,
            Pushed {
                text: "hello ".into(),
                stop: Some("END".into())
            }
        );
    }

    #[test]
    fn stop_string_across_tokens_is_never_leaked() {
        let mut t = TextStream::new(&stops(&["</s>"]));
        assert_eq!(t.push(b"ab<").text, "ab");
        assert_eq!(t.push(b"/").text, "");
        let p = t.push(b"s>tail");
        assert_eq!(
            p,
            Pushed {
                text: String::new(),
                stop: Some("</s>".into())
            }
        );
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
    fn earliest_stop_wins() {
        let mut t = TextStream::new(&stops(&["bc", "ab"]));
        let p = t.push(b"xabc");
        assert_eq!(
            p,
            Pushed {
                text: "x".into(),
                stop: Some("ab".into())
            }
        );
    }

    #[test]
    fn empty_stop_strings_are_ignored() {
        let mut t = TextStream::new(&stops(&[""]));
        assert_eq!(
            t.push(b"abc"),
            Pushed {
                text: "abc".into(),
                stop: None
            }
        );
    }
}
