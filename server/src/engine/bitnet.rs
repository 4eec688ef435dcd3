//! The real engine behind the server's boundary: a [`ModelLoader`] that maps a GGUF file into a
//! [`bitnet_model::Model`], its tokenizer and chat template, and the sampler.
//!
//! Each live sequence owns a KV cache; a decode step runs every sequence's next token through
//! one batched forward pass (one weight pass for all of them). Ended sequences' caches go to
//! the prompt cache ([`super::prompt_cache`]) and new sequences start from it when their prompt
//! begins the same way. This module adapts types; it holds no numerics of its own.

use super::prompt_cache::PromptCache;
use super::{
    Backend, BackendError, LoadError, LoadedModel, ModelLoader, PromptCacheStats, SamplerFactory,
    SeqId, TokenCodec, TokenSampler, TokenizeError,
};
use crate::sampling::{Sampler, SamplingParams};
use bitnet_gguf::GgufFile;
use bitnet_model::{KvCache, LoadOptions, Logits, Model, ModelKind, SeqInput};
use bitnet_tokenizer::{self as tok, ChatMessage, ChatTemplate};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// Loads BitNet GGUF files with the kernels chosen for this CPU (or `BITNET_KERNEL`, or
/// `LoadOptions::kernels`).
#[derive(Debug, Clone, Copy, Default)]
pub struct BitnetLoader;

impl ModelLoader for BitnetLoader {
    fn load(
        &self,
        path: &Path,
        options: &LoadOptions,
        parallel: usize,
    ) -> Result<LoadedModel, LoadError> {
        let file = GgufFile::open(path).map_err(|e| LoadError(e.to_string()))?;
        let model = Model::load(&file, options).map_err(|e| LoadError(e.to_string()))?;
        loaded_model(&file, model, parallel)
    }
}

/// A loaded [`Model`] with its tokenizer, chat template and sampler, ready for
/// [`super::Engine::start`]. `parallel`: KV cache slots (sequences decoded together).
pub fn loaded_model(
    file: &GgufFile,
    model: Model,
    parallel: usize,
) -> Result<LoadedModel, LoadError> {
    let err = |e: &dyn std::fmt::Display| LoadError(e.to_string());
    let data = tok::TokenizerData::from_gguf(file).map_err(|e| err(&e))?;
    let tokenizer = tok::Tokenizer::new(data).map_err(|e| err(&e))?;
    let text_of = |id: Option<u32>| {
        id.map(|i| String::from_utf8_lossy(tokenizer.token_bytes(i)).into_owned())
            .unwrap_or_default()
    };
    // An embedding model is never prompted with a conversation: it has no chat template (and
    // the generation endpoints refuse it before any prompt work).
    let chat = match model.kind() {
        ModelKind::Generation => Some(
            ChatTemplate::for_model(
                &model.config.arch,
                tokenizer.chat_template(),
                &text_of(tokenizer.bos_id()),
                &text_of(tokenizer.eos_id()),
            )
            .map_err(|e| err(&e))?,
        ),
        ModelKind::Embedding {
            pooling,
            pooling_defaulted: true,
            ..
        } => {
            tracing::warn!(
                ?pooling,
                "the file has no pooling_type: assuming mean pooling, as llama.cpp does; check \
                 the model's documentation"
            );
            None
        }
        ModelKind::Embedding { .. } => None,
    };
    let kernel = format!("{} ({} threads)", model.kernels().name, model.threads());
    warm_up(&model)?;
    tracing::info!(
        kernel = %kernel,
        head = ?model.head(),
        n_ctx = model.n_ctx(),
        "model loaded"
    );
    let sampler: SamplerFactory = Arc::new(|p: &SamplingParams| {
        Box::new(SamplerAdapter {
            sampler: Sampler::new(p.clone()),
            prompt_len: None,
        }) as Box<dyn TokenSampler>
    });
    Ok(LoadedModel {
        backend: Box::new(BitnetBackend {
            model,
            seqs: HashMap::new(),
            next: 0,
            max_seqs: parallel.max(1),
            prompt_cache: PromptCache::default(),
        }),
        tokenizer: Arc::new(BitnetTokenizer { tokenizer, chat }),
        sampler,
        kernel,
    })
}

/// Tokens of the warm-up prompt: enough for the batched (prefill) code paths, small enough to
/// cost a fraction of a second on the 2B model.
const WARM_UP_TOKENS: u32 = 16;

/// Runs the model once before it serves: a short prompt, then one decode step (or one
/// embedding). The weights are memory-mapped, so without this the first request pays for
/// reading the whole file from disk and faulting it in (several times the cost of a warm
/// request); the scratch buffers and the thread pool are also set up here. Called while
/// `/health` still says `loading`.
fn warm_up(model: &Model) -> Result<(), LoadError> {
    let start = std::time::Instant::now();
    let n_vocab = model.config.n_vocab.max(1) as u32;
    // Room for the decode step after the prompt, in however small a context.
    let n_ctx = model.n_ctx();
    let len = (WARM_UP_TOKENS as usize)
        .min(n_ctx.saturating_sub(1))
        .max(1);
    let prompt: Vec<u32> = (0..len as u32).map(|i| i % n_vocab).collect();
    let ran = match model.kind() {
        ModelKind::Generation => {
            let mut cache = model.new_cache();
            let mut run = |tokens: &[u32]| {
                model.forward(&mut [SeqInput {
                    cache: &mut cache,
                    tokens,
                    logits: Logits::Last,
                }])
            };
            let prefilled = run(&prompt);
            if len < n_ctx {
                prefilled.and_then(|_| run(&prompt[..1]))
            } else {
                prefilled
            }
        }
        ModelKind::Embedding { .. } => model.embed(&[&prompt]),
    };
    ran.map_err(|e| LoadError(format!("the model failed its warm-up run: {e}")))?;
    tracing::info!(
        elapsed_ms = start.elapsed().as_millis() as u64,
        "warm-up run done (weights faulted in)"
    );
    Ok(())
}

/// The model plus one KV cache per live sequence, and the prompt cache of ended ones (no
/// budget until [`Backend::set_prompt_cache_budget`]).
pub struct BitnetBackend {
    model: Model,
    seqs: HashMap<SeqId, KvCache>,
    next: u32,
    max_seqs: usize,
    prompt_cache: PromptCache<KvCache>,
}

impl BitnetBackend {
    /// Refuse a new sequence when every slot is taken.
    fn check_slot(&self) -> Result<(), BackendError> {
        if self.seqs.len() >= self.max_seqs {
            return Err(BackendError(format!(
                "all {} sequence slots are in use (raise --parallel)",
                self.max_seqs
            )));
        }
        Ok(())
    }

    /// A live sequence with this cache (a slot is free: [`BitnetBackend::check_slot`]).
    fn add_sequence(&mut self, cache: KvCache) -> SeqId {
        let id = SeqId(self.next);
        self.next = self.next.wrapping_add(1);
        self.seqs.insert(id, cache);
        id
    }

    fn cache(&mut self, seq: SeqId) -> Result<KvCache, BackendError> {
        self.seqs
            .remove(&seq)
            .ok_or_else(|| BackendError(format!("unknown sequence {}", seq.0)))
    }
    /// One forward pass over every chunk (each sequence's tokens appended to its cache),
    /// returning the logits after each chunk's last token.
    fn forward_many(&mut self, chunks: &[(SeqId, &[u32])]) -> Result<Vec<Vec<f32>>, BackendError> {
        let mut caches = Vec::with_capacity(chunks.len());
        for &(seq, _) in chunks {
            match self.cache(seq) {
                Ok(c) => caches.push((seq, c)),
                Err(e) => {
                    for (s, c) in caches {
                        self.seqs.insert(s, c);
                    }
                    return Err(e);
                }
            }
        }
        let out = {
            let mut batch: Vec<SeqInput<'_>> = caches
                .iter_mut()
                .zip(chunks)
                .map(|((_, cache), (_, tokens))| SeqInput {
                    cache,
                    tokens,
                    logits: Logits::Last,
                })
                .collect();
            self.model.forward(&mut batch)
        };
        for (s, c) in caches {
            self.seqs.insert(s, c);
        }
        out.map_err(|e| BackendError(e.to_string()))
    }
}

impl Backend for BitnetBackend {
    fn n_ctx(&self) -> usize {
        self.model.n_ctx()
    }

    fn n_vocab(&self) -> usize {
        self.model.config.n_vocab
    }

    fn new_sequence(&mut self) -> Result<SeqId, BackendError> {
        self.check_slot()?;
        let cache = self.model.new_cache();
        Ok(self.add_sequence(cache))
    }

    fn new_sequence_for(
        &mut self,
        prompt: &[u32],
        reuse: bool,
    ) -> Result<(SeqId, usize), BackendError> {
        self.check_slot()?;
        let (cache, reused) = match reuse.then(|| self.prompt_cache.take(prompt)).flatten() {
            Some(found) => found,
            None => (self.model.new_cache(), 0),
        };
        Ok((self.add_sequence(cache), reused))
    }

    fn release(&mut self, seq: SeqId, tokens: &[u32], prompt_len: usize) {
        if let Some(cache) = self.seqs.remove(&seq) {
            self.prompt_cache.insert(tokens, prompt_len, cache);
        }
    }

    fn set_prompt_cache_budget(&mut self, bytes: usize) {
        self.prompt_cache.set_budget(bytes);
    }

    fn prompt_cache_stats(&self) -> PromptCacheStats {
        PromptCacheStats {
            entries: self.prompt_cache.len(),
            bytes: self.prompt_cache.bytes(),
        }
    }

    fn prefill(&mut self, seq: SeqId, tokens: &[u32]) -> Result<Vec<f32>, BackendError> {
        self.forward_many(&[(seq, tokens)]).map(|mut v| v.remove(0))
    }

    fn prefill_many(&mut self, chunks: &[(SeqId, &[u32])]) -> Result<Vec<Vec<f32>>, BackendError> {
        self.forward_many(chunks)
    }

    fn decode(&mut self, steps: &[(SeqId, u32)]) -> Result<Vec<Vec<f32>>, BackendError> {
        let chunks: Vec<(SeqId, &[u32])> = steps
            .iter()
            .map(|(seq, token)| (*seq, std::slice::from_ref(token)))
            .collect();
        self.forward_many(&chunks)
    }

    fn free(&mut self, seq: SeqId) {
        self.seqs.remove(&seq);
    }

    fn fork(&mut self, seq: SeqId) -> Result<SeqId, BackendError> {
        let copy = self
            .seqs
            .get(&seq)
            .ok_or_else(|| BackendError(format!("unknown sequence {}", seq.0)))?
            .clone();
        self.check_slot()?;
        Ok(self.add_sequence(copy))
    }

    fn embedding_dim(&self) -> Option<usize> {
        match self.model.kind() {
            ModelKind::Embedding { dim, .. } => Some(dim),
            ModelKind::Generation => None,
        }
    }

    fn embed(&mut self, inputs: &[&[u32]]) -> Result<Vec<Vec<f32>>, BackendError> {
        self.model
            .embed(inputs)
            .map_err(|e| BackendError(e.to_string()))
    }
}

/// The tokenizer and chat template as the server sees them (an embedding model has no
/// template).
pub struct BitnetTokenizer {
    tokenizer: tok::Tokenizer,
    chat: Option<ChatTemplate>,
}

impl BitnetTokenizer {
    pub fn new(tokenizer: tok::Tokenizer, chat: ChatTemplate) -> Self {
        Self {
            tokenizer,
            chat: Some(chat),
        }
    }

    /// Ids and token bytes only, no chat template (as for an embedding model): for tools that
    /// never render a conversation (`bench`).
    pub fn without_template(tokenizer: tok::Tokenizer) -> Self {
        Self {
            tokenizer,
            chat: None,
        }
    }
}

impl TokenCodec for BitnetTokenizer {
    fn vocab_size(&self) -> usize {
        self.tokenizer.vocab_size()
    }

    fn encode(
        &self,
        text: &str,
        add_bos: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, TokenizeError> {
        Ok(self.tokenizer.encode(text, add_bos, parse_special))
    }

    fn encode_for_embedding(&self, text: &str) -> Result<Vec<u32>, TokenizeError> {
        Ok(self.tokenizer.encode_for_embedding(text, true))
    }

    fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
        ((id as usize) < self.tokenizer.vocab_size())
            .then(|| self.tokenizer.token_bytes(id).to_vec())
    }

    fn is_eog(&self, id: u32) -> bool {
        self.tokenizer.is_eog(id)
    }

    fn is_control(&self, id: u32) -> bool {
        self.tokenizer.is_control(id)
    }

    fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, TokenizeError> {
        let chat = self.chat.as_ref().ok_or_else(|| {
            TokenizeError("the loaded model is an embedding model: it has no chat template".into())
        })?;
        chat.render(messages, add_generation_prompt)
            .map_err(|e| TokenizeError(e.to_string()))
    }
}

/// The engine's sampler behind the scheduler's per-request sampler interface. Presence and
/// frequency penalties count generated tokens only, so the prompt length is taken from the
/// first call (when nothing has been generated yet).
struct SamplerAdapter {
    sampler: Sampler,
    prompt_len: Option<usize>,
}

impl TokenSampler for SamplerAdapter {
    fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        let prompt_len = *self.prompt_len.get_or_insert(history.len());
        let generated = history.len().saturating_sub(prompt_len);
        self.sampler.sample(logits, history, generated)
    }
}
