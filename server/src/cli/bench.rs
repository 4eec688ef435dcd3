//! `bitnet-server bench`: llama-bench-style speed of one model, kernel variant and thread count,
//! measured in this process: load time, prompt processing (`pp`: one batch of `-p` tokens, one
//! or several sizes) and token generation (`tg`: `-n` single-token steps), each at one or several
//! cache depths (`-d`, llama-bench's depth: the tokens already in every sequence's cache when the
//! timed test starts, filled untimed), peak RSS, the KV cache bytes per token, and the bytes a
//! decode step must read; with `--memory-bandwidth`, also the read bandwidth that bounds decode.
//!
//! `--workload rag` measures what a retrieval-augmented request feels like instead: a long prompt
//! (2,048 tokens unless `-p`) then a greedy answer (128 tokens unless `-n`), each repetition from
//! an empty cache: the time to the first token (the prompt fed in the server's prefill chunks,
//! then the pick from its last logits) and the decode speed of the rest of the answer (`rag` in
//! the JSON).
//!
//! An embedding model (`qwen3`/`gemma3` BitNet embedders) is measured the way it is used:
//! `embed` calls of texts of `-p` tokens each, one text at a time and `-b` texts per call,
//! reported as tokens/s and texts/s (`embed` in the JSON).
//!
//! With `--json-schema FILE`, decode is also measured with every sequence constrained to the
//! schema (`bitnet-constraint`), in the same run and at each `-b`, from an empty cache: sequences
//! then feed back their own greedy token, masked and accepted by the grammar (restarted when
//! complete), next to the same loop without the grammar; `constrained` in the JSON has both
//! rates, the mask time per token and the overhead (docs/structured-outputs.md).
//!
//! The result is one line of JSON on stdout (read by `cargo xtask bench`, which runs this once
//! per cell, interleaved with llama.cpp, and prints the table); a readable table goes to stderr.
//! Token ids are drawn from a fixed-seed generator, so no tokenizer is involved (but for the
//! grammar's vocabulary under `--json-schema`).

use super::model_args::ModelArgs;
use crate::engine::bitnet::BitnetTokenizer;
use crate::sampling::argmax;
use anyhow::{Context, Result, bail};
use bitnet_constraint::{Constraint, Grammar};
use bitnet_gguf::GgufFile;
use bitnet_model::{HeadKind, KvCache, Logits, Model, ModelConfig, ModelKind, SeqInput};
use bitnet_rng::SplitMix64;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// `-p` and `-n` when not given.
const PP_TOKENS: usize = 128;
const TG_TOKENS: usize = 64;
/// `--workload rag`'s `-p` and `-n` when not given: a prompt carrying a few retrieved passages,
/// and a short answer.
const RAG_PROMPT_TOKENS: usize = 2048;
const RAG_ANSWER_TOKENS: usize = 128;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt tokens processed in one batch (pp) [default: 128; 2048 with --workload rag].
    /// Several sizes (`-p 512,2048`): pp at each (`pp` in the JSON; `pp_tok_s` is the first).
    #[arg(short = 'p', long, value_delimiter = ',')]
    pub n_prompt: Vec<usize>,
    /// Tokens generated one at a time after the prompt (tg) [default: 64; 128 with --workload
    /// rag].
    #[arg(short = 'n', long)]
    pub n_gen: Option<usize>,
    /// Cache depths, as llama-bench's: pp and tg are timed with this many tokens already in each
    /// sequence's cache (filled untimed with random tokens). Several (`-d 0,1024,4096`): one
    /// entry each in `depths` in the JSON; depth 0 is always measured (the top-level figures).
    #[arg(
        short = 'd',
        long = "depth",
        visible_alias = "n-depth",
        value_delimiter = ',',
        default_value = "0"
    )]
    pub depth: Vec<usize>,
    /// Sequences decoded together in tg (each with its own cache, one forward pass per step,
    /// as the server batches concurrent requests); tg then reports the aggregate tok/s. Several
    /// sizes (`-b 1,8`): tg at each (`tg` in the JSON; `tg_tok_s` is the first).
    #[arg(short = 'b', long, value_delimiter = ',', default_value = "1")]
    pub batch: Vec<usize>,
    /// Timed repetitions of each test (after one untimed warm-up).
    #[arg(short = 'r', long, default_value_t = 1)]
    pub reps: usize,
    /// What to measure: `pp-tg` (llama-bench's tests, at each -d) or `rag` (a long prompt then an
    /// answer, from an empty cache: time to first token and the answer's decode speed).
    #[arg(long, value_enum, default_value_t = Workload::PpTg)]
    pub workload: Workload,
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

/// `--workload` values.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// pp and tg at each depth, as llama-bench measures them.
    #[value(name = "pp-tg")]
    PpTg,
    /// A long prompt then a greedy answer, from an empty cache, `-r` times.
    Rag,
}

/// The flags resolved and checked: what the run measures and the context it needs.
#[derive(Debug)]
struct Plan {
    rag: bool,
    /// Prompt sizes, ascending; `first_prompt` is the first one given (the top-level figure).
    prompts: Vec<usize>,
    first_prompt: usize,
    n_gen: usize,
    /// Batch sizes, ascending; `first_batch` is the first one given.
    batches: Vec<usize>,
    first_batch: usize,
    /// Depths, ascending, starting at 0.
    depths: Vec<usize>,
    /// The longest sequence of the run: the context the model is loaded with.
    n_ctx: usize,
    /// The most tokens held in KV caches at once (every cache the run keeps, at its fullest).
    kv_tokens: usize,
    /// The flags that set the context, for error messages.
    what: String,
}

impl Plan {
    fn new(args: &BenchArgs) -> Result<Plan> {
        let rag = args.workload == Workload::Rag;
        let mut prompts = if args.n_prompt.is_empty() {
            vec![if rag { RAG_PROMPT_TOKENS } else { PP_TOKENS }]
        } else {
            args.n_prompt.clone()
        };
        let n_gen = args
            .n_gen
            .unwrap_or(if rag { RAG_ANSWER_TOKENS } else { TG_TOKENS });
        if prompts.contains(&0)
            || n_gen == 0
            || args.reps == 0
            || args.batch.is_empty()
            || args.batch.contains(&0)
        {
            bail!("-p, -n, -b and -r must be at least 1");
        }
        let (first_prompt, first_batch) = (prompts[0], args.batch[0]);
        prompts.sort_unstable();
        prompts.dedup();
        let mut batches = args.batch.clone();
        batches.sort_unstable();
        batches.dedup();
        let mut depths = args.depth.clone();
        depths.push(0);
        depths.sort_unstable();
        depths.dedup();
        let max_depth = depths.last().copied().unwrap_or(0);
        let max_prompt = prompts.last().copied().unwrap_or(first_prompt);
        let most = batches.last().copied().unwrap_or(first_batch);
        let (n_ctx, kv_tokens, what, fix) = if rag {
            if prompts.len() > 1 {
                bail!(
                    "--workload rag takes one prompt size; -p has {}",
                    prompts.len()
                );
            }
            if max_depth > 0 {
                bail!(
                    "--workload rag starts every request from an empty cache; drop -d (depth \
                     applies to the pp-tg workload)"
                );
            }
            if batches != [1] {
                bail!("--workload rag measures one request at a time; drop -b");
            }
            if args.json_schema.is_some() {
                bail!(
                    "--json-schema measures the pp-tg workload's decode; drop it or --workload rag"
                );
            }
            if n_gen < 2 {
                bail!(
                    "--workload rag needs -n of at least 2: the answer's first token comes with \
                     the prompt (the time to first token), the others are its decode"
                );
            }
            let n = first_prompt.saturating_add(n_gen);
            (
                n,
                n,
                format!("--workload rag with -p {first_prompt} and -n {n_gen}"),
                "lower -p or -n",
            )
        } else {
            // pp at depth d holds d + p tokens in one cache, tg at batch b holds d + n in each of
            // b caches; every test starts from `most` caches at depth d.
            let n_ctx = max_depth.saturating_add(max_prompt.max(n_gen));
            let kv_tokens = most
                .saturating_mul(max_depth)
                .saturating_add(max_prompt.max(most.saturating_mul(n_gen)));
            let what = format!("-d {max_depth} with -p {max_prompt} and -n {n_gen}");
            (n_ctx, kv_tokens, what, "lower -d, -p or -n")
        };
        if let Some(limit) = args.model.ctx_size
            && n_ctx > limit
        {
            bail!(
                "{what} needs a context of {n_ctx} tokens, more than --ctx-size {limit}: {fix}, \
                 or raise --ctx-size"
            );
        }
        Ok(Plan {
            rag,
            prompts,
            first_prompt,
            n_gen,
            batches,
            first_batch,
            depths,
            n_ctx,
            kv_tokens,
            what,
        })
    }

    /// Refuses a run whose KV caches cannot fit in the memory this process can still get.
    fn check_memory(&self, config: &ModelConfig) -> Result<()> {
        let Some(available) = crate::memory::available() else {
            return Ok(());
        };
        let per_token = config.kv_bytes_per_token() as u64;
        let needed = per_token.saturating_mul(self.kv_tokens as u64);
        if needed > available.bytes {
            let fix = if self.rag {
                "lower -p or -n"
            } else {
                "lower -d, -b, -p or -n"
            };
            bail!(
                "{} holds up to {} tokens of KV cache ({} at {per_token} bytes per token), more \
                 than the {} available ({}): {fix}",
                self.what,
                self.kv_tokens,
                crate::health::human_bytes(needed),
                crate::health::human_bytes(available.bytes),
                available.source,
            );
        }
        Ok(())
    }
}

/// One depth's figures: tok/s per repetition for each prompt size and each batch size.
struct DepthResult {
    depth: usize,
    pp: Vec<(usize, Vec<f64>)>,
    tg: Vec<(usize, Vec<f64>)>,
}

impl DepthResult {
    fn pp_at(&self, n_prompt: usize) -> &[f64] {
        find(&self.pp, n_prompt)
    }

    fn tg_at(&self, batch: usize) -> &[f64] {
        find(&self.tg, batch)
    }

    fn json(&self, plan: &Plan, kv_bytes_per_token: usize) -> serde_json::Value {
        serde_json::json!({
            "depth": self.depth,
            "kv_bytes_at_depth": kv_bytes_per_token * self.depth,
            "pp_tok_s": self.pp_at(plan.first_prompt),
            "tg_tok_s": self.tg_at(plan.first_batch),
            "pp": pp_json(&self.pp),
            "tg": tg_json(&self.tg),
        })
    }
}

fn find(v: &[(usize, Vec<f64>)], key: usize) -> &[f64] {
    v.iter()
        .find(|(k, _)| *k == key)
        .map(|(_, x)| x.as_slice())
        .unwrap_or_default()
}

fn pp_json(pp: &[(usize, Vec<f64>)]) -> Vec<serde_json::Value> {
    pp.iter()
        .map(|(p, v)| serde_json::json!({"n_prompt": p, "tok_s": v}))
        .collect()
}

fn tg_json(tg: &[(usize, Vec<f64>)]) -> Vec<serde_json::Value> {
    tg.iter()
        .map(|(b, v)| serde_json::json!({"batch": b, "tok_s": v}))
        .collect()
}

/// The rag workload's figures, one per repetition.
struct RagResult {
    ttft_ms: Vec<f64>,
    prompt_tok_s: Vec<f64>,
    decode_tok_s: Vec<f64>,
}

/// Tokens fed per forward pass when filling a cache untimed and when prefilling the rag
/// workload's prompt: the server's prefill chunk, so a long prompt is fed as the server feeds it.
fn prefill_chunk() -> usize {
    crate::engine::EngineConfig::default().prefill_chunk.max(1)
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let plan = Plan::new(args)?;
    let margs = &args.model;
    let schema = args
        .json_schema
        .as_ref()
        .map(|p| -> Result<serde_json::Value> {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading the JSON schema {}", p.display()))?;
            serde_json::from_str(&text).with_context(|| format!("{} is not JSON", p.display()))
        })
        .transpose()?;
    {
        let file = GgufFile::open(&margs.model)?;
        if let Ok(config) = ModelConfig::from_gguf(&file) {
            plan.check_memory(&config)?;
        }
    }
    let t0 = Instant::now();
    let (file, model) = margs.load_with_ctx(Some(plan.n_ctx))?;
    let load_s = t0.elapsed().as_secs_f64();
    if let ModelKind::Embedding { dim, .. } = model.kind() {
        if schema.is_some() {
            bail!("--json-schema needs a generation model; this is an embedding model");
        }
        if plan.rag || plan.depths.len() > 1 {
            bail!("-d and --workload rag need a generation model; this is an embedding model");
        }
        return run_embed(args, &plan, &model, dim, load_s, file.file_size());
    }
    let c = &model.config;
    if plan.n_ctx > c.n_ctx_train {
        eprintln!(
            "bench: {} reaches {} tokens, past the model's trained context of {}; the speed is \
             measured all the same",
            plan.what, plan.n_ctx, c.n_ctx_train
        );
    }
    let mut rng = SplitMix64(0x5eed);
    let mut token = || (rng.next_u64() % c.n_vocab as u64) as u32;
    let max_prompt = plan.prompts.last().copied().unwrap_or(plan.first_prompt);
    let prompt: Vec<u32> = (0..max_prompt).map(|_| token()).collect();
    let generated: Vec<u32> = (0..plan.n_gen).map(|_| token()).collect();
    let max_depth = plan.depths.last().copied().unwrap_or(0);
    let filler: Vec<u32> = (0..max_depth).map(|_| token()).collect();
    let kv_per_token = c.kv_bytes_per_token();

    let mut doc = serde_json::Map::new();
    let mut text = String::new();
    let (kernel, format) = (model.kernels().name, model.ternary_type().to_string());
    let head_name = format!("{:?}", model.head()).to_lowercase();
    let threads = model.threads();
    {
        use std::fmt::Write;
        let _ = writeln!(
            text,
            "{} ({}), {kernel}, {format}, {head_name} head, threads: {threads}; KV cache \
             {kv_per_token} bytes/token; tok/s, mean of {} (± half the range)",
            margs.model.display(),
            c.arch,
            args.reps
        );
    }
    let mut insert = |k: &str, v: serde_json::Value| {
        doc.insert(k.to_string(), v);
    };
    insert("engine", "bitnet-server".into());
    insert("version", env!("CARGO_PKG_VERSION").into());
    insert("kernel", kernel.into());
    insert("format", format.clone().into());
    insert("head", head_name.clone().into());
    insert("threads", threads.into());
    insert("workload", if plan.rag { "rag" } else { "pp-tg" }.into());
    insert("n_prompt", plan.first_prompt.into());
    insert("n_gen", plan.n_gen.into());
    insert("load_s", load_s.into());
    if plan.rag {
        let r = bench_rag(&model, &prompt, plan.n_gen, args.reps)?;
        text.push_str(&rag_table(&plan, &r));
        insert(
            "rag",
            serde_json::json!({
                "n_prompt": plan.first_prompt,
                "n_gen": plan.n_gen,
                "prefill_chunk": prefill_chunk(),
                "ttft_ms": r.ttft_ms,
                "prompt_tok_s": r.prompt_tok_s,
                "decode_tok_s": r.decode_tok_s,
            }),
        );
    } else {
        let depths = bench_depths(&model, &plan, args.reps, &prompt, &generated, &filler)?;
        text.push_str(&depth_table(&plan, &depths));
        let zero = &depths[0];
        insert("batch", plan.first_batch.into());
        insert("pp_tok_s", zero.pp_at(plan.first_prompt).into());
        insert("tg_tok_s", zero.tg_at(plan.first_batch).into());
        insert("pp", pp_json(&zero.pp).into());
        insert("tg", tg_json(&zero.tg).into());
        insert(
            "depths",
            depths
                .iter()
                .map(|d| d.json(&plan, kv_per_token))
                .collect::<Vec<_>>()
                .into(),
        );
        let constrained = match &schema {
            Some(schema) => Some(bench_constrained(
                args, &file, &model, schema, &plan, &generated,
            )?),
            None => None,
        };
        insert("constrained", constrained.into());
    }

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
    let head = match model.head() {
        HeadKind::F16 => embd.n_elements() * 2,
        HeadKind::Q8 => embd.n_elements() / 32 * 34,
    };
    let peak_rss = peak_rss_bytes();
    let decode_bytes = body + head;
    drop(model);
    let bandwidth = args
        .memory_bandwidth
        .then(|| memory_bandwidth(threads, args.buffer_mib));
    let ceiling = bandwidth.map(|bw| bw / decode_bytes as f64);
    insert("peak_rss_bytes", peak_rss.into());
    insert("file_bytes", file.file_size().into());
    // The caches the run holds at their fullest (every cache at the deepest depth, plus the
    // largest test's tokens on top), from the model's bytes per token.
    insert("kv_bytes", (kv_per_token * plan.kv_tokens).into());
    insert("kv_bytes_per_token", kv_per_token.into());
    insert("decode_bytes_per_token", decode_bytes.into());
    insert("read_bytes_per_s", bandwidth.into());
    insert("decode_ceiling_tok_s", ceiling.into());
    if let Some(ceiling) = ceiling {
        use std::fmt::Write;
        let _ = writeln!(
            text,
            "decode ceiling at the measured bandwidth: {ceiling:.1} tok/s"
        );
    }
    eprint!("{text}");
    println!("{}", serde_json::Value::Object(doc));
    Ok(())
}

/// Appends `tokens` to `cache` untimed, one prefill chunk per forward pass, without logits.
fn fill(model: &Model, cache: &mut KvCache, tokens: &[u32]) -> Result<()> {
    for chunk in tokens.chunks(prefill_chunk()) {
        model.forward(&mut [SeqInput {
            cache,
            tokens: chunk,
            logits: Logits::None,
        }])?;
    }
    Ok(())
}

/// pp: `tokens` in one forward pass on top of what `cache` holds (cut back afterwards), tok/s.
fn time_pp(model: &Model, cache: &mut KvCache, tokens: &[u32]) -> Result<f64> {
    let depth = cache.len();
    let t = Instant::now();
    model.forward(&mut [SeqInput {
        cache,
        tokens,
        logits: Logits::Last,
    }])?;
    let secs = t.elapsed().as_secs_f64();
    cache.truncate(depth);
    Ok(tokens.len() as f64 / secs)
}

/// tg: one step per token of `tokens`, every cache of `caches` fed the token in one forward pass
/// (cut back afterwards); aggregate tok/s.
fn time_tg(model: &Model, caches: &mut [KvCache], tokens: &[u32]) -> Result<f64> {
    let depths: Vec<usize> = caches.iter().map(KvCache::len).collect();
    let t = Instant::now();
    for tok in tokens {
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
    let secs = t.elapsed().as_secs_f64();
    for (cache, depth) in caches.iter_mut().zip(depths) {
        cache.truncate(depth);
    }
    Ok((tokens.len() * caches.len()) as f64 / secs)
}

/// pp and tg at every depth. One untimed warm-up of each test at depth 0 first (it faults the
/// mapped weights in and settles the thread pool). The deepest cache is filled once, untimed,
/// and copied for every sequence of the largest batch; each shallower depth cuts those caches
/// back (a causal model's first d positions do not depend on what follows them). Every timed
/// test starts from caches at the depth and cuts them back to it when done.
fn bench_depths(
    model: &Model,
    plan: &Plan,
    reps: usize,
    prompt: &[u32],
    generated: &[u32],
    filler: &[u32],
) -> Result<Vec<DepthResult>> {
    let most = plan.batches.last().copied().unwrap_or(plan.first_batch);
    {
        let mut warm: Vec<KvCache> = (0..plan.first_batch).map(|_| model.new_cache()).collect();
        time_pp(model, &mut warm[0], &prompt[..plan.first_prompt])?;
        time_tg(model, &mut warm, generated)?;
    }
    let mut caches = vec![model.new_cache()];
    fill(model, &mut caches[0], filler)?;
    for _ in 1..most {
        caches.push(caches[0].clone());
    }
    let mut out = Vec::new();
    for &depth in plan.depths.iter().rev() {
        for cache in caches.iter_mut() {
            cache.truncate(depth);
        }
        let mut pp: Vec<(usize, Vec<f64>)> =
            plan.prompts.iter().map(|&p| (p, Vec::new())).collect();
        let mut tg: Vec<(usize, Vec<f64>)> =
            plan.batches.iter().map(|&b| (b, Vec::new())).collect();
        for _ in 0..reps {
            for (p, v) in pp.iter_mut() {
                v.push(time_pp(model, &mut caches[0], &prompt[..*p])?);
            }
            for (b, v) in tg.iter_mut() {
                v.push(time_tg(model, &mut caches[..*b], generated)?);
            }
        }
        out.push(DepthResult { depth, pp, tg });
    }
    out.reverse();
    Ok(out)
}

/// The rag workload: `-r` requests of `prompt` then a greedy answer of `n_gen` tokens, each from
/// an empty cache. The prompt is fed in prefill chunks (logits only for the last one); the time to
/// first token ends with the pick from its last logits; the answer's other `n_gen - 1` tokens are
/// single-token steps feeding back the previous pick. One short untimed request first (a chunk of
/// prompt, two answer tokens) faults the weights in.
fn bench_rag(model: &Model, prompt: &[u32], n_gen: usize, reps: usize) -> Result<RagResult> {
    let chunk = prefill_chunk();
    let request = |prompt: &[u32], n_gen: usize| -> Result<(f64, f64)> {
        let mut cache = model.new_cache();
        let t = Instant::now();
        let parts: Vec<&[u32]> = prompt.chunks(chunk).collect();
        let mut last = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            let is_last = i + 1 == parts.len();
            let out = model.forward(&mut [SeqInput {
                cache: &mut cache,
                tokens: part,
                logits: if is_last { Logits::Last } else { Logits::None },
            }])?;
            if is_last {
                last = out.into_iter().next().unwrap_or_default();
            }
        }
        let mut tok = argmax(&last);
        let ttft = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for _ in 1..n_gen {
            let out = model.forward(&mut [SeqInput {
                cache: &mut cache,
                tokens: std::slice::from_ref(&tok),
                logits: Logits::Last,
            }])?;
            tok = argmax(out.first().map(Vec::as_slice).unwrap_or_default());
        }
        Ok((ttft, t.elapsed().as_secs_f64()))
    };
    request(&prompt[..prompt.len().min(chunk)], 2)?;
    let mut r = RagResult {
        ttft_ms: Vec::new(),
        prompt_tok_s: Vec::new(),
        decode_tok_s: Vec::new(),
    };
    for _ in 0..reps {
        let (ttft, decode) = request(prompt, n_gen)?;
        r.ttft_ms.push(ttft * 1e3);
        r.prompt_tok_s.push(prompt.len() as f64 / ttft);
        r.decode_tok_s.push((n_gen - 1) as f64 / decode);
    }
    Ok(r)
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// "mean ±spread%" (half the min–max range), or just the mean for one value.
fn with_spread(v: &[f64]) -> String {
    let m = mean(v);
    if v.len() < 2 || m == 0.0 {
        return format!("{m:.2}");
    }
    let (lo, hi) = v
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    format!("{m:.2} ±{:.0}%", 50.0 * (hi - lo) / m)
}

/// llama-bench's table: one row per test and depth, with tg at depth relative to depth 0.
fn depth_table(plan: &Plan, depths: &[DepthResult]) -> String {
    use std::fmt::Write;
    let mut t = String::from("| test | depth | tok/s | × depth 0 |\n|---|---|---|---|\n");
    let zero = &depths[0];
    for d in depths {
        let mut row = |name: String, v: &[f64], base: &[f64]| {
            let _ = writeln!(
                t,
                "| {name} | {} | {} | {:.2} |",
                d.depth,
                with_spread(v),
                mean(v) / mean(base)
            );
        };
        for (p, v) in &d.pp {
            row(format!("pp{p}"), v, zero.pp_at(*p));
        }
        for (b, v) in &d.tg {
            let name = if plan.batches.len() > 1 || *b > 1 {
                format!("tg{} ×{b}", plan.n_gen)
            } else {
                format!("tg{}", plan.n_gen)
            };
            row(name, v, zero.tg_at(*b));
        }
    }
    t
}

fn rag_table(plan: &Plan, r: &RagResult) -> String {
    format!(
        "| workload | prompt | answer | TTFT ms | prompt tok/s | answer decode tok/s |\n\
         |---|---|---|---|---|---|\n\
         | rag | {} | {} | {} | {} | {} |\n",
        plan.first_prompt,
        plan.n_gen,
        with_spread(&r.ttft_ms),
        with_spread(&r.prompt_tok_s),
        with_spread(&r.decode_tok_s),
    )
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
    plan: &Plan,
    generated: &[u32],
) -> Result<serde_json::Value> {
    let n_gen = plan.n_gen;
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
        for _ in 0..n_gen {
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
            (n_gen * batch) as f64 / t.elapsed().as_secs_f64(),
            in_grammar,
            completed,
        ))
    };
    let mut out = Vec::new();
    for &b in &plan.batches {
        run(b, false)?; // warm-up
        run(b, true)?;
        let (mut plain, mut constrained) = (Vec::new(), Vec::new());
        let (mut grammar_time, mut completed) = (Duration::ZERO, 0);
        let mut constrained_time = 0.0;
        for _ in 0..args.reps {
            plain.push(run(b, false)?.0);
            let (tok_s, in_grammar, done) = run(b, true)?;
            constrained.push(tok_s);
            constrained_time += (n_gen * b) as f64 / tok_s;
            grammar_time += in_grammar;
            completed += done;
        }
        let tokens = (n_gen * b * args.reps) as f64;
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

/// The embedding benchmark: texts of `-p` random tokens, embedded one per call and `-b` per
/// call (one batched pass, as the server batches concurrent requests), `-r` timed repetitions
/// after a warm-up; tokens/s and texts/s per batch size.
fn run_embed(
    args: &BenchArgs,
    plan: &Plan,
    model: &Model,
    dim: usize,
    load_s: f64,
    file_bytes: u64,
) -> Result<()> {
    let n_vocab = model.config.n_vocab as u64;
    let n_prompt = plan.first_prompt;
    let mut rng = SplitMix64(0x5eed);
    let mut batches = vec![1];
    batches.extend(&args.batch);
    batches.sort_unstable();
    batches.dedup();
    let most = *batches.iter().max().unwrap_or(&1);
    let texts: Vec<Vec<u32>> = (0..most)
        .map(|_| {
            (0..n_prompt)
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
            tok_s.push((b * n_prompt) as f64 / secs);
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
        "n_prompt": n_prompt,
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
