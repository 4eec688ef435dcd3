//! The `bitnet-server` command line: one module per subcommand. Each parses its own flags
//! (with `BITNET_*` environment fallbacks where a deployment would set them) and calls into the
//! library; none of them holds engine logic.

pub mod generate;
pub mod inspect;
pub mod logits;
pub mod model_args;
pub mod perplexity;
pub mod sampling_args;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "bitnet-server",
    version,
    about = "Serve BitNet b1.58 ternary models on CPUs (OpenAI- and llama.cpp-compatible API)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print a GGUF file's metadata and tensor table.
    Inspect(inspect::InspectArgs),
    /// Print the logits for a token-id sequence fed in one batch (teacher forcing).
    Logits(logits::LogitsArgs),
    /// Stream a completion of a prompt to stdout.
    Generate(generate::GenerateArgs),
    /// Perplexity of a text file, computed as llama.cpp's perplexity tool does.
    Perplexity(perplexity::PerplexityArgs),
}

/// Runs the parsed command; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Inspect(a) => inspect::run(&a),
        Command::Logits(a) => logits::run(&a),
        Command::Generate(a) => generate::run(&a),
        Command::Perplexity(a) => perplexity::run(&a),
    }
}
