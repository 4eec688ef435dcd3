//! A string that must never reach a log line: tokens and API keys.
//!
//! `Debug` and `Display` print `***`; the value is only reachable through [`Secret::expose`],
//! which callers use at the one place the value is sent (an HTTP header, a comparison).
//!
//! This module does NOT zero memory on drop or protect against a debugger: it stops accidental
//! disclosure through formatting.

use std::fmt;

/// A secret string (HF token, API key).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the single place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison (no early exit on the first differing byte).
    pub fn matches(&self, candidate: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), candidate.as_bytes());
        let mut diff = a.len() ^ b.len();
        for i in 0..a.len().max(b.len()) {
            let x = a.get(i).copied().unwrap_or(0);
            let y = b.get(i).copied().unwrap_or(0);
            diff |= usize::from(x ^ y);
        }
        diff == 0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting_never_shows_the_value() {
        let s = Secret::new("hf_abcdef123");
        assert!(!format!("{s:?} {s} {:#?}", Some(&s)).contains("hf_abcdef123"));
        assert_eq!(s.expose(), "hf_abcdef123");
    }

    #[test]
    fn matches_compares_whole_values() {
        let s = Secret::new("key");
        assert!(s.matches("key"));
        assert!(!s.matches("ke"));
        assert!(!s.matches("key2"));
        assert!(!s.matches("kez"));
    }
}
