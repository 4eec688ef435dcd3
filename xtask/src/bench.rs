//! `cargo xtask bench`: prompt (pp) and generation (tg) speed of bitnet-server on the
//! 2B-4T-shaped synthetic model, per kernel variant and thread count, side by side with upstream
//! llama.cpp (PyPI `llama-cpp-python`) on a TQ2_0 file of the same weights, measured in the same
//! run with the cells interleaved round by round. Decode and prefill drift on a shared machine,
//! so the ratios (ours / llama.cpp, same threads, same round) are what to compare.
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
    /// Prompt tokens (pp).
    #[arg(short = 'p', long, default_value_t = 128)]
    pub n_prompt: usize,
    /// Generated tokens (tg).
    #[arg(short = 'n', long, default_value_t = 64)]
    pub n_gen: usize,
    /// Skip llama.cpp (no ratios then).
    #[arg(long)]
    pub no_peer: bool,
    /// Also measure both engines on TQ1_0 files.
    #[arg(long)]
    pub tq1: bool,
    /// Where the synthetic models and results go.
    #[arg(long)]
    pub dir: Option<PathBuf>,
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

#[derive(Default, Clone, Debug)]
struct Samples {
    pp: Vec<f64>,
    tg: Vec<f64>,
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
    let root = workspace_root();
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| root.join("target").join("bench"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;

    let server = build_server(&root)?;
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
            let doc = measure(cell, &server, python.as_deref(), args)
                .with_context(|| format!("measuring {what}"))?;
            record(s, &doc)?;
            raw.push(serde_json::json!({ "round": round, "result": doc }));
            bar.inc(1);
        }
    }
    bar.finish_and_clear();

    let table = report(&cells, &samples, args);
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

fn measure(cell: &Cell, server: &Path, python: Option<&Path>, args: &BenchArgs) -> Result<Value> {
    let (p, n) = (args.n_prompt.to_string(), args.n_gen.to_string());
    let threads = cell.threads.to_string();
    let mut cmd = if cell.engine == "llama.cpp" {
        let python = python.context("llama.cpp cell without a Python venv")?;
        let mut c = Command::new(python);
        c.arg(workspace_root().join("xtask/py/bench_llamacpp.py"))
            .arg(&cell.model)
            .args(["--threads", &threads, "-p", &p, "-n", &n]);
        c
    } else {
        let mut c = Command::new(server);
        c.arg("bench")
            .arg("--model")
            .arg(&cell.model)
            .args([
                "--threads",
                &threads,
                "-p",
                &p,
                "-n",
                &n,
                "--memory-bandwidth",
            ])
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

fn record(s: &mut Samples, doc: &Value) -> Result<()> {
    let nums = |k: &str| -> Vec<f64> {
        doc[k]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default()
    };
    let pp = nums("pp_tok_s");
    let tg = nums("tg_tok_s");
    if pp.is_empty() || tg.is_empty() {
        bail!("the result has no pp/tg figures: {doc}");
    }
    s.pp.extend(pp);
    s.tg.extend(tg);
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

fn report(cells: &[Cell], samples: &[Samples], args: &BenchArgs) -> String {
    use std::fmt::Write;
    let peer_of = |c: &Cell, f: &str| {
        cells
            .iter()
            .zip(samples)
            .find(|(p, _)| p.engine == "llama.cpp" && p.threads == c.threads && p.format == f)
            .map(|(_, s)| s)
    };
    let mut t = String::new();
    let (pp, tg) = (args.n_prompt, args.n_gen);
    let _ = writeln!(
        t,
        "2B-4T-shaped synthetic model, F16 head; tok/s, mean of {} interleaved rounds (±: half the range)",
        args.rounds
    );
    let _ = writeln!(
        t,
        "ratios: ours / llama.cpp TQ2_0 at the same thread count in the same run\n"
    );
    let _ = writeln!(
        t,
        "| engine | kernel | weights | thr | pp{pp} | tg{tg} | pp × llama.cpp | tg × llama.cpp | decode % of ceiling | load s | peak RSS MiB (limit) |"
    );
    let _ = writeln!(t, "|---|---|---|---|---|---|---|---|---|---|---|");
    for (c, s) in cells.iter().zip(samples) {
        let ratio = |ours: &[f64], theirs: Option<&[f64]>| match theirs {
            Some(th) if c.engine != "llama.cpp" => format!("{:.2}×", mean(ours) / mean(th)),
            _ => "—".into(),
        };
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
        let rss = if c.engine == "llama.cpp" {
            format!("{:.0}", s.peak_rss as f64 / 1048576.0)
        } else {
            let limit = s.file_bytes + s.kv_bytes + RSS_SLACK;
            format!(
                "{:.0} ({:.0}{})",
                s.peak_rss as f64 / 1048576.0,
                limit as f64 / 1048576.0,
                if s.peak_rss <= limit { " ok" } else { " OVER" }
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
            ratio(&s.pp, peer.map(|p| p.pp.as_slice())),
            ratio(&s.tg, peer.map(|p| p.tg.as_slice())),
            ceiling,
            mean(&s.load_s),
            rss,
        );
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
