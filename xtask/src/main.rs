//! `cargo xtask`: the project's automation (images, compose files, synthetic models, CI).

mod images;
mod pyenv;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

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
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build every CPU tier and assemble the images (OCI layout, docker-load tarball).
    BuildImages(images::Args),
}

fn main() -> anyhow::Result<()> {
    let _ = pyenv::python_with;
    match Cli::parse().command {
        Cmd::BuildImages(args) => images::run(args),
    }
}
