//! Fast classification of chars into the four classes the LLaMA-3 pre-split regex distinguishes:
//! letters (`\p{L}`), numbers (`\p{N}`), white space (`\s`) and everything else.
//!
//! The ranges come from [`super::unicode_tables`] (generated from the same Unicode data as the
//! reference tokenizer). At first use they are expanded once into a two-stage lookup table
//! (about 60 KB, shared by all tokenizers), so a lookup is two array reads. This module knows
//! nothing about the regex itself; see [`super::pretokenize`].

use super::unicode_tables::{LETTER, NUMBER, WHITE_SPACE};
use std::collections::HashMap;
use std::sync::OnceLock;

/// The class of a char as far as the pre-split regex is concerned. The classes are disjoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CharClass {
    /// Neither a letter, a number nor white space (punctuation, symbols, marks, controls …).
    Other = 0,
    /// `\p{L}`.
    Letter = 1,
    /// `\p{N}`.
    Number = 2,
    /// `\s` (Unicode White_Space, which includes `\r` and `\n`).
    Space = 3,
}

const BLOCK_BITS: u32 = 7;
const BLOCK: usize = 1 << BLOCK_BITS;
const CODE_POINTS: usize = 0x11_0000;

struct Table {
    /// Block number → offset of that block's classes in `classes`.
    index: Vec<u32>,
    classes: Vec<u8>,
}

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(build)
}

fn build() -> Table {
    let mut flat = vec![CharClass::Other as u8; CODE_POINTS];
    for (ranges, class) in [
        (LETTER, CharClass::Letter),
        (NUMBER, CharClass::Number),
        (WHITE_SPACE, CharClass::Space),
    ] {
        for &(lo, hi) in ranges {
            flat[lo as usize..=hi as usize].fill(class as u8);
        }
    }
    let mut seen: HashMap<&[u8], u32> = HashMap::new();
    let mut classes = Vec::new();
    let mut index = Vec::with_capacity(CODE_POINTS / BLOCK);
    for block in flat.chunks(BLOCK) {
        let offset = *seen.entry(block).or_insert_with(|| {
            let at = classes.len() as u32;
            classes.extend_from_slice(block);
            at
        });
        index.push(offset);
    }
    Table { index, classes }
}

/// The class of `c`.
#[inline]
pub fn class_of(c: char) -> CharClass {
    let cp = c as u32;
    if cp < 0x80 {
        return ASCII[cp as usize];
    }
    let t = table();
    let offset = t.index[(cp >> BLOCK_BITS) as usize] as usize;
    match t.classes[offset + (cp as usize & (BLOCK - 1))] {
        1 => CharClass::Letter,
        2 => CharClass::Number,
        3 => CharClass::Space,
        _ => CharClass::Other,
    }
}

const ASCII: [CharClass; 128] = {
    let mut out = [CharClass::Other; 128];
    let mut b = 0;
    while b < 128 {
        out[b] = match b as u8 {
            b'a'..=b'z' | b'A'..=b'Z' => CharClass::Letter,
            b'0'..=b'9' => CharClass::Number,
            b'\t' | b'\n' | 0x0B | 0x0C | b'\r' | b' ' => CharClass::Space,
            _ => CharClass::Other,
        };
        b += 1;
    }
    out
};

#[cfg(test)]
mod tests {
    use super::*;

    fn in_ranges(ranges: &[(u32, u32)], cp: u32) -> bool {
        let i = ranges.partition_point(|&(_, hi)| hi < cp);
        ranges.get(i).is_some_and(|&(lo, _)| lo <= cp)
    }

    #[test]
    fn table_agrees_with_ranges_everywhere() {
        for cp in 0..CODE_POINTS as u32 {
            let Some(c) = char::from_u32(cp) else {
                continue;
            };
            let want = if in_ranges(LETTER, cp) {
                CharClass::Letter
            } else if in_ranges(NUMBER, cp) {
                CharClass::Number
            } else if in_ranges(WHITE_SPACE, cp) {
                CharClass::Space
            } else {
                CharClass::Other
            };
            assert_eq!(class_of(c), want, "U+{cp:04X}");
        }
    }

    #[test]
    fn classes_are_disjoint_and_sorted() {
        for ranges in [LETTER, NUMBER, WHITE_SPACE] {
            assert!(ranges.windows(2).all(|w| w[0].1 < w[1].0));
        }
        for &(lo, hi) in NUMBER.iter().chain(WHITE_SPACE) {
            for cp in lo..=hi {
                assert!(!in_ranges(LETTER, cp), "U+{cp:04X} in two classes");
            }
        }
    }

    #[test]
    fn known_characters() {
        use CharClass::*;
        for (c, want) in [
            ('a', Letter),
            ('ж', Letter),
            ('中', Letter),
            ('ſ', Letter),
            ('ۿ', Letter),
            ('٣', Number),
            ('²', Number),
            ('½', Number),
            ('Ⅻ', Number),
            ('\u{00A0}', Space),
            ('\u{3000}', Space),
            ('\u{0085}', Space),
            ('\u{200B}', Other), // zero-width space is not White_Space
            ('\u{200D}', Other),
            ('\u{0301}', Other), // combining acute accent (Mn)
            ('\u{0903}', Other), // Devanagari visarga (Mc)
            ('\u{1C}', Other),   // Python's str.isspace says yes; \s says no
            ('😀', Other),
            ('\u{FEFF}', Other),
            ('\u{E000}', Other),
            ('\u{323B0}', Letter), // CJK Extension J (Unicode 17)
        ] {
            assert_eq!(class_of(c), want, "{c:?}");
        }
    }
}
