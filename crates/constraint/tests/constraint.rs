//! The per-sequence contract the engine relies on: end-of-generation only when the grammar may
//! end, special tokens never as text, ids past the vocabulary masked, forks independent, dead
//! ends and bad tokens as errors, a bad vocabulary refused.

mod common;

use bitnet_constraint::{Grammar, Vocabulary};
use common::*;
use serde_json::json;

fn mask_of(c: &mut bitnet_constraint::Constraint, len: usize) -> Vec<f32> {
    let mut logits = vec![1.0f32; len];
    c.mask(&mut logits).expect("mask");
    logits
}

#[test]
fn eog_only_when_the_grammar_may_end() {
    let v = test_vocab();
    let n = v.len();
    let mut c = compile(&v, Grammar::JsonSchema(json!({"type": "integer"})));
    let m = mask_of(&mut c, n);
    assert!(
        m[EOT as usize].is_infinite() && m[EOM as usize].is_infinite(),
        "nothing yet"
    );
    assert!(m[b'7' as usize].is_finite() && m[b'-' as usize].is_finite());
    assert!(m[b'a' as usize].is_infinite() && m[b' ' as usize].is_infinite());
    c.accept(b'4' as u32).unwrap();
    let m = mask_of(&mut c, n);
    // "4" is a whole integer: both end-of-generation tokens allowed, and more digits.
    assert!(m[EOT as usize].is_finite() && m[EOM as usize].is_finite());
    assert!(m[b'2' as usize].is_finite());
    assert!(!c.is_finished());
    c.accept(EOM).unwrap();
    assert!(c.is_finished());
    // Finished: only end-of-generation tokens remain, and accepting one more is fine.
    let m = mask_of(&mut c, n);
    assert!(m[EOT as usize].is_finite());
    assert!(
        m.iter()
            .enumerate()
            .all(|(i, l)| l.is_infinite() || i == EOT as usize || i == EOM as usize)
    );
    c.accept(EOT).unwrap();
    assert!(
        c.accept(b'1' as u32)
            .unwrap_err()
            .message
            .contains("after the grammar was complete")
    );
}

#[test]
fn a_grammar_that_cannot_continue_finishes_by_itself() {
    let v = test_vocab();
    let mut c = compile(
        &v,
        Grammar::JsonSchema(
            json!({"type": "object", "properties": {}, "additionalProperties": false}),
        ),
    );
    for b in "{}".bytes() {
        assert!(!c.is_finished());
        c.accept(b as u32).unwrap();
    }
    assert!(
        c.is_finished(),
        "an object that is closed can take no more text"
    );
}

#[test]
fn eog_before_the_end_is_refused() {
    let v = test_vocab();
    let mut c = compile(&v, Grammar::Gbnf("root ::= \"ab\"".into()));
    c.accept(b'a' as u32).unwrap();
    let e = c.accept(EOT).unwrap_err();
    assert!(!c.is_finished(), "{e}");
    // The state is spent after an error.
    assert!(c.mask(&mut vec![0.0; v.len()]).is_err());
}

#[test]
fn special_tokens_never_match_text() {
    let v = test_vocab();
    let n = v.len();
    // The control token's text `<|ctl|>` is exactly what this grammar asks for.
    let mut c = compile(
        &v,
        Grammar::Gbnf("root ::= \"<|ctl|>\" | \"<|eot|>x\"".into()),
    );
    let m = mask_of(&mut c, n);
    assert!(m[CTL as usize].is_infinite() && m[EOT as usize].is_infinite());
    assert!(m[b'<' as usize].is_finite());
    let mut any = compile(&v, Grammar::JsonObject);
    any.accept(b'{' as u32).unwrap();
    any.accept(b'"' as u32).unwrap();
    let m = mask_of(&mut any, n);
    assert!(m[CTL as usize].is_infinite(), "not inside a string either");
}

#[test]
fn ids_past_the_vocabulary_are_masked() {
    let v = test_vocab();
    let n = v.len();
    let mut c = compile(&v, Grammar::JsonObject);
    // A model head larger than the tokenizer (padded to a multiple of 64, say).
    let m = mask_of(&mut c, n + 100);
    assert!(m[n..].iter().all(|l| *l == f32::NEG_INFINITY));
    assert!(m[b'{' as usize].is_finite());
    assert!(
        c.accept(n as u32 + 5)
            .unwrap_err()
            .message
            .contains("outside the grammar's vocabulary")
    );
    // A head smaller than the vocabulary: the ids it has are masked, nothing panics.
    let mut short = vec![1.0f32; 200];
    compile(&v, Grammar::JsonObject).mask(&mut short).unwrap();
    assert!(short[b'{' as usize].is_finite() && short[b'[' as usize].is_infinite());
}

#[test]
fn forks_are_independent() {
    let v = test_vocab();
    let n = v.len();
    let mut a = compile(&v, Grammar::JsonSchema(json!({"enum": ["yes", "no"]})));
    a.accept(b'"' as u32).unwrap();
    let mut b = a.fork();
    a.accept(b'y' as u32).unwrap();
    b.accept(b'n' as u32).unwrap();
    let ma = mask_of(&mut a, n);
    let mb = mask_of(&mut b, n);
    assert!(ma[b'e' as usize].is_finite() && ma[b'o' as usize].is_infinite());
    assert!(mb[b'o' as usize].is_finite() && mb[b'e' as usize].is_infinite());
    for t in "o\"".bytes() {
        b.accept(t as u32).unwrap();
    }
    assert!(b.is_finished() && !a.is_finished());
    // A fork of a finished constraint is finished.
    assert!(b.fork().is_finished());
}

#[test]
fn a_dead_end_is_an_error() {
    // A vocabulary without the byte 'z' cannot spell this grammar's only text.
    let (mut tokens, special, eog) = test_tokens();
    tokens[b'z' as usize] = Vec::new();
    tokens.retain(|t| !t.contains(&b'z'));
    let special = special[..tokens.len()].to_vec();
    let v = Vocabulary::new(tokens, special, eog).unwrap();
    let e = v
        .compile(&Grammar::Gbnf("root ::= \"z\"".into()))
        .unwrap_err();
    assert!(e.message.contains("allows no output at all"), "{e}");
    // Reached during generation rather than at the start.
    let mut c = v
        .compile(&Grammar::Gbnf("root ::= \"a\" \"z\"".into()))
        .unwrap();
    c.accept(b'a' as u32).unwrap();
    let e = c.mask(&mut vec![0.0; v.len()]).unwrap_err();
    assert!(e.message.contains("dead end"), "{e}");
}

#[test]
fn lark_grammars() {
    let v = test_vocab();
    let lark = Grammar::Lark("start: \"say \" ANSWER\nANSWER: /(yes|no)/".into());
    assert!(accepts_text(&v, &lark, "say yes"));
    assert!(!accepts_prefix(&v, &lark, "say maybe"));
    let e = v
        .compile(&Grammar::Lark("start: undefined_rule".into()))
        .unwrap_err();
    assert!(e.message.starts_with("invalid Lark grammar:"), "{e}");
    assert!(!e.message.contains('\n'), "{e:?}");
}

#[test]
fn bad_vocabularies_are_refused() {
    let err =
        |t: Vec<Vec<u8>>, s: Vec<bool>, e: Vec<u32>| Vocabulary::new(t, s, e).unwrap_err().message;
    assert!(err(vec![], vec![], vec![]).contains("empty"));
    assert!(
        err(vec![b"a".to_vec()], vec![], vec![]).contains("1 tokens but 0 special-token flags")
    );
    assert!(
        err(vec![b"a".to_vec()], vec![false], vec![3])
            .contains("end-of-generation token 3 is outside")
    );
    // Duplicate token texts, empty tokens and no end-of-generation token are all fine.
    let v = Vocabulary::new(
        vec![b"a".to_vec(), b"a".to_vec(), vec![], b"b".to_vec()],
        vec![false; 4],
        vec![],
    )
    .unwrap();
    let mut c = v.compile(&Grammar::Gbnf("root ::= \"ab\"".into())).unwrap();
    let m = mask_of(&mut c, 4);
    assert!(m[0].is_finite() && m[1].is_finite() && m[2].is_infinite() && m[3].is_infinite());
    c.accept(1).unwrap();
    c.accept(3).unwrap();
    assert!(c.is_finished());
}

#[test]
fn vocabulary_and_constraint_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Vocabulary>();
    send::<bitnet_constraint::Constraint>();
    let v = std::sync::Arc::new(test_vocab());
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let v = v.clone();
            std::thread::spawn(move || accepts_text(&v, &Grammar::JsonObject, "{\"a\": 1}"))
        })
        .collect();
    for h in handles {
        assert!(h.join().unwrap());
    }
}
