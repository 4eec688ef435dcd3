//! The LLaMA-3 and Qwen2 pre-splits: cutting text into the pieces that BPE then encodes one by
//! one.
//!
//! LLaMA-3's `tokenizer.json` (and tiktoken's `llama3` encoding) split with the regex
//!
//! ```text
//! (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
//! ```
//!
//! Qwen2's (also used by Qwen2.5 and Qwen3, `tokenizer.ggml.pre = "qwen2"`) is the same regex
//! character for character except that a number is a single digit: `\p{N}` instead of
//! `\p{N}{1,3}`. [`PreSplit`] names the two; the only difference in the scanner is the longest
//! digit run a piece may hold.
//!
//! The regex is applied left to right with backtracking semantics (the first alternative that matches wins,
//! not the longest). This module is a hand-written scanner that produces exactly the matches of
//! that regex, without a regex engine: each alternative is a few lines below, in the regex's
//! order. Two details that are easy to get wrong:
//!
//! * `(?i:…)` is Unicode case-insensitive, so `'ſ` (U+017F LATIN SMALL LETTER LONG S, which
//!   case-folds to `s`) is a contraction just like `'s` and `'S`. llama.cpp's ASCII rewrite
//!   (`'[sS]`) differs here; we follow the original regex.
//! * `\s*[\r\n]+` backtracks to the *last* line break of a white-space run, and `\s+(?!\S)` gives
//!   back one white-space char when a non-space follows, so that char can prefix the next word.
//!
//! The pieces cover the input exactly (their concatenation is the input). This module does not
//! know about special tokens or BPE.

use super::unicode::{CharClass, class_of};

/// Which pre-split regex to follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreSplit {
    /// LLaMA-3: digits in runs of up to three.
    Llama3,
    /// Qwen2 / Qwen2.5 / Qwen3: every digit is its own piece.
    Qwen2,
}

impl PreSplit {
    /// How many further digits may follow the first one in a number piece.
    fn extra_digits(self) -> usize {
        match self {
            PreSplit::Llama3 => 2,
            PreSplit::Qwen2 => 0,
        }
    }
}

/// Iterator over the pre-split pieces of a text.
#[derive(Debug, Clone)]
pub struct Pieces<'a> {
    rest: &'a str,
    extra_digits: usize,
}

/// Splits `text` the way LLaMA-3's pre-tokenizer regex does.
#[cfg(test)]
pub fn llama3_pieces(text: &str) -> Pieces<'_> {
    pieces(PreSplit::Llama3, text)
}

/// Splits `text` the way the `split` pre-tokenizer regex does.
pub fn pieces(split: PreSplit, text: &str) -> Pieces<'_> {
    Pieces {
        rest: text,
        extra_digits: split.extra_digits(),
    }
}

impl<'a> Iterator for Pieces<'a> {
    type Item = &'a str;

    #[inline]
    fn next(&mut self) -> Option<&'a str> {
        if self.rest.is_empty() {
            return None;
        }
        let len = piece_len(self.rest, self.extra_digits);
        let (piece, rest) = self.rest.split_at(len);
        self.rest = rest;
        Some(piece)
    }
}

fn is_line_break(c: char) -> bool {
    c == '\r' || c == '\n'
}

/// Byte length of the regex match starting at the beginning of the non-empty `s`.
fn piece_len(s: &str, extra_digits: usize) -> usize {
    let mut chars = s.chars();
    let Some(c0) = chars.next() else { return 0 };
    let c1 = chars.next();
    let k0 = class_of(c0);
    let n0 = c0.len_utf8();

    // (?i:'s|'t|'re|'ve|'m|'ll|'d)
    if c0 == '\''
        && let Some(n) = contraction_len(s)
    {
        return n;
    }
    // [^\r\n\p{L}\p{N}]?\p{L}+
    if k0 == CharClass::Letter {
        return n0 + run_len(&s[n0..], CharClass::Letter, usize::MAX);
    }
    if let Some(c1) = c1
        && k0 != CharClass::Number
        && !is_line_break(c0)
        && class_of(c1) == CharClass::Letter
    {
        let start = n0 + c1.len_utf8();
        return start + run_len(&s[start..], CharClass::Letter, usize::MAX);
    }
    // \p{N}{1,3} (LLaMA-3) or \p{N} (Qwen2)
    if k0 == CharClass::Number {
        return n0 + run_len(&s[n0..], CharClass::Number, extra_digits);
    }
    // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
    let other_start = if k0 == CharClass::Other {
        Some(0)
    } else if c0 == ' ' && c1.is_some_and(|c| class_of(c) == CharClass::Other) {
        Some(1)
    } else {
        None
    };
    if let Some(start) = other_start {
        let end = start + run_len(&s[start..], CharClass::Other, usize::MAX);
        let breaks = s[end..]
            .bytes()
            .take_while(|&b| b == b'\r' || b == b'\n')
            .count();
        return end + breaks;
    }
    // Only white space is left: c0 is \s.
    debug_assert_eq!(k0, CharClass::Space);
    let mut run_end = 0;
    let mut last_start = 0;
    let mut chars_in_run = 0usize;
    let mut after_last_break = None;
    for (i, c) in s.char_indices() {
        if class_of(c) != CharClass::Space {
            break;
        }
        last_start = i;
        run_end = i + c.len_utf8();
        chars_in_run += 1;
        if is_line_break(c) {
            after_last_break = Some(run_end);
        }
    }
    // \s*[\r\n]+ : backtracks to the last line break in the run.
    if let Some(end) = after_last_break {
        return end;
    }
    // \s+(?!\S) : the whole run at the end of the text, else all but its last char…
    if run_end == s.len() {
        return run_end;
    }
    if chars_in_run >= 2 {
        return last_start;
    }
    // \s+ : …unless the run is a single char.
    run_end
}

/// Length of a contraction at the start of `s` (which starts with `'`), if there is one.
fn contraction_len(s: &str) -> Option<usize> {
    let mut chars = s[1..].chars();
    let c1 = chars.next()?;
    match c1 {
        's' | 'S' | 't' | 'T' | 'm' | 'M' | 'd' | 'D' => return Some(2),
        'ſ' => return Some(1 + 'ſ'.len_utf8()),
        _ => {}
    }
    let c2 = chars.next()?;
    let pair = (c1.to_ascii_lowercase(), c2.to_ascii_lowercase());
    // Both chars are ASCII when this matches, so the length is 3 bytes.
    matches!(pair, ('r', 'e') | ('v', 'e') | ('l', 'l')).then_some(3)
}

/// Byte length of the run of up to `max` chars of class `class` at the start of `s`.
#[inline]
fn run_len(s: &str, class: CharClass, max: usize) -> usize {
    let mut len = 0;
    for (n, c) in s.chars().enumerate() {
        if n >= max || class_of(c) != class {
            break;
        }
        len += c.len_utf8();
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(s: &str) -> Vec<&str> {
        llama3_pieces(s).collect()
    }

    #[test]
    fn words_and_spaces() {
        assert_eq!(split("Hello world"), ["Hello", " world"]);
        assert_eq!(split("  two spaces"), [" ", " two", " spaces"]);
        assert_eq!(split("trailing   "), ["trailing", "   "]);
        assert_eq!(split("   "), ["   "]);
        assert_eq!(split("\t\tfoo"), ["\t", "\tfoo"]);
        assert_eq!(split("a\u{00A0}b"), ["a", "\u{00A0}b"]);
        assert_eq!(split(""), Vec::<&str>::new());
    }

    #[test]
    fn contractions_are_case_insensitive_and_win_over_words() {
        assert_eq!(split("I'LL don'T"), ["I", "'LL", " don", "'T"]);
        assert_eq!(split("we're they've"), ["we", "'re", " they", "'ve"]);
        assert_eq!(split("'sup"), ["'s", "up"]);
        assert_eq!(split("'Re'rE"), ["'Re", "'rE"]);
        assert_eq!(split("x'ſa"), ["x", "'ſ", "a"]);
        // Not a contraction: the apostrophe prefixes the following word instead.
        assert_eq!(split("'hello"), ["'hello"]);
        assert_eq!(split("l'x"), ["l", "'x"]);
        assert_eq!(split("’s"), ["’s"]);
        assert_eq!(split("'"), ["'"]);
        assert_eq!(split("'L"), ["'L"]);
    }

    #[test]
    fn digits_in_threes() {
        assert_eq!(split("12345678"), ["123", "456", "78"]);
        assert_eq!(split("a1b22"), ["a", "1", "b", "22"]);
        assert_eq!(split(" 42"), [" ", "42"]);
        assert_eq!(split("٣٤٥٦٧"), ["٣٤٥", "٦٧"]);
        assert_eq!(split("½¾5Ⅻ"), ["½¾5", "Ⅻ"]);
    }

    #[test]
    fn punctuation_and_line_breaks() {
        assert_eq!(split("!!!\n\nx"), ["!!!\n\n", "x"]);
        assert_eq!(split(" ?!\r\n"), [" ?!\r\n"]);
        assert_eq!(split("a, b."), ["a", ",", " b", "."]);
        assert_eq!(split(" !abc"), [" !", "abc"]);
        assert_eq!(split("!abc"), ["!abc"]);
        assert_eq!(split("😀😀 x"), ["😀😀", " x"]);
        assert_eq!(split("e\u{301}"), ["e", "\u{301}"]);
        assert_eq!(split("\u{301}e"), ["\u{301}e"]);
    }

    #[test]
    fn whitespace_runs_with_line_breaks() {
        assert_eq!(split("  \n\n  x"), ["  \n\n", " ", " x"]);
        assert_eq!(split("a  \n b"), ["a", "  \n", " b"]);
        assert_eq!(split("a \r\n\r\n c"), ["a", " \r\n\r\n", " c"]);
        assert_eq!(split("\n foo"), ["\n", " foo"]);
        assert_eq!(split("x\n"), ["x", "\n"]);
        assert_eq!(split("x \n \t "), ["x", " \n", " \t "]);
        assert_eq!(split("\n\n1"), ["\n\n", "1"]);
        assert_eq!(split(" \n1"), [" \n", "1"]);
        assert_eq!(split("  1"), [" ", " ", "1"]);
        assert_eq!(split("\r\nabc"), ["\r\n", "abc"]);
    }

    #[test]
    fn qwen2_splits_every_digit() {
        let q = |s| pieces(PreSplit::Qwen2, s).collect::<Vec<_>>();
        assert_eq!(q("12345678"), ["1", "2", "3", "4", "5", "6", "7", "8"]);
        assert_eq!(q("a1b22 ٣٤"), ["a", "1", "b", "2", "2", " ", "٣", "٤"]);
        assert_eq!(q("½¾5Ⅻ"), ["½", "¾", "5", "Ⅻ"]);
        // Everything else is LLaMA-3's split.
        let text = "I'LL see  you\n\n at 3pm!!\r\n 😀😀 x\u{00A0}y";
        assert_eq!(q(text), split(text));
    }

    proptest::proptest! {
        #[test]
        fn qwen2_pieces_cover_any_input(text in proptest::prelude::any::<String>()) {
            let q: Vec<&str> = pieces(PreSplit::Qwen2, &text).collect();
            proptest::prop_assert_eq!(q.concat(), text.clone());
            proptest::prop_assert!(q.iter().all(|p| !p.is_empty()));
            // Qwen2 only cuts number runs further: joining its pieces at LLaMA-3's boundaries
            // gives LLaMA-3's pieces.
            let ends = |ps: &[&str]| {
                ps.iter()
                    .scan(0, |at, p| {
                        *at += p.len();
                        Some(*at)
                    })
                    .collect::<std::collections::BTreeSet<usize>>()
            };
            let l: Vec<&str> = llama3_pieces(&text).collect();
            proptest::prop_assert!(ends(&l).is_subset(&ends(&q)));
        }
    }

    #[test]
    fn pieces_cover_the_input() {
        let text = "Mixed: ñ, 中文, 123456, \t\r\n  tabs\u{3000}and 😀👍🏽!!\n";
        assert_eq!(split(text).concat(), text);
        assert!(split(text).iter().all(|p| !p.is_empty()));
    }
}
