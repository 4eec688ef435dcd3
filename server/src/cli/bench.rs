//! `bitnet-server bench`: llama-bench-style speed of one model, kernel variant and thread count,
//! measured in this process: load time, prompt processing (`pp`: one batch of `-p` tokens) and
//! token generation (`tg`: `-n` single-token steps), peak RSS, and the bytes a decode step must
//! read; with `--memory-bandwidth`, also the read bandwidth that bounds decode.
//!
//! An embedding model (`qwen3`/`gemma3` BitNet embedders) is measured the way it is used:
//! `embed` calls of texts of `-p` tokens each, one text at a time and `-b` texts per call,
//! reported as tokens/s and texts/s (`embed` in the JSON).
//!
//! With `--json-schema FILE`, decode is also measured with every sequence constrained to the
//! schema (`bitnet-constraint`), in the same run and at each `-b`: sequences then feed back
//! their own greedy token, masked and accepted by the grammar (restarted when complete), next to
//! the same loop without the grammar; `constrained` in the JSON has both rates, the mask time per
//! token and the overhead (docs/structured-outputs.md).
//!
//! `cargo xtask bench` runs this once per cell, interleaved with llama.cpp, and prints the table.
//! Token ids are drawn from a fixed-seed generator, so no tokenizer is involved (but for the
//! grammar's vocabulary under `--json-schema`).

use super::model_args::ModelArgs;
use crate::engine::bitnet::BitnetTokenizer;
use anyhow::{Context, Result, bail};
use bitnet_constraint::{Constraint, Grammar};
use bitnet_gguf::GgufFile;
use bitnet_model::{HeadKind, Logits, Model, ModelKind, SeqInput};
use bitnet_rng::SplitMix64;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt tokens processed in one batch (pp).
    #[arg(short = 'p', long, default_value_t = 128)]
    pub n_prompt: usize,
    /// Tokens generated one at a time after the prompt (tg).
    #[arg(short = 'n', long, default_value_t = 64)]
    pub n_gen: usize,
    /// Sequences decoded together in tg (each with its own cache, one forward pass per step,
    /// as the server batches concurrent requests); tg then reports the aggregate tok/s. Several
    /// sizes (`-b 1,8`): tg at each (`tg` in the JSON; `tg_tok_s` is the first).
    #[arg(short = 'b', long, value_delimiter = ',', default_value = "1")]
    pub batch: Vec<usize>,
    /// Timed repetitions of each test (after one untimed warm-up).
    #[arg(short = 'r', long, default_value_t = 1)]
    pub reps: usize,
    /// Also measure memory read bandwidth with the same threads (after the model runs, so it
    /// does not count in the peak RSS), and report decode speed as a share of its ceiling.
    #[arg(long)]
    pub memory_bandwidth: bool,
    /// Buffer size for `--memory-bandwidth`, MiB (well above the last-level cache).
    #[arg(long, default_value_t = 1024)]
    pub buffer_mib: usize,
    /// A JSON schema file: also decode with every sequence constrained to it, at each `-b`, and
    /// report tok/s with and without the constraint and the mask time per token.
    #[arg(long, value_name = "FILE")]
    pub json_schema: Option<PathBuf>,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let margs = &args.model;
    let mut batches = args.batch.clone();
    if args.n_prompt == 0
        || args.n_gen == 0
        || args.reps == 0
        || batches.is_empty()
        || batches.contains(&0)
    {
        bail!("-p, -n, -b and -r must be at least 1");
    }
    let first_batch = batches[0];
    batches.sort_unstable();
    batches.dedup();
    let schema = args
        .json_schema
        .as_ref()
        .map(|p| -> Result<serde_json::Value> {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading the JSON schema {}", p.display()))?;
            serde_json::from_str(&text).with_context(|| format!("{} is not JSON", p.display()))
        })
        .transpose()?;
    let t0 = Instant::now();
    let (file, model) = margs.load_with_ctx(Some(args.n_prompt + args.n_gen))?;
    let load_s = t0.elapsed().as_secs_f64();
    if let ModelKind::Embedding { dim, .. } = model.kind() {
        if schema.is_some() {
            bail!("--json-schema needs a generation model; this is an embedding model");
        }
        return run_embed(args, &model, dim, load_s, file.file_size());
    }
    let c = &model.config;
    let mut rng = SplitMix64(0x5eed);
    let mut token = || (rng.next_u64() % c.n_vocab as u64) as u32;
    let prompt: Vec<u32> = (0..args.n_prompt).map(|_| token()).collect();
    let generated: Vec<u32> = (0..args.n_gen).map(|_| token()).collect();

    let run_pp = || -> Result<f64> {
        let mut cache = model.new_cache();
        let t = Instant::now();
        model.forward(&mut [SeqInput {
            cache: &mut cache,
            tokens: &prompt,
            logits: Logits::Last,
        }])?;
        Ok(args.n_prompt as f64 / t.elapsed().as_secs_f64())
    };
    // tg starts from an empty cache, as llama-bench's does: every step attends to the tokens
    // generated so far.
    let run_tg = |batch: usize| -> Result<f64> {
        let mut caches: Vec<_> = (0..batch).map(|_| model.new_cache()).collect();
        let t = Instant::now();
        for tok in &generated {
            let mut batch: Vec<SeqInput> = caches
                .iter_mut()
                .map(|cache| SeqInput {
                    cache,
                    tokens: std::slice::from_ref(tok),
                    logits: Logits::Last,
                })
                .collect();
            model.forward(&mut batch)?;
        }
        Ok((args.n_gen * batch) as f64 / t.elapsed().as_secs_f64())
    };
    // Warm-up: faults the mapped weights in and settles the thread pool.
    run_pp()?;
    run_tg(first_batch)?;
    let mut pp = Vec::new();
    let mut tg_at: Vec<(usize, Vec<f64>)> = batches.iter().map(|&b| (b, Vec::new())).collect();
    for _ in 0..args.reps {
        pp.push(run_pp()?);
        for (b, tg) in tg_at.iter_mut() {
            tg.push(run_tg(*b)?);
        }
    }
    let tg = tg_at
        .iter()
        .find(|(b, _)| *b == first_batch)
        .map(|(_, tg)| tg.clone())
        .unwrap_or_default();
    let constrained = match &schema {
        Some(schema) => Some(bench_constrained(
            args, &file, &model, schema, &batches, &generated,
        )?),
        None => None,
    };

    // Bytes one decode step reads: every tensor but the embedding, plus the head's weights.
    let embd = file
        .tensors()
        .iter()
        .find(|t| t.name == "token_embd.weight")
        .context("the model has no token_embd.weight")?;
    let body: u64 = file
        .tensors()
        .iter()
        .filter(|t| t.name != "token_embd.weight")
        .map(|t| t.size)
        .sum();
    let (kernel, format) = (model.kernels().name, model.ternary_type().to_string());
    let head_name = format!("{:?}", model.head()).to_lowercase();
    let head = match model.head() {
        HeadKind::F16 => embd.n_elements() * 2,
        HeadKind::Q8 => embd.n_elements() / 32 * 34,
    };
    // The caches' full size at the end of tg at the largest batch (they grow as tokens arrive).
    let most = batches.last().copied().unwrap_or(1);
    let kv_bytes = c.kv_bytes_per_token() * (args.n_prompt + args.n_gen).max(args.n_gen * most);
    let peak_rss = peak_rss_bytes();
    let threads = model.threads();
    let decode_bytes = body + head;
    drop(model);
    let bandwidth = args
        .memory_bandwidth
        .then(|| memory_bandwidth(threads, args.buffer_mib));
    let ceiling = bandwidth.map(|bw| bw / decode_bytes as f64);
    let doc = serde_json::json!({
        "engine": "bitnet-server",
        "version": env!("CARGO_PKG_VERSION"),
        "kernel": kernel,
        "format": format,
        "head": head_name,
        "threads": threads,
        "n_prompt": args.n_prompt,
        "n_gen": args.n_gen,
        "batch": first_batch,
        "load_s": load_s,
        "pp_tok_s": pp,
        "tg_tok_s": tg,
        "tg": tg_at
            .iter()
            .map(|(b, tg)| serde_json::json!({"batch": b, "tok_s": tg}))
            .collect::<Vec<_>>(),
        "constrained": constrained,
        "peak_rss_bytes": peak_rss,
        "file_bytes": file.file_size(),
        "kv_bytes": kv_bytes,
        "decode_bytes_per_token": decode_bytes,
        "read_bytes_per_s": bandwidth,
        "decode_ceiling_tok_s": ceiling,
    });
    println!("{doc}");
    Ok(())
}

/// Decode with and without a JSON-schema constraint at each batch size, in one run: `n_gen`
/// steps of `b` sequences, each feeding back its own greedy token. Without the constraint the
/// token is the argmax of the logits; with it, the logits are masked first and the token is
/// accepted by the sequence's grammar state, which restarts (a fork of the compiled one) when
/// the schema's value is complete. Returns one JSON entry per batch size.
fn bench_constrained(
    args: &BenchArgs,
    file: &GgufFile,
    model: &Model,
    schema: &serde_json::Value,
    batches: &[usize],
    generated: &[u32],
) -> Result<serde_json::Value> {
    let data = bitnet_tokenizer::TokenizerData::from_gguf(file)
        .context("--json-schema needs the model's tokenizer")?;
    let tokenizer = bitnet_tokenizer::Tokenizer::new(data)?;
    let codec = BitnetTokenizer::without_template(tokenizer);
    let t = Instant::now();
    let vocab = crate::engine::grammar::vocabulary(&codec)?;
    let vocab_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let compiled = vocab.compile(&Grammar::JsonSchema(schema.clone()))?;
    let compile_s = t.elapsed().as_secs_f64();

    // One decode run; `Some` grammar states constrain it. Returns tok/s, the time spent in
    // mask + accept, and the number of values completed.
    let run = |batch: usize, constrain: bool| -> Result<(f64, Duration, usize)> {
        let mut caches: Vec<_> = (0..batch).map(|_| model.new_cache()).collect();
        let mut states: Vec<Constraint> = (0..batch).map(|_| compiled.fork()).collect();
        let mut next: Vec<u32> = vec![generated[0]; batch];
        let mut in_grammar = Duration::ZERO;
        let mut completed = 0;
        let t = Instant::now();
        for _ in 0..args.n_gen {
            let mut inputs: Vec<SeqInput> = caches
                .iter_mut()
                .zip(&next)
                .map(|(cache, tok)| SeqInput {
                    cache,
                    tokens: std::slice::from_ref(tok),
                    logits: Logits::Last,
                })
                .collect();
            let mut logits = model.forward(&mut inputs)?;
            for (i, l) in logits.iter_mut().enumerate() {
                if constrain {
                    let tm = Instant::now();
                    let state = &mut states[i];
                    if state.is_finished() {
                        *state = compiled.fork();
                        completed += 1;
                    }
                    state.mask(l)?;
                    in_grammar += tm.elapsed();
                }
                let tok = argmax(l);
                if constrain {
                    let tm = Instant::now();
                    states[i].accept(tok)?;
                    in_grammar += tm.elapsed();
                }
                next[i] = tok;
            }
        }
        Ok((
            (args.n_gen * batch) as f64 / t.elapsed().as_secs_f64(),
            in_grammar,
            completed,
        ))
    };
    let mut out = Vec::new();
    for &b in batches {
        run(b, false)?; // warm-up
        run(b, true)?;
        let (mut plain, mut constrained) = (Vec::new(), Vec::new());
        let (mut grammar_time, mut completed) = (Duration::ZERO, 0);
        let mut constrained_time = 0.0;
        for _ in 0..args.reps {
            plain.push(run(b, false)?.0);
            let (tok_s, in_grammar, done) = run(b, true)?;
            constrained.push(tok_s);
            constrained_time += (args.n_gen * b) as f64 / tok_s;
            grammar_time += in_grammar;
            completed += done;
        }
        let tokens = (args.n_gen * b * args.reps) as f64;
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        out.push(serde_json::json!({
            "batch": b,
            "tok_s": plain,
            "constrained_tok_s": constrained,
            "grammar_us_per_token": grammar_time.as_secs_f64() * 1e6 / tokens,
            // The share of the constrained runs' time spent masking and accepting: measured
            // inside the same runs, so other load on the machine does not skew it the way it
            // can skew the ratio of two separately timed rates.
            "grammar_share_pct": grammar_time.as_secs_f64() / constrained_time * 100.0,
            "overhead_pct": (mean(&plain) / mean(&constrained) - 1.0) * 100.0,
            "values_completed": completed,
        }));
    }
    Ok(serde_json::json!({
        "schema": args.json_schema.as_ref().map(|p| p.display().to_string()),
        "vocabulary_s": vocab_s,
        "compile_s": compile_s,
        "batches": out,
    }))
}

/// The id of the largest logit (the first of equals); masked logits are -inf.
fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// The embedding benchmark: texts of `-p` random tokens, embedded one per call and `-b` per
/// call (one batched pass, as the server batches concurrent requests), `-r` timed repetitions
/// after a warm-up; tokens/s and texts/s per batch size.
fn run_embed(
    args: &BenchArgs,
    model: &Model,
    dim: usize,
    load_s: f64,
    file_bytes: u64,
) -> Result<()> {
    let n_vocab = model.config.n_vocab as u64;
    let mut rng = SplitMix64(0x5eed);
    let mut batches = vec![1];
    batches.extend(&args.batch);
    batches.sort_unstable();
    batches.dedup();
    let most = *batches.iter().max().unwrap_or(&1);
    let texts: Vec<Vec<u32>> = (0..most)
        .map(|_| {
            (0..args.n_prompt)
                .map(|_| (rng.next_u64() % n_vocab) as u32)
                .collect()
        })
        .collect();
    let mut results = Vec::new();
    for &b in &batches {
        let inputs: Vec<&[u32]> = texts[..b].iter().map(Vec::as_slice).collect();
        model.embed(&inputs)?; // warm-up: faults the weights in, settles the pool
        let mut tok_s = Vec::new();
        let mut texts_s = Vec::new();
        for _ in 0..args.reps {
            let t = Instant::now();
            let out = model.embed(&inputs)?;
            let secs = t.elapsed().as_secs_f64();
            if out.len() != b || out.iter().any(|v| v.len() != dim) {
                bail!("embed returned {} vectors for {b} texts", out.len());
            }
            tok_s.push((b * args.n_prompt) as f64 / secs);
            texts_s.push(b as f64 / secs);
        }
        results.push(serde_json::json!({
            "batch": b,
            "tok_s": tok_s,
            "texts_s": texts_s,
        }));
    }
    let doc = serde_json::json!({
        "engine": "bitnet-server",
        "version": env!("CARGO_PKG_VERSION"),
        "arch": model.config.arch,
        "kernel": model.kernels().name,
        "format": model.ternary_type().to_string(),
        "threads": model.threads(),
        "embedding_dim": dim,
        "n_prompt": args.n_prompt,
        "load_s": load_s,
        "embed": results,
        "peak_rss_bytes": peak_rss_bytes(),
        "file_bytes": file_bytes,
    });
    println!("{doc}");
    Ok(())
}

/// Read bandwidth: every thread sums its share of a buffer touched beforehand; the best of
/// several passes, in bytes per second.
fn memory_bandwidth(threads: usize, buffer_mib: usize) -> f64 {
    let threads = threads.max(1);
    let words = buffer_mib.max(64) * (1 << 20) / 8;
    let mut buf = vec![0u64; words];
    for (i, w) in buf.iter_mut().enumerate() {
        *w = i as u64;
    }
    let chunk = words.div_ceil(threads);
    let mut best = 0f64;
    let mut check = 0u64;
    for _ in 0..5 {
        let t = Instant::now();
        let sums: Vec<u64> = std::thread::scope(|s| {
            let handles: Vec<_> = buf
                .chunks(chunk)
                .map(|part| s.spawn(move || sum_words(part)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or(0)).collect()
        });
        let secs = t.elapsed().as_secs_f64();
        check = check.wrapping_add(sums.iter().fold(0u64, |a, &b| a.wrapping_add(b)));
        best = best.max((words * 8) as f64 / secs);
    }
    // The sums must be used, or the passes could be optimised away.
    std::hint::black_box(check);
    best
}

/// Eight independent sums so the loop is bound by loads, not by one add chain.
fn sum_words(part: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    let mut it = part.chunks_exact(8);
    for c in &mut it {
        for k in 0..8 {
            acc[k] = acc[k].wrapping_add(c[k]);
        }
    }
    let tail = it.remainder().iter().fold(0u64, |a, &b| a.wrapping_add(b));
    acc.iter().fold(tail, |a, &b| a.wrapping_add(b))
}

/// Peak resident set size of this process (`VmHWM`), where the OS reports it.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
