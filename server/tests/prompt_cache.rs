//! The prompt cache on the real engine (a synthetic BitNet model, no test backend): a prompt
//! whose prefix comes from the cache gives the same logits, bit for bit, as the prompt computed
//! from scratch, whether the cached sequence is moved over whole or its first rows are copied;
//! and greedy generations over a chat-like series of prompts are identical with and without
//! the cache.
//!
//! Bit-exact is the right bar: a cached row is the same f16 K/V the sequence would have stored
//! itself, and every other step of the forward pass works per token (matrix products, the
//! per-token activation quantization, norms), so a query attends to identical rows either way.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use bitnet_gguf::{GgmlType, GgufFile};
use bitnet_model::{LoadOptions, Model};
use bitnet_server::engine::{
    Backend, Engine, EngineConfig, Event, GenerationRequest, LoadedModel, Usage, bitnet,
};
use bitnet_server::sampling::SamplingParams;
use bitnet_synth::{self as synth, Shape};

const SHAPE: Shape = Shape {
    name: "pcache",
    n_embd: 256,
    n_layer: 2,
    n_head: 4,
    n_head_kv: 2,
    n_ff: 512,
    n_ctx: 512,
};

fn model_file() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let path = dir.join("prompt-cache.gguf");
        let w = synth::build(
            &SHAPE,
            GgmlType::I2S,
            GgmlType::F16,
            &synth::toy_vocab(150),
            11,
        );
        let tmp = dir.join(format!("prompt-cache.{}.tmp", std::process::id()));
        std::fs::write(&tmp, w.to_bytes()).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path
    })
}

fn load(parallel: usize) -> LoadedModel {
    let file = GgufFile::open(model_file()).unwrap();
    let opts = LoadOptions {
        threads: 2,
        ..LoadOptions::default()
    };
    let model = Model::load(&file, &opts).unwrap();
    bitnet::loaded_model(&file, model, parallel).unwrap()
}

/// Deterministic byte-token ids (the toy vocabulary's first 256 ids are bytes).
fn tokens(seed: u32, n: usize) -> Vec<u32> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed * 97) >> 7) % 200 + 32)
        .collect()
}

/// The logits after `prompt`, computed from scratch in one pass.
fn from_scratch(backend: &mut dyn Backend, prompt: &[u32]) -> Vec<f32> {
    let (seq, reused) = backend.new_sequence_for(prompt, false).unwrap();
    assert_eq!(reused, 0);
    let logits = backend.prefill(seq, prompt).unwrap();
    backend.free(seq);
    logits
}

fn assert_same_bits(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len());
    let differ = a
        .iter()
        .zip(b)
        .filter(|(x, y)| x.to_bits() != y.to_bits())
        .count();
    assert_eq!(differ, 0, "{what}: {differ} of {} logits differ", a.len());
}

#[test]
fn logits_after_a_cached_prefix_equal_the_logits_from_scratch() {
    let mut backend = load(2).backend;
    let backend = &mut *backend;
    backend.set_prompt_cache_budget(1 << 30);
    let prompt = tokens(1, 40);

    // A sequence sharing the first 25 tokens ends and goes to the cache.
    let mut other = prompt[..25].to_vec();
    other.extend(tokens(2, 10));
    let (seq, _) = backend.new_sequence_for(&other, true).unwrap();
    backend.prefill(seq, &other).unwrap();
    backend.release(seq, &other, other.len());
    let stats = backend.prompt_cache_stats();
    assert_eq!(stats.entries, 1);
    assert!(stats.bytes > 0);

    // Partial reuse: the first 25 rows are copied, the rest computed.
    let expected = from_scratch(backend, &prompt);
    let (seq, reused) = backend.new_sequence_for(&prompt, true).unwrap();
    assert_eq!(reused, 25);
    assert_eq!(backend.prompt_cache_stats().entries, 1, "the entry stays");
    let logits = backend.prefill(seq, &prompt[reused..]).unwrap();
    assert_same_bits(&logits, &expected, "prefix copied from the cache");
    // Then decode a few tokens on both: the cached sequence keeps agreeing.
    let (fresh, _) = backend.new_sequence_for(&prompt, false).unwrap();
    backend.prefill(fresh, &prompt).unwrap();
    for &t in &tokens(3, 4) {
        let out = backend.decode(&[(seq, t), (fresh, t)]).unwrap();
        assert_same_bits(&out[0], &out[1], "decoding after a copied prefix");
    }
    backend.free(fresh);
    let mut history = prompt.clone();
    history.extend(tokens(3, 4));
    backend.release(seq, &history, prompt.len());
    assert_eq!(backend.prompt_cache_stats().entries, 2);

    // Whole reuse: the next prompt extends that sequence (a chat's next turn), which is moved
    // out of the cache.
    let mut next = history.clone();
    next.extend(tokens(4, 7));
    let expected = from_scratch(backend, &next);
    let (seq, reused) = backend.new_sequence_for(&next, true).unwrap();
    assert_eq!(reused, history.len());
    assert_eq!(backend.prompt_cache_stats().entries, 1, "moved out");
    let logits = backend.prefill(seq, &next[reused..]).unwrap();
    assert_same_bits(&logits, &expected, "sequence moved from the cache");

    // The same prompt again: all but its last token are reused (the entry is moved out and
    // cut to them, then the last token is computed on top).
    backend.release(seq, &next, next.len());
    let (seq, reused) = backend.new_sequence_for(&next, true).unwrap();
    assert_eq!(reused, next.len() - 1);
    assert_eq!(backend.prompt_cache_stats().entries, 1, "moved out");
    let logits = backend.prefill(seq, &next[reused..]).unwrap();
    assert_same_bits(&logits, &expected, "a resent prompt");
    backend.free(seq);

    // A budget of 0 empties the cache and keeps nothing more.
    backend.set_prompt_cache_budget(0);
    assert_eq!(backend.prompt_cache_stats().entries, 0);
    let (seq, reused) = backend.new_sequence_for(&next, true).unwrap();
    assert_eq!(reused, 0);
    backend.prefill(seq, &next).unwrap();
    backend.release(seq, &next, next.len());
    assert_eq!(backend.prompt_cache_stats().entries, 0);
}

/// Greedy generations of a chat-like series (each prompt extends the previous one and its
/// reply; the last shares only a prefix): the same tokens with and without the cache.
#[test]
fn greedy_generations_are_identical_with_and_without_the_cache() {
    let start = |cache_ram: usize| {
        let config = EngineConfig {
            parallel: 2,
            queue_size: 4,
            prefill_chunk: 16,
            cache_ram: Some(cache_ram),
        };
        Engine::start(load(2), config).unwrap()
    };
    let generate = |engine: &Engine, prompt: &[u32]| -> (Vec<u32>, Usage) {
        let mut rx = engine
            .handle
            .submit(GenerationRequest {
                prompt_tokens: prompt.to_vec(),
                max_tokens: 12,
                sampling: SamplingParams {
                    temperature: 0.0,
                    ..SamplingParams::default()
                },
                stop: vec![],
                logprobs: None,
                ignore_eos: true,
                constraint: None,
                n: 1,
                cache_prompt: true,
            })
            .unwrap();
        let mut ids = Vec::new();
        loop {
            match rx.blocking_recv().unwrap() {
                Event::Token { id, .. } => ids.push(id),
                Event::Done { usage, .. } => return (ids, usage),
                Event::Failed { message } => panic!("{message}"),
            }
        }
    };
    let cached = start(1 << 30);
    let plain = start(0);
    let mut prompt = tokens(5, 30);
    let mut reused = Vec::new();
    for turn in 0..4 {
        let (a, usage) = generate(&cached, &prompt);
        let (b, plain_usage) = generate(&plain, &prompt);
        assert_eq!(a, b, "turn {turn}");
        assert_eq!(plain_usage.cached_tokens, 0);
        reused.push(usage.cached_tokens);
        if turn < 2 {
            // The next turn: this prompt, the reply, a new message.
            prompt.extend(&a);
            prompt.extend(tokens(6 + turn, 9));
        } else {
            // A different question after the first 20 tokens.
            prompt.truncate(20);
            prompt.extend(tokens(9, 15));
        }
    }
    // Turn 0 starts cold; turns 1 and 2 reuse the previous turn's prompt and the 11 reply
    // tokens that were fed back; turn 3 the 20 shared tokens.
    assert_eq!(reused, vec![0, 30 + 11, 30 + 12 + 9 + 11, 20]);
    cached.stop();
    plain.stop();
}
