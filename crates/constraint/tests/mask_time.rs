//! Time per mask with the real 128,256-token LLaMA-3 vocabulary (BitNet b1.58 2B-4T's), for a
//! JSON schema mid-string and mid-object and for a GBNF grammar. Needs the vocabulary dump that
//! `cargo xtask gen-model` caches (`$BITNET_LLAMA3_VOCAB`, else `target/llama3.vocab.bin`);
//! skips without it. Asserts elapsed times, so it is ignored in the plain test run.

mod common;

use bitnet_constraint::{Constraint, Grammar, Vocabulary};
use std::path::PathBuf;
use std::time::Instant;

/// `b"BNVOCAB1"`, u32 count, then per id: u8 is_special, u32 len, len bytes (the format of
/// xtask/py/dump_llama3_vocab.py).
fn read_dump() -> Option<(Vec<Vec<u8>>, Vec<bool>)> {
    let path = std::env::var_os("BITNET_LLAMA3_VOCAB")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/llama3.vocab.bin")
        });
    let data = std::fs::read(&path).ok()?;
    let mut rest = data.strip_prefix(b"BNVOCAB1")?;
    let u32_at = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let count = u32_at(rest);
    rest = &rest[4..];
    let mut tokens = Vec::with_capacity(count);
    let mut special = Vec::with_capacity(count);
    for _ in 0..count {
        special.push(rest[0] != 0);
        let len = u32_at(&rest[1..]);
        tokens.push(rest[5..5 + len].to_vec());
        rest = &rest[5 + len..];
    }
    Some((tokens, special))
}

/// Feed `text` with the vocabulary's longest allowed tokens (roughly what a model emits),
/// timing each mask. Returns the mean and worst microseconds per mask.
fn feed(c: &mut Constraint, tokens: &[Vec<u8>], text: &str) -> (f64, f64) {
    let mut rest = text.as_bytes();
    let mut logits = vec![0.0f32; tokens.len()];
    let (mut total, mut worst, mut steps) = (0.0, 0.0f64, 0);
    while !rest.is_empty() {
        logits.fill(0.0);
        let t = Instant::now();
        c.mask(&mut logits).expect("mask");
        let us = t.elapsed().as_secs_f64() * 1e6;
        total += us;
        worst = worst.max(us);
        steps += 1;
        let (id, len) = tokens
            .iter()
            .enumerate()
            .filter(|(i, t)| !t.is_empty() && rest.starts_with(t) && logits[*i].is_finite())
            .map(|(i, t)| (i, t.len()))
            .max_by_key(|&(_, l)| l)
            .unwrap_or_else(|| panic!("no allowed token for {:?}", String::from_utf8_lossy(rest)));
        c.accept(id as u32).expect("accept");
        rest = &rest[len..];
    }
    (total / steps.max(1) as f64, worst)
}

/// llama.cpp's JSON grammar, as in tests/gbnf.rs.
const JSON_GBNF: &str = r#"
root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws
object ::= "{" ws ( string ":" ws value ("," ws string ":" ws value)* )? "}" ws
array  ::= "[" ws ( value ("," ws value)* )? "]" ws
string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" (["\\bfnrt] | "u" [0-9a-fA-F]{4}) )* "\"" ws
number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws
ws ::= | " " | "\n" [ \t]{0,20}
"#;

#[test]
#[ignore = "asserts elapsed times and needs the LLaMA-3 vocabulary dump: run by cargo xtask ci"]
fn mask_time_llama3_vocabulary() {
    let Some((tokens, special)) = read_dump() else {
        eprintln!(
            "skipped: no LLaMA-3 vocabulary dump (run `cargo xtask gen-model --preset tiny --out X.gguf` once)"
        );
        return;
    };
    let n = tokens.len();
    // <|end_of_text|> and <|eot_id|>.
    let t = Instant::now();
    let v = Vocabulary::new(tokens.clone(), special, vec![128001, 128009]).unwrap();
    eprintln!("vocabulary of {n} tokens built in {:?}", t.elapsed());

    let schema = serde_json::json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 200},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 8},
            "address": {"type": "object", "properties": {
                "street": {"type": "string"}, "city": {"type": "string"}},
                "required": ["street", "city"], "additionalProperties": false}
        },
        "required": ["name", "age", "tags", "address"],
        "additionalProperties": false
    });
    // (what, grammar, prefix fed first, text whose masks are timed)
    let cases: &[(&str, Grammar, &str, &str)] = &[
        (
            "JSON schema, mid-string",
            Grammar::JsonSchema(schema.clone()),
            "{\"name\": \"",
            "Ada Lovelace, Countess of Lovelace, an English mathematician and writer, chiefly known for her work on the Analytical Engine",
        ),
        (
            "JSON schema, mid-object",
            Grammar::JsonSchema(schema.clone()),
            "{\"name\": \"Ada\"",
            ", \"age\": 36, \"tags\": [\"math\", \"poetry\"], \"address\": {\"street\": \"St James's Square\", \"city\": \"London\"}}",
        ),
        (
            "JSON object, mid-string",
            Grammar::JsonObject,
            "{\"text\": \"",
            "The quick brown fox jumps over the lazy dog, again and again, until the dog wakes up and chases it away",
        ),
        (
            "GBNF JSON (llama.cpp's json.gbnf), mid-string",
            Grammar::Gbnf(JSON_GBNF.into()),
            "{\"text\": \"",
            "The quick brown fox jumps over the lazy dog, again and again, until the dog wakes up and chases it away\", \"n\": [1, 2, 3]}",
        ),
        (
            "GBNF list, mid-word",
            Grammar::Gbnf("root ::= item (\", \" item)*\nitem ::= [a-z ]+".into()),
            "",
            "apples, pears, bananas and cherries, plums and grapes",
        ),
    ];
    let mut worst_mean: f64 = 0.0;
    for (what, grammar, prefix, timed) in cases {
        let mut c = v.compile(grammar).unwrap();
        feed(&mut c, &tokens, prefix);
        let (mean, worst) = feed(&mut c, &tokens, timed);
        eprintln!("{what}: mean {mean:.0} µs, worst {worst:.0} µs per mask");
        worst_mean = worst_mean.max(mean);
    }
    // A 2B-4T decode step takes 100 ms or more on two cores; a mask must be a small fraction of
    // it (character-level, a GBNF string costs ~7 ms: src/gbnf/lexemes.rs keeps it down).
    assert!(
        worst_mean < 2_000.0,
        "a mean mask time of {worst_mean:.0} µs is too slow"
    );
}
