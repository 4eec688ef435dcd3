//! `cargo xtask bench`: prompt (pp) and generation (tg) speed of bitnet-server on the
//! 2B-4T-shaped synthetic model, per kernel variant and thread count, side by side with upstream
//! llama.cpp (PyPI `llama-cpp-python`) on a TQ2_0 file of the same weights, measured in the same
//! run with the cells interleaved round by round. Decode and prefill drift on a shared machine,
//! so the ratios (ours / llama.cpp, same threads, same round) are what to compare.
//!
//! `--depths 0,1024,4096` measures pp and tg with that many tokens already in the cache (both
//! engines fill it untimed, then time the test on top), and `-p` takes several prompt sizes; a
//! second table then gives each depth's figures, the ratios to llama.cpp at that depth, and each
//! engine's `tg@d / tg@0`. `--workload rag` measures a long prompt then an answer instead (time
//! to first token, the answer's decode speed) in both engines.
//!
//! Every cell is its own process (`bitnet-server bench` or `xtask/py/bench_llamacpp.py`), so load
//! time and peak RSS are per engine. Results also go to `target/bench/results.json`.
//!
//! What it does NOT do: build images or judge correctness (the kernel tests do that).

use crate::gen_model::{self, GenModelArgs};
use crate::{pyenv, workspace_root};
use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The llama.cpp build we compare with (its sdist compiles llama.cpp for this CPU).
pub const LLAMA_CPP_PYTHON: &str = "llama-cpp-python==0.3.36";
/// Targets from the kernels issue (tok/s, F16 head, kernel chosen for this CPU):
/// (threads, pp128, tg64).
const TARGETS: [(usize, f64, f64); 2] = [(2, 160.0, 20.0), (1, 90.0, 11.0)];
/// Allowance above model file + KV cache for peak RSS.
const RSS_SLACK: u64 = 100 << 20;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Thread counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "2,1")]
    pub threads: Vec<usize>,
    /// Kernel variants (default: every one this CPU runs except the slow scalar reference).
    #[arg(long, value_delimiter = ',')]
    pub variants: Vec<String>,
    /// Interleaved rounds; each cell's figure is the mean over rounds.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Prompt tokens (pp) [default: 128; 2048 with --workload rag]; several sizes
    /// (`-p 512,2048`) give a pp column each in the depth table.
    #[arg(short = 'p', long, value_delimiter = ',')]
    pub n_prompt: Vec<usize>,
    /// Generated tokens (tg) [default: 64; 128 with --workload rag].
    #[arg(short = 'n', long)]
    pub n_gen: Option<usize>,
    /// Cache depths at which pp and tg are measured (tokens already in the cache, filled
    /// untimed), in both engines; depth 0 is always measured.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    pub depths: Vec<usize>,
    /// `pp-tg` (pp and tg at each depth) or `rag` (a long prompt then an answer, from an empty
    /// cache: time to first token and decode speed), in both engines.
    #[arg(long, value_enum, default_value_t = Workload::PpTg)]
    pub workload: Workload,
    /// Skip llama.cpp (no ratios then).
    #[arg(long)]
    pub no_peer: bool,
    /// Also measure both engines on TQ1_0 files.
    #[arg(long)]
    pub tq1: bool,
    /// Where the synthetic models and results go.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// A release `bitnet-server` binary already built, instead of `cargo build --release`.
    #[arg(long, value_name = "BINARY")]
    pub server: Option<PathBuf>,
}

/// `--workload` values (the same names as `bitnet-server bench --workload`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    #[value(name = "pp-tg")]
    PpTg,
    Rag,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::PpTg => "pp-tg",
            Workload::Rag => "rag",
        }
    }
}

/// The run's sizes, with the workload's defaults filled in.
#[derive(Clone, Debug)]
struct Sizes {
    workload: Workload,
    /// As given (the first is the main table's pp).
    prompts: Vec<usize>,
    n_gen: usize,
    /// Ascending, starting at 0.
    depths: Vec<usize>,
    rounds: usize,
}

impl Sizes {
    fn new(args: &BenchArgs) -> Result<Sizes> {
        let rag = args.workload == Workload::Rag;
        let prompts = if args.n_prompt.is_empty() {
            vec![if rag { 2048 } else { 128 }]
        } else {
            let mut p = Vec::new();
            for &x in &args.n_prompt {
                if !p.contains(&x) {
                    p.push(x);
                }
            }
            p
        };
        let n_gen = args.n_gen.unwrap_or(if rag { 128 } else { 64 });
        if prompts.contains(&0) || n_gen == 0 {
            bail!("-p and -n must be at least 1");
        }
        let mut depths = args.depths.clone();
        depths.push(0);
        depths.sort_unstable();
        depths.dedup();
        if rag {
            if depths.len() > 1 {
                bail!("--workload rag starts every request from an empty cache; drop --depths");
            }
            if prompts.len() > 1 {
                bail!(
                    "--workload rag takes one prompt size; -p has {}",
                    prompts.len()
                );
            }
            if n_gen < 2 {
                bail!(
                    "--workload rag needs -n of at least 2 (the first answer token comes with the prompt)"
                );
            }
        }
        Ok(Sizes {
            workload: args.workload,
            prompts,
            n_gen,
            depths,
            rounds: args.rounds,
        })
    }

    fn csv(v: &[usize]) -> String {
        v.iter().map(usize::to_string).collect::<Vec<_>>().join(",")
    }
}

/// One thing to measure: an engine, a file, a kernel and a thread count.
#[derive(Clone, Debug)]
struct Cell {
    engine: &'static str,
    kernel: String,
    format: &'static str,
    threads: usize,
    model: PathBuf,
}

/// One depth's figures over the rounds: pp per prompt size, tg.
#[derive(Default, Clone, Debug)]
struct DepthSamples {
    depth: usize,
    pp: Vec<(usize, Vec<f64>)>,
    tg: Vec<f64>,
}

#[derive(Default, Clone, Debug)]
struct Samples {
    /// pp of the first prompt size and tg at depth 0 (the main table).
    pp: Vec<f64>,
    tg: Vec<f64>,
    /// Every depth, ascending.
    depths: Vec<DepthSamples>,
    /// `--workload rag`: time to first token (ms), prompt and answer decode tok/s.
    ttft_ms: Vec<f64>,
    prompt_tok_s: Vec<f64>,
    decode_tok_s: Vec<f64>,
    load_s: Vec<f64>,
    peak_rss: u64,
    file_bytes: u64,
    kv_bytes: u64,
    ceiling: Vec<f64>,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    if args.rounds == 0 || args.threads.is_empty() || args.threads.contains(&0) {
        bail!("--rounds and every --threads value must be at least 1");
    }
    let sizes = Sizes::new(args)?;
    let root = workspace_root();
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| root.join("target").join("bench"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;

    let server = match &args.server {
        Some(path) if path.is_file() => path.clone(),
        Some(path) => bail!("--server {}: no such file", path.display()),
        None => build_server(&root)?,
    };
    let mut formats = vec!["i2_s", "tq2_0"];
    if args.tq1 {
        formats.push("tq1_0");
    }
    let ours: Vec<(&str, PathBuf)> = formats
        .iter()
        .map(|&f| Ok((f, model(&dir, f, "bitnet-b1.58")?)))
        .collect::<Result<_>>()?;
    let python = if args.no_peer {
        None
    } else {
        Some(pyenv::python_with(&[LLAMA_CPP_PYTHON]).context(
            "installing llama-cpp-python (it compiles llama.cpp: needs a C++ compiler and \
             cmake; pass --no-peer to skip the comparison)",
        )?)
    };
    let peer: Vec<(&str, PathBuf)> = if python.is_some() {
        formats
            .iter()
            .filter(|&&f| f != "i2_s") // upstream llama.cpp has no I2_S
            .map(|&f| Ok((f, model(&dir, f, "bitnet")?)))
            .collect::<Result<_>>()?
    } else {
        Vec::new()
    };

    let available: Vec<&str> = bitnet_kernels::Kernels::available()
        .iter()
        .map(|k| k.name)
        .collect();
    let variants: Vec<String> = if args.variants.is_empty() {
        // The scalar reference decodes at well under 1 tok/s on this shape (minutes per
        // cell): it is there for correctness, and measured only when named.
        available
            .iter()
            .filter(|&&k| k != "scalar")
            .map(|s| s.to_string())
            .collect()
    } else {
        for v in &args.variants {
            if !available.contains(&v.as_str()) {
                bail!(
                    "kernel variant {v:?} does not run on this CPU; available: {}",
                    available.join(", ")
                );
            }
        }
        args.variants.clone()
    };
    let best = available[0].to_string();

    let mut cells = Vec::new();
    for &t in &args.threads {
        for v in &variants {
            cells.push(Cell {
                engine: "bitnet-server",
                kernel: v.clone(),
                format: "i2_s",
                threads: t,
                model: ours[0].1.clone(),
            });
        }
        for (f, path) in &ours[1..] {
            cells.push(Cell {
                engine: "bitnet-server",
                kernel: best.clone(),
                format: f,
                threads: t,
                model: path.clone(),
            });
        }
        for (f, path) in &peer {
            cells.push(Cell {
                engine: "llama.cpp",
                kernel: "ggml-cpu".into(),
                format: f,
                threads: t,
                model: path.clone(),
            });
        }
    }

    let total = (cells.len() * args.rounds) as u64;
    let bar = progress(total);
    let mut samples = vec![Samples::default(); cells.len()];
    let mut raw = Vec::new();
    for round in 1..=args.rounds {
        for (cell, s) in cells.iter().zip(samples.iter_mut()) {
            let what = format!(
                "round {round}/{} · {} {} {} · {} thr",
                args.rounds, cell.engine, cell.kernel, cell.format, cell.threads
            );
            bar.set_message(what.clone());
            if bar.is_hidden() {
                eprintln!("bench: {what}");
            }
            let doc = measure(cell, &server, python.as_deref(), &sizes)
                .with_context(|| format!("measuring {what}"))?;
            record(s, &doc, &sizes)?;
            raw.push(serde_json::json!({ "round": round, "result": doc }));
            bar.inc(1);
        }
    }
    bar.finish_and_clear();

    let table = report(&cells, &samples, &sizes);
    println!("{table}");
    let out = dir.join("results.json");
    std::fs::write(&out, serde_json::to_vec_pretty(&raw)?)
        .with_context(|| format!("writing {}", out.display()))?;
    eprintln!("bench: raw results in {}", out.display());
    Ok(())
}

fn progress(total: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} cells {elapsed} {msg}")
            .expect("valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// `cargo build --release` of the server (runtime kernel dispatch, so one build serves every
/// variant this CPU has).
pub fn build_server(root: &Path) -> Result<PathBuf> {
    eprintln!("building bitnet-server (release)");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(root)
        .args([
            "build",
            "--release",
            "--locked",
            "-p",
            "bitnet-server",
            "--bin",
            "bitnet-server",
        ])
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build --release -p bitnet-server failed");
    }
    Ok(root.join("target/release/bitnet-server"))
}

/// The synthetic 2B-4T file for `format` and `arch`, generated once (seed 1: the same weights
/// in every file).
fn model(dir: &Path, format: &str, arch: &str) -> Result<PathBuf> {
    let prefix = if arch == "bitnet" { "llamacpp-" } else { "" };
    let path = dir.join(format!("{prefix}2b4t-{format}.gguf"));
    if !path.exists() {
        gen_model::run(&GenModelArgs {
            preset: "2b4t".into(),
            format: format.into(),
            embedding: "f16".into(),
            out: path.clone(),
            seed: 1,
            arch: arch.into(),
        })?;
    }
    Ok(path)
}

fn measure(cell: &Cell, server: &Path, python: Option<&Path>, sizes: &Sizes) -> Result<Value> {
    let (p, n) = (Sizes::csv(&sizes.prompts), sizes.n_gen.to_string());
    let depths = Sizes::csv(&sizes.depths);
    let threads = cell.threads.to_string();
    let workload = sizes.workload.name();
    let mut args = vec![
        "--threads",
        &threads,
        "-p",
        &p,
        "-n",
        &n,
        "--workload",
        workload,
    ];
    if sizes.workload == Workload::PpTg {
        args.extend(["-d", &depths]);
    }
    let mut cmd = if cell.engine == "llama.cpp" {
        let python = python.context("llama.cpp cell without a Python venv")?;
        let mut c = Command::new(python);
        c.arg(workspace_root().join("xtask/py/bench_llamacpp.py"))
            .arg(&cell.model)
            .args(&args);
        c
    } else {
        let mut c = Command::new(server);
        c.arg("bench")
            .arg("--model")
            .arg(&cell.model)
            .args(&args)
            .arg("--memory-bandwidth")
            .env("BITNET_KERNEL", &cell.kernel);
        c
    };
    let out = cmd.output().context("starting the benchmark process")?;
    if !out.status.success() {
        bail!(
            "the benchmark process failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .context("the benchmark process printed no JSON result")?;
    serde_json::from_str(line).context("parsing the benchmark result")
}

fn nums(v: &Value) -> Vec<f64> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default()
}

/// Adds one round's result of a cell to its samples.
fn record(s: &mut Samples, doc: &Value, sizes: &Sizes) -> Result<()> {
    if sizes.workload == Workload::Rag {
        let rag = &doc["rag"];
        let (ttft, decode) = (nums(&rag["ttft_ms"]), nums(&rag["decode_tok_s"]));
        if ttft.is_empty() || decode.is_empty() {
            bail!("the result has no rag figures: {doc}");
        }
        s.ttft_ms.extend(ttft);
        s.prompt_tok_s.extend(nums(&rag["prompt_tok_s"]));
        s.decode_tok_s.extend(decode);
    } else {
        let depths = doc["depths"].as_array().cloned().unwrap_or_default();
        for &depth in &sizes.depths {
            let entry = depths
                .iter()
                .find(|e| e["depth"].as_u64() == Some(depth as u64))
                .with_context(|| format!("the result has no figures at depth {depth}: {doc}"))?;
            let at = match s.depths.iter_mut().position(|d| d.depth == depth) {
                Some(i) => &mut s.depths[i],
                None => {
                    s.depths.push(DepthSamples {
                        depth,
                        pp: sizes.prompts.iter().map(|&p| (p, Vec::new())).collect(),
                        tg: Vec::new(),
                    });
                    s.depths.last_mut().expect("just pushed")
                }
            };
            for (p, v) in at.pp.iter_mut() {
                let found = entry["pp"]
                    .as_array()
                    .and_then(|a| a.iter().find(|e| e["n_prompt"].as_u64() == Some(*p as u64)))
                    .map(|e| nums(&e["tok_s"]))
                    .unwrap_or_default();
                if found.is_empty() {
                    bail!("the result has no pp{p} figure at depth {depth}: {doc}");
                }
                v.extend(found);
            }
            let tg = nums(&entry["tg_tok_s"]);
            if tg.is_empty() {
                bail!("the result has no tg figure at depth {depth}: {doc}");
            }
            at.tg.extend(tg);
        }
        let (pp, tg) = (nums(&doc["pp_tok_s"]), nums(&doc["tg_tok_s"]));
        if pp.is_empty() || tg.is_empty() {
            bail!("the result has no pp/tg figures: {doc}");
        }
        s.pp.extend(pp);
        s.tg.extend(tg);
    }
    s.load_s.extend(doc["load_s"].as_f64());
    s.peak_rss = s.peak_rss.max(doc["peak_rss_bytes"].as_u64().unwrap_or(0));
    s.file_bytes = doc["file_bytes"].as_u64().unwrap_or(0);
    s.kv_bytes = doc["kv_bytes"].as_u64().unwrap_or(0);
    s.ceiling.extend(doc["decode_ceiling_tok_s"].as_f64());
    Ok(())
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.iter().sum::<f64>() / v.len() as f64
}

/// "mean ±spread%" where spread is half the min–max range.
fn with_spread(v: &[f64]) -> String {
    let m = mean(v);
    let (lo, hi) = v
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    if v.len() < 2 || m == 0.0 {
        return format!("{m:.1}");
    }
    format!("{m:.1} ±{:.0}%", 50.0 * (hi - lo) / m)
}

/// `ours / theirs` of two means as "1.23×", or "—" without a peer (or for the peer itself).
fn ratio(c: &Cell, ours: &[f64], theirs: Option<&[f64]>) -> String {
    match theirs {
        Some(th) if c.engine != "llama.cpp" && !th.is_empty() => {
            format!("{:.2}×", mean(ours) / mean(th))
        }
        _ => "—".into(),
    }
}

/// Peak RSS in MiB; for our cells also the limit (file + KV cache + slack) and whether it held.
fn rss(c: &Cell, s: &Samples) -> String {
    if c.engine == "llama.cpp" {
        format!("{:.0}", s.peak_rss as f64 / 1048576.0)
    } else {
        let limit = s.file_bytes + s.kv_bytes + RSS_SLACK;
        format!(
            "{:.0} ({:.0}{})",
            s.peak_rss as f64 / 1048576.0,
            limit as f64 / 1048576.0,
            if s.peak_rss <= limit { " ok" } else { " OVER" }
        )
    }
}

fn report(cells: &[Cell], samples: &[Samples], sizes: &Sizes) -> String {
    use std::fmt::Write;
    let peer_of = |c: &Cell, f: &str| {
        cells
            .iter()
            .zip(samples)
            .find(|(p, _)| p.engine == "llama.cpp" && p.threads == c.threads && p.format == f)
            .map(|(_, s)| s)
    };
    let mut t = String::new();
    let (pp, tg) = (sizes.prompts[0], sizes.n_gen);
    let _ = writeln!(
        t,
        "2B-4T-shaped synthetic model, F16 head; tok/s, mean of {} interleaved rounds (±: half the range)",
        sizes.rounds
    );
    let _ = writeln!(
        t,
        "ratios: ours / llama.cpp TQ2_0 at the same thread count in the same run\n"
    );
    if sizes.workload == Workload::Rag {
        let _ = writeln!(
            t,
            "rag: a {pp}-token prompt then a {tg}-token greedy answer, from an empty cache; TTFT = prompt + first token\n"
        );
        let _ = writeln!(
            t,
            "| engine | kernel | weights | thr | TTFT ms | prompt tok/s | answer tok/s | prompt × llama.cpp | answer × llama.cpp | load s | peak RSS MiB (limit) |"
        );
        let _ = writeln!(t, "|---|---|---|---|---|---|---|---|---|---|---|");
        for (c, s) in cells.iter().zip(samples) {
            let peer = peer_of(c, "tq2_0");
            let _ = writeln!(
                t,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {} |",
                c.engine,
                c.kernel,
                c.format.to_uppercase(),
                c.threads,
                with_spread(&s.ttft_ms),
                with_spread(&s.prompt_tok_s),
                with_spread(&s.decode_tok_s),
                ratio(c, &s.prompt_tok_s, peer.map(|p| p.prompt_tok_s.as_slice())),
                ratio(c, &s.decode_tok_s, peer.map(|p| p.decode_tok_s.as_slice())),
                mean(&s.load_s),
                rss(c, s),
            );
        }
        return t;
    }
    let _ = writeln!(
        t,
        "| engine | kernel | weights | thr | pp{pp} | tg{tg} | pp × llama.cpp | tg × llama.cpp | decode % of ceiling | load s | peak RSS MiB (limit) |"
    );
    let _ = writeln!(t, "|---|---|---|---|---|---|---|---|---|---|---|");
    for (c, s) in cells.iter().zip(samples) {
        let peer = peer_of(c, "tq2_0");
        let ceiling = if s.ceiling.is_empty() {
            "—".to_string()
        } else {
            format!(
                "{:.0}% of {:.1}",
                100.0 * mean(&s.tg) / mean(&s.ceiling),
                mean(&s.ceiling)
            )
        };
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {} |",
            c.engine,
            c.kernel,
            c.format.to_uppercase(),
            c.threads,
            with_spread(&s.pp),
            with_spread(&s.tg),
            ratio(c, &s.pp, peer.map(|p| p.pp.as_slice())),
            ratio(c, &s.tg, peer.map(|p| p.tg.as_slice())),
            ceiling,
            mean(&s.load_s),
            rss(c, s),
        );
    }
    if sizes.depths.len() > 1 || sizes.prompts.len() > 1 {
        t.push_str(&depth_report(cells, samples, sizes));
    }
    // Targets: the automatically chosen kernel on I2_S.
    let best = bitnet_kernels::Kernels::best().name;
    let _ = writeln!(t, "\ntargets ({best}, I2_S, F16 head):");
    for (threads, pp_min, tg_min) in TARGETS {
        let Some((_, s)) = cells.iter().zip(samples).find(|(c, _)| {
            c.engine == "bitnet-server"
                && c.kernel == best
                && c.format == "i2_s"
                && c.threads == threads
        }) else {
            continue;
        };
        let (p, g) = (mean(&s.pp), mean(&s.tg));
        let _ = writeln!(
            t,
            "  {threads} thr: pp{pp} {p:.1} (target ≥ {pp_min}: {}), tg{tg} {g:.1} (target ≥ {tg_min}: {})",
            if p >= pp_min { "met" } else { "NOT met" },
            if g >= tg_min { "met" } else { "NOT met" },
        );
    }
    t
}

/// The figures at each depth: pp per prompt size and tg, their ratios to llama.cpp at the same
/// depth, and each engine's tg at the depth over its own tg at depth 0.
fn depth_report(cells: &[Cell], samples: &[Samples], sizes: &Sizes) -> String {
    use std::fmt::Write;
    let tg = sizes.n_gen;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "\nat depth (tokens already in the cache, filled untimed); tg@d / tg@0 is each engine's own slowdown\n"
    );
    let mut header = String::from("| engine | kernel | weights | thr | depth |");
    let mut rule = String::from("|---|---|---|---|---|");
    for p in &sizes.prompts {
        let _ = write!(header, " pp{p} |");
        rule.push_str("---|");
    }
    let _ = write!(header, " tg{tg} |");
    rule.push_str("---|");
    for p in &sizes.prompts {
        let _ = write!(header, " pp{p} × llama.cpp |");
        rule.push_str("---|");
    }
    let _ = write!(header, " tg × llama.cpp | tg@d / tg@0 |");
    rule.push_str("---|---|");
    let _ = writeln!(t, "{header}\n{rule}");
    for (c, s) in cells.iter().zip(samples) {
        let peer = cells
            .iter()
            .zip(samples)
            .find(|(p, _)| p.engine == "llama.cpp" && p.threads == c.threads && p.format == "tq2_0")
            .map(|(_, s)| s);
        let tg0 = s.depths.first().map(|d| mean(&d.tg)).unwrap_or(f64::NAN);
        for d in &s.depths {
            let theirs = peer.and_then(|p| p.depths.iter().find(|x| x.depth == d.depth));
            let mut row = format!(
                "| {} | {} | {} | {} | {} |",
                c.engine,
                c.kernel,
                c.format.to_uppercase(),
                c.threads,
                d.depth
            );
            for (_, v) in &d.pp {
                let _ = write!(row, " {} |", with_spread(v));
            }
            let _ = write!(row, " {} |", with_spread(&d.tg));
            for (p, v) in &d.pp {
                let th = theirs
                    .and_then(|x| x.pp.iter().find(|(q, _)| q == p))
                    .map(|(_, v)| v.as_slice());
                let _ = write!(row, " {} |", ratio(c, v, th));
            }
            let _ = write!(
                row,
                " {} | {:.2} |",
                ratio(c, &d.tg, theirs.map(|x| x.tg.as_slice())),
                mean(&d.tg) / tg0
            );
            let _ = writeln!(t, "{row}");
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(engine: &'static str, format: &'static str) -> Cell {
        Cell {
            engine,
            kernel: "k".into(),
            format,
            threads: 2,
            model: PathBuf::new(),
        }
    }

    fn samples(pp: [f64; 2], tg: [f64; 2]) -> Samples {
        let depths = [0, 1024]
            .into_iter()
            .zip(pp.into_iter().zip(tg))
            .map(|(depth, (pp, tg))| DepthSamples {
                depth,
                pp: vec![(128, vec![pp, pp])],
                tg: vec![tg - 1.0, tg + 1.0],
            })
            .collect::<Vec<_>>();
        Samples {
            pp: depths[0].pp[0].1.clone(),
            tg: depths[0].tg.clone(),
            depths,
            ..Samples::default()
        }
    }

    #[test]
    fn the_depth_table_gives_ratios_at_each_depth_and_the_slowdown() {
        let sizes = Sizes {
            workload: Workload::PpTg,
            prompts: vec![128],
            n_gen: 64,
            depths: vec![0, 1024],
            rounds: 2,
        };
        let cells = [cell("bitnet-server", "i2_s"), cell("llama.cpp", "tq2_0")];
        let samples = [
            samples([200.0, 100.0], [20.0, 15.0]),
            samples([100.0, 80.0], [10.0, 5.0]),
        ];
        let t = report(&cells, &samples, &sizes);
        let rows: Vec<&str> = t.lines().filter(|l| l.contains("| 1024 |")).collect();
        assert_eq!(rows.len(), 2, "{t}");
        // Ours at 1024: pp 100 vs 80 (1.25×), tg 15 vs 5 (3.00×), 15 / 20 of depth 0.
        assert_eq!(
            rows[0],
            "| bitnet-server | k | I2_S | 2 | 1024 | 100.0 ±0% | 15.0 ±7% | 1.25× | 3.00× | 0.75 |",
            "{t}"
        );
        // The peer has no ratio to itself, but its own slowdown.
        assert_eq!(
            rows[1], "| llama.cpp | k | TQ2_0 | 2 | 1024 | 80.0 ±0% | 5.0 ±20% | — | — | 0.50 |",
            "{t}"
        );
        assert!(
            t.contains(
                "| depth | pp128 | tg64 | pp128 × llama.cpp | tg × llama.cpp | tg@d / tg@0 |"
            ),
            "{t}"
        );
    }

    #[test]
    fn the_rag_table_compares_both_rates() {
        let sizes = Sizes {
            workload: Workload::Rag,
            prompts: vec![2048],
            n_gen: 128,
            depths: vec![0],
            rounds: 1,
        };
        let cells = [cell("bitnet-server", "i2_s"), cell("llama.cpp", "tq2_0")];
        let rag = |ttft: f64, decode: f64| Samples {
            ttft_ms: vec![ttft],
            prompt_tok_s: vec![2048.0 / (ttft / 1e3)],
            decode_tok_s: vec![decode],
            ..Samples::default()
        };
        let t = report(&cells, &[rag(8000.0, 12.0), rag(16000.0, 10.0)], &sizes);
        assert!(t.contains("2048-token prompt then a 128-token"), "{t}");
        let ours = t
            .lines()
            .find(|l| l.starts_with("| bitnet-server"))
            .unwrap();
        assert!(
            ours.contains("| 8000.0 | 256.0 | 12.0 | 2.00× | 1.20× |"),
            "{t}"
        );
        assert!(!t.contains("targets"), "{t}");
    }
}
