//! Test-only model pieces and a server harness.
//!
//! `TestBackend` is a tiny deterministic NON-NEURAL stand-in for the real forward pass: its
//! logits always favour one "next" token computed from the last token (letters count up `a→z`,
//! then end-of-sequence), so every response is predictable. It exists only under `tests/` and is
//! never compiled into the binary. End-to-end tests against the real engine replace it once the
//! engine is merged; these tests pin down the scheduler and HTTP behaviour independently of it.

#![allow(dead_code)]

pub mod hub;
pub mod process;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bitnet_model::LoadOptions;
use bitnet_server::config::{self, RetryPolicy, ServeOptions};
use bitnet_server::connections::ConnectionLimits;
use bitnet_server::download::{DownloadOptions, ModelSource};
use bitnet_server::engine::prompt_cache::{PromptCache, Snapshot};
use bitnet_server::engine::{
    Backend, BackendError, EngineConfig, LoadError, LoadedModel, ModelLoader, PromptCacheStats,
    SamplerFactory, SeqId, TokenCodec, TokenSampler, TokenizeError,
};
use bitnet_server::http::metrics::Limits;
use bitnet_server::http::{ApiConfig, AppState};
use bitnet_server::sampling::SamplingParams;
use bitnet_server::secret::Secret;
use bitnet_server::serve::{self, ServeError};
use bitnet_tokenizer::ChatMessage;

pub const BOS: u32 = 256;
pub const EOS: u32 = 257;
pub const VOCAB: usize = 258;

/// The token the test model predicts after `last`.
pub fn next_token(last: u32, endless: bool) -> u32 {
    match last {
        x if (u32::from(b'a')..u32::from(b'z')).contains(&x) => x + 1,
        x if x == u32::from(b'z') => {
            if endless {
                u32::from(b'a')
            } else {
                EOS
            }
        }
        _ => u32::from(b'a'),
    }
}

/// Logits: the predicted token 8.0, the one after it 4.0, everything else 0.
pub fn logits_after(last: u32, endless: bool) -> Vec<f32> {
    let mut l = vec![0.0f32; VOCAB];
    let next = next_token(last, endless);
    l[next as usize] = 8.0;
    let second = next_token(next, endless);
    if second != next {
        l[second as usize] = 4.0;
    }
    l
}

/// What the backend saw.
#[derive(Debug, Default)]
pub struct BackendStats {
    pub decode_calls: AtomicUsize,
    pub max_batch: AtomicUsize,
    pub steps: Mutex<HashMap<u32, usize>>,
    pub freed: Mutex<Vec<u32>>,
    pub created: AtomicUsize,
    pub prefill_calls: AtomicUsize,
    /// The most sequences one `prefill_many` call carried.
    pub max_prefill_batch: AtomicUsize,
    /// Sequences made by copying another (`n > 1` choices).
    pub forked: AtomicUsize,
    /// Prompt tokens fed through `prefill`/`prefill_many`, in all.
    pub prefilled_tokens: AtomicUsize,
    /// Prompt tokens new sequences took from the prompt cache, in all.
    pub reused_tokens: AtomicUsize,
}

impl BackendStats {
    pub fn steps_of(&self, seq: u32) -> usize {
        self.steps.lock().unwrap().get(&seq).copied().unwrap_or(0)
    }
    pub fn was_freed(&self, seq: u32) -> bool {
        self.freed.lock().unwrap().contains(&seq)
    }
}

/// What the test backend's prompt cache keeps for a sequence: the tokens it was fed (its
/// "KV"), [`ROW_BYTES`] per token.
pub struct Rows(pub Vec<u32>);

/// The pretend size of one token's KV in the test backend.
pub const ROW_BYTES: usize = 100;

impl Snapshot for Rows {
    fn tokens(&self) -> usize {
        self.0.len()
    }
    fn bytes(&self) -> usize {
        self.0.len() * ROW_BYTES
    }
    fn prefix(&self, len: usize) -> Self {
        Rows(self.0[..len].to_vec())
    }
    fn shrink_to_fit(&mut self) {}
    fn truncate(&mut self, len: usize) {
        self.0.truncate(len);
    }
}

/// The deterministic test backend.
pub struct TestBackend {
    pub n_ctx: usize,
    pub endless: bool,
    pub step_delay: Duration,
    /// Panic in prefill when a prompt contains this token (a scheduler-killing bug on demand).
    pub panic_on: Option<u32>,
    seqs: HashMap<SeqId, Vec<u32>>,
    next_id: u32,
    pub stats: Arc<BackendStats>,
    /// `Some`: the backend has a prompt cache (the engine's own, over [`Rows`]), sized by
    /// `set_prompt_cache_budget`. `None` (the default): it never reuses a prompt.
    pub prompt_cache: Option<PromptCache<Rows>>,
}

impl TestBackend {
    pub fn new(
        n_ctx: usize,
        endless: bool,
        step_delay: Duration,
        stats: Arc<BackendStats>,
    ) -> Self {
        Self {
            n_ctx,
            endless,
            step_delay,
            panic_on: None,
            seqs: HashMap::new(),
            next_id: 0,
            stats,
            prompt_cache: None,
        }
    }

    /// The same backend with a prompt cache (no budget until the engine sets one).
    pub fn with_prompt_cache(mut self) -> Self {
        self.prompt_cache = Some(PromptCache::new(0));
        self
    }
}

impl Backend for TestBackend {
    fn n_ctx(&self) -> usize {
        self.n_ctx
    }
    fn n_vocab(&self) -> usize {
        VOCAB
    }
    fn new_sequence(&mut self) -> Result<SeqId, BackendError> {
        let id = SeqId(self.next_id);
        self.next_id += 1;
        self.seqs.insert(id, Vec::new());
        self.stats.created.fetch_add(1, Ordering::SeqCst);
        Ok(id)
    }
    fn prefill_many(&mut self, chunks: &[(SeqId, &[u32])]) -> Result<Vec<Vec<f32>>, BackendError> {
        self.stats
            .max_prefill_batch
            .fetch_max(chunks.len(), Ordering::SeqCst);
        chunks
            .iter()
            .map(|&(seq, tokens)| self.prefill(seq, tokens))
            .collect()
    }
    fn new_sequence_for(
        &mut self,
        prompt: &[u32],
        reuse: bool,
    ) -> Result<(SeqId, usize), BackendError> {
        let found = match &mut self.prompt_cache {
            Some(cache) if reuse => cache.take(prompt),
            _ => None,
        };
        let id = self.new_sequence()?;
        let Some((rows, reused)) = found else {
            return Ok((id, 0));
        };
        self.seqs.insert(id, rows.0);
        self.stats.reused_tokens.fetch_add(reused, Ordering::SeqCst);
        Ok((id, reused))
    }
    fn release(&mut self, seq: SeqId, tokens: &[u32], prompt_len: usize) {
        let Some(rows) = self.seqs.remove(&seq) else {
            return;
        };
        self.stats.freed.lock().unwrap().push(seq.0);
        assert!(
            tokens.starts_with(&rows),
            "released under tokens {tokens:?} that do not start with what it was fed {rows:?}"
        );
        if let Some(cache) = &mut self.prompt_cache {
            cache.insert(tokens, prompt_len, Rows(rows));
        }
    }
    fn set_prompt_cache_budget(&mut self, bytes: usize) {
        if let Some(cache) = &mut self.prompt_cache {
            cache.set_budget(bytes);
        }
    }
    fn prompt_cache_stats(&self) -> PromptCacheStats {
        self.prompt_cache
            .as_ref()
            .map_or(PromptCacheStats::default(), |c| PromptCacheStats {
                entries: c.len(),
                bytes: c.bytes(),
            })
    }
    fn prefill(&mut self, seq: SeqId, tokens: &[u32]) -> Result<Vec<f32>, BackendError> {
        self.stats.prefill_calls.fetch_add(1, Ordering::SeqCst);
        self.stats
            .prefilled_tokens
            .fetch_add(tokens.len(), Ordering::SeqCst);
        if let Some(t) = self.panic_on
            && tokens.contains(&t)
        {
            panic!("test backend: token {t} in a prompt");
        }
        let s = self
            .seqs
            .get_mut(&seq)
            .ok_or_else(|| BackendError("unknown seq".into()))?;
        s.extend_from_slice(tokens);
        if s.len() > self.n_ctx {
            return Err(BackendError(format!(
                "context overflow: {} > {}",
                s.len(),
                self.n_ctx
            )));
        }
        Ok(logits_after(*s.last().unwrap(), self.endless))
    }
    fn decode(&mut self, steps: &[(SeqId, u32)]) -> Result<Vec<Vec<f32>>, BackendError> {
        if !self.step_delay.is_zero() {
            std::thread::sleep(self.step_delay);
        }
        self.stats.decode_calls.fetch_add(1, Ordering::SeqCst);
        self.stats
            .max_batch
            .fetch_max(steps.len(), Ordering::SeqCst);
        let mut out = Vec::with_capacity(steps.len());
        for &(seq, tok) in steps {
            let s = self
                .seqs
                .get_mut(&seq)
                .ok_or_else(|| BackendError("unknown seq".into()))?;
            s.push(tok);
            if s.len() > self.n_ctx {
                return Err(BackendError(format!(
                    "context overflow: {} > {}",
                    s.len(),
                    self.n_ctx
                )));
            }
            *self.stats.steps.lock().unwrap().entry(seq.0).or_insert(0) += 1;
            out.push(logits_after(tok, self.endless));
        }
        Ok(out)
    }
    fn free(&mut self, seq: SeqId) {
        if self.seqs.remove(&seq).is_some() {
            self.stats.freed.lock().unwrap().push(seq.0);
        }
    }
    fn fork(&mut self, seq: SeqId) -> Result<SeqId, BackendError> {
        let copy = self
            .seqs
            .get(&seq)
            .cloned()
            .ok_or_else(|| BackendError("unknown seq".into()))?;
        let id = self.new_sequence()?;
        self.seqs.insert(id, copy);
        self.stats.forked.fetch_add(1, Ordering::SeqCst);
        Ok(id)
    }
}

/// Byte-level test tokenizer: ids 0..256 are bytes, 256 `<s>`, 257 `</s>` (both control
/// tokens, so generated ones produce no text).
pub struct TestTokenizer;

impl TokenCodec for TestTokenizer {
    fn vocab_size(&self) -> usize {
        VOCAB
    }
    fn encode(
        &self,
        text: &str,
        add_bos: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, TokenizeError> {
        let mut out = Vec::new();
        if add_bos {
            out.push(BOS);
        }
        let mut rest = text;
        while !rest.is_empty() {
            if parse_special && rest.starts_with("<s>") {
                out.push(BOS);
                rest = &rest[3..];
            } else if parse_special && rest.starts_with("</s>") {
                out.push(EOS);
                rest = &rest[4..];
            } else {
                let c = rest.chars().next().unwrap();
                let mut buf = [0u8; 4];
                out.extend(c.encode_utf8(&mut buf).bytes().map(u32::from));
                rest = &rest[c.len_utf8()..];
            }
        }
        Ok(out)
    }
    fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
        match id {
            0..=255 => Some(vec![id as u8]),
            BOS => Some(b"<s>".to_vec()),
            EOS => Some(b"</s>".to_vec()),
            _ => None,
        }
    }
    fn is_eog(&self, id: u32) -> bool {
        id == EOS
    }
    fn is_control(&self, id: u32) -> bool {
        id == BOS || id == EOS
    }
    fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, TokenizeError> {
        let mut s = String::from("<s>");
        for m in messages {
            s.push_str(&format!("{}: {}\n", m.role, m.content));
        }
        if add_generation_prompt {
            s.push_str("assistant:");
        }
        Ok(s)
    }
}

/// A seeded sampler: greedy at temperature 0, else softmax sampling with a xorshift RNG.
/// (The real sampler is the engine's; this one only has to be deterministic per seed.)
pub fn test_sampler() -> SamplerFactory {
    Arc::new(|p: &SamplingParams| {
        let temperature = p.temperature;
        let mut state = p.seed | 1;
        Box::new(move |logits: &mut [f32], _history: &[u32]| -> u32 {
            let argmax = || {
                logits
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map(|(i, _)| i as u32)
                    .unwrap_or(0)
            };
            if temperature <= 0.0 {
                return argmax();
            }
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let u = (state >> 11) as f64 / (1u64 << 53) as f64;
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let weights: Vec<f64> = logits
                .iter()
                .map(|&l| f64::from((l - max) / temperature).exp())
                .collect();
            let total: f64 = weights.iter().sum();
            let mut acc = 0.0;
            for (i, w) in weights.iter().enumerate() {
                acc += w / total;
                if u < acc {
                    return i as u32;
                }
            }
            argmax()
        }) as Box<dyn TokenSampler>
    })
}

/// Blocks `load` until opened (to observe the `loading` state).
#[derive(Default)]
pub struct Gate {
    open: Mutex<bool>,
    cv: Condvar,
}

impl Gate {
    pub fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.cv.notify_all();
    }
    fn wait(&self) {
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.cv.wait(open).unwrap();
        }
    }
}

/// A loader producing the test model.
pub struct TestLoader {
    pub n_ctx: usize,
    pub endless: bool,
    pub step_delay: Duration,
    pub stats: Arc<BackendStats>,
    pub gate: Option<Arc<Gate>>,
    pub loaded_from: Mutex<Option<PathBuf>>,
    pub panic_on: Option<u32>,
    /// Give the backend a prompt cache ([`TestBackend::with_prompt_cache`]).
    pub prompt_cache: bool,
}

impl ModelLoader for TestLoader {
    fn load(&self, path: &Path, _: &LoadOptions, _: usize) -> Result<LoadedModel, LoadError> {
        if let Some(g) = &self.gate {
            g.wait();
        }
        *self.loaded_from.lock().unwrap() = Some(path.to_path_buf());
        let mut backend = TestBackend::new(
            self.n_ctx,
            self.endless,
            self.step_delay,
            self.stats.clone(),
        );
        backend.panic_on = self.panic_on;
        if self.prompt_cache {
            backend = backend.with_prompt_cache();
        }
        Ok(LoadedModel {
            backend: Box::new(backend),
            tokenizer: Arc::new(TestTokenizer),
            sampler: test_sampler(),
            kernel: "test-kernel".into(),
        })
    }
}

/// Server settings for a test.
#[derive(Clone)]
pub struct Setup {
    pub n_ctx: usize,
    pub parallel: usize,
    pub queue_size: usize,
    pub endless: bool,
    pub step_delay: Duration,
    pub api_key: Option<String>,
    pub max_body: usize,
    pub shutdown_timeout: Duration,
    pub gate: Option<Arc<Gate>>,
    pub source: Option<ModelSource>,
    pub download: Option<DownloadOptions>,
    /// See [`TestBackend::panic_on`].
    pub panic_on: Option<u32>,
    /// The wait before retrying a failed model acquisition or load (every retry).
    pub retry_first: Duration,
    /// Connection cap and timers (the server's defaults unless a test sets them).
    pub connections: ConnectionLimits,
    pub body_timeout: Duration,
    /// `--alias` names.
    pub aliases: Vec<String>,
    /// `--accept-any-model`.
    pub accept_any_model: bool,
    /// `Some(budget)`: the backend has a prompt cache of this many bytes ([`ROW_BYTES`] per
    /// token). `None`: no prompt cache.
    pub prompt_cache: Option<usize>,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            n_ctx: 128,
            parallel: 4,
            queue_size: 8,
            endless: false,
            step_delay: Duration::ZERO,
            api_key: None,
            max_body: 2 << 20,
            shutdown_timeout: Duration::from_secs(5),
            gate: None,
            source: None,
            download: None,
            panic_on: None,
            retry_first: Duration::from_secs(600),
            connections: ConnectionLimits {
                header_timeout: Duration::from_secs_f64(config::DEFAULT_HEADER_TIMEOUT_S),
                keep_alive_timeout: Duration::from_secs_f64(config::DEFAULT_KEEP_ALIVE_TIMEOUT_S),
                write_timeout: Duration::from_secs_f64(config::DEFAULT_WRITE_TIMEOUT_S),
                max_connections: None,
            },
            body_timeout: Duration::from_secs_f64(config::DEFAULT_BODY_TIMEOUT_S),
            aliases: Vec::new(),
            accept_any_model: false,
            prompt_cache: None,
        }
    }
}

/// An in-process server on 127.0.0.1 with the test model.
pub struct TestServer {
    pub base: String,
    pub state: AppState,
    pub stats: Arc<BackendStats>,
    pub loader: Arc<TestLoader>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: Option<tokio::task::JoinHandle<Result<(), ServeError>>>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start(setup: Setup) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("test-model.gguf");
        std::fs::write(
            &model,
            b"not a real model: the test loader ignores the contents",
        )
        .unwrap();
        let stats = Arc::new(BackendStats::default());
        let loader = Arc::new(TestLoader {
            n_ctx: setup.n_ctx,
            endless: setup.endless,
            step_delay: setup.step_delay,
            stats: stats.clone(),
            gate: setup.gate.clone(),
            loaded_from: Mutex::new(None),
            panic_on: setup.panic_on,
            prompt_cache: setup.prompt_cache.is_some(),
        });
        let source = setup.source.clone().unwrap_or(ModelSource::Local {
            path: model,
            sha256: None,
        });
        let options = ServeOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            download: setup.download.clone().unwrap_or_else(|| DownloadOptions {
                cache_dir: dir.path().join("cache"),
                ..DownloadOptions::default()
            }),
            api: ApiConfig {
                model_id: "test-model".into(),
                aliases: setup.aliases.clone(),
                file_names: vec!["test-model.gguf".into(), "test-model".into()],
                accept_any_model: setup.accept_any_model,
                api_key: setup.api_key.clone().map(Secret::new),
                max_body: setup.max_body,
                body_timeout: setup.body_timeout,
                limits: Limits {
                    queue_size: setup.queue_size,
                    parallel: setup.parallel,
                },
            },
            engine: EngineConfig {
                parallel: setup.parallel,
                queue_size: setup.queue_size,
                prefill_chunk: 16,
                cache_ram: setup.prompt_cache,
            },
            load: LoadOptions::default(),
            shutdown_timeout: setup.shutdown_timeout,
            connections: setup.connections,
            retry: RetryPolicy {
                first: setup.retry_first,
                max: setup.retry_first,
            },
            source,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (state_tx, state_rx) = tokio::sync::oneshot::channel();
        let dyn_loader: Arc<dyn ModelLoader> = loader.clone();
        let task = tokio::spawn(serve::run_with(
            listener,
            options,
            dyn_loader,
            async move {
                let _ = stop_rx.await;
            },
            move |running| {
                let _ = state_tx.send(running.state);
            },
        ));
        let state = state_rx.await.expect("server started");
        TestServer {
            base,
            state,
            stats,
            loader,
            shutdown: Some(stop_tx),
            task: Some(task),
            _dir: dir,
        }
    }

    /// Start and wait until /health says ready.
    pub async fn ready(setup: Setup) -> TestServer {
        let s = Self::start(setup).await;
        s.wait_for_state("ready", Duration::from_secs(10)).await;
        s
    }

    pub async fn wait_for_state(&self, state: &str, timeout: Duration) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let report = serde_json::to_value(self.state.health.report()).unwrap();
            if report["state"] == state {
                return report;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("server did not reach state {state}: {report}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Send the shutdown signal and wait for `run` to return.
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .expect("shutdown finished in time")
            .unwrap()
    }

    pub fn trigger_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// An HTTP client for tests (no proxies).
pub fn client() -> reqwest::Client {
    bitnet_server::download::tls::install_crypto_provider();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Parse an SSE body into its `data:` payloads, checking the framing.
pub fn sse_data(body: &str) -> Vec<String> {
    let mut out = Vec::new();
    for block in body.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let mut data = Vec::new();
        for line in block.lines() {
            if let Some(d) = line.strip_prefix("data: ") {
                data.push(d.to_string());
            } else if line.starts_with(':') {
                // keep-alive comment
            } else {
                panic!("unexpected SSE line {line:?} in {body:?}");
            }
        }
        if !data.is_empty() {
            out.push(data.join("\n"));
        }
    }
    out
}
