//! The `bitnet-server` command line: one module per subcommand. Each parses its own flags (with
//! `BITNET_*` environment fallbacks where a deployment would set them) and calls into the
//! library. `serve` runs the HTTP server; `healthcheck` is the container probe; `generate`,
//! `inspect`, `logits`, `perplexity` and `bench` use the engine directly.
//!
//! This module does NOT contain server or engine logic.

pub mod bench;
pub mod generate;
mod healthcheck;
pub mod inspect;
mod logging;
pub mod logits;
pub mod model_args;
pub mod perplexity;
pub mod sampling_args;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use logging::LogFormat;

/// Serve BitNet b1.58 ternary models on CPUs (OpenAI- and llama.cpp-compatible API).
#[derive(Debug, Parser)]
#[command(name = "bitnet-server", version, about, propagate_version = true)]
pub struct Cli {
    /// Log format: human-readable text or one JSON object per line.
    #[arg(long, global = true, env = "BITNET_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the OpenAI- and llama.cpp-compatible HTTP API.
    Serve(Box<serve::ServeCommand>),
    /// Exit 0 if the server at --url reports ready, 1 otherwise (for container HEALTHCHECK).
    Healthcheck(healthcheck::HealthcheckCommand),
    /// Stream a completion of a prompt to stdout.
    Generate(generate::GenerateArgs),
    /// Print a GGUF file's metadata and tensor table.
    Inspect(inspect::InspectArgs),
    /// Print the logits for a token-id sequence fed in one batch (teacher forcing).
    Logits(logits::LogitsArgs),
    /// Perplexity of a text file, computed as llama.cpp's perplexity tool does.
    Perplexity(perplexity::PerplexityArgs),
    /// Measure load time, prompt (pp) and generation (tg) speed and peak RSS; prints JSON.
    Bench(bench::BenchArgs),
}

/// Parses the command line and runs the subcommand.
pub fn main() -> ExitCode {
    unset_empty_env();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(cmd) => {
            logging::init(cli.log_format);
            return cmd.run();
        }
        Command::Healthcheck(cmd) => return cmd.run(),
        Command::Generate(a) => generate::run(&a),
        Command::Inspect(a) => inspect::run(&a),
        Command::Logits(a) => logits::run(&a),
        Command::Perplexity(a) => perplexity::run(&a),
        Command::Bench(a) => bench::run(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// An empty `BITNET_*` or `HF_*` variable counts as unset (clap would take `""` as a value), so a
/// compose file can write `BITNET_SHA256=${BITNET_SHA256:-}` and `docker run -e BITNET_X=` works.
fn unset_empty_env() {
    for (name, value) in std::env::vars_os() {
        let ours = name
            .to_str()
            .is_some_and(|n| n.starts_with("BITNET_") || n.starts_with("HF_"));
        if ours && value.is_empty() {
            // SAFETY: called first thing in `main`, before any other thread exists.
            unsafe { std::env::remove_var(&name) };
        }
    }
}
