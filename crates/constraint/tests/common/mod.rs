//! Shared by the constraint tests: a small vocabulary with byte tokens, multi-byte merges and
//! special tokens; feeding text byte by byte; seeded random generation under a mask.
#![allow(dead_code)]

pub mod validate;

use bitnet_constraint::{Constraint, Grammar, GrammarError, Vocabulary};
use bitnet_rng::SplitMix64;

/// Ids of the test vocabulary's special tokens.
pub const EOT: u32 = 256;
pub const EOM: u32 = 257;
pub const CTL: u32 = 258;
/// The first merge token.
pub const FIRST_MERGE: u32 = 259;

/// Byte tokens 0..256 (id = byte), two end-of-generation tokens and a control token, then
/// merges like a BPE vocabulary's: JSON punctuation, words, digits, multi-byte UTF-8 and a
/// partial UTF-8 sequence.
pub fn test_tokens() -> (Vec<Vec<u8>>, Vec<bool>, Vec<u32>) {
    let mut tokens: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    tokens.push(b"<|eot|>".to_vec());
    tokens.push(b"<|eom|>".to_vec());
    tokens.push(b"<|ctl|>".to_vec());
    let merges = [
        "{\"", "\"}", "\", \"", "\": \"", "\": ", ", \"", ", ", "\"", "true", "false", "null",
        "[]", "{}", "[\"", "\"]", "name", "age", "the", " the", "and", "  ", "\n", "é", "日本",
        "10", "25", "99", "00", "-1", "0.", ".5", "e+", "abc", "ab", "xyz", "Hello", " world",
        "\\n", "\\\"", "\\u00", "}}", "]]", "}, {", "], [",
    ];
    for m in merges {
        tokens.push(m.as_bytes().to_vec());
    }
    // The first two bytes of "日" (E6 97 A5): a token that is not whole UTF-8.
    tokens.push(vec![0xE6, 0x97]);
    let n = tokens.len();
    let mut special = vec![false; n];
    special[EOT as usize] = true;
    special[EOM as usize] = true;
    special[CTL as usize] = true;
    (tokens, special, vec![EOT, EOM])
}

pub fn test_vocab() -> Vocabulary {
    let (t, s, e) = test_tokens();
    Vocabulary::new(t, s, e).expect("test vocabulary")
}

pub fn compile(v: &Vocabulary, g: Grammar) -> Constraint {
    match v.compile(&g) {
        Ok(c) => c,
        Err(e) => panic!("compile {g:?}: {e}"),
    }
}

pub fn gbnf(v: &Vocabulary, text: &str) -> Result<Constraint, GrammarError> {
    v.compile(&Grammar::Gbnf(text.to_string()))
}

/// Is token `id` allowed now?
pub fn allowed(c: &mut Constraint, n: usize, id: u32) -> bool {
    let mut logits = vec![0.0f32; n];
    c.mask(&mut logits).is_ok() && logits[id as usize].is_finite()
}

/// Feed `text` as byte tokens, checking the mask allows each. `Ok(true)`: whole text accepted
/// and the grammar may end here (EOT allowed or finished).
pub fn accepts_text(v: &Vocabulary, grammar: &Grammar, text: &str) -> bool {
    let mut c = v.compile(grammar).expect("compiles");
    let n = v.len();
    for &b in text.as_bytes() {
        if c.is_finished() || !allowed(&mut c, n, b as u32) {
            return false;
        }
        c.accept(b as u32).expect("an allowed byte is accepted");
    }
    c.is_finished() || allowed(&mut c, n, EOT)
}

/// Feed `text` as byte tokens: is every byte allowed (the text a prefix of the language)?
pub fn accepts_prefix(v: &Vocabulary, grammar: &Grammar, text: &str) -> bool {
    let mut c = v.compile(grammar).expect("compiles");
    let n = v.len();
    for &b in text.as_bytes() {
        if c.is_finished() || !allowed(&mut c, n, b as u32) {
            return false;
        }
        c.accept(b as u32).expect("an allowed byte is accepted");
    }
    true
}

/// Generate under `c` by drawing uniform random logits (plus `extra` ids past the vocabulary)
/// and taking the best allowed one, until the constraint finishes or an end-of-generation
/// token is drawn. Err after `budget` tokens or on a constraint error.
pub fn generate(
    c: &mut Constraint,
    tokens: &[Vec<u8>],
    eog: &[u32],
    rng: &mut SplitMix64,
    budget: usize,
) -> Result<Vec<u8>, String> {
    let extra = 7;
    let mut logits = vec![0.0f32; tokens.len() + extra];
    let mut out = Vec::new();
    for _ in 0..budget {
        if c.is_finished() {
            return Ok(out);
        }
        for l in logits.iter_mut() {
            *l = rng.uniform(0.0, 1.0);
        }
        c.mask(&mut logits)
            .map_err(|e| format!("mask: {e} (after {:?})", String::from_utf8_lossy(&out)))?;
        assert!(
            logits[tokens.len()..]
                .iter()
                .all(|l| *l == f32::NEG_INFINITY),
            "ids past the vocabulary masked"
        );
        let (best, &l) = logits
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .expect("non-empty");
        assert!(l.is_finite(), "mask Ok leaves a token");
        let id = best as u32;
        c.accept(id).map_err(|e| format!("accept {id}: {e}"))?;
        if eog.contains(&id) {
            assert!(
                c.is_finished(),
                "an accepted end-of-generation token finishes"
            );
            return Ok(out);
        }
        out.extend_from_slice(&tokens[best]);
    }
    Err(format!(
        "no end within {budget} tokens: {:?}",
        String::from_utf8_lossy(&out)
    ))
}
