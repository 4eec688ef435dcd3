//! The engine boundary: what the HTTP layer asks of a loaded model, and the scheduler that
//! serves many requests on one model at once.
//!
//! The model side plugs in through three traits:
//! - [`Backend`]: the forward pass over a per-sequence KV cache (prefill, batched decode, free),
//!   and the prompt cache: the KV of ended sequences kept for later prompts that start the same
//!   way ([`Backend::new_sequence_for`], [`Backend::release`]; see [`prompt_cache`]);
//! - [`TokenCodec`]: text ↔ token ids, token bytes, chat template, end-of-generation and
//!   control ids;
//! - [`TokenSampler`] (made per request by a [`SamplerFactory`]): picks the next token from logits.
//!
//! A [`ModelLoader`] turns a verified GGUF path into a [`LoadedModel`] bundling the three; the
//! serve command calls it once the file is on disk. [`Engine::start`] then moves the backend onto
//! a dedicated OS thread (the scheduler, see [`scheduler`]) and hands out an [`EngineHandle`].
//!
//! This module does NOT implement a model, a tokenizer or a sampler: those live in `model/`,
//! `tokenizer/` and the sampler module, and are wired in by the loader. It also knows nothing
//! about HTTP: request parsing and response shapes live in `http/`.

pub mod bitnet;
pub mod grammar;
pub mod prompt_cache;
pub mod scheduler;

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use serde::Serialize;
use tokio::sync::mpsc;

use crate::sampling::SamplingParams;
use bitnet_model::LoadOptions;
use bitnet_tokenizer::ChatMessage;

pub use scheduler::EngineStats;

/// Identifies one sequence (one request's KV cache) inside a [`Backend`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeqId(pub u32);

/// A failure inside the backend (out of memory, KV cache exhausted, internal bug). The
/// scheduler fails the affected requests with this message and keeps serving the others.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct BackendError(pub String);

/// The forward pass over a model, with one KV cache per live sequence.
///
/// Called only from the scheduler thread, one call at a time. Implementations may use their own
/// worker threads inside a call.
pub trait Backend: Send {
    /// The context length (tokens per sequence, prompt + generated) this backend was built for.
    fn n_ctx(&self) -> usize;
    /// The number of logits per position (the vocabulary size as the output head sees it).
    fn n_vocab(&self) -> usize;
    /// Start an empty sequence. Errors if no KV cache slot is free.
    fn new_sequence(&mut self) -> Result<SeqId, BackendError>;
    /// Start a sequence for `prompt` (non-empty). With `reuse`, its KV cache may start from the
    /// prompt cache: the result is the id and how many leading prompt tokens the cache already
    /// holds, always fewer than `prompt.len()` (the logits after the last prompt token must be
    /// computed). The default never reuses: [`Backend::new_sequence`] and 0.
    fn new_sequence_for(
        &mut self,
        prompt: &[u32],
        reuse: bool,
    ) -> Result<(SeqId, usize), BackendError> {
        let _ = (prompt, reuse);
        Ok((self.new_sequence()?, 0))
    }
    /// The sequence ended without a backend error: `tokens` are the tokens it was given so far
    /// (its `prompt_len` prompt tokens, then generated ones), of which its KV cache holds the
    /// first ones (every token fed; the last sampled one was not). A backend with a prompt
    /// cache keeps that KV under those tokens if its budget allows; either way the slot is free
    /// afterwards. Default: `free`.
    fn release(&mut self, seq: SeqId, tokens: &[u32], prompt_len: usize) {
        let _ = (tokens, prompt_len);
        self.free(seq);
    }
    /// The most bytes of KV the prompt cache may keep for ended sequences (0: none; what it
    /// holds beyond the new budget is dropped, least recently used first). Backends without a
    /// prompt cache ignore it (the default).
    fn set_prompt_cache_budget(&mut self, bytes: usize) {
        let _ = bytes;
    }
    /// What the prompt cache holds now (zero for a backend without one).
    fn prompt_cache_stats(&self) -> PromptCacheStats {
        PromptCacheStats::default()
    }
    /// Append `tokens` (non-empty) to `seq` and return the logits after the last of them.
    /// The scheduler may call this several times per sequence to feed a long prompt in chunks.
    fn prefill(&mut self, seq: SeqId, tokens: &[u32]) -> Result<Vec<f32>, BackendError>;
    /// Prompt chunks of several sequences at once (every `SeqId` at most once): one logits
    /// vector per entry, after its last token. Backends that can run them in one pass (one
    /// weight read for all) override this; the default feeds them one by one.
    fn prefill_many(&mut self, chunks: &[(SeqId, &[u32])]) -> Result<Vec<Vec<f32>>, BackendError> {
        chunks
            .iter()
            .map(|&(seq, tokens)| self.prefill(seq, tokens))
            .collect()
    }
    /// One decode step over several sequences: append one token to each and return one logits
    /// vector per entry, in the same order. Every `SeqId` appears at most once.
    fn decode(&mut self, steps: &[(SeqId, u32)]) -> Result<Vec<Vec<f32>>, BackendError>;
    /// Release a sequence's KV cache. Unknown ids are ignored.
    fn free(&mut self, seq: SeqId);
    /// A new sequence holding a copy of `seq`'s KV cache (the choices of an `n > 1` request
    /// share one prompt pass). Errors like [`Backend::new_sequence`] when no slot is free.
    fn fork(&mut self, seq: SeqId) -> Result<SeqId, BackendError> {
        let _ = seq;
        Err(BackendError(
            "this backend cannot copy a sequence (n > 1 is not available)".into(),
        ))
    }
    /// `Some(width)` when the model is an embedding model: [`Backend::embed`] returns vectors
    /// of this many values and the generation calls above are not used. `None` (the default):
    /// a generation model.
    fn embedding_dim(&self) -> Option<usize> {
        None
    }
    /// Embed every input (each non-empty and within [`Backend::n_ctx`]) from an empty state:
    /// one pooled vector per input, in order (not normalised: the HTTP layer
    /// scales it as the request asks). Needs no sequence slot.
    fn embed(&mut self, inputs: &[&[u32]]) -> Result<Vec<Vec<f32>>, BackendError> {
        let _ = inputs;
        Err(BackendError(
            "this model is a generation model; it does not produce embeddings".into(),
        ))
    }
}

/// A failure to turn text into tokens (or to render a chat template).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct TokenizeError(pub String);

/// Text ↔ tokens for one model, as the HTTP handlers and the scheduler thread need them.
///
/// A seam, not a second tokenizer: the real implementation wraps [`bitnet_tokenizer::Tokenizer`]
/// and its chat template ([`bitnet::BitnetTokenizer`]); the tests' deterministic byte-level
/// stand-in (`server/tests/common/`) is the other.
pub trait TokenCodec: Send + Sync {
    /// The number of token ids (ids are `0..vocab_size`).
    fn vocab_size(&self) -> usize;
    /// Encode `text`. `add_bos`: prepend the model's beginning-of-text token if it has one.
    /// `parse_special`: recognise special-token text (e.g. `<|eot_id|>`) as those tokens.
    fn encode(
        &self,
        text: &str,
        add_bos: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, TokenizeError>;
    /// The raw bytes a token stands for (special tokens: their text). `None` for ids out of range.
    /// These bytes may be a fragment of a multi-byte UTF-8 character.
    fn token_bytes(&self, id: u32) -> Option<Vec<u8>>;
    /// Is this an end-of-generation token (EOS, EOT, ...)?
    fn is_eog(&self, id: u32) -> bool;
    /// Is this a control token (`<|begin_of_text|>`, `<|eot_id|>`, ...)? Generated control
    /// tokens produce no output text (the scheduler's policy, like llama.cpp's server).
    fn is_control(&self, id: u32) -> bool;
    /// Render a conversation with the model's chat template, ending with the assistant prefix
    /// when `add_generation_prompt` is set. The result is encoded with `parse_special = true`
    /// and `add_bos = false` (templates write the BOS text themselves).
    fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, TokenizeError>;

    /// Encode one input of an embedding request: special-token text recognised, and the
    /// beginning/end tokens the model's metadata asks for (`tokenizer.ggml.add_bos_token`,
    /// `add_eos_token`: a last-token-pooled model reads its summary off the appended EOS).
    fn encode_for_embedding(&self, text: &str) -> Result<Vec<u32>, TokenizeError> {
        self.encode(text, true, true)
    }

    /// Decode ids to text; invalid UTF-8 becomes U+FFFD. Errors name the first bad id.
    fn decode(&self, ids: &[u32]) -> Result<String, TokenizeError> {
        let mut bytes = Vec::new();
        for &id in ids {
            let piece = self.token_bytes(id).ok_or_else(|| {
                TokenizeError(format!(
                    "token id {id} is out of range (vocabulary size {})",
                    self.vocab_size()
                ))
            })?;
            bytes.extend_from_slice(&piece);
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// Picks the next token for one sequence. `logits` may be modified in place (penalties,
/// temperature, truncation); `history` is the prompt followed by the tokens generated so far.
pub trait TokenSampler: Send {
    fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32;
}

impl<F: FnMut(&mut [f32], &[u32]) -> u32 + Send> TokenSampler for F {
    fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        self(logits, history)
    }
}

/// Makes one [`TokenSampler`] per request (each with its own RNG seeded from the params).
pub type SamplerFactory = Arc<dyn Fn(&SamplingParams) -> Box<dyn TokenSampler> + Send + Sync>;

/// Restricts what one sequence may generate (a JSON schema, a grammar): the scheduler masks the
/// logits before each draw and advances the state with the drawn token. The real one is
/// `bitnet_constraint::Constraint` (wrapped in `engine/grammar.rs`); the engine only needs these
/// calls.
pub trait OutputConstraint: Send {
    /// An independent copy of the current state (each choice of an `n > 1` request gets one).
    fn fork(&self) -> Box<dyn OutputConstraint>;
    /// Set the logits of every token not allowed now to -inf. Err: no token is allowed (the
    /// grammar is at a dead end); the message says so.
    fn mask(&mut self, logits: &mut [f32]) -> Result<(), String>;
    /// Advance by the drawn token. Err: the token was not allowed (an engine bug).
    fn accept(&mut self, token: u32) -> Result<(), String>;
    /// The output is complete and nothing more may follow: the generation ends here.
    fn is_finished(&self) -> bool;
}

impl fmt::Debug for dyn OutputConstraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OutputConstraint")
    }
}

/// The size of a backend's prompt cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PromptCacheStats {
    /// Ended sequences whose KV is kept.
    pub entries: usize,
    /// Bytes their KV takes.
    pub bytes: usize,
}

/// One generation job, as the scheduler receives it.
#[derive(Debug)]
pub struct GenerationRequest {
    /// The full prompt, already tokenized (BOS included when wanted). Must not be empty.
    pub prompt_tokens: Vec<u32>,
    /// The most tokens to generate; `prompt_tokens.len() + max_tokens` must fit the context.
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Stop strings: generation ends *before* the first occurrence of any of them, which is
    /// never sent to the client.
    pub stop: Vec<String>,
    /// `None`: no log-probabilities. `Some(n)`: the chosen token's logprob plus the top `n`.
    pub logprobs: Option<usize>,
    /// Keep generating past end-of-generation tokens (llama.cpp's `ignore_eos`).
    pub ignore_eos: bool,
    /// What the output must match (a JSON schema, a grammar), if anything. It also ends the
    /// generation once complete, `ignore_eos` or not.
    pub constraint: Option<Box<dyn OutputConstraint>>,
    /// Independent completions of the one prompt (OpenAI's `n`, at least 1): the prompt is
    /// processed once and its KV cache copied to each choice; choice `i` draws with seed
    /// `sampling.seed + i`. Each choice takes one of the `parallel` slots.
    pub n: usize,
    /// May the prompt's leading tokens come from the prompt cache (llama.cpp's `cache_prompt`,
    /// true unless a client says otherwise)? The sequence is offered to the cache when it ends
    /// either way.
    pub cache_prompt: bool,
}

/// The most choices one request may ask for (OpenAI's limit for `n`); `--parallel` bounds it
/// further.
pub const MAX_CHOICES: usize = 128;

/// Why a generation ended, in OpenAI's vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An end-of-generation token or a stop string.
    Stop,
    /// `max_tokens` reached.
    Length,
    /// The model produced tool calls (set by the HTTP layer when the reply parses as one).
    ToolCalls,
}

/// Token counts for one request (or one of its choices), serialized as OpenAI's `usage`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
    /// Of `prompt_tokens`, how many leading ones came from the prompt cache instead of being
    /// computed (OpenAI's `prompt_tokens_details.cached_tokens`).
    #[serde(rename = "prompt_tokens_details", serialize_with = "cached_details")]
    pub cached_tokens: usize,
}

impl Usage {
    /// `prompt` tokens, the first `cached` of them from the prompt cache, and `completion`
    /// generated ones.
    pub fn new(prompt: usize, cached: usize, completion: usize) -> Usage {
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
            cached_tokens: cached,
        }
    }

    /// The usage of a request from its choices' usages: the prompt counted once (it was
    /// processed once for all of them), the completion tokens added up. Zero for no choices.
    pub fn of_choices(choices: impl IntoIterator<Item = Usage>) -> Usage {
        let mut choices = choices.into_iter();
        let Some(first) = choices.next() else {
            return Usage::default();
        };
        let completion =
            first.completion_tokens + choices.map(|c| c.completion_tokens).sum::<usize>();
        Usage::new(first.prompt_tokens, first.cached_tokens, completion)
    }

    /// Prompt tokens that were computed (not taken from the prompt cache).
    pub fn computed_prompt_tokens(&self) -> usize {
        self.prompt_tokens - self.cached_tokens.min(self.prompt_tokens)
    }
}

fn cached_details<S: serde::Serializer>(cached: &usize, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeStruct;
    let mut details = s.serialize_struct("PromptTokensDetails", 1)?;
    details.serialize_field("cached_tokens", cached)?;
    details.end()
}

/// A candidate token with its log-probability (natural log of the softmax of the raw logits).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub id: u32,
    /// The token's bytes (possibly not valid UTF-8 on their own).
    pub bytes: Vec<u8>,
    pub logprob: f32,
}

/// Log-probability information for one generated token.
#[derive(Debug, Clone, PartialEq)]
pub struct LogprobInfo {
    pub chosen: TokenLogprob,
    /// The most likely tokens, best first (length = the requested `n`).
    pub top: Vec<TokenLogprob>,
}

/// What the scheduler sends back for a request.
#[derive(Debug, Clone)]
pub enum Event {
    /// One generated token. `text` is the newly releasable text: it can be empty (an incomplete
    /// UTF-8 character, or a possible stop-string prefix held back) or include text held back
    /// from earlier tokens.
    Token {
        /// Which choice (0..n) this token belongs to.
        choice: usize,
        id: u32,
        text: String,
        logprob: Option<LogprobInfo>,
    },
    /// One choice ended normally. `text` is held-back text released at the end (a partial
    /// stop-string prefix that never completed). Nothing follows for this choice; the request
    /// is over when every choice is done.
    Done {
        choice: usize,
        finish_reason: FinishReason,
        usage: Usage,
        /// The stop string that ended generation, if any.
        stop_word: Option<String>,
        text: String,
    },
    /// The generation failed (backend error or shutdown), for every choice. Nothing follows.
    Failed { message: String },
}

/// Why a request was not accepted.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SubmitError {
    #[error("the prompt is empty: give at least one token")]
    EmptyPrompt,
    #[error(
        "the prompt ({prompt} tokens) plus max_tokens ({max_tokens}) exceeds the model's context \
         of {n_ctx} tokens; shorten the prompt or lower max_tokens to at most {room}",
        room = n_ctx.saturating_sub(*prompt)
    )]
    ContextOverflow {
        prompt: usize,
        max_tokens: usize,
        n_ctx: usize,
    },
    #[error("token id {id} is out of range: the vocabulary has {n_vocab} tokens")]
    TokenOutOfRange { id: u32, n_vocab: usize },
    #[error("input {index} is empty: every input needs at least one token")]
    EmptyInput { index: usize },
    #[error(
        "input {index} is {tokens} tokens but the model's context is {n_ctx}; shorten it (or ask \
         for truncation)"
    )]
    InputTooLong {
        index: usize,
        tokens: usize,
        n_ctx: usize,
    },
    #[error(
        "n = {n} choices need {n} of the server's {parallel} sequence slots; ask for at most \
         {parallel} (or start the server with a larger --parallel)"
    )]
    TooManyChoices { n: usize, parallel: usize },
    #[error("the loaded model is an embedding model; it cannot generate text")]
    NotGenerative,
    #[error("the loaded model is a generation model; it does not produce embeddings")]
    NotEmbedding,
    #[error("the request queue is full ({capacity} waiting); retry shortly")]
    QueueFull { capacity: usize },
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// A model ready to serve.
pub struct LoadedModel {
    pub backend: Box<dyn Backend>,
    pub tokenizer: Arc<dyn TokenCodec>,
    pub sampler: SamplerFactory,
    /// The kernel set chosen for this CPU (shown by /health and /metrics), e.g. `avx512-vnni`.
    pub kernel: String,
}

/// A failure to load a model file.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct LoadError(pub String);

/// Turns a verified model file into a [`LoadedModel`]. Runs on a blocking thread.
pub trait ModelLoader: Send + Sync {
    /// `options`: context, threads, kernels, head (the model's own load options);
    /// `parallel`: the most sequences decoded together (KV cache slots to allocate).
    fn load(
        &self,
        path: &Path,
        options: &LoadOptions,
        parallel: usize,
    ) -> Result<LoadedModel, LoadError>;
}

/// Scheduler settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The most sequences decoded together.
    pub parallel: usize,
    /// The most requests waiting for a slot when all `parallel` are busy (at least 1); more get
    /// [`SubmitError::QueueFull`].
    pub queue_size: usize,
    /// The longest prompt chunk fed in one prefill call, so a long prompt does not stall the
    /// decode steps of other requests for its whole length. For an embedding model: the
    /// tokens of the inputs embedded in one backend call (always at least one input).
    pub prefill_chunk: usize,
    /// The prompt cache's budget in bytes (0 disables it), handed to the backend at start
    /// ([`Backend::set_prompt_cache_budget`]). `None`: leave the backend as its loader set it
    /// (the serve command's loader sizes it from `--cache-ram` and the memory available; a
    /// backend nobody sized keeps nothing).
    pub cache_ram: Option<usize>,
}

/// The prompt cache's budget when none is given: 1 GiB.
pub const DEFAULT_CACHE_RAM: usize = 1 << 30;

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            parallel: 4,
            queue_size: 64,
            prefill_chunk: 512,
            cache_ram: Some(DEFAULT_CACHE_RAM),
        }
    }
}

/// Counters shared between the scheduler thread and readers (metrics, tests).
#[derive(Debug, Default)]
pub(crate) struct SharedCounters {
    pub queued: AtomicUsize,
    pub active: AtomicUsize,
    /// Prompt tokens run through the model (embedding inputs included); not the cached ones.
    pub prompt_tokens: AtomicU64,
    /// Of those, the ones taken from the prompt cache.
    pub prompt_tokens_cached: AtomicU64,
    pub generated_tokens: AtomicU64,
    /// The prompt cache's size after the scheduler's last change to it.
    pub prompt_cache_entries: AtomicUsize,
    pub prompt_cache_bytes: AtomicUsize,
    pub decode_steps: AtomicU64,
    /// Decode throughput over the last measurement window, tokens/s, stored as f64 bits.
    pub tokens_per_second_bits: AtomicU64,
    pub shutting_down: AtomicBool,
    pub abort: AtomicBool,
    /// Set once when the scheduler can serve no more (it panicked): the engine is dead.
    pub fatal: std::sync::OnceLock<String>,
}

/// What an embedding request gets back: one vector per input, in order, or why it failed.
pub type EmbedResult = Result<Vec<Vec<f32>>, String>;

/// A submitted request on its way to the scheduler.
pub(crate) enum Job {
    Generate {
        request: GenerationRequest,
        events: mpsc::UnboundedSender<Event>,
    },
    Embed {
        inputs: Vec<Vec<u32>>,
        reply: tokio::sync::oneshot::Sender<EmbedResult>,
    },
}

/// The cloneable way in: submit requests, read stats, shut down.
#[derive(Clone)]
pub struct EngineHandle {
    jobs: std::sync::mpsc::SyncSender<Job>,
    wake: Arc<scheduler::Wake>,
    counters: Arc<SharedCounters>,
    n_ctx: usize,
    n_vocab: usize,
    embedding_dim: Option<usize>,
    parallel: usize,
    queue_size: usize,
}

impl fmt::Debug for EngineHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EngineHandle")
            .field("n_ctx", &self.n_ctx)
            .field("n_vocab", &self.n_vocab)
            .field("queue_size", &self.queue_size)
            .finish_non_exhaustive()
    }
}

impl EngineHandle {
    /// The context length of the loaded model.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// `Some(width)` for an embedding model (see [`Backend::embedding_dim`]).
    pub fn embedding_dim(&self) -> Option<usize> {
        self.embedding_dim
    }

    /// Check a request against the model's limits and queue it. Events arrive on the returned
    /// receiver; dropping the receiver cancels the generation (checked before every step).
    pub fn submit(
        &self,
        request: GenerationRequest,
    ) -> Result<mpsc::UnboundedReceiver<Event>, SubmitError> {
        if self.counters.shutting_down.load(Ordering::SeqCst) {
            return Err(SubmitError::ShuttingDown);
        }
        if self.embedding_dim.is_some() {
            return Err(SubmitError::NotGenerative);
        }
        if request.n == 0 || request.n > self.parallel.min(MAX_CHOICES) {
            return Err(SubmitError::TooManyChoices {
                n: request.n,
                parallel: self.parallel.min(MAX_CHOICES),
            });
        }
        let prompt = request.prompt_tokens.len();
        if prompt == 0 {
            return Err(SubmitError::EmptyPrompt);
        }
        if prompt.saturating_add(request.max_tokens) > self.n_ctx {
            return Err(SubmitError::ContextOverflow {
                prompt,
                max_tokens: request.max_tokens,
                n_ctx: self.n_ctx,
            });
        }
        if let Some(&id) = request
            .prompt_tokens
            .iter()
            .find(|&&id| id as usize >= self.n_vocab)
        {
            return Err(SubmitError::TokenOutOfRange {
                id,
                n_vocab: self.n_vocab,
            });
        }
        let (tx, rx) = mpsc::unbounded_channel();
        self.enqueue(Job::Generate {
            request,
            events: tx,
        })?;
        Ok(rx)
    }

    /// Check an embedding request (its inputs already tokenized) against the model's limits
    /// and queue it. Concurrent requests are embedded together, up to the scheduler's batch
    /// budget per pass; dropping the receiver cancels what is not yet computed.
    pub fn submit_embedding(
        &self,
        inputs: Vec<Vec<u32>>,
    ) -> Result<tokio::sync::oneshot::Receiver<EmbedResult>, SubmitError> {
        if self.counters.shutting_down.load(Ordering::SeqCst) {
            return Err(SubmitError::ShuttingDown);
        }
        if self.embedding_dim.is_none() {
            return Err(SubmitError::NotEmbedding);
        }
        for (index, input) in inputs.iter().enumerate() {
            if input.is_empty() {
                return Err(SubmitError::EmptyInput { index });
            }
            if input.len() > self.n_ctx {
                return Err(SubmitError::InputTooLong {
                    index,
                    tokens: input.len(),
                    n_ctx: self.n_ctx,
                });
            }
            if let Some(&id) = input.iter().find(|&&id| id as usize >= self.n_vocab) {
                return Err(SubmitError::TokenOutOfRange {
                    id,
                    n_vocab: self.n_vocab,
                });
            }
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.enqueue(Job::Embed { inputs, reply: tx })?;
        Ok(rx)
    }

    /// Count a job in the queue and hand it to the scheduler, or refuse it when `parallel`
    /// running plus `queue_size` waiting are taken.
    fn enqueue(&self, job: Job) -> Result<(), SubmitError> {
        // Free slots take requests at once; beyond them, `queue_size` may wait. Count before
        // sending so the scheduler never sees a negative queue.
        let waiting = self.counters.queued.fetch_add(1, Ordering::SeqCst);
        let active = self.counters.active.load(Ordering::SeqCst);
        if waiting + active >= self.parallel + self.queue_size {
            self.counters.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(SubmitError::QueueFull {
                capacity: self.queue_size,
            });
        }
        match self.jobs.try_send(job) {
            Ok(()) => {
                self.wake.notify();
                Ok(())
            }
            Err(err) => {
                self.counters.queued.fetch_sub(1, Ordering::SeqCst);
                Err(match err {
                    std::sync::mpsc::TrySendError::Full(_) => SubmitError::QueueFull {
                        capacity: self.queue_size,
                    },
                    std::sync::mpsc::TrySendError::Disconnected(_) => SubmitError::ShuttingDown,
                })
            }
        }
    }

    /// Why the engine can serve no more requests, once it cannot (the scheduler panicked). A
    /// fatal state is permanent: the server reports it on `/health` and exits.
    pub fn fatal(&self) -> Option<String> {
        self.counters.fatal.get().cloned()
    }

    /// A snapshot of the scheduler's counters.
    pub fn stats(&self) -> EngineStats {
        let c = &self.counters;
        EngineStats {
            queued: c.queued.load(Ordering::Relaxed),
            active: c.active.load(Ordering::Relaxed),
            prompt_tokens: c.prompt_tokens.load(Ordering::Relaxed),
            prompt_tokens_cached: c.prompt_tokens_cached.load(Ordering::Relaxed),
            prompt_cache_entries: c.prompt_cache_entries.load(Ordering::Relaxed),
            prompt_cache_bytes: c.prompt_cache_bytes.load(Ordering::Relaxed),
            generated_tokens: c.generated_tokens.load(Ordering::Relaxed),
            decode_steps: c.decode_steps.load(Ordering::Relaxed),
            tokens_per_second: f64::from_bits(c.tokens_per_second_bits.load(Ordering::Relaxed)),
        }
    }

    /// Refuse new requests from now on; running and queued ones continue.
    pub fn begin_shutdown(&self) {
        self.counters.shutting_down.store(true, Ordering::SeqCst);
        self.wake.notify();
    }

    /// Stop now: every running or queued request gets [`Event::Failed`] and the scheduler
    /// thread exits.
    pub fn abort(&self) {
        self.counters.shutting_down.store(true, Ordering::SeqCst);
        self.counters.abort.store(true, Ordering::SeqCst);
        self.wake.notify();
    }

    /// Are any requests queued or running?
    pub fn is_busy(&self) -> bool {
        self.counters.queued.load(Ordering::SeqCst) + self.counters.active.load(Ordering::SeqCst)
            > 0
    }
}

/// A running engine: the handle plus what handlers need to build prompts and name the model.
pub struct Engine {
    pub handle: EngineHandle,
    pub tokenizer: Arc<dyn TokenCodec>,
    pub kernel: String,
    /// The vocabulary as the grammar engine sees it, built on the first structured request.
    grammar: std::sync::OnceLock<Result<Arc<bitnet_constraint::Vocabulary>, String>>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("handle", &self.handle)
            .field("kernel", &self.kernel)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Move the model's backend onto a new scheduler thread and start serving.
    pub fn start(model: LoadedModel, config: EngineConfig) -> std::io::Result<Engine> {
        let LoadedModel {
            mut backend,
            tokenizer,
            sampler,
            kernel,
        } = model;
        let config = EngineConfig {
            parallel: config.parallel.max(1),
            queue_size: config.queue_size.max(1),
            prefill_chunk: config.prefill_chunk.max(1),
            cache_ram: config.cache_ram,
        };
        // An embedding model's inputs are embedded from an empty state: no prompt cache.
        if let Some(bytes) = config.cache_ram
            && backend.embedding_dim().is_none()
        {
            backend.set_prompt_cache_budget(bytes);
        }
        let n_ctx = backend.n_ctx();
        let n_vocab = backend.n_vocab().min(tokenizer.vocab_size().max(1));
        let embedding_dim = backend.embedding_dim();
        // The channel holds requests not yet admitted: up to `parallel` the scheduler has not
        // picked up yet plus `queue_size` waiting for a slot. The limit is checked in `submit`;
        // the capacity is only the hard bound.
        let (jobs_tx, jobs_rx) = std::sync::mpsc::sync_channel(config.parallel + config.queue_size);
        let wake = Arc::new(scheduler::Wake::default());
        let counters = Arc::new(SharedCounters::default());
        let handle = EngineHandle {
            jobs: jobs_tx,
            wake: wake.clone(),
            counters: counters.clone(),
            n_ctx,
            n_vocab,
            embedding_dim,
            parallel: config.parallel,
            queue_size: config.queue_size,
        };
        let scheduler = scheduler::Scheduler::new(
            backend,
            tokenizer.clone(),
            sampler,
            config,
            jobs_rx,
            wake,
            counters,
        );
        let thread = std::thread::Builder::new()
            .name("bitnet-scheduler".into())
            .spawn(move || scheduler.run())?;
        Ok(Engine {
            handle,
            tokenizer,
            kernel,
            grammar: std::sync::OnceLock::new(),
            thread: std::sync::Mutex::new(Some(thread)),
        })
    }

    /// The model's vocabulary for the grammar engine (structured outputs, tool calls): built
    /// from the tokenizer on first use (a blocking call: run it on the blocking pool), then
    /// shared. The error, if any, is kept and returned again.
    pub fn grammar_vocabulary(&self) -> Result<Arc<bitnet_constraint::Vocabulary>, String> {
        self.grammar
            .get_or_init(|| {
                let start = std::time::Instant::now();
                let built = grammar::vocabulary(&*self.tokenizer)
                    .map(Arc::new)
                    .map_err(|e| e.to_string());
                tracing::info!(
                    elapsed_ms = start.elapsed().as_millis() as u64,
                    ok = built.is_ok(),
                    "grammar vocabulary built"
                );
                built
            })
            .clone()
    }

    /// Abort everything and wait for the scheduler thread to exit.
    pub fn stop(&self) {
        self.handle.abort();
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.handle.abort();
    }
}
