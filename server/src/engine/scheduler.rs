//! The decode loop: one OS thread owns the [`Backend`] and serves every request with continuous
//! batching.
//!
//! Each iteration: drop sequences whose client went away (their event receiver was dropped) or
//! that ended (their KV goes to the backend's prompt cache, [`Backend::release`]), admit queued
//! requests while fewer than `parallel` run (each starting from the longest cached prefix of
//! its prompt, [`Backend::new_sequence_for`], unless it asked not to), feed the pending prompt
//! chunks of every sequence still in prefill in one batch (up to `prefill_chunk` tokens), then
//! run ONE decode step over every sequence that has a token to feed, sample, and send the
//! results. New requests thus join between steps without waiting for others to finish, and a
//! cancelled request costs at most the step already under way.
//!
//! An embedding model's requests ([`Job::Embed`]) go through the same loop: each iteration
//! embeds the next inputs of the waiting requests, oldest first, up to `prefill_chunk` tokens
//! in one backend call, so concurrent requests share weight passes; a request is answered once
//! all its inputs are done, and one whose client left is skipped.
//!
//! This is the ONE generation loop: the HTTP endpoints and the CLI `generate` subcommand both
//! submit requests here. Per generated token it applies the one output policy: end-of-generation
//! tokens end the request (unless `ignore_eos`), control tokens produce no text, and text goes
//! through [`TextStream`] (UTF-8-safe, stop strings held back only while they may match).
//!
//! This module does NOT validate requests (see [`super::EngineHandle::submit`]), sample
//! (the per-request [`TokenSampler`] does) or format responses.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use super::{
    Backend, BackendError, EmbedResult, EngineConfig, Event, FinishReason, GenerationRequest, Job,
    LogprobInfo, OutputConstraint, SamplerFactory, SeqId, SharedCounters, TokenCodec, TokenLogprob,
    TokenSampler, Usage,
};
use bitnet_tokenizer::TextStream;

/// A snapshot of the scheduler's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EngineStats {
    /// Requests waiting for a slot.
    pub queued: usize,
    /// Requests being prefilled or decoded.
    pub active: usize,
    /// Prompt tokens run through the model since start (embedding inputs included).
    pub prompt_tokens: u64,
    /// Prompt tokens taken from the prompt cache instead, since start.
    pub prompt_tokens_cached: u64,
    /// Ended sequences whose KV the prompt cache holds now.
    pub prompt_cache_entries: usize,
    /// Bytes the prompt cache holds now.
    pub prompt_cache_bytes: usize,
    /// Tokens generated since start.
    pub generated_tokens: u64,
    /// Batched decode steps run since start.
    pub decode_steps: u64,
    /// Generated tokens per second over the last measurement window (0 when idle).
    pub tokens_per_second: f64,
}

/// Wakes the scheduler thread when it sleeps for lack of work.
#[derive(Debug, Default)]
pub(crate) struct Wake {
    pending: Mutex<bool>,
    cv: Condvar,
}

impl Wake {
    pub(crate) fn notify(&self) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        *pending = true;
        self.cv.notify_all();
    }

    fn wait(&self, timeout: Duration) {
        let pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let (mut pending, _) = self
            .cv
            .wait_timeout_while(pending, timeout, |p| !*p)
            .unwrap_or_else(|p| p.into_inner());
        *pending = false;
    }
}

/// One admitted sequence: a request, or one choice of an `n > 1` request.
struct Active {
    seq: SeqId,
    /// Which choice of its request this is (0 for the one that prefills the prompt).
    choice: usize,
    events: UnboundedSender<Event>,
    /// Prompt followed by generated tokens.
    history: Vec<u32>,
    prompt_len: usize,
    /// How many leading prompt tokens came from the prompt cache.
    cached: usize,
    /// How many prompt tokens the backend has seen (cached ones included).
    prefilled: usize,
    /// The last sampled token, not yet fed to the backend.
    next_input: Option<u32>,
    generated: usize,
    max_tokens: usize,
    sampler: Box<dyn TokenSampler>,
    text: TextStream,
    logprobs: Option<usize>,
    ignore_eos: bool,
    constraint: Option<Box<dyn OutputConstraint>>,
    /// The other choices of this request, started from a copy of this sequence's KV cache once
    /// the prompt is processed (each holds a slot from admission on).
    forks: Vec<Fork>,
    /// The client went away or the request ended: free at the next cleanup.
    finished: bool,
    /// It ended with an error: its KV cache may be incomplete and is not offered to the
    /// prompt cache.
    failed: bool,
}

/// A choice of an `n > 1` request waiting for its prompt to be processed.
struct Fork {
    choice: usize,
    sampler: Box<dyn TokenSampler>,
    text: TextStream,
    constraint: Option<Box<dyn OutputConstraint>>,
}

/// One admitted embedding request.
struct EmbedJob {
    inputs: Vec<Vec<u32>>,
    /// Vectors of the inputs done so far (`inputs[..done.len()]`).
    done: Vec<Vec<f32>>,
    reply: tokio::sync::oneshot::Sender<EmbedResult>,
}

/// How often the tokens/s gauge is recomputed.
const RATE_WINDOW: Duration = Duration::from_secs(1);
/// How long the thread sleeps without work before re-checking flags.
const IDLE_WAIT: Duration = Duration::from_millis(200);

pub(crate) struct Scheduler {
    backend: Box<dyn Backend>,
    tokenizer: Arc<dyn TokenCodec>,
    sampler: SamplerFactory,
    config: EngineConfig,
    jobs: Receiver<Job>,
    wake: Arc<Wake>,
    counters: Arc<SharedCounters>,
    active: Vec<Active>,
    embeds: Vec<EmbedJob>,
    /// A job taken from the queue that needs more free slots than there are (`n` choices):
    /// admitted first once they free up, so it is neither lost nor overtaken.
    waiting: Option<Job>,
    n_vocab: usize,
    rate_window_start: Instant,
    rate_window_tokens: u64,
}

impl Scheduler {
    pub(crate) fn new(
        backend: Box<dyn Backend>,
        tokenizer: Arc<dyn TokenCodec>,
        sampler: SamplerFactory,
        config: EngineConfig,
        jobs: Receiver<Job>,
        wake: Arc<Wake>,
        counters: Arc<SharedCounters>,
    ) -> Self {
        let n_vocab = backend.n_vocab();
        Self {
            backend,
            tokenizer,
            sampler,
            config,
            jobs,
            wake,
            counters,
            active: Vec::new(),
            embeds: Vec::new(),
            waiting: None,
            n_vocab,
            rate_window_start: Instant::now(),
            rate_window_tokens: 0,
        }
    }

    /// The thread body. Returns when aborted or when every handle is gone.
    pub(crate) fn run(mut self) {
        let result = catch_unwind(AssertUnwindSafe(|| self.run_loop()));
        if let Err(panic) = result {
            let message = panic_message(&*panic);
            tracing::error!(%message, "the scheduler thread panicked; failing all requests");
            self.counters.abort.store(true, Ordering::SeqCst);
            self.counters.shutting_down.store(true, Ordering::SeqCst);
            // The backend's state is unknown after a panic: do not call into it again.
            let message = format!("internal error in the inference engine: {message}");
            let _ = self.counters.fatal.set(message.clone());
            self.fail_everything(&message, false);
        }
        self.counters.active.store(0, Ordering::SeqCst);
        self.counters
            .tokens_per_second_bits
            .store(0f64.to_bits(), Ordering::Relaxed);
    }

    fn run_loop(&mut self) {
        loop {
            if self.counters.abort.load(Ordering::SeqCst) {
                self.fail_everything(
                    "the server is shutting down; the request was cancelled",
                    true,
                );
                return;
            }
            self.drop_finished();
            let disconnected = self.admit();
            self.update_rate();
            if self.active.is_empty() && self.embeds.is_empty() {
                if disconnected {
                    return;
                }
                self.wake.wait(IDLE_WAIT);
                continue;
            }
            self.embed_batch();
            self.prefill_chunks();
            self.drop_finished();
            self.decode_step();
        }
    }

    /// Release sequences that ended or whose client disconnected (to the prompt cache unless
    /// they failed); forget embedding requests whose client disconnected.
    fn drop_finished(&mut self) {
        let backend = &mut self.backend;
        let mut released = false;
        self.active.retain(|a| {
            if a.failed {
                backend.free(a.seq);
                false
            } else if a.finished || a.events.is_closed() {
                backend.release(a.seq, &a.history, a.prompt_len);
                released = true;
                false
            } else {
                true
            }
        });
        self.embeds.retain(|e| !e.reply.is_closed());
        self.store_active();
        if released {
            self.store_cache_stats();
        }
    }

    /// Publish the prompt cache's size.
    fn store_cache_stats(&self) {
        let stats = self.backend.prompt_cache_stats();
        self.counters
            .prompt_cache_entries
            .store(stats.entries, Ordering::Relaxed);
        self.counters
            .prompt_cache_bytes
            .store(stats.bytes, Ordering::Relaxed);
    }

    /// Slots in use: every sequence, the choices waiting to fork from one, and every embedding
    /// request.
    fn slots_used(&self) -> usize {
        self.active.iter().map(|a| 1 + a.forks.len()).sum::<usize>() + self.embeds.len()
    }

    /// Publish how many slots are taken (generations, their pending choices, embedding
    /// requests).
    fn store_active(&self) {
        self.counters
            .active
            .store(self.slots_used(), Ordering::SeqCst);
    }

    /// Move queued requests into free slots. Returns true when no handle can submit any more.
    fn admit(&mut self) -> bool {
        loop {
            let job = match self.waiting.take() {
                Some(job) => job,
                None => match self.jobs.try_recv() {
                    Ok(job) => job,
                    Err(TryRecvError::Empty) => return false,
                    Err(TryRecvError::Disconnected) => return true,
                },
            };
            let need = match &job {
                Job::Generate { request, .. } => request.n.max(1),
                Job::Embed { .. } => 1,
            };
            if self.slots_used() + need > self.config.parallel {
                // Still counted as queued; `submit` bounded `n` by `parallel`, so it fits once
                // the running requests end.
                self.waiting = Some(job);
                return false;
            }
            // Count it active before it leaves the queue, so `submit` never sees a free slot
            // that is not there.
            self.counters
                .active
                .store(self.slots_used() + need, Ordering::SeqCst);
            self.counters.queued.fetch_sub(1, Ordering::SeqCst);
            match job {
                Job::Generate { request, events } => self.start(request, events),
                Job::Embed { inputs, reply } => {
                    if !reply.is_closed() {
                        let done = Vec::with_capacity(inputs.len());
                        self.embeds.push(EmbedJob {
                            inputs,
                            done,
                            reply,
                        });
                    }
                }
            }
            self.store_active();
        }
    }

    /// Embed the next inputs of the admitted embedding requests, oldest first, up to
    /// `prefill_chunk` tokens (at least one input) in ONE backend call; answer every request
    /// whose inputs are all done. A backend error fails the requests of this batch.
    fn embed_batch(&mut self) {
        let mut budget = self.config.prefill_chunk;
        // (request index, input index) of each input in this batch.
        let mut picked: Vec<(usize, usize)> = Vec::new();
        'requests: for (r, e) in self.embeds.iter().enumerate() {
            for i in e.done.len()..e.inputs.len() {
                let len = e.inputs[i].len();
                if !picked.is_empty() && len > budget {
                    break 'requests;
                }
                budget = budget.saturating_sub(len);
                picked.push((r, i));
            }
        }
        if picked.is_empty() {
            return;
        }
        let inputs: Vec<&[u32]> = picked
            .iter()
            .map(|&(r, i)| self.embeds[r].inputs[i].as_slice())
            .collect();
        let tokens: usize = inputs.iter().map(|t| t.len()).sum();
        let result = self.backend.embed(&inputs);
        self.counters
            .prompt_tokens
            .fetch_add(tokens as u64, Ordering::Relaxed);
        let vectors = match result {
            Ok(v) if v.len() == picked.len() => v,
            other => {
                let message = match other {
                    Err(err) => format!("embedding failed: {err}"),
                    Ok(v) => format!(
                        "internal error: the backend returned {} embeddings for {} inputs",
                        v.len(),
                        picked.len()
                    ),
                };
                let mut failed: Vec<usize> = picked.iter().map(|&(r, _)| r).collect();
                failed.dedup();
                for r in failed.into_iter().rev() {
                    let e = self.embeds.remove(r);
                    let _ = e.reply.send(Err(message.clone()));
                }
                self.store_active();
                return;
            }
        };
        for (&(r, _), v) in picked.iter().zip(vectors) {
            self.embeds[r].done.push(v);
        }
        let mut r = 0;
        while r < self.embeds.len() {
            if self.embeds[r].done.len() == self.embeds[r].inputs.len() {
                let e = self.embeds.remove(r);
                let _ = e.reply.send(Ok(e.done));
            } else {
                r += 1;
            }
        }
        self.store_active();
    }

    fn start(&mut self, request: GenerationRequest, events: UnboundedSender<Event>) {
        if events.is_closed() {
            return; // the client left while queued
        }
        let GenerationRequest {
            prompt_tokens,
            max_tokens,
            sampling,
            stop,
            logprobs,
            ignore_eos,
            constraint,
            n,
            cache_prompt,
        } = request;
        let prompt_len = prompt_tokens.len();
        if max_tokens == 0 {
            for choice in 0..n.max(1) {
                let _ = events.send(Event::Done {
                    choice,
                    finish_reason: FinishReason::Length,
                    usage: Usage::new(prompt_len, 0, 0),
                    stop_word: None,
                    text: String::new(),
                });
            }
            return;
        }
        let (seq, cached) = match self.backend.new_sequence_for(&prompt_tokens, cache_prompt) {
            Ok((seq, cached)) if cached < prompt_len => (seq, cached),
            Ok((seq, cached)) => {
                self.backend.free(seq);
                let _ = events.send(Event::Failed {
                    message: format!(
                        "internal error: the backend reused {cached} tokens of a \
                         {prompt_len}-token prompt (at most {} may be)",
                        prompt_len - 1
                    ),
                });
                return;
            }
            Err(err) => {
                let _ = events.send(Event::Failed {
                    message: format!("could not start a sequence: {err}"),
                });
                return;
            }
        };
        if cached > 0 {
            self.counters
                .prompt_tokens_cached
                .fetch_add(cached as u64, Ordering::Relaxed);
            self.store_cache_stats();
        }
        let sampler = (self.sampler)(&sampling);
        // Choice i draws from its own stream (seed + i), with its own copy of the constraint.
        let forks = (1..n.max(1))
            .map(|choice| Fork {
                choice,
                sampler: (self.sampler)(&crate::sampling::SamplingParams {
                    seed: sampling.seed.wrapping_add(choice as u64),
                    ..sampling.clone()
                }),
                text: TextStream::new(&stop),
                constraint: constraint.as_ref().map(|c| c.fork()),
            })
            .collect();
        let mut history = prompt_tokens;
        history.reserve(max_tokens);
        self.active.push(Active {
            seq,
            choice: 0,
            events,
            history,
            prompt_len,
            cached,
            prefilled: cached,
            next_input: None,
            generated: 0,
            max_tokens,
            sampler,
            text: TextStream::new(&stop),
            logprobs,
            ignore_eos,
            constraint,
            forks,
            finished: false,
            failed: false,
        });
    }

    /// Start the waiting choices of `active[index]`, whose prompt is now processed, from
    /// copies of its KV cache, each drawing its first token from the same `logits`.
    fn start_forks(&mut self, index: usize, logits: &[f32]) {
        let forks = std::mem::take(&mut self.active[index].forks);
        for fork in forks {
            let parent = &self.active[index];
            let seq = match self.backend.fork(parent.seq) {
                Ok(seq) => seq,
                Err(err) => {
                    let message = format!("could not start choice {}: {err}", fork.choice);
                    fail(&mut self.active[index], &message);
                    return;
                }
            };
            let child = Active {
                seq,
                choice: fork.choice,
                events: parent.events.clone(),
                history: parent.history.clone(),
                prompt_len: parent.prompt_len,
                cached: parent.cached,
                prefilled: parent.prompt_len,
                next_input: None,
                generated: 0,
                max_tokens: parent.max_tokens,
                sampler: fork.sampler,
                text: fork.text,
                logprobs: parent.logprobs,
                ignore_eos: parent.ignore_eos,
                constraint: fork.constraint,
                forks: Vec::new(),
                finished: false,
                failed: false,
            };
            self.active.push(child);
            let last = self.active.len() - 1;
            self.after_logits(last, &mut logits.to_vec());
        }
    }

    /// Feed the prompts still being prefilled, oldest first, up to `prefill_chunk` tokens in
    /// all, in ONE backend call: requests that arrive together are prefilled together (one
    /// weight pass) and then decode in step, instead of one prompt per iteration.
    fn prefill_chunks(&mut self) {
        let mut budget = self.config.prefill_chunk;
        let mut picked = Vec::new();
        for (i, a) in self.active.iter().enumerate() {
            if budget == 0 {
                break;
            }
            if a.finished || a.prefilled >= a.prompt_len {
                continue;
            }
            let end = (a.prefilled + budget).min(a.prompt_len);
            budget -= end - a.prefilled;
            picked.push((i, end));
        }
        if picked.is_empty() {
            return;
        }
        let chunks: Vec<(SeqId, &[u32])> = picked
            .iter()
            .map(|&(i, end)| {
                let a = &self.active[i];
                (a.seq, &a.history[a.prefilled..end])
            })
            .collect();
        let result = self.backend.prefill_many(&chunks);
        for &(i, end) in &picked {
            let a = &mut self.active[i];
            self.counters
                .prompt_tokens
                .fetch_add((end - a.prefilled) as u64, Ordering::Relaxed);
            a.prefilled = end;
        }
        let indices: Vec<usize> = picked.iter().map(|&(i, _)| i).collect();
        let Some(all) = self.checked_rows(&indices, result, "prompt processing") else {
            return;
        };
        for (i, mut logits) in indices.into_iter().zip(all) {
            if self.active[i].prefilled == self.active[i].prompt_len {
                if !self.active[i].forks.is_empty() {
                    self.start_forks(i, &logits);
                }
                self.after_logits(i, &mut logits);
            }
        }
    }

    /// The logits of a batched backend call, one vector per request in `indices`. On an error
    /// or a wrong number of vectors every one of those requests fails (`stage` names the
    /// step) and the result is `None`.
    fn checked_rows(
        &mut self,
        indices: &[usize],
        result: Result<Vec<Vec<f32>>, BackendError>,
        stage: &str,
    ) -> Option<Vec<Vec<f32>>> {
        let message = match result {
            Ok(all) if all.len() == indices.len() => return Some(all),
            Ok(all) => format!(
                "internal error: the backend returned {} logit rows for {} sequences",
                all.len(),
                indices.len()
            ),
            Err(err) => format!("{stage} failed: {err}"),
        };
        for &i in indices {
            fail(&mut self.active[i], &message);
        }
        None
    }

    /// One batched decode step over every sequence with a token to feed.
    fn decode_step(&mut self) {
        let mut indices = Vec::with_capacity(self.active.len());
        let mut steps = Vec::with_capacity(self.active.len());
        for (i, a) in self.active.iter().enumerate() {
            if let Some(token) = a.next_input {
                indices.push(i);
                steps.push((a.seq, token));
            }
        }
        if steps.is_empty() {
            return;
        }
        let result = self.backend.decode(&steps);
        self.counters.decode_steps.fetch_add(1, Ordering::Relaxed);
        let Some(all_logits) = self.checked_rows(&indices, result, "decoding") else {
            return;
        };
        for (i, mut logits) in indices.into_iter().zip(all_logits) {
            self.active[i].next_input = None;
            self.after_logits(i, &mut logits);
        }
    }

    /// Sample from fresh logits for sequence `index`, send the token, decide whether to go on.
    fn after_logits(&mut self, index: usize, logits: &mut [f32]) {
        let n_vocab = self.n_vocab;
        let a = &mut self.active[index];
        if logits.len() != n_vocab {
            let message = format!(
                "internal error: the backend returned {} logits, expected {n_vocab}",
                logits.len()
            );
            fail(a, &message);
            return;
        }
        let raw = a.logprobs.map(|_| logits.to_vec());
        if let Some(constraint) = &mut a.constraint
            && let Err(err) = constraint.mask(logits)
        {
            fail(
                a,
                &format!("the output constraint allows no token here: {err}"),
            );
            return;
        }
        let token = a.sampler.sample(logits, &a.history);
        if token as usize >= n_vocab {
            fail(
                a,
                &format!("internal error: the sampler chose token {token} of {n_vocab}"),
            );
            return;
        }
        a.generated += 1;
        a.history.push(token);
        self.counters
            .generated_tokens
            .fetch_add(1, Ordering::Relaxed);
        self.rate_window_tokens += 1;

        // Under a constraint an end-of-generation token is drawable only where the output is
        // complete, so it ends the choice even with `ignore_eos`.
        if (!a.ignore_eos || a.constraint.is_some()) && self.tokenizer.is_eog(token) {
            finish(a, FinishReason::Stop, None);
            return;
        }
        if let Some(constraint) = &mut a.constraint
            && let Err(err) = constraint.accept(token)
        {
            fail(
                a,
                &format!("internal error: the output constraint refused token {token}: {err}"),
            );
            return;
        }
        // Control tokens (`<|eot_id|>` under `ignore_eos`, `<|begin_of_text|>`, ...) produce no
        // text: one policy for every caller, like llama.cpp's server.
        let bytes = if self.tokenizer.is_control(token) {
            Vec::new()
        } else {
            self.tokenizer.token_bytes(token).unwrap_or_default()
        };
        let logprob = match (raw, a.logprobs) {
            (Some(raw), Some(top_n)) => Some(logprob_info(&raw, token, top_n, &*self.tokenizer)),
            _ => None,
        };
        let pushed = a.text.push(&bytes);
        if a.events
            .send(Event::Token {
                choice: a.choice,
                id: token,
                text: pushed.text,
                logprob,
            })
            .is_err()
        {
            a.finished = true; // the client is gone
            return;
        }
        if let Some(stop) = pushed.stop {
            finish(a, FinishReason::Stop, Some(stop));
        } else if a.constraint.as_ref().is_some_and(|c| c.is_finished()) {
            finish(a, FinishReason::Stop, None);
        } else if a.generated >= a.max_tokens {
            finish(a, FinishReason::Length, None);
        } else {
            a.next_input = Some(token);
        }
    }

    fn update_rate(&mut self) {
        let elapsed = self.rate_window_start.elapsed();
        if elapsed >= RATE_WINDOW {
            let rate = self.rate_window_tokens as f64 / elapsed.as_secs_f64();
            self.counters
                .tokens_per_second_bits
                .store(rate.to_bits(), Ordering::Relaxed);
            self.rate_window_start = Instant::now();
            self.rate_window_tokens = 0;
        }
    }

    fn fail_everything(&mut self, message: &str, free: bool) {
        for a in &mut self.active {
            fail(a, message);
            if free {
                self.backend.free(a.seq);
            }
        }
        self.active.clear();
        for e in self.embeds.drain(..) {
            let _ = e.reply.send(Err(message.to_string()));
        }
        let mut waiting = self.waiting.take();
        while let Some(job) = waiting.take().or_else(|| self.jobs.try_recv().ok()) {
            self.counters.queued.fetch_sub(1, Ordering::SeqCst);
            match job {
                Job::Generate { events, .. } => {
                    let _ = events.send(Event::Failed {
                        message: message.to_string(),
                    });
                }
                Job::Embed { reply, .. } => {
                    let _ = reply.send(Err(message.to_string()));
                }
            }
        }
        self.counters.active.store(0, Ordering::SeqCst);
    }
}

fn finish(a: &mut Active, finish_reason: FinishReason, stop_word: Option<String>) {
    let text = a.text.finish();
    let _ = a.events.send(Event::Done {
        choice: a.choice,
        finish_reason,
        usage: Usage::new(a.prompt_len, a.cached, a.generated),
        stop_word,
        text,
    });
    a.finished = true;
}

fn fail(a: &mut Active, message: &str) {
    let _ = a.events.send(Event::Failed {
        message: message.to_string(),
    });
    a.finished = true;
    a.failed = true;
    a.next_input = None;
}

/// Log-probabilities from raw logits: log-softmax of the chosen token and the top `n`.
fn logprob_info(raw: &[f32], chosen: u32, n: usize, tokenizer: &dyn TokenCodec) -> LogprobInfo {
    let max = raw.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = raw.iter().map(|&x| f64::from(x - max).exp()).sum();
    let log_z = f64::from(max) + sum.ln();
    let entry = |id: u32| TokenLogprob {
        id,
        bytes: tokenizer.token_bytes(id).unwrap_or_default(),
        logprob: (f64::from(raw[id as usize]) - log_z) as f32,
    };
    let mut top: Vec<u32> = Vec::with_capacity(n + 1);
    if n > 0 {
        // Partial selection keeps this O(vocab) for a 128k vocabulary.
        let mut ids: Vec<u32> = (0..raw.len() as u32).collect();
        let n = n.min(ids.len());
        let by_logit_desc =
            |a: &u32, b: &u32| raw[*b as usize].total_cmp(&raw[*a as usize]).then(a.cmp(b));
        if n < ids.len() {
            ids.select_nth_unstable_by(n - 1, by_logit_desc);
            ids.truncate(n);
        }
        ids.sort_by(by_logit_desc);
        top = ids;
    }
    LogprobInfo {
        chosen: entry(chosen),
        top: top.into_iter().map(entry).collect(),
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::super::SubmitError;
    use super::*;

    struct Bytes;
    impl TokenCodec for Bytes {
        fn vocab_size(&self) -> usize {
            4
        }
        fn encode(
            &self,
            _: &str,
            _: bool,
            _: bool,
        ) -> Result<Vec<u32>, crate::engine::TokenizeError> {
            Ok(vec![])
        }
        fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
            (id < 4).then(|| vec![b'a' + id as u8])
        }
        fn is_eog(&self, _: u32) -> bool {
            false
        }
        fn is_control(&self, _: u32) -> bool {
            false
        }
        fn apply_chat_template(
            &self,
            _: &[bitnet_tokenizer::ChatMessage],
            _: bool,
        ) -> Result<String, crate::engine::TokenizeError> {
            Ok(String::new())
        }
    }

    #[test]
    fn logprobs_are_a_log_softmax_and_top_is_sorted() {
        let raw = [0.0f32, 2.0, 1.0, -1.0];
        let info = logprob_info(&raw, 2, 2, &Bytes);
        let z: f64 = raw.iter().map(|&x| f64::from(x).exp()).sum();
        assert!((f64::from(info.chosen.logprob) - (1.0 - z.ln())).abs() < 1e-5);
        assert_eq!(
            info.top.iter().map(|t| t.id).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(info.top[0].bytes, b"b");
        let total: f64 = (0..4)
            .map(|i| f64::from(logprob_info(&raw, i, 0, &Bytes).chosen.logprob).exp())
            .sum();
        assert!((total - 1.0).abs() < 1e-5);
    }

    /// An embedding backend whose vector for an input is (its length, its first id, 0, ...):
    /// records the inputs of every call, and can hold the first call until released.
    struct Embedder {
        calls: Calls,
        hold: Hold,
    }

    impl Backend for Embedder {
        fn n_ctx(&self) -> usize {
            64
        }
        fn n_vocab(&self) -> usize {
            4
        }
        fn new_sequence(&mut self) -> Result<SeqId, BackendError> {
            Err(BackendError("no sequences in an embedder".into()))
        }
        fn prefill(&mut self, _: SeqId, _: &[u32]) -> Result<Vec<f32>, BackendError> {
            unreachable!("the scheduler never prefills for an embedding request")
        }
        fn decode(&mut self, _: &[(SeqId, u32)]) -> Result<Vec<Vec<f32>>, BackendError> {
            unreachable!("the scheduler never decodes for an embedding request")
        }
        fn free(&mut self, _: SeqId) {}
        fn embedding_dim(&self) -> Option<usize> {
            Some(3)
        }
        fn embed(&mut self, inputs: &[&[u32]]) -> Result<Vec<Vec<f32>>, BackendError> {
            let (held, cv) = &*self.hold;
            let mut held = held.lock().unwrap();
            while *held {
                held = cv.wait(held).unwrap();
            }
            self.calls
                .lock()
                .unwrap()
                .push(inputs.iter().map(|i| i.to_vec()).collect());
            if inputs.iter().any(|i| i[0] == 3) {
                return Err(BackendError("id 3 is poison".into()));
            }
            Ok(inputs
                .iter()
                .map(|i| vec![i.len() as f32, i[0] as f32, 0.0])
                .collect())
        }
    }

    /// The inputs of each `embed` call, in order.
    type Calls = Arc<Mutex<Vec<Vec<Vec<u32>>>>>;
    /// While `true`, `embed` waits (notified through the condvar).
    type Hold = Arc<(Mutex<bool>, Condvar)>;

    fn embedder(prefill_chunk: usize) -> (super::super::Engine, Calls, Hold) {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let hold = Arc::new((Mutex::new(true), Condvar::new()));
        let model = super::super::LoadedModel {
            backend: Box::new(Embedder {
                calls: calls.clone(),
                hold: hold.clone(),
            }),
            tokenizer: Arc::new(Bytes),
            sampler: Arc::new(|_: &crate::sampling::SamplingParams| {
                Box::new(|_: &mut [f32], _: &[u32]| 0u32) as Box<dyn TokenSampler>
            }),
            kernel: "test".into(),
        };
        let config = EngineConfig {
            parallel: 4,
            queue_size: 4,
            prefill_chunk,
            cache_ram: None,
        };
        (
            super::super::Engine::start(model, config).unwrap(),
            calls,
            hold,
        )
    }

    fn release(hold: &(Mutex<bool>, Condvar)) {
        *hold.0.lock().unwrap() = false;
        hold.1.notify_all();
    }

    #[test]
    fn concurrent_embedding_requests_share_backend_calls_within_the_token_budget() {
        let (engine, calls, hold) = embedder(6);
        let h = &engine.handle;
        assert_eq!(h.embedding_dim(), Some(3));
        // The first request is taken while the backend is held, so the next three queue up.
        let a = h.submit_embedding(vec![vec![1, 1]]).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let b = h.submit_embedding(vec![vec![2, 2, 2], vec![1]]).unwrap();
        let c = h.submit_embedding(vec![vec![2; 5]]).unwrap();
        let gone = h.submit_embedding(vec![vec![1; 4]]).unwrap();
        drop(gone); // its client left: never embedded
        release(&hold);
        let a = a.blocking_recv().unwrap().unwrap();
        let b = b.blocking_recv().unwrap().unwrap();
        let c = c.blocking_recv().unwrap().unwrap();
        assert_eq!(a, vec![vec![2.0, 1.0, 0.0]]);
        assert_eq!(b, vec![vec![3.0, 2.0, 0.0], vec![1.0, 1.0, 0.0]]);
        assert_eq!(c, vec![vec![5.0, 2.0, 0.0]]);
        let calls = calls.lock().unwrap().clone();
        // Call 1: request a alone. Call 2: b's two inputs (4 tokens) together; c's 5 tokens
        // would exceed the budget of 6, so call 3 is c alone.
        assert_eq!(
            calls,
            vec![
                vec![vec![1, 1]],
                vec![vec![2, 2, 2], vec![1]],
                vec![vec![2; 5]],
            ]
        );
        engine.stop();
    }

    #[test]
    fn an_input_longer_than_the_budget_runs_alone_and_a_backend_error_fails_only_its_batch() {
        let (engine, calls, hold) = embedder(2);
        release(&hold);
        let h = &engine.handle;
        let long = h.submit_embedding(vec![vec![1; 10]]).unwrap();
        assert_eq!(
            long.blocking_recv().unwrap().unwrap(),
            vec![vec![10.0, 1.0, 0.0]]
        );
        let poisoned = h.submit_embedding(vec![vec![3]]).unwrap();
        let err = poisoned.blocking_recv().unwrap().unwrap_err();
        assert!(err.contains("id 3 is poison"), "{err}");
        let fine = h.submit_embedding(vec![vec![2]]).unwrap();
        assert_eq!(
            fine.blocking_recv().unwrap().unwrap(),
            vec![vec![1.0, 2.0, 0.0]]
        );
        assert_eq!(calls.lock().unwrap().len(), 3);
        engine.stop();
    }

    #[test]
    fn embedding_requests_are_checked_and_generation_is_refused() {
        let (engine, _, hold) = embedder(8);
        release(&hold);
        let h = &engine.handle;
        fn err<T>(r: Result<T, SubmitError>) -> SubmitError {
            r.map(|_| ()).unwrap_err()
        }
        assert_eq!(
            err(h.submit_embedding(vec![vec![1], vec![]])),
            SubmitError::EmptyInput { index: 1 }
        );
        assert_eq!(
            err(h.submit_embedding(vec![vec![1; 65]])),
            SubmitError::InputTooLong {
                index: 0,
                tokens: 65,
                n_ctx: 64
            }
        );
        assert_eq!(
            err(h.submit_embedding(vec![vec![4]])),
            SubmitError::TokenOutOfRange { id: 4, n_vocab: 4 }
        );
        let generation = super::super::GenerationRequest {
            prompt_tokens: vec![1],
            max_tokens: 1,
            sampling: Default::default(),
            stop: vec![],
            logprobs: None,
            ignore_eos: false,
            constraint: None,
            n: 1,
            cache_prompt: true,
        };
        assert_eq!(err(h.submit(generation)), SubmitError::NotGenerative);
        assert!(!h.is_busy());
        engine.stop();
    }

    #[test]
    fn wake_returns_after_notify() {
        let wake = Arc::new(Wake::default());
        let w = wake.clone();
        let t = std::thread::spawn(move || {
            let start = Instant::now();
            w.wait(Duration::from_secs(10));
            start.elapsed()
        });
        std::thread::sleep(Duration::from_millis(20));
        wake.notify();
        assert!(t.join().unwrap() < Duration::from_secs(5));
    }
}
