//! `bitnet-server generate`: stream a completion of a prompt (or a one-turn chat) to stdout.

use super::model_args::ModelArgs;
use super::sampling_args::SamplingArgs;
use crate::generate::{GenerateRequest, generate};
use crate::tokenizer::{ChatMessage, ChatTemplate, Tokenizer, TokenizerData};
use anyhow::{Result, anyhow};
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
    /// Maximum tokens to generate.
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
    let t0 = Instant::now();
    let (file, model) = args.model.load()?;
    let tokenizer = Tokenizer::new(TokenizerData::from_gguf(&file)?)?;
    let load = t0.elapsed();
    let prompt = if args.chat {
        let template = ChatTemplate::for_model(
            &model.config.arch,
            tokenizer.chat_template(),
            &tokenizer
                .bos_id()
                .map(|i| tokenizer.decode(&[i]))
                .unwrap_or_default(),
            &tokenizer
                .eos_id()
                .map(|i| tokenizer.decode(&[i]))
                .unwrap_or_default(),
        )?;
        let mut msgs = Vec::new();
        if let Some(s) = &args.system {
            msgs.push(ChatMessage::new("system", s.clone()));
        }
        msgs.push(ChatMessage::new("user", args.prompt.clone()));
        let text = template.render(&msgs, true)?;
        tokenizer.encode(&text, false, true)
    } else {
        tokenizer.encode(&args.prompt, tokenizer.add_bos_by_default(), true)
    };
    let req = GenerateRequest {
        prompt,
        params: args.sampling.params().map_err(|e| anyhow!(e))?,
        max_tokens: args.n_predict,
        stop: args.stop.clone(),
        ignore_eos: args.ignore_eos,
    };
    let stdout = std::io::stdout();
    let t1 = Instant::now();
    let mut first: Option<Instant> = None;
    let outcome = generate(&model, &tokenizer, &req, |text| {
        first.get_or_insert_with(Instant::now);
        let mut out = stdout.lock();
        out.write_all(text.as_bytes())
            .and_then(|_| out.flush())
            .is_ok()
    })?;
    println!();
    let total = t1.elapsed().as_secs_f64();
    eprintln!(
        "generate: load {:.2}s, prompt {} tokens, generated {} tokens in {:.2}s ({:.2} tok/s), finish: {:?}",
        load.as_secs_f64(),
        outcome.prompt_tokens,
        outcome.completion_tokens,
        total,
        outcome.completion_tokens as f64 / total.max(1e-9),
        outcome.finish_reason
    );
    Ok(())
}
