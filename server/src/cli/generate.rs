//! `bitnet-server generate`: stream a completion of a prompt (or a one-turn chat) to stdout.
//!
//! The model is served the way `serve` serves it: loaded into an [`Engine`] with one slot, the
//! prompt submitted as one request, and the text read from its event stream. So the CLI and the
//! HTTP server share one generation loop, one output policy (control tokens hidden, stop strings
//! never shown) and one set of sampling ranges.

use super::model_args::ModelArgs;
use super::sampling_args::SamplingArgs;
use crate::engine::{Engine, EngineConfig, Event, GenerationRequest, bitnet};
use anyhow::{Result, anyhow};
use bitnet_tokenizer::ChatMessage;
use std::io::Write;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt text (special tokens such as <|eot_id|> are recognised).
    #[arg(long, short = 'p')]
    pub prompt: String,
    /// Treat the prompt as a user message and format it with the model's chat template.
    #[arg(long)]
    pub chat: bool,
    /// System message for --chat.
    #[arg(long)]
    pub system: Option<String>,
    /// Maximum tokens to generate (fewer if the context fills up first).
    #[arg(long, short = 'n', default_value_t = 128)]
    pub n_predict: usize,
    /// Stop when this text appears (repeatable); it is not printed.
    #[arg(long)]
    pub stop: Vec<String>,
    /// Keep generating past end-of-generation tokens.
    #[arg(long)]
    pub ignore_eos: bool,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

pub fn run(args: &GenerateArgs) -> Result<()> {
    // Flags first: a bad sampling value is reported before the model is read.
    let sampling = args.sampling.params()?;
    let t0 = Instant::now();
    let (file, model) = args.model.load()?;
    let n_ctx = model.n_ctx();
    let loaded = bitnet::loaded_model(&file, model, 1).map_err(|e| anyhow!(e))?;
    let tokenizer = loaded.tokenizer.clone();
    let engine = Engine::start(
        loaded,
        EngineConfig {
            parallel: 1,
            queue_size: 1,
            // The whole prompt in one forward pass.
            prefill_chunk: n_ctx,
            // One prompt per run: nothing to reuse.
            cache_ram: Some(0),
        },
    )?;
    let load = t0.elapsed();
    let prompt = if args.chat {
        let mut msgs = Vec::new();
        if let Some(s) = &args.system {
            msgs.push(ChatMessage::new("system", s.clone()));
        }
        msgs.push(ChatMessage::new("user", args.prompt.clone()));
        let text = tokenizer.apply_chat_template(&msgs, true)?;
        tokenizer.encode(&text, false, true)?
    } else {
        // As the HTTP API does for a text prompt: BOS (if the model has one), special tokens
        // recognised.
        tokenizer.encode(&args.prompt, true, true)?
    };
    let request = GenerationRequest {
        // Stop at the context's end (finish: length) rather than refusing a long -n; a prompt
        // that fills the context is refused by the engine with the numbers.
        max_tokens: args
            .n_predict
            .min(n_ctx.saturating_sub(prompt.len()).max(1)),
        prompt_tokens: prompt,
        sampling,
        stop: args.stop.clone(),
        logprobs: None,
        ignore_eos: args.ignore_eos,
        constraint: None,
        n: 1,
        cache_prompt: false,
    };
    let seed = request.sampling.seed;
    let mut events = engine.handle.submit(request)?;
    let stdout = std::io::stdout();
    let t1 = Instant::now();
    let show = |text: &str| {
        let mut out = stdout.lock();
        out.write_all(text.as_bytes()).and_then(|_| out.flush())
    };
    let (usage, finish) = loop {
        match events.blocking_recv() {
            Some(Event::Token { text, .. }) => {
                if show(&text).is_err() {
                    // stdout went away: dropping the receiver cancels the generation.
                    engine.stop();
                    return Ok(());
                }
            }
            Some(Event::Done {
                finish_reason,
                usage,
                text,
                ..
            }) => {
                show(&text)?;
                break (usage, finish_reason);
            }
            Some(Event::Failed { message }) => return Err(anyhow!("generation failed: {message}")),
            None => return Err(anyhow!("the engine stopped without finishing")),
        }
    };
    engine.stop();
    println!();
    let total = t1.elapsed().as_secs_f64();
    eprintln!(
        "generate: load {:.2}s, prompt {} tokens, generated {} tokens in {:.2}s ({:.2} tok/s), finish: {:?}, seed {seed}",
        load.as_secs_f64(),
        usage.prompt_tokens,
        usage.completion_tokens,
        total,
        usage.completion_tokens as f64 / total.max(1e-9),
        finish
    );
    Ok(())
}
