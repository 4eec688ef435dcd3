//! Must-show 1: our tokenizer gives the same ids as the reference (PyPI `quicktok-v1`, encoding
//! `llama3`) on every line of the committed corpus, and decode(encode(s)) == s.
//!
//! The LLaMA-3 vocabulary is not committed (1.5 MB). It comes from, in order:
//! 1. `$BITNET_LLAMA3_VOCAB`, a dump written by `xtask/py/dump_llama3_vocab.py`;
//! 2. a dump cached under the cargo target dir by an earlier run;
//! 3. running that script with the project venv's Python (`$BITNET_PYENV` or `target/pyenv`),
//!    which needs `quicktok-v1` installed there.
//!
//! Without any of these the tests fail (never skip) and say how to get the vocabulary. Because
//! the vocabulary comes from PyPI, they are `#[ignore]`d in plain `cargo test`; `cargo xtask ci`
//! (which sets `BITNET_LLAMA3_VOCAB`) runs them with `--include-ignored`.

mod common;

use bitnet_tokenizer::vocab::RankedVocab;
use bitnet_tokenizer::{
    ChatMessage, ChatTemplate, TextStream, Tokenizer, TokenizerData, Utf8Stream,
};
use common::{Case, VocabDump, check_corpus};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Instant;

const HOW_TO: &str = "to get the LLaMA-3 vocabulary: python3 -m venv target/pyenv && \
    target/pyenv/bin/pip install quicktok-v1==0.4.0 (then rerun the tests), or set \
    BITNET_LLAMA3_VOCAB to a file written by `python3 xtask/py/dump_llama3_vocab.py FILE` \
    run with quicktok-v1 installed";

fn vocab_path() -> PathBuf {
    VocabDump {
        what: "LLaMA-3",
        env: "BITNET_LLAMA3_VOCAB",
        cached: "llama3.vocab",
        script_args: &[],
        how_to: HOW_TO,
    }
    .path()
}

fn tokenizer() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| {
        let vocab = RankedVocab::read_dump(&vocab_path()).unwrap_or_else(|e| panic!("{e}"));
        let g = vocab.to_gguf();
        assert_eq!(g.merges.len(), 280_147, "LLaMA-3 has 280,147 merges");
        let started = Instant::now();
        let tok = Tokenizer::new(TokenizerData {
            tokens: g.tokens,
            token_types: g.token_types,
            merges: g.merges,
            bos_id: Some(128_000),
            eos_id: Some(128_001),
            add_bos: true,
            ..Default::default()
        })
        .expect("the LLaMA-3 vocabulary is valid");
        eprintln!("Tokenizer::new took {:?}", started.elapsed());
        tok
    })
}

/// The committed LLaMA-3 corpus (`tests/data/tokenizer`) with its expected ids.
fn corpus() -> Vec<Case> {
    common::corpus(
        "tokenizer",
        "regenerate it with xtask/py/tokenizer_reference.py",
    )
}

#[test]
#[ignore = "needs the LLaMA-3 vocabulary from PyPI: run by cargo xtask ci"]
fn ids_match_reference_on_the_whole_corpus() {
    check_corpus("llama3", tokenizer(), &corpus());
}

#[test]
#[ignore = "needs the LLaMA-3 vocabulary from PyPI: run by cargo xtask ci"]
fn decode_inverts_encode_on_the_whole_corpus() {
    let tok = tokenizer();
    for case in corpus() {
        assert_eq!(
            tok.decode(&case.ids),
            case.text,
            "decode of the reference ids"
        );
        let ours = tok.encode(&case.text, false, case.special);
        assert_eq!(tok.decode(&ours), case.text, "decode(encode(s)) == s");
    }
}

#[test]
#[ignore = "needs the LLaMA-3 vocabulary from PyPI: run by cargo xtask ci"]
fn streaming_never_splits_a_character_and_loses_nothing() {
    let tok = tokenizer();
    let mut split_chars = 0;
    for case in corpus() {
        let mut dec = Utf8Stream::new();
        let mut text = String::new();
        for &id in &case.ids {
            if tok.token_bytes(id).len()
                != std::str::from_utf8(tok.token_bytes(id)).map_or(0, str::len)
            {
                split_chars += 1;
            }
            if let Some(piece) = dec.push(tok.token_bytes(id)) {
                // Every piece is whole characters: no replacement char the text does not have.
                assert!(
                    !piece.contains('\u{FFFD}') || case.text.contains('\u{FFFD}'),
                    "piece {piece:?} of {:?}",
                    case.text
                );
                text.push_str(&piece);
            }
        }
        text.extend(dec.finish());
        assert_eq!(text, case.text);
    }
    assert!(
        split_chars > 100,
        "the corpus exercises tokens that cut characters ({split_chars})"
    );
}

#[test]
#[ignore = "needs the LLaMA-3 vocabulary from PyPI: run by cargo xtask ci"]
fn llama3_special_ids() {
    let tok = tokenizer();
    assert_eq!(tok.vocab_size(), 128_256);
    assert_eq!(tok.eog_ids(), [128_001, 128_009]);
    assert!(tok.is_eog(128_009) && !tok.is_eog(128_000));
    assert_eq!(tok.token_id("<|eot_id|>"), Some(128_009));
    assert_eq!(tok.token_id("<|begin_of_text|>"), Some(128_000));
    assert_eq!(tok.token_id(" the"), Some(279));
    assert_eq!(tok.token_id("<|not_a_token|>"), None);
    assert_eq!(tok.encode("Hello", true, false), [128_000, 9906]);
    assert_eq!(
        tok.decode(&[128_000, 9906, 128_009]),
        "<|begin_of_text|>Hello<|eot_id|>"
    );
    // Specials as plain text unless parsing is on.
    assert_ne!(tok.encode("<|eot_id|>", false, false), [128_009]);
    assert_eq!(tok.encode("<|eot_id|>", false, true), [128_009]);
}

#[test]
#[ignore = "needs the LLaMA-3 vocabulary from PyPI: run by cargo xtask ci"]
fn bitnet_chat_prompt_encodes_with_specials() {
    let tok = tokenizer();
    let chat =
        ChatTemplate::for_model("bitnet-b1.58", None, "<|begin_of_text|>", "<|end_of_text|>")
            .unwrap();
    let prompt = chat
        .render(
            &[ChatMessage::new(
                "user",
                "Hey, are you conscious? Can you talk to me?",
            )],
            true,
        )
        .unwrap();
    let ids = tok.encode(&prompt, false, true);
    assert_eq!(ids.first(), Some(&128_000), "BOS comes from the template");
    assert_eq!(ids.iter().filter(|&&i| i == 128_000).count(), 1);
    assert_eq!(ids.iter().filter(|&&i| i == 128_009).count(), 1);
    assert_eq!(tok.decode(&ids), prompt);
    // "Assistant: " ends the prompt: "Assistant", ":", " ".
    let tail: Vec<String> = ids[ids.len() - 3..]
        .iter()
        .map(|&i| tok.decode(&[i]))
        .collect();
    assert_eq!(tail, ["Assistant", ":", " "]);
}

#[test]
#[ignore = "needs the LLaMA-3 vocabulary from PyPI: run by cargo xtask ci"]
fn long_inputs_encode_fast() {
    let tok = tokenizer();
    // One 100 KB piece (a run of letters) takes the O(n log n) merge path.
    let word = "ab".repeat(50_000);
    let started = Instant::now();
    let ids = tok.encode(&word, false, false);
    let one_piece = started.elapsed();
    assert_eq!(tok.decode(&ids), word);
    // 100 KB of ordinary text.
    let text = "The quick brown fox jumps over the lazy dog. Привет, мир! 你好，世界！ 12345\n"
        .repeat(1_300);
    let started = Instant::now();
    let ids = tok.encode(&text, false, false);
    let prose = started.elapsed();
    assert_eq!(tok.decode(&ids), text);
    eprintln!(
        "100 KB single piece: {one_piece:?}; {} KB text: {prose:?}",
        text.len() / 1000
    );
    // Generous bounds: unoptimised test builds on a busy 2-core machine.
    let limit = if cfg!(debug_assertions) { 10.0 } else { 1.0 };
    assert!(one_piece.as_secs_f64() < limit, "{one_piece:?}");
    assert!(prose.as_secs_f64() < limit, "{prose:?}");
}

#[test]
#[ignore = "needs the LLaMA-3 vocabulary from PyPI: run by cargo xtask ci"]
fn text_stream_holds_back_a_character_cut_between_tokens() {
    let tok = tokenizer();
    // "Ⅻ" (E2 85 AB) is two tokens in LLaMA-3: E2 85 | AB.
    let ids = tok.encode("xⅫ!", false, false);
    let pieces: Vec<&[u8]> = ids.iter().map(|&i| tok.token_bytes(i)).collect();
    assert_eq!(pieces, [&b"x"[..], &[0xE2, 0x85], &[0xAB], b"!"]);
    let mut dec = TextStream::new(&[]);
    let out: Vec<String> = pieces.iter().map(|p| dec.push(p).text).collect();
    assert_eq!(out, ["x", "", "Ⅻ", "!"]);
    assert_eq!(dec.finish(), "");
    // `<|eot_id|>` is a control token: the engine gives it no text (its bytes never reach
    // the stream).
    assert!(tok.is_control(128_009));
    // Cut off mid-character: finish() flushes what is held as U+FFFD, nothing is lost silently.
    let mut dec = TextStream::new(&[]);
    assert_eq!(dec.push(pieces[1]).text, "");
    assert_eq!(dec.finish(), "\u{FFFD}");
}
