//! `cargo xtask`: the project's automation (images, compose files, synthetic models, CI).

mod bench;
mod ci;
mod gen_model;
mod images;
mod pyenv;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// The workspace root (the parent of `xtask/`).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

#[derive(Parser)]
#[command(name = "cargo xtask", about = "bitnet-serve project automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build every CPU tier and assemble the images (OCI layout, docker-load tarball).
    BuildImages(images::Args),
    /// Write a synthetic BitNet GGUF model (random ternary weights, real LLaMA-3 vocabulary).
    GenModel(gen_model::GenModelArgs),
    /// Run everything CI checks (installs test prerequisites first).
    Ci(ci::CiArgs),
    /// pp/tg speed per kernel variant and thread count, side by side with llama.cpp.
    Bench(bench::BenchArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::BuildImages(args) => images::run(args),
        Command::GenModel(args) => gen_model::run(&args),
        Command::Ci(args) => ci::run(&args),
        Command::Bench(args) => bench::run(&args),
    }
}
