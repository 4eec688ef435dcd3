//! Stop strings over streamed text: holds back just enough text to be sure a stop string is not
//! starting, so nothing after a stop string is ever emitted and nothing before it is delayed
//! longer than necessary.
//!
//! Works on decoded text pieces; it does not know about tokens (end-of-generation tokens are
//! the generation loop's check).

/// What feeding a piece of text produced.
#[derive(Debug, PartialEq, Eq)]
pub enum StopResult {
    /// Text safe to emit now (may be empty while a possible stop string is pending).
    Continue(String),
    /// A stop string was found: the text before it, and which stop string matched.
    Stopped { text: String, stop: String },
}

#[derive(Debug, Clone)]
pub struct StopMatcher {
    stops: Vec<String>,
    pending: String,
}

impl StopMatcher {
    /// Empty stop strings are ignored.
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(stops: I) -> StopMatcher {
        StopMatcher {
            stops: stops
                .into_iter()
                .map(Into::into)
                .filter(|s: &String| !s.is_empty())
                .collect(),
            pending: String::new(),
        }
    }

    pub fn push(&mut self, piece: &str) -> StopResult {
        self.pending.push_str(piece);
        // Earliest complete match wins.
        let found = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()).map(|i| (i, s)))
            .min_by_key(|(i, s)| (*i, std::cmp::Reverse(s.len())));
        if let Some((i, s)) = found {
            let text = self.pending[..i].to_string();
            let stop = s.clone();
            self.pending.clear();
            return StopResult::Stopped { text, stop };
        }
        // Hold back the longest suffix that is a proper prefix of some stop string.
        let mut hold = 0;
        for s in &self.stops {
            let max = s.len().saturating_sub(1).min(self.pending.len());
            for k in (1..=max).rev() {
                let start = self.pending.len() - k;
                if self.pending.is_char_boundary(start) && s.starts_with(&self.pending[start..]) {
                    hold = hold.max(k);
                    break;
                }
            }
        }
        let emit_to = self.pending.len() - hold;
        let out = self.pending[..emit_to].to_string();
        self.pending.drain(..emit_to);
        StopResult::Continue(out)
    }

    /// Text still held back (emit it when generation ends for another reason).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, Option<String>) {
        let mut m = StopMatcher::new(stops.iter().copied());
        let mut out = String::new();
        for p in pieces {
            match m.push(p) {
                StopResult::Continue(t) => out.push_str(&t),
                StopResult::Stopped { text, stop } => {
                    out.push_str(&text);
                    return (out, Some(stop));
                }
            }
        }
        out.push_str(&m.finish());
        (out, None)
    }

    #[test]
    fn stops_across_pieces() {
        assert_eq!(
            run(&["\nUser:"], &["Hi", " there\nUs", "er: x"]),
            ("Hi there".into(), Some("\nUser:".into()))
        );
    }

    #[test]
    fn false_start_is_released() {
        assert_eq!(run(&["END"], &["a E", "N", "x"]), ("a ENx".into(), None));
        let mut m = StopMatcher::new(["END"]);
        assert_eq!(m.push("a EN"), StopResult::Continue("a ".into()));
        assert_eq!(m.finish(), "EN");
    }

    #[test]
    fn earliest_match_wins_and_multibyte_is_safe() {
        assert_eq!(
            run(&["world", "lo"], &["hello world"]),
            ("hel".into(), Some("lo".into()))
        );
        assert_eq!(
            run(&["é!"], &["café", "!"]),
            ("caf".into(), Some("é!".into()))
        );
        assert_eq!(
            run(&["日本"], &["今日は日", "曜"]),
            ("今日は日曜".into(), None)
        );
    }

    #[test]
    fn no_stops_passes_everything() {
        assert_eq!(run(&[""], &["a", "b"]), ("ab".into(), None));
    }
}
