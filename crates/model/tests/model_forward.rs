//! Forward-pass invariants on small synthetic models: batching, caching and weight formats
//! must not change the numbers.

mod common;

use bitnet_gguf::{GgmlType, GgufFile, Value};
use bitnet_kernels::{Kernels, Simd};
use bitnet_model::{HeadKind, LoadOptions, Logits, Model, SeqInput};
use bitnet_synth::{self as synth, Shape};
use common::max_abs_diff;

const SMALL: Shape = Shape {
    name: "test",
    n_embd: 256,
    n_layer: 2,
    n_head: 4,
    n_head_kv: 2,
    n_ff: 512,
    n_ctx: 64,
};

fn model(format: GgmlType, embedding: GgmlType) -> Model {
    model_with(format, embedding, &LoadOptions::default())
}

fn model_with(format: GgmlType, embedding: GgmlType, opts: &LoadOptions) -> Model {
    let vocab = synth::toy_vocab(40);
    let bytes = synth::build(&SMALL, format, embedding, &vocab, 7).to_bytes();
    let file = GgufFile::from_bytes(bytes).unwrap();
    Model::load(&file, opts).unwrap()
}

fn logits_all(m: &Model, tokens: &[u32]) -> Vec<f32> {
    let mut cache = m.new_cache();
    let mut b = [SeqInput {
        cache: &mut cache,
        tokens,
        logits: Logits::All,
    }];
    m.forward(&mut b).unwrap().remove(0)
}

const PROMPT: [u32; 7] = [296, 10, 100, 33, 260, 5, 298];

#[test]
fn logits_are_finite_and_varied() {
    let m = model(GgmlType::I2S, GgmlType::F16);
    let l = logits_all(&m, &PROMPT);
    let nv = m.config.n_vocab;
    assert_eq!(l.len(), PROMPT.len() * nv);
    assert!(l.iter().all(|v| v.is_finite()));
    let row = &l[..nv];
    let mean = row.iter().sum::<f32>() / nv as f32;
    let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / nv as f32;
    assert!(var > 0.1, "logits should spread out, variance {var}");
}

#[test]
fn incremental_decoding_matches_one_batch() {
    let m = model(GgmlType::I2S, GgmlType::F16);
    let all = logits_all(&m, &PROMPT);
    let nv = m.config.n_vocab;
    let mut cache = m.new_cache();
    for (i, t) in PROMPT.iter().enumerate() {
        let mut b = [SeqInput {
            cache: &mut cache,
            tokens: std::slice::from_ref(t),
            logits: Logits::Last,
        }];
        let row = m.forward(&mut b).unwrap().remove(0);
        let d = max_abs_diff(&row, &all[i * nv..(i + 1) * nv]);
        assert!(d < 1e-3, "position {i}: max diff {d}");
    }
    assert_eq!(cache.len(), PROMPT.len());
}

#[test]
fn sequences_batched_together_do_not_interact() {
    let m = model(GgmlType::I2S, GgmlType::F16);
    let a = logits_all(&m, &PROMPT);
    let other = [7u32, 8, 9];
    let b = logits_all(&m, &other);
    let (mut ca, mut cb) = (m.new_cache(), m.new_cache());
    let mut batch = [
        SeqInput {
            cache: &mut ca,
            tokens: &PROMPT,
            logits: Logits::All,
        },
        SeqInput {
            cache: &mut cb,
            tokens: &other,
            logits: Logits::Last,
        },
    ];
    let out = m.forward(&mut batch).unwrap();
    let nv = m.config.n_vocab;
    assert!(max_abs_diff(&out[0], &a) < 1e-3);
    assert!(max_abs_diff(&out[1], &b[2 * nv..]) < 1e-3);
}

#[test]
fn same_weights_in_three_formats_give_the_same_logits() {
    let i2s = logits_all(&model(GgmlType::I2S, GgmlType::F16), &PROMPT);
    for f in [GgmlType::Tq2_0, GgmlType::Tq1_0] {
        let other = logits_all(&model(f, GgmlType::F16), &PROMPT);
        let d = max_abs_diff(&i2s, &other);
        assert!(d < 1e-3, "{f}: max diff {d}");
    }
}

/// The kernel variant a model is loaded with is its one instruction-set decision: forcing any
/// variant this CPU runs (what `BITNET_KERNEL` does), `scalar` included, keeps that variant and
/// its code generation for the whole forward pass and gives the best variant's logits, for a
/// prefill long enough to take the GEMM path and for decode steps.
#[test]
fn every_kernel_variant_gives_the_same_logits() {
    let prompt: Vec<u32> = (0..20).map(|i| (i * 37 + 5) % 296).collect();
    let run = |m: &Model| {
        let mut cache = m.new_cache();
        let mut b = [SeqInput {
            cache: &mut cache,
            tokens: &prompt,
            logits: Logits::All,
        }];
        let mut out = m.forward(&mut b).unwrap().remove(0);
        for &t in &PROMPT[..3] {
            let mut b = [SeqInput {
                cache: &mut cache,
                tokens: std::slice::from_ref(&t),
                logits: Logits::Last,
            }];
            out.extend(m.forward(&mut b).unwrap().remove(0));
        }
        out
    };
    let opts = |k: &'static Kernels| LoadOptions {
        kernels: Some(k),
        threads: 2,
        ..LoadOptions::default()
    };
    for format in [GgmlType::I2S, GgmlType::Tq1_0] {
        let want = run(&model_with(format, GgmlType::F16, &opts(Kernels::best())));
        for k in Kernels::available() {
            let m = model_with(format, GgmlType::F16, &opts(k));
            assert_eq!(m.kernels().name, k.name);
            assert_eq!(m.kernels().simd(), k.simd());
            let d = max_abs_diff(&run(&m), &want);
            assert!(
                d < 1e-3,
                "{format}, {} ({:?}): max diff {d}",
                k.name,
                k.simd()
            );
        }
    }
    let scalar = Kernels::by_name("scalar").unwrap();
    assert_eq!(scalar.simd(), Simd::Baseline);
}

/// Issue 16, item 3: `general.alignment = 1` is a legal GGUF (llama.cpp accepts any power of
/// two) and puts every tensor, the F16 embedding included, at an odd address. The model must
/// load it and compute exactly the aligned file's logits, with either output head, instead of
/// tripping an alignment assert on the first forward pass.
#[test]
fn tensors_at_odd_addresses_give_the_aligned_files_logits() {
    let vocab = synth::toy_vocab(40);
    for format in [GgmlType::I2S, GgmlType::Tq2_0, GgmlType::Tq1_0] {
        let mut w = synth::build(&SMALL, format, GgmlType::F16, &vocab, 7);
        let aligned = GgufFile::from_bytes(w.to_bytes()).unwrap();
        w.alignment(1);
        let data_offset = GgufFile::from_bytes(w.to_bytes()).unwrap().data_offset();
        if data_offset.is_multiple_of(2) {
            // A 25-byte entry (8 + 5 key bytes, 4 type bytes, 8 length bytes) makes it odd.
            w.kv("x.pad", Value::String(String::new()));
        }
        let odd = GgufFile::from_bytes(w.to_bytes()).unwrap();
        assert_eq!(odd.alignment(), 1);
        let emb = odd.tensor("token_embd.weight").unwrap();
        assert_eq!(emb.ty, GgmlType::F16);
        let addr = odd.tensor_data(emb).as_ptr() as usize;
        assert_eq!(addr % 2, 1, "the test needs the F16 rows at an odd address");
        for head in [HeadKind::F16, HeadKind::Q8] {
            let opts = LoadOptions {
                head,
                ..LoadOptions::default()
            };
            let want = logits_all(&Model::load(&aligned, &opts).unwrap(), &PROMPT);
            let got = logits_all(&Model::load(&odd, &opts).unwrap(), &PROMPT);
            assert!(
                got == want,
                "{format} with the {head:?} head: logits differ from the aligned file's"
            );
        }
    }
}

#[test]
fn quantized_embeddings_stay_close() {
    let f16 = logits_all(&model(GgmlType::I2S, GgmlType::F16), &PROMPT);
    for e in [GgmlType::Q8_0, GgmlType::Q6K] {
        let q = logits_all(&model(GgmlType::I2S, e), &PROMPT);
        let dot: f32 = f16.iter().zip(&q).map(|(a, b)| a * b).sum();
        let na: f32 = f16.iter().map(|a| a * a).sum::<f32>().sqrt();
        let nb: f32 = q.iter().map(|a| a * a).sum::<f32>().sqrt();
        assert!(dot / (na * nb) > 0.99, "{e}: cosine {}", dot / (na * nb));
    }
}

#[test]
fn context_and_vocab_limits_are_errors() {
    let m = model(GgmlType::I2S, GgmlType::F16);
    let mut cache = m.new_cache();
    let long = vec![1u32; 65];
    let mut b = [SeqInput {
        cache: &mut cache,
        tokens: &long,
        logits: Logits::Last,
    }];
    let e = m.forward(&mut b).unwrap_err().to_string();
    assert!(
        e.contains("reach 65 tokens") && e.contains("limited to 64"),
        "{e}"
    );
    let bad = [m.config.n_vocab as u32];
    let mut b = [SeqInput {
        cache: &mut cache,
        tokens: &bad,
        logits: Logits::Last,
    }];
    let e = m.forward(&mut b).unwrap_err().to_string();
    assert!(e.contains("outside the vocabulary"), "{e}");
}

/// The metadata of a small synthetic model, without its tensors, with `block_count` replaced.
fn header_with_block_count(block_count: u64) -> GgufFile {
    let vocab = synth::toy_vocab(40);
    let real = GgufFile::from_bytes(
        synth::build(&SMALL, GgmlType::I2S, GgmlType::F16, &vocab, 7).to_bytes(),
    )
    .unwrap();
    let mut w = bitnet_gguf::GgufWriter::new();
    for (key, value) in real.metadata() {
        match key.as_str() {
            "bitnet-b1.58.block_count" => w.kv(key, Value::U64(block_count)),
            _ => w.kv(key, value.clone()),
        };
    }
    GgufFile::from_bytes(w.to_bytes()).unwrap()
}

/// A header that claims more layers than the file has tensors is an error naming the first
/// missing tensor, not an abort: `Model::load` used to reserve room for `block_count` layers
/// before looking at any tensor (found by the `gguf` fuzz target, docs/fuzzing.md).
#[test]
fn a_block_count_beyond_the_tensors_is_a_missing_tensor_error() {
    let file = header_with_block_count(1 << 40);
    let e = Model::load(&file, &LoadOptions::default())
        .err()
        .expect("a file without tensors does not load")
        .to_string();
    assert!(
        e.contains("blk.0.attn_norm.weight") && e.contains("missing"),
        "{e}"
    );
}

/// A header whose one-token KV cache overflows (a block_count near 2^62) is refused by
/// `ModelConfig::from_gguf` with the figures, instead of overflowing in every caller of
/// `kv_bytes_per_token` (the `--ctx-size` memory check reads it before the model loads).
#[test]
fn a_kv_cache_per_token_that_overflows_is_refused_by_the_config() {
    let file = header_with_block_count(1 << 62);
    let e = bitnet_model::ModelConfig::from_gguf(&file)
        .expect_err("an overflowing header is refused")
        .to_string();
    assert!(e.contains("overflows") && e.contains("layers"), "{e}");
}
