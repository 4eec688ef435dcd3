//! The BitNet embedding models (`qwen3`, `gemma3`) on small synthetic files: pooled vectors are
//! finite, distinct and do not depend on batching, the token budget or the kernel variant; every
//! norm of the graph matters; bad inputs and unsupported files are clear errors.

mod common;

use bitnet_gguf::{GgmlType, GgufFile, Value};
use bitnet_kernels::Kernels;
use bitnet_model::{
    Activation, Graph, LoadOptions, Logits, Model, ModelError, ModelKind, Pooling, SeqInput,
};
use bitnet_synth::{self as synth, EmbedShape, Shape};
use common::{cosine, max_abs_diff};

const SHAPES: [EmbedShape; 2] = [EmbedShape::QWEN3_TINY, EmbedShape::GEMMA3_TINY];

fn writer(shape: &EmbedShape) -> bitnet_gguf::GgufWriter {
    let vocab = synth::placeholder_vocab(shape.family, shape.n_vocab);
    synth::build_embedding(shape, GgmlType::I2S, &vocab, 11)
}

fn load_bytes(bytes: Vec<u8>, opts: &LoadOptions) -> Result<Model, ModelError> {
    Model::load(&GgufFile::from_bytes(bytes)?, opts)
}

fn model(shape: &EmbedShape) -> Model {
    load_bytes(writer(shape).to_bytes(), &opts()).unwrap()
}

fn opts() -> LoadOptions {
    LoadOptions {
        threads: 2,
        ..LoadOptions::default()
    }
}

/// Inputs of several lengths (1 to 150 tokens), ids spread over the vocabulary.
fn inputs(n_vocab: usize) -> Vec<Vec<u32>> {
    [1usize, 5, 37, 150, 2, 64]
        .iter()
        .enumerate()
        .map(|(s, &len)| {
            (0..len)
                .map(|i| ((i * 7919 + s * 104_729 + 13) % n_vocab) as u32)
                .collect()
        })
        .collect()
}

fn refs(v: &[Vec<u32>]) -> Vec<&[u32]> {
    v.iter().map(Vec::as_slice).collect()
}

#[test]
fn embeddings_are_pooled_finite_varied_and_declared() {
    for shape in SHAPES {
        let m = model(&shape);
        assert_eq!(
            m.kind(),
            ModelKind::Embedding {
                dim: shape.n_embd,
                pooling: Pooling::Last,
                pooling_defaulted: false
            }
        );
        assert_eq!(m.config.head_dim, shape.head_dim);
        assert_ne!(m.config.head_dim * m.config.n_head, m.config.n_embd);
        let (activation, graph, embd_scale) = match shape.family {
            synth::Family::Qwen3 => (Activation::Silu, Graph::Qwen3, 1.0),
            synth::Family::Gemma3 => (
                Activation::GeluTanh,
                Graph::Gemma3,
                (shape.n_embd as f32).sqrt(),
            ),
        };
        assert_eq!(
            (m.config.activation, m.config.graph, m.config.embd_scale),
            (activation, graph, embd_scale)
        );
        assert_eq!(m.config.rope_theta, shape.rope_theta);
        let ins = inputs(shape.n_vocab);
        let out = m.embed(&refs(&ins)).unwrap();
        assert_eq!(out.len(), ins.len());
        for (i, e) in out.iter().enumerate() {
            assert_eq!(e.len(), shape.n_embd);
            assert!(
                e.iter().all(|v| v.is_finite()),
                "{:?} input {i}",
                shape.family
            );
            let norm: f64 = e.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
            // Pooled, not normalised (the server normalises): a real length, not 1.
            assert!(
                norm > 0.0 && (norm - 1.0).abs() > 1e-3,
                "{:?} input {i}: norm {norm}",
                shape.family
            );
        }
        for i in 0..out.len() {
            for j in i + 1..out.len() {
                let c = cosine(&out[i], &out[j]);
                assert!(
                    c < 0.99,
                    "{:?}: inputs {i} and {j} have cosine {c}",
                    shape.family
                );
            }
        }
    }
}

/// Batching is exact: an input's vector is bit for bit the same whether it runs alone or
/// packed with others into one pass (every per-token step is row-local and attention reads
/// only the input's own cache).
#[test]
fn a_batch_gives_each_inputs_vector_alone() {
    for shape in SHAPES {
        let m = model(&shape);
        let ins = inputs(shape.n_vocab);
        let together = m.embed_with_budget(&refs(&ins), 4096).unwrap();
        for (i, input) in ins.iter().enumerate() {
            let alone = m.embed_with_budget(&[input.as_slice()], 4096).unwrap();
            assert_eq!(
                alone[0],
                together[i],
                "{:?} input {i}: max diff {}",
                shape.family,
                max_abs_diff(&alone[0], &together[i])
            );
        }
    }
}

/// The token budget only changes how the work is cut: with passes of 1, 7 or 64 tokens (long
/// inputs continued across passes through their caches), every pooling gives the one-pass
/// vectors bit for bit.
#[test]
fn chunked_passes_equal_one_pass_for_every_pooling() {
    for base in SHAPES {
        for pooling in [1, 2, 3] {
            let shape = EmbedShape {
                pooling_type: Some(pooling),
                ..base
            };
            let m = model(&shape);
            let ins = inputs(shape.n_vocab);
            let want = m.embed_with_budget(&refs(&ins), 4096).unwrap();
            for budget in [1, 7, 64] {
                let got = m.embed_with_budget(&refs(&ins), budget).unwrap();
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(
                        g,
                        w,
                        "{:?}, pooling {pooling}, budget {budget}, input {i}: max diff {}",
                        shape.family,
                        max_abs_diff(g, w)
                    );
                }
            }
        }
    }
}

/// What each pooling reads: attention is causal, so under `cls` an input's vector is its first
/// token's alone; under `last` it depends on the last token; one token gives the same vector
/// under all three; mean differs from both on a longer input.
#[test]
fn poolings_read_the_right_tokens() {
    for base in SHAPES {
        let with = |p| {
            model(&EmbedShape {
                pooling_type: Some(p),
                ..base
            })
        };
        let (mean, cls, last) = (with(1), with(2), with(3));
        let long: Vec<u32> = (0..20).map(|i| (i * 31 + 7) % 1000).collect();
        let other_tail: Vec<u32> = long[..19].iter().copied().chain([999]).collect();
        let e = |m: &Model, t: &[u32]| m.embed(&[t]).unwrap().remove(0);
        assert_eq!(e(&cls, &long), e(&cls, &long[..1]));
        assert_eq!(e(&cls, &long), e(&cls, &other_tail));
        assert!(cosine(&e(&last, &long), &e(&last, &other_tail)) < 0.999);
        let one = &long[..1];
        let m1 = e(&mean, one);
        assert!(max_abs_diff(&m1, &e(&cls, one)) < 1e-6);
        assert!(max_abs_diff(&m1, &e(&last, one)) < 1e-6);
        let m = e(&mean, &long);
        assert!(cosine(&m, &e(&cls, &long)) < 0.999);
        assert!(cosine(&m, &e(&last, &long)) < 0.999);
    }
}

/// Every kernel variant this CPU runs gives the scalar reference's embeddings: bit for bit when
/// it has the scalar's code generation for attention (the ternary products are exact in every
/// variant); with fused multiply-add the attention rounds differently, which flips an int8
/// activation now and then (the effect docs/model.md#the-hugging-face-reference describes), so
/// there the bound is a cosine distance, far below what a missing norm does (see
/// `every_norm_changes_the_embedding`).
#[test]
fn every_kernel_variant_gives_the_scalar_embeddings() {
    let scalar = Kernels::by_name("scalar").unwrap();
    for shape in SHAPES {
        let bytes = writer(&shape).to_bytes();
        let with = |k: &'static Kernels| {
            let opts = LoadOptions {
                kernels: Some(k),
                ..opts()
            };
            load_bytes(bytes.clone(), &opts).unwrap()
        };
        let ins = inputs(shape.n_vocab);
        let want = with(scalar).embed(&refs(&ins)).unwrap();
        for k in Kernels::available() {
            let got = with(k).embed(&refs(&ins)).unwrap();
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                // The largest difference relative to the vector's length (vectors are pooled,
                // not normalised).
                let length = w.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
                let (d, dist) = (f64::from(max_abs_diff(g, w)) / length, 1.0 - cosine(g, w));
                eprintln!(
                    "{:?} {} ({:?}) input {i}: max relative diff {d:e}, cosine distance {dist:e}",
                    shape.family,
                    k.name,
                    k.simd()
                );
                if k.simd() == scalar.simd() {
                    assert_eq!(g, w, "{:?}, {} input {i}", shape.family, k.name);
                } else {
                    assert!(
                        dist < 1e-3 && d < 2e-2,
                        "{:?}, {} input {i}: max diff {d}, cosine distance {dist}",
                        shape.family,
                        k.name
                    );
                }
            }
        }
    }
}

/// Sets every `blk.*.<name>.weight` (an F16 norm) to ones in a serialized file.
fn with_norm_ones(bytes: &[u8], name: &str) -> Vec<u8> {
    let f = GgufFile::from_bytes(bytes.to_vec()).unwrap();
    let mut out = bytes.to_vec();
    let suffix = format!(".{name}.weight");
    let mut hits = 0;
    for t in f.tensors() {
        if t.name.ends_with(&suffix) {
            assert_eq!(t.ty, GgmlType::F16);
            let start = (f.data_offset() + t.offset) as usize;
            let len = f.tensor_data(t).len();
            for b in out[start..start + len].chunks_exact_mut(2) {
                b.copy_from_slice(&half::f16::ONE.to_le_bytes());
            }
            hits += 1;
        }
    }
    assert!(hits > 0, "no tensor named *{suffix}");
    out
}

/// The synthetic norms are not ones, so a forward pass that skipped any one of them (or used it
/// in the wrong place) would be far off: replacing each norm kind by ones moves the embedding
/// (cosine distance above 5e-3, about 0.015–0.15 with these weights) far more than rounding
/// does (below 1e-3 in the variant test, about 1e-4 measured).
#[test]
fn every_norm_changes_the_embedding() {
    for shape in SHAPES {
        let bytes = writer(&shape).to_bytes();
        let ins = inputs(shape.n_vocab);
        let want = load_bytes(bytes.clone(), &opts())
            .unwrap()
            .embed(&refs(&ins))
            .unwrap();
        let mut names = vec![
            "attn_norm",
            "attn_q_norm_in",
            "attn_k_norm_in",
            "attn_v_norm_in",
            "attn_q_norm",
            "attn_k_norm",
            "attn_output_norm_in",
            "ffn_norm",
            "ffn_gate_norm_in",
            "ffn_up_norm_in",
            "ffn_down_norm_in",
        ];
        if shape.family == synth::Family::Gemma3 {
            names.extend(["post_attention_norm", "post_ffw_norm"]);
        }
        for name in names {
            let m = load_bytes(with_norm_ones(&bytes, name), &opts()).unwrap();
            let got = m.embed(&refs(&ins)).unwrap();
            // The longest input (150 tokens) has attended over the most positions.
            let dist = 1.0 - cosine(&got[3], &want[3]);
            eprintln!(
                "{:?}: {name} set to ones: cosine distance {dist:.4}",
                shape.family
            );
            assert!(
                dist > 5e-3,
                "{:?}: {name} hardly matters (cosine distance {dist})",
                shape.family
            );
        }
    }
}

#[test]
fn bad_inputs_are_clear_errors() {
    for shape in SHAPES {
        let m = load_bytes(
            writer(&shape).to_bytes(),
            &LoadOptions {
                n_ctx: Some(16),
                ..opts()
            },
        )
        .unwrap();
        let e = m.embed(&[&[1, 2], &[]]).unwrap_err();
        assert!(matches!(e, ModelError::EmptyInput { index: 1 }), "{e}");
        let bad = shape.n_vocab as u32;
        let e = m.embed(&[&[1, bad]]).unwrap_err().to_string();
        assert!(
            e.contains(&format!("token id {bad}")) && e.contains("vocabulary"),
            "{e}"
        );
        let long = vec![5u32; 17];
        let e = m.embed(&[&[1], &long]).unwrap_err().to_string();
        assert!(
            e.contains("input 1 has 17 tokens") && e.contains("limited to 16"),
            "{e}"
        );
        // 16 tokens fit.
        assert_eq!(m.embed(&[&long[..16]]).unwrap().len(), 1);
        assert!(m.embed(&[]).unwrap().is_empty());
        // No output head: logits are refused, a pass without logits is fine.
        let mut cache = m.new_cache();
        let mut b = [SeqInput {
            cache: &mut cache,
            tokens: &[1, 2, 3],
            logits: Logits::Last,
        }];
        let e = m.forward(&mut b).unwrap_err().to_string();
        assert!(e.contains("no output head") && e.contains("embed"), "{e}");
        b[0].logits = Logits::None;
        assert_eq!(m.forward(&mut b).unwrap(), vec![Vec::<f32>::new()]);
    }
    // A generation model has no pooling.
    let small = Shape {
        name: "gen",
        n_embd: 256,
        n_layer: 1,
        n_head: 4,
        n_head_kv: 2,
        n_ff: 512,
        n_ctx: 32,
    };
    let vocab = synth::toy_vocab(10);
    let bytes = synth::build(&small, GgmlType::I2S, GgmlType::F16, &vocab, 1).to_bytes();
    let g = load_bytes(bytes, &opts()).unwrap();
    assert_eq!(g.kind(), ModelKind::Generation);
    let e = g.embed(&[&[1, 2]]).unwrap_err().to_string();
    assert!(
        e.contains("generation model") && e.contains("no embeddings"),
        "{e}"
    );
}

fn load_err(w: &bitnet_gguf::GgufWriter) -> String {
    match load_bytes(w.to_bytes(), &opts()) {
        Ok(_) => panic!("the file loaded"),
        Err(e) => e.to_string(),
    }
}

/// Metadata this engine does not implement is refused with the reason; a file without a
/// pooling type gets mean pooling, flagged as defaulted.
#[test]
fn unsupported_metadata_is_refused_and_a_missing_pooling_is_flagged() {
    for base in SHAPES {
        let arch = base.family.arch();
        for (p, what) in [(0, "none"), (4, "rank")] {
            let shape = EmbedShape {
                pooling_type: Some(p),
                ..base
            };
            let e = load_err(&writer(&shape));
            assert!(e.contains("pooling_type") && e.contains(what), "{e}");
        }
        let mut w = writer(&base);
        w.kv(&format!("{arch}.attention.causal"), Value::Bool(false));
        let e = load_err(&w);
        assert!(
            e.contains("causal") && e.contains("causal attention only"),
            "{e}"
        );
        let mut w = writer(&base);
        w.kv(&format!("{arch}.attention.sliding_window"), Value::U32(8));
        let e = load_err(&w);
        assert!(
            e.contains("sliding_window is 8") && e.contains("not implemented"),
            "{e}"
        );
        // A causal flag that says true is fine.
        let mut w = writer(&base);
        w.kv(&format!("{arch}.attention.causal"), Value::Bool(true));
        assert!(load_bytes(w.to_bytes(), &opts()).is_ok());

        let shape = EmbedShape {
            pooling_type: None,
            ..base
        };
        let m = model(&shape);
        assert_eq!(
            m.kind(),
            ModelKind::Embedding {
                dim: base.n_embd,
                pooling: Pooling::Mean,
                pooling_defaulted: true
            }
        );
    }
}

/// A copy of `bytes` with metadata `edit`ed (`None` drops the key) and only the tensors `keep`
/// accepts.
fn rewrite(
    bytes: Vec<u8>,
    edit: impl Fn(&str, &Value) -> Option<Value>,
    keep: impl Fn(&str) -> bool,
) -> bitnet_gguf::GgufWriter {
    let f = GgufFile::from_bytes(bytes).unwrap();
    let mut w = bitnet_gguf::GgufWriter::new();
    for (k, v) in f.metadata() {
        if let Some(v) = edit(k, v) {
            w.kv(k, v);
        }
    }
    for t in f.tensors() {
        if keep(&t.name) {
            w.tensor(&t.name, &t.dims, t.ty, f.tensor_data(t).to_vec());
        }
    }
    w
}

/// A missing per-projection norm is a missing-tensor error naming it, not a silently different
/// graph.
#[test]
fn a_missing_norm_in_is_named() {
    let bytes = writer(&EmbedShape::QWEN3_TINY).to_bytes();
    let w = rewrite(
        bytes,
        |_, v| Some(v.clone()),
        |name| name != "blk.1.ffn_up_norm_in.weight",
    );
    let e = load_err(&w);
    assert!(
        e.contains("blk.1.ffn_up_norm_in.weight") && e.contains("missing"),
        "{e}"
    );
}

/// The head dimension comes from key_length / value_length, which must agree; without them it
/// would be n_embd / n_head, and the tensors no longer match.
#[test]
fn head_dim_comes_from_key_and_value_length() {
    let shape = EmbedShape::GEMMA3_TINY;
    let bytes = writer(&shape).to_bytes();
    let w = rewrite(
        bytes.clone(),
        |k, v| match k {
            "gemma3.attention.value_length" => Some(Value::U32(64)),
            _ => Some(v.clone()),
        },
        |_| true,
    );
    let e = load_err(&w);
    assert!(
        e.contains("key_length 128 differs from attention.value_length 64"),
        "{e}"
    );
    let w = rewrite(
        bytes,
        |k, v| match k {
            "gemma3.attention.key_length"
            | "gemma3.attention.value_length"
            | "gemma3.rope.dimension_count" => None,
            _ => Some(v.clone()),
        },
        |_| true,
    );
    let e = load_err(&w);
    assert!(
        e.contains("blk.0.attn_q.weight") && e.contains("[384, 384]"),
        "{e}"
    );
}

/// gemma3's attention scale is 1/√query_pre_attn_scalar when the file sets it: equal to the
/// head dimension it changes nothing (bit for bit), another value changes the vectors.
#[test]
fn query_pre_attn_scalar_sets_the_attention_scale() {
    let shape = EmbedShape::GEMMA3_TINY;
    let bytes = writer(&shape).to_bytes();
    let ins = inputs(shape.n_vocab);
    let embed = |scalar: Option<f32>| {
        let mut w = rewrite(bytes.clone(), |_, v| Some(v.clone()), |_| true);
        if let Some(s) = scalar {
            w.kv("gemma3.attention.query_pre_attn_scalar", Value::F32(s));
        }
        let m = load_bytes(w.to_bytes(), &opts()).unwrap();
        m.embed(&refs(&ins)).unwrap()
    };
    let plain = embed(None);
    assert_eq!(embed(Some(shape.head_dim as f32)), plain);
    let other = embed(Some(16.0));
    assert!(1.0 - cosine(&other[3], &plain[3]) > 5e-3);
    let mut w = rewrite(bytes.clone(), |_, v| Some(v.clone()), |_| true);
    w.kv("gemma3.attention.query_pre_attn_scalar", Value::F32(-1.0));
    assert!(load_err(&w).contains("query_pre_attn_scalar -1"));
}
