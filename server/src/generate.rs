//! One sequence's generation loop: prefill the prompt, then sample, detokenize (never splitting
//! a UTF-8 character), watch stop strings and end-of-generation tokens, and stop at the token
//! limit. Used by `bitnet-server generate`; the HTTP server batches many sequences itself
//! (`crate::engine`) with the same pieces (sampler, stream decoder, stop matcher).

use crate::model::{Logits, Model, ModelError, SeqInput};
use crate::sampling::{Sampler, SamplingParams};
use crate::stop::{StopMatcher, StopResult};
use crate::tokenizer::{StreamDecoder, Tokenizer};

/// Why generation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-generation token (e.g. `<|eot_id|>`) or a stop string.
    Stop,
    /// `max_tokens` reached.
    Length,
    /// The caller asked to stop (e.g. the client went away).
    Cancelled,
}

#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub prompt: Vec<u32>,
    pub params: SamplingParams,
    pub max_tokens: usize,
    pub stop: Vec<String>,
    /// Keep going past end-of-generation tokens (benchmarks).
    pub ignore_eos: bool,
}

#[derive(Debug, Clone)]
pub struct GenerateOutcome {
    pub finish_reason: FinishReason,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub text: String,
    pub tokens: Vec<u32>,
}

/// Runs one request to completion. `on_text` receives text as soon as it is safe to show; it
/// returns `false` to cancel.
pub fn generate(
    model: &Model,
    tokenizer: &Tokenizer,
    req: &GenerateRequest,
    mut on_text: impl FnMut(&str) -> bool,
) -> Result<GenerateOutcome, ModelError> {
    let mut cache = model.new_cache();
    let mut sampler = Sampler::new(req.params.clone());
    let mut decoder = StreamDecoder::new(tokenizer).skip_control(true);
    let mut stops = StopMatcher::new(req.stop.iter().cloned());
    let mut history = req.prompt.clone();
    let mut out = GenerateOutcome {
        finish_reason: FinishReason::Length,
        prompt_tokens: req.prompt.len(),
        completion_tokens: 0,
        text: String::new(),
        tokens: Vec::new(),
    };
    if req.max_tokens == 0 {
        return Ok(out);
    }
    let mut input: Vec<u32> = req.prompt.clone();
    loop {
        let mut batch = [SeqInput {
            cache: &mut cache,
            tokens: &input,
            logits: Logits::Last,
        }];
        let mut logits = model.forward(&mut batch)?.remove(0);
        let id = sampler.sample(&mut logits, &history, out.completion_tokens);
        history.push(id);
        out.tokens.push(id);
        out.completion_tokens += 1;
        if !req.ignore_eos && tokenizer.is_eog(id) {
            out.finish_reason = FinishReason::Stop;
            break;
        }
        if let Some(piece) = decoder.push(id) {
            match stops.push(&piece) {
                StopResult::Continue(t) => {
                    out.text.push_str(&t);
                    if !t.is_empty() && !on_text(&t) {
                        out.finish_reason = FinishReason::Cancelled;
                        return Ok(out);
                    }
                }
                StopResult::Stopped { text, .. } => {
                    out.text.push_str(&text);
                    if !text.is_empty() {
                        on_text(&text);
                    }
                    out.finish_reason = FinishReason::Stop;
                    return Ok(out);
                }
            }
        }
        if out.completion_tokens >= req.max_tokens {
            break;
        }
        if cache.len() + 1 > cache.max_len() {
            break;
        }
        input = vec![id];
    }
    // Flush what the decoder and stop matcher still hold.
    let rest = decoder.finish().unwrap_or_default();
    let tail = match stops.push(&rest) {
        StopResult::Continue(t) => t + &stops.finish(),
        StopResult::Stopped { text, .. } => {
            out.finish_reason = FinishReason::Stop;
            text
        }
    };
    if !tail.is_empty() {
        out.text.push_str(&tail);
        on_text(&tail);
    }
    Ok(out)
}
