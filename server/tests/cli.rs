//! The `bitnet-server` engine subcommands end to end, on a small synthetic model.

use bitnet_gguf::GgmlType;
use bitnet_synth::{self as synth, Shape};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const SHAPE: Shape = Shape {
    name: "cli-test",
    n_embd: 256,
    n_layer: 2,
    n_head: 4,
    n_head_kv: 2,
    n_ff: 512,
    n_ctx: 256,
};

fn model() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let path = dir.join("cli-test.gguf");
        let w = synth::build(
            &SHAPE,
            GgmlType::I2S,
            GgmlType::F16,
            &synth::toy_vocab(150),
            3,
        );
        let tmp = dir.join(format!("cli-test.{}.tmp", std::process::id()));
        std::fs::write(&tmp, w.to_bytes()).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path
    })
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bitnet-server"))
        .args(args)
        .env_remove("BITNET_KERNEL")
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(
        o.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn generate(extra: &[&str]) -> String {
    let m = model().to_str().unwrap();
    let mut args = vec![
        "generate",
        "-m",
        m,
        "-p",
        "the cat sat on",
        "-n",
        "24",
        "-t",
        "2",
    ];
    args.extend_from_slice(extra);
    ok(&args)
}

#[test]
fn same_seed_same_text_other_seed_differs() {
    let a = generate(&["--temp", "1.5", "--top-k", "0", "--seed", "11"]);
    let b = generate(&["--temp", "1.5", "--top-k", "0", "--seed", "11"]);
    let c = generate(&["--temp", "1.5", "--top-k", "0", "--seed", "12"]);
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert!(a.trim().len() > 5, "generated too little: {a:?}");
}

#[test]
fn stop_string_cuts_the_output_before_it() {
    let full = generate(&["--temp", "0", "--ignore-eos"]);
    let text = full.trim_end_matches('\n');
    let chars: Vec<char> = text.chars().collect();
    assert!(chars.len() > 12, "greedy output too short: {text:?}");
    let stop: String = chars[8..11].iter().collect();
    let before = &text[..text.find(&stop).unwrap()];
    let cut = generate(&["--temp", "0", "--ignore-eos", "--stop", &stop]);
    assert_eq!(cut.trim_end_matches('\n'), before);
}

#[test]
fn greedy_generation_follows_the_logits_argmax() {
    // The first generated token of a greedy run is the argmax of the prompt's last logits.
    let m = model().to_str().unwrap();
    let out = ok(&[
        "logits",
        "-m",
        m,
        "--tokens",
        "116,104,101,32,99",
        "--json",
        "--all-positions",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let positions = v["positions"].as_array().unwrap();
    assert_eq!(positions.len(), 5);
    for p in positions {
        let logits: Vec<f64> = p["logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(logits.len(), v["n_vocab"].as_u64().unwrap() as usize);
        let max = logits.iter().cloned().fold(f64::MIN, f64::max);
        let arg = p["argmax"].as_u64().unwrap() as usize;
        assert_eq!(logits[arg], max);
    }
}

#[test]
fn inspect_reports_the_model() {
    let out = ok(&["inspect", model().to_str().unwrap()]);
    assert!(out.contains("general.architecture"), "{out}");
    assert!(out.contains("blk.1.ffn_down.weight"), "{out}");
    assert!(
        out.contains("model: cli-test (bitnet-b1.58), 2 layers, d=256, heads 4/2"),
        "{out}"
    );
    assert!(out.contains("I2_S: 14"), "{out}");
}

#[test]
fn bench_reports_speed_memory_and_bandwidth() {
    let m = model().to_str().unwrap();
    let out = ok(&[
        "bench",
        "-m",
        m,
        "-t",
        "1",
        "-p",
        "8",
        "-n",
        "4",
        "-b",
        "3",
        "-r",
        "2",
        "--memory-bandwidth",
        "--buffer-mib",
        "64",
    ]);
    let doc: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(doc["engine"], "bitnet-server", "{doc}");
    assert_eq!(doc["format"], "I2_S", "{doc}");
    assert_eq!(doc["threads"], 1, "{doc}");
    assert_eq!(doc["batch"], 3, "{doc}");
    for key in ["pp_tok_s", "tg_tok_s"] {
        let v = doc[key].as_array().unwrap();
        assert_eq!(v.len(), 2, "{key}: {doc}");
        assert!(v.iter().all(|x| x.as_f64().unwrap() > 0.0), "{doc}");
    }
    let file = std::fs::metadata(model()).unwrap().len();
    assert_eq!(doc["file_bytes"].as_u64().unwrap(), file);
    // Three sequences of 4 tokens: 12 positions of 2 layers × (2 KV heads × 64) × K and V, f16.
    assert_eq!(doc["kv_bytes"].as_u64().unwrap(), 12 * 2 * 2 * 128 * 2);
    // Everything but the embedding, plus the embedding again as the F16 head.
    let embd = 256 * 150 * 2;
    let decode = doc["decode_bytes_per_token"].as_u64().unwrap();
    assert!(decode > embd && decode < file, "{doc}");
    assert!(doc["peak_rss_bytes"].as_u64().unwrap() > 0, "{doc}");
    let bw = doc["read_bytes_per_s"].as_f64().unwrap();
    assert!(bw > 1e8, "{doc}");
    let ceiling = doc["decode_ceiling_tok_s"].as_f64().unwrap();
    assert!(
        (ceiling - bw / decode as f64).abs() < 1e-6 * ceiling,
        "{doc}"
    );

    let o = run(&["bench", "-m", m, "-n", "0"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("must be at least 1"));
}

/// KV cache bytes per token the test model's shape implies: f16 K and V for 2 layers of
/// 2 KV heads × 64 dimensions.
const KV_BYTES_PER_TOKEN: u64 = 2 * 2 * (2 * 64) * 2;

#[test]
fn bench_measures_pp_and_tg_at_each_depth() {
    let m = model().to_str().unwrap();
    let out = ok(&[
        "bench", "-m", m, "-t", "1", "-d", "16,0", "-p", "8,4", "-n", "4", "-b", "1,2", "-r", "2",
    ]);
    let doc: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(doc["workload"], "pp-tg", "{doc}");
    assert_eq!(
        doc["kv_bytes_per_token"].as_u64().unwrap(),
        KV_BYTES_PER_TOKEN,
        "{doc}"
    );
    let depths = doc["depths"].as_array().unwrap();
    assert_eq!(depths.len(), 2, "{doc}");
    for (entry, depth) in depths.iter().zip([0u64, 16]) {
        assert_eq!(entry["depth"].as_u64().unwrap(), depth, "{doc}");
        assert_eq!(
            entry["kv_bytes_at_depth"].as_u64().unwrap(),
            depth * KV_BYTES_PER_TOKEN,
            "{doc}"
        );
        // -p 8,4: the first given is the headline figure; both sizes listed, ascending.
        let pp = entry["pp"].as_array().unwrap();
        let sizes: Vec<u64> = pp.iter().map(|e| e["n_prompt"].as_u64().unwrap()).collect();
        assert_eq!(sizes, [4, 8], "{doc}");
        assert_eq!(entry["pp_tok_s"], pp[1]["tok_s"], "{doc}");
        let tg = entry["tg"].as_array().unwrap();
        assert_eq!(tg.len(), 2, "{doc}");
        assert_eq!(entry["tg_tok_s"], tg[0]["tok_s"], "{doc}");
        let rates = pp
            .iter()
            .chain(tg)
            .flat_map(|e| e["tok_s"].as_array().unwrap());
        let rates: Vec<f64> = rates.map(|x| x.as_f64().unwrap()).collect();
        assert_eq!(
            rates.len(),
            8,
            "two pp and two tg sizes, two reps each: {doc}"
        );
        assert!(rates.iter().all(|&r| r > 0.0), "{doc}");
    }
    // The top-level figures are depth 0's.
    assert_eq!(doc["pp_tok_s"], depths[0]["pp_tok_s"], "{doc}");
    assert_eq!(doc["tg_tok_s"], depths[0]["tg_tok_s"], "{doc}");
    assert_eq!(doc["n_prompt"], 8, "{doc}");
    // Two caches at depth 16 plus the larger of pp8 and two tg sequences of 4: 40 tokens.
    assert_eq!(
        doc["kv_bytes"].as_u64().unwrap(),
        40 * KV_BYTES_PER_TOKEN,
        "{doc}"
    );
}

#[test]
fn bench_rag_reports_time_to_first_token_and_decode() {
    let m = model().to_str().unwrap();
    let out = ok(&[
        "bench",
        "-m",
        m,
        "-t",
        "1",
        "--workload",
        "rag",
        "-p",
        "600",
        "-n",
        "6",
        "-r",
        "2",
    ]);
    let doc: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(doc["workload"], "rag", "{doc}");
    let rag = &doc["rag"];
    // 600 tokens: two prefill chunks, past the trained context (allowed in a benchmark).
    assert_eq!(rag["n_prompt"], 600, "{doc}");
    assert_eq!(rag["n_gen"], 6, "{doc}");
    for key in ["ttft_ms", "prompt_tok_s", "decode_tok_s"] {
        let v = rag[key].as_array().unwrap();
        assert_eq!(v.len(), 2, "{key}: {doc}");
        assert!(v.iter().all(|x| x.as_f64().unwrap() > 0.0), "{key}: {doc}");
    }
    // The prompt rate is the prompt over the time to first token.
    let (ttft, rate) = (
        rag["ttft_ms"][0].as_f64().unwrap(),
        rag["prompt_tok_s"][0].as_f64().unwrap(),
    );
    assert!((rate - 600.0 / (ttft / 1e3)).abs() < 1e-6 * rate, "{doc}");
    assert_eq!(doc["kv_bytes"].as_u64().unwrap(), 606 * KV_BYTES_PER_TOKEN);
    assert!(
        doc["pp_tok_s"].is_null() && doc["depths"].is_null(),
        "{doc}"
    );

    for (flags, needle) in [
        (&["-d", "8"][..], "drop -d"),
        (&["-b", "2"][..], "drop -b"),
        (&["-n", "1"][..], "-n of at least 2"),
    ] {
        let o = run(&[
            &["bench", "-m", m, "--workload", "rag", "-p", "8"][..],
            flags,
        ]
        .concat());
        assert!(!o.status.success(), "{flags:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(needle), "{flags:?}: {err}");
    }
}

#[test]
fn bench_depth_beyond_the_context_is_a_clear_error() {
    let m = model().to_str().unwrap();
    // 100 + 8 tokens do not fit in a context of 64.
    let o = run(&[
        "bench", "-m", m, "-c", "64", "-d", "0,100", "-p", "8", "-n", "4",
    ]);
    assert_eq!(o.status.code(), Some(1), "an error, not an abort");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("-d 100") && err.contains("108 tokens") && err.contains("--ctx-size 64"),
        "{err}"
    );
    // Without -c, a depth whose KV cache no machine holds is refused before anything runs.
    let huge = (1u64 << 50).to_string();
    let o = run(&["bench", "-m", m, "-d", &huge, "-p", "8", "-n", "4"]);
    assert_eq!(o.status.code(), Some(1), "an error, not an abort");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("-d {huge}")) && err.contains("lower -d"),
        "{err}"
    );
    // A context that fits runs, past the model's trained 256 tokens with a note.
    let o = run(&[
        "bench", "-m", m, "-t", "1", "-d", "260", "-p", "4", "-n", "2",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("trained context of 256"), "{err}");
}

#[test]
fn bench_compares_constrained_decoding() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let schema = dir.join("bench-schema.json");
    std::fs::write(
        &schema,
        r#"{"type": "object", "properties": {"a": {"type": "integer"}, "b": {"enum": ["x", "y"]}},
            "required": ["a", "b"], "additionalProperties": false}"#,
    )
    .unwrap();
    let m = model().to_str().unwrap();
    let s = schema.to_str().unwrap();
    let out = ok(&[
        "bench",
        "-m",
        m,
        "-t",
        "1",
        "-p",
        "4",
        "-n",
        "40",
        "-b",
        "1,3",
        "-r",
        "1",
        "--json-schema",
        s,
    ]);
    let doc: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    // The unconstrained figures keep their shape: `batch`/`tg_tok_s` are the first -b.
    assert_eq!(doc["batch"], 1, "{doc}");
    assert_eq!(doc["tg"].as_array().unwrap().len(), 2, "{doc}");
    let entries = doc["constrained"]["batches"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{doc}");
    for (e, b) in entries.iter().zip([1, 3]) {
        assert_eq!(e["batch"], b, "{doc}");
        for key in ["tok_s", "constrained_tok_s"] {
            assert!(e[key][0].as_f64().unwrap() > 0.0, "{doc}");
        }
        assert!(e["grammar_us_per_token"].as_f64().unwrap() > 0.0, "{doc}");
        let share = e["grammar_share_pct"].as_f64().unwrap();
        assert!(share > 0.0 && share < 100.0, "{doc}");
        assert!(e["overhead_pct"].is_number(), "{doc}");
        // 40 greedy steps under the schema complete at least one value per sequence
        // (`{"a": 7, "b": "x"}` is 12 tokens at most with merges, more byte by byte).
        assert!(e["values_completed"].as_u64().unwrap() >= b, "{doc}");
    }

    std::fs::write(&schema, r#"{"type": "array", "uniqueItems": true}"#).unwrap();
    let o = run(&["bench", "-m", m, "-n", "2", "--json-schema", s]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("`uniqueItems`"), "{err}");
}

#[test]
fn perplexity_runs_like_llama_cpp() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let text = dir.join("ppl.txt");
    let words = ["the ", "cat ", "sat ", "on ", "a ", "mat ", "and ", "then "];
    let body: String = (0..600)
        .map(|i| words[(i * 7 + i / 3) % words.len()])
        .collect();
    std::fs::write(&text, body).unwrap();
    let m = model().to_str().unwrap();
    let out = ok(&[
        "perplexity",
        "-m",
        m,
        "-f",
        text.to_str().unwrap(),
        "--chunk",
        "64",
    ]);
    let ppl: f64 = out
        .split("PPL = ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no PPL in {out:?}"));
    assert!(ppl.is_finite() && ppl > 1.0, "{ppl}");
    let short = run(&[
        "perplexity",
        "-m",
        m,
        "-f",
        text.to_str().unwrap(),
        "--chunk",
        "4096",
    ]);
    let err = String::from_utf8_lossy(&short.stderr);
    assert!(!short.status.success(), "{err}");
    assert!(
        err.contains("needs at least 8192") && err.contains("smaller --chunk"),
        "{err}"
    );
}

/// Issue 16, defect 11: `generate` refuses a context above the trained one (256 here) unless
/// allowed, and one whose KV cache cannot fit in memory, with a clear error and no abort.
#[test]
fn a_context_the_model_or_the_machine_cannot_hold_is_refused() {
    let m = model().to_str().unwrap();
    let huge = (1u64 << 31).to_string();
    let base = [
        "generate",
        "-m",
        m,
        "-p",
        "hi",
        "-n",
        "2",
        "-c",
        huge.as_str(),
    ];
    let beyond = run(&base);
    let allowed = run(&[&base[..], &["--allow-ctx-beyond-training"]].concat());
    let fits = run(&["generate", "-m", m, "-p", "hi", "-n", "2", "-c", "256"]);
    for (what, o) in [("beyond", &beyond), ("allowed", &allowed), ("256", &fits)] {
        eprintln!(
            "-c {what}: exit {:?}: {}",
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    assert_eq!(beyond.status.code(), Some(1));
    let err = String::from_utf8_lossy(&beyond.stderr);
    assert!(err.contains("trained context of 256"), "{err}");
    assert_eq!(allowed.status.code(), Some(1), "an error, not an abort");
    let err = String::from_utf8_lossy(&allowed.stderr);
    assert!(
        err.contains("KV cache") && err.contains("available"),
        "{err}"
    );
    assert!(fits.status.success());
}

#[test]
fn bad_model_files_are_clear_errors() {
    let o = run(&["logits", "-m", "/nonexistent/model.gguf", "--tokens", "1"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cannot open model file /nonexistent/model.gguf"),
        "{err}"
    );
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let junk = dir.join("junk.safetensors");
    std::fs::write(&junk, b"{\"__metadata__\":{}}").unwrap();
    let o = run(&["generate", "-m", junk.to_str().unwrap(), "-p", "x"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("not a GGUF file"), "{err}");
    let o = run(&[
        "logits",
        "-m",
        model().to_str().unwrap(),
        "--tokens",
        "999999",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("token id 999999 is outside the vocabulary"),
        "{err}"
    );
}

/// `generate` runs on the server's engine: the same seed gives the same tokens as a request
/// submitted to an engine directly, and generated control tokens (`<|eot_id|>` under
/// `--ignore-eos`, ...) print no text on either path.
#[test]
fn generate_hides_control_tokens_like_the_server() {
    use bitnet_model::{LoadOptions, Model};
    use bitnet_server::engine::{Engine, EngineConfig, Event, GenerationRequest, bitnet};
    use bitnet_server::sampling::SamplingParams;

    let path = model();
    let file = bitnet_gguf::GgufFile::open(path).unwrap();
    let opts = LoadOptions {
        threads: 2,
        ..LoadOptions::default()
    };
    let model_ = Model::load(&file, &opts).unwrap();
    let n_ctx = model_.n_ctx();
    let engine = Engine::start(
        bitnet::loaded_model(&file, model_, 1).unwrap(),
        EngineConfig {
            parallel: 1,
            queue_size: 1,
            prefill_chunk: n_ctx,
            // Each run after the first starts from the previous one's cached prompt: the
            // comparison with `generate` (no cache) below also checks that reuse changes nothing.
            cache_ram: Some(1 << 30),
        },
    )
    .unwrap();
    let prompt = engine
        .tokenizer
        .encode("the cat sat on", true, true)
        .unwrap();
    let run = |seed: u64| {
        let mut rx = engine
            .handle
            .submit(GenerationRequest {
                prompt_tokens: prompt.clone(),
                max_tokens: 60,
                sampling: SamplingParams {
                    temperature: 2.0,
                    top_k: 0,
                    top_p: 1.0,
                    min_p: 0.0,
                    seed,
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
        let (mut text, mut controls) = (String::new(), 0);
        loop {
            match rx.blocking_recv().unwrap() {
                Event::Token { id, text: t, .. } => {
                    if engine.tokenizer.is_control(id) {
                        controls += 1;
                        assert_eq!(t, "", "control token {id} produced text");
                    }
                    text.push_str(&t);
                }
                Event::Done { text: t, .. } => return (text + &t, controls),
                Event::Failed { message } => panic!("{message}"),
            }
        }
    };
    // A seed whose draw includes control tokens (3 of the 409 tokens are control).
    let (seed, expected) = (1..40u64)
        .map(|seed| (seed, run(seed)))
        .find(|(_, (_, controls))| *controls > 0)
        .map(|(seed, (text, _))| (seed, text))
        .expect("no seed drew a control token");
    engine.stop();
    assert!(!expected.contains("<|"), "{expected:?}");
    let seed = seed.to_string();
    let m = path.to_str().unwrap();
    let out = ok(&[
        "generate",
        "-m",
        m,
        "-p",
        "the cat sat on",
        "-n",
        "60",
        "-t",
        "2",
        "--temp",
        "2",
        "--top-k",
        "0",
        "--top-p",
        "1",
        "--min-p",
        "0",
        "--ignore-eos",
        "--seed",
        &seed,
    ]);
    assert_eq!(out.strip_suffix('\n').unwrap(), expected);
}
