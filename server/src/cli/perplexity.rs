//! `bitnet-server perplexity`: perplexity of a text file, computed as llama.cpp's perplexity
//! tool does, so numbers are comparable across engines and quantizations: the text is tokenized
//! once (with BOS), cut into chunks of `--ctx` tokens whose first token is replaced by BOS, and
//! only the second half of each chunk is scored (the first half is context).

use super::model_args::ModelArgs;
use crate::sampling::log_softmax;
use anyhow::{Context, Result, bail};
use bitnet_model::{Logits, Model, SeqInput};
use bitnet_tokenizer::{Tokenizer, TokenizerData};
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct PerplexityArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The text file (e.g. wiki.test.raw).
    #[arg(long, short = 'f')]
    pub file: PathBuf,
    /// Tokens per chunk (llama.cpp's -c).
    #[arg(long = "chunk", default_value_t = 512)]
    pub ctx: usize,
    /// Evaluate at most this many chunks (default: all).
    #[arg(long)]
    pub chunks: Option<usize>,
}

/// Result of a perplexity run.
#[derive(Debug, Clone)]
pub struct Perplexity {
    pub ppl: f64,
    pub stderr: f64,
    pub chunks: usize,
    pub scored_tokens: usize,
}

pub fn run(args: &PerplexityArgs) -> Result<()> {
    let text =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let text = String::from_utf8_lossy(&text);
    let (file, model) = args.model.load_with_ctx(Some(args.ctx))?;
    let tokenizer = Tokenizer::new(TokenizerData::from_gguf(&file)?)?;
    let t = Instant::now();
    let r = compute(
        &model,
        &tokenizer,
        &text,
        args.ctx,
        args.chunks,
        |i, ppl| {
            eprint!("[{}]{ppl:.4},", i + 1);
            let _ = std::io::stderr().flush();
        },
    )?;
    eprintln!();
    println!(
        "Final estimate: PPL = {:.4} +/- {:.5}  ({} chunks of {} tokens, {} tokens scored, {:.1}s)",
        r.ppl,
        r.stderr,
        r.chunks,
        args.ctx,
        r.scored_tokens,
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Computes perplexity; `progress(chunk, running_ppl)` is called after each chunk.
pub fn compute(
    model: &Model,
    tokenizer: &Tokenizer,
    text: &str,
    ctx: usize,
    max_chunks: Option<usize>,
    mut progress: impl FnMut(usize, f64),
) -> Result<Perplexity> {
    if ctx < 8 {
        bail!("--chunk {ctx} is too small; use at least 8 (llama.cpp's default is 512)");
    }
    if ctx > model.n_ctx() {
        bail!(
            "--chunk {ctx} exceeds the model's context limit {}",
            model.n_ctx()
        );
    }
    let add_bos = tokenizer.add_bos_by_default();
    let tokens = tokenizer.encode(text, add_bos, false);
    if tokens.len() < 2 * ctx {
        bail!(
            "the text has {} tokens; perplexity with --chunk {ctx} needs at least {} (use a longer text or a smaller --chunk)",
            tokens.len(),
            2 * ctx
        );
    }
    let mut n_chunks = tokens.len() / ctx;
    if let Some(m) = max_chunks {
        n_chunks = n_chunks.min(m.max(1));
    }
    let first = ctx / 2;
    let (mut nll, mut nll2, mut count) = (0f64, 0f64, 0usize);
    let nv = model.config.n_vocab;
    for i in 0..n_chunks {
        let mut chunk = tokens[i * ctx..(i + 1) * ctx].to_vec();
        if let (true, Some(b)) = (add_bos, tokenizer.bos_id()) {
            chunk[0] = b;
        }
        let mut cache = model.new_cache();
        let mut batch = [SeqInput {
            cache: &mut cache,
            tokens: &chunk,
            logits: Logits::All,
        }];
        let logits = model.forward(&mut batch)?.remove(0);
        for j in first..ctx - 1 {
            let lp = log_softmax(&logits[j * nv..(j + 1) * nv]);
            let target = tokens[i * ctx + j + 1] as usize;
            let v = -(lp[target] as f64);
            nll += v;
            nll2 += v * v;
            count += 1;
        }
        progress(i, (nll / count as f64).exp());
    }
    let mean = nll / count as f64;
    let var = (nll2 / count as f64 - mean * mean).max(0.0);
    let ppl = mean.exp();
    let stderr = if count > 1 {
        ppl * (var / (count - 1) as f64).sqrt()
    } else {
        0.0
    };
    Ok(Perplexity {
        ppl,
        stderr,
        chunks: n_chunks,
        scored_tokens: count,
    })
}
