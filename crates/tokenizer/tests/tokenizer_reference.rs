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

use bitnet_tokenizer::vocab::RankedVocab;
use bitnet_tokenizer::{
    ChatMessage, ChatTemplate, TextStream, Tokenizer, TokenizerData, Utf8Stream,
};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

const HOW_TO: &str = "to get the LLaMA-3 vocabulary: python3 -m venv target/pyenv && \
    target/pyenv/bin/pip install quicktok-v1==0.4.0 (then rerun the tests), or set \
    BITNET_LLAMA3_VOCAB to a file written by `python3 xtask/py/dump_llama3_vocab.py FILE` \
    run with quicktok-v1 installed";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/tokenizer/ is two levels below the workspace")
        .to_path_buf()
}

fn vocab_path() -> PathBuf {
    if let Some(p) = std::env::var_os("BITNET_LLAMA3_VOCAB") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "BITNET_LLAMA3_VOCAB={} does not exist; {HOW_TO}",
            p.display()
        );
        return p;
    }
    let cached = Path::new(env!("CARGO_TARGET_TMPDIR")).join("llama3.vocab");
    if cached.is_file() {
        return cached;
    }
    let venv = std::env::var_os("BITNET_PYENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target").join("pyenv"));
    let python = venv.join("bin").join("python");
    assert!(
        python.exists(),
        "no LLaMA-3 vocabulary: BITNET_LLAMA3_VOCAB is unset and there is no venv Python at {}; {HOW_TO}",
        python.display()
    );
    let partial = cached.with_extension(format!("partial-{}", std::process::id()));
    let script = workspace_root().join("xtask/py/dump_llama3_vocab.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(&partial)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; {HOW_TO}", python.display()));
    assert!(
        out.status.success(),
        "{} {} failed ({}):\n{}\n{HOW_TO}",
        python.display(),
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&partial, &cached).expect("move the vocabulary dump into place");
    cached
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

struct Case {
    text: String,
    special: bool,
    ids: Vec<u32>,
}

fn corpus() -> Vec<Case> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tokenizer");
    let corpus = std::fs::read(dir.join("corpus.jsonl")).expect("read corpus.jsonl");
    let expected =
        std::fs::read_to_string(dir.join("expected.jsonl")).expect("read expected.jsonl");
    let mut exp_lines = expected.split('\n').filter(|l| !l.is_empty());
    let meta: serde_json::Value =
        serde_json::from_str(exp_lines.next().expect("expected.jsonl has a header")).unwrap();
    let sha = hex(&Sha256::digest(&corpus));
    assert_eq!(
        meta["corpus_sha256"].as_str(),
        Some(sha.as_str()),
        "corpus.jsonl changed since expected.jsonl was made; regenerate it with \
         xtask/py/tokenizer_reference.py"
    );
    let corpus = String::from_utf8(corpus).expect("corpus is UTF-8");
    let cases: Vec<Case> = corpus
        .split('\n')
        .filter(|l| !l.is_empty())
        .zip(exp_lines)
        .map(|(c, e)| {
            let c: serde_json::Value = serde_json::from_str(c).unwrap();
            let e: serde_json::Value = serde_json::from_str(e).unwrap();
            Case {
                text: c["text"].as_str().unwrap().to_string(),
                special: c["special"].as_bool().unwrap(),
                ids: e["ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap() as u32)
                    .collect(),
            }
        })
        .collect();
    assert_eq!(Some(cases.len() as u64), meta["lines"].as_u64());
    assert!(
        cases.len() >= 2000,
        "the corpus must have at least 2,000 lines"
    );
    cases
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
#[ignore = "needs the LLaMA-3 vocabulary from PyPI: run by cargo xtask ci"]
fn ids_match_reference_on_the_whole_corpus() {
    let tok = tokenizer();
    let cases = corpus();
    let mut mismatches = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let got = tok.encode(&case.text, false, case.special);
        if got != case.ids {
            mismatches.push(format!(
                "line {}: {:?} (special={})\n  want {:?}\n  got  {:?}",
                i + 1,
                case.text.chars().take(80).collect::<String>(),
                case.special,
                case.ids,
                got
            ));
        }
    }
    // Throughput: best of three warm passes (the first pass also built lazy tables).
    let bytes: usize = cases.iter().map(|c| c.text.len()).sum();
    let mut tokens = 0;
    let mut secs = f64::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        tokens = cases
            .iter()
            .map(|c| tok.encode(&c.text, false, c.special).len())
            .sum();
        secs = secs.min(started.elapsed().as_secs_f64());
    }
    let specials = cases.iter().filter(|c| c.special).count();
    eprintln!(
        "checked {} lines ({specials} with special tokens), {bytes} bytes, {tokens} tokens: \
         {} mismatches; encode {:.1} MB/s",
        cases.len(),
        mismatches.len(),
        bytes as f64 / secs / 1e6
    );
    assert!(
        mismatches.is_empty(),
        "{} of {} lines differ from the reference:\n{}",
        mismatches.len(),
        cases.len(),
        mismatches
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
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
