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

    /// Whether `candidate` is this secret, both sides trimmed of surrounding whitespace (a key
    /// pasted with a newline still works). Constant time without leaking the length: both are
    /// hashed with SHA-256 and the two digests compared with an xor-fold (no early exit), so the
    /// time depends on neither where the first difference is nor how long either value is
    /// (beyond the hash's block count).
    pub fn matches(&self, candidate: &str) -> bool {
        use sha2::{Digest, Sha256};
        let a = Sha256::digest(self.0.trim().as_bytes());
        let b = Sha256::digest(candidate.trim().as_bytes());
        let diff = a
            .iter()
            .zip(b.iter())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y));
        std::hint::black_box(diff) == 0
    }

    /// Whether the value is empty or only whitespace (never a usable key or token).
    pub fn is_blank(&self) -> bool {
        self.0.trim().is_empty()
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

    #[test]
    fn matches_trims_both_sides() {
        let s = Secret::new("  sk-key\n");
        assert!(s.matches("sk-key"));
        assert!(s.matches(" sk-key \t"));
        assert!(!s.matches("sk-kez"), "same length, one byte differs");
        assert!(!s.matches("sk-key-longer"));
        assert!(!s.matches(""));
        assert!(Secret::new(" \t\n").is_blank());
        assert!(!s.is_blank());
    }
}
