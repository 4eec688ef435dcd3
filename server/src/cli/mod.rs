//! The command line: one subcommand per job. `serve` runs the HTTP server; `healthcheck` is the
//! container probe. Further subcommands (`generate`, `inspect`, `logits`, `perplexity`) are added
//! here as variants of [`Command`] with a module each.
//!
//! This module does NOT contain any server or engine logic; subcommands call into the library.

mod healthcheck;
mod logging;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use logging::LogFormat;

/// Inference server for BitNet b1.58 ternary GGUF models on CPUs.
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
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(cmd) => {
            logging::init(cli.log_format);
            cmd.run()
        }
        Command::Healthcheck(cmd) => cmd.run(),
    }
}
