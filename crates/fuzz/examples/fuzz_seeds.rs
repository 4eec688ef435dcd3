//! Writes the starting inputs of each fuzz target into `fuzz/corpus/<target>/` (files named
//! `seed-*`): a tiny complete BitNet model and header-only GGUF files, texts from the tokenizer
//! corpus, chat templates in the styles models ship, and request bodies of every endpoint.
//! The committed corpus is this, grown by the fuzzer and minimized (docs/fuzzing.md).
//!
//! `cargo run -p bitnet-fuzz --example fuzz_seeds --locked`

use bitnet_gguf::{GgmlType, GgufWriter, Value, writer};
use bitnet_synth::{Shape, build, toy_vocab};
use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let mut n = 0;
    let mut put = |target: &str, name: &str, bytes: &[u8]| {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).expect("create the corpus directory");
        std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("write a seed");
        n += 1;
    };

    // gguf: a complete model small enough to mutate (Q8_0 embedding, I2_S layers), the same
    // file's metadata alone, and a file with one value of every metadata type.
    let vocab = toy_vocab(0);
    let shape = Shape {
        name: "fuzz-seed",
        n_embd: 128,
        n_layer: 1,
        n_head: 2,
        n_head_kv: 1,
        n_ff: 128,
        n_ctx: 16,
    };
    let model = build(&shape, GgmlType::I2S, GgmlType::Q8_0, &vocab, 1);
    put("gguf", "model-i2s", &model.to_bytes());
    let mut meta = GgufWriter::new();
    meta.kv("general.architecture", Value::String("bitnet-b1.58".into()))
        .kv("tokenizer.ggml.model", Value::String("gpt2".into()))
        .kv(
            "tokenizer.ggml.tokens",
            writer::str_array(vocab.tokens.iter().cloned()),
        )
        .kv(
            "tokenizer.ggml.token_type",
            writer::i32_array(vocab.token_types.iter().copied()),
        )
        .kv("tokenizer.ggml.bos_token_id", Value::U32(256))
        .kv("tokenizer.ggml.eos_token_id", Value::U32(257));
    put("gguf", "tokenizer-only", &meta.to_bytes());
    let mut types = GgufWriter::new();
    types
        .kv("u8", Value::U8(1))
        .kv("i8", Value::I8(-1))
        .kv("u16", Value::U16(2))
        .kv("i16", Value::I16(-2))
        .kv("general.alignment", Value::U32(32))
        .kv("i32", Value::I32(-3))
        .kv("f32", Value::F32(0.5))
        .kv("bool", Value::Bool(true))
        .kv("string", Value::String("é中文".into()))
        .kv("u64", Value::U64(4))
        .kv("i64", Value::I64(-4))
        .kv("f64", Value::F64(0.25))
        .kv("array", writer::f32_array([1.0, 2.0]))
        .tensor("f32", &[4], GgmlType::F32, vec![0; 16])
        .tensor("f16", &[2, 2], GgmlType::F16, vec![0; 8])
        .tensor("q8", &[32], GgmlType::Q8_0, vec![0; 34])
        .tensor("i2s", &[128], GgmlType::I2S, vec![0; 64]);
    put("gguf", "every-type", &types.to_bytes());

    // tokenizer: every 90th text of the reference corpus (prose, code, scripts, emoji, specials).
    let corpus = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tokenizer/tests/data/tokenizer/corpus.jsonl"),
    )
    .expect("read the tokenizer corpus");
    for (i, line) in corpus.lines().enumerate().step_by(90) {
        let v: serde_json::Value = serde_json::from_str(line).expect("a corpus line is JSON");
        let text = v["text"].as_str().expect("a corpus line has text");
        put("tokenizer", &format!("corpus-{i}"), text.as_bytes());
    }

    // chat_template: template, NUL, then role, NUL, content, … (crates/fuzz/src/chat.rs).
    let conversation =
        "\0system\0You are helpful.\0user\0Hello, world! é中文😀\0assistant\0Hi!\0user\0 Bye \n";
    for (name, template) in TEMPLATES {
        put(
            "chat_template",
            name,
            format!("{template}{conversation}").as_bytes(),
        );
    }

    // http_request: selector byte (crates/fuzz/src/http.rs), then a body.
    for (i, (selector, body)) in BODIES.iter().enumerate() {
        let mut input = vec![*selector];
        input.extend_from_slice(body.as_bytes());
        put("http_request", &format!("{i:02}"), &input);
    }
    eprintln!("wrote {n} seeds under {}", root.display());
}

const TEMPLATES: [(&str, &str); 4] = [
    (
        "llama3",
        "{{ bos_token }}{% for message in messages %}{% if loop.index0 == 0 and message['role'] != 'system' %}{{ '<|start_header_id|>system<|end_header_id|>\\n\\nDefault.<|eot_id|>' }}{% endif %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'].strip() + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}",
    ),
    (
        "bitnet-hf",
        "{% for m in messages %}{% set line = m['role'] | capitalize + ': ' + m['content'] | trim + '<|eot_id|>' %}{% if loop.first %}{% set line = bos_token + line %}{% endif %}{{ line }}{% endfor %}{% if add_generation_prompt %}{{ 'Assistant: ' }}{% endif %}",
    ),
    (
        "chatml",
        "{% for message in messages %}{% if message.role not in ['system', 'user', 'assistant'] %}{{ raise_exception('Unknown role ' + message.role) }}{% endif %}\n<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{% endfor %}\n{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
    ),
    (
        "dated",
        "{{ bos_token }}Today is {{ strftime_now('%d %b %Y') }}.{% for m in messages[::-1] %}{{ m.content.upper() | replace(' ', '_') }}{{ m.content.split(' ')[0] }}{% if not loop.last %}|{% endif %}{% endfor %}{{ eos_token }}",
    ),
];

const BODIES: [(u8, &str); 14] = [
    (0, r#"{"messages":[{"role":"user","content":"Hello"}]}"#),
    (
        0,
        r#"{"model":"m","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],"max_tokens":8,"temperature":0.7,"top_p":0.9,"top_k":40,"min_p":0.05,"presence_penalty":0.1,"frequency_penalty":0.2,"repeat_penalty":1.1,"repeat_last_n":64,"seed":7,"stop":["\n","END"],"stream":true,"stream_options":{"include_usage":true},"logprobs":true,"top_logprobs":3,"n":1}"#,
    ),
    (
        0,
        r#"{"messages":[{"role":"tool","content":null}],"max_completion_tokens":4,"response_format":{"type":"text"},"tools":[],"ignore_eos":true}"#,
    ),
    (1, r#"{"prompt":"Once upon a time","max_tokens":16}"#),
    (
        1,
        r#"{"prompt":[1,2,3],"logprobs":2,"echo":false,"suffix":"","best_of":1,"stop":"x","seed":-1}"#,
    ),
    (1, r#"{"prompt":[["a"]],"stream":false}"#),
    (
        2,
        r#"{"prompt":"Hello <|eot_id|>","n_predict":-1,"n_probs":5}"#,
    ),
    (
        2,
        r#"{"prompt":["a",5,"b"],"max_tokens":0,"ignore_eos":true}"#,
    ),
    (
        3,
        r#"{"content":"Hello world <|begin_of_text|>","add_special":true,"parse_special":false,"with_pieces":true}"#,
    ),
    (3, r#"{"content":"é中文😀"}"#),
    (4, r#"{"tokens":[72,101,108,108,111]}"#),
    (4, r#"{"tokens":[4000000000]}"#),
    (0, "{\"messages\":[]} trailing"),
    (1, "  \n"),
];
