//! `cargo xtask`: the project's automation (images, compose files, synthetic models, CI).

mod bench;
mod ci;
mod compose;
mod debtool;
mod deploy;
mod fresh;
mod fuzz;
mod gen_model;
mod images;
mod k8s;
mod load;
mod prereq;
mod pyenv;
mod yaml;

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
    /// Write compose/compose.yaml and compose/.env.example (`--check`: fail if they are stale).
    Compose(compose::Args),
    /// Write the Kubernetes manifests under deploy/kubernetes/ (`--check`: fail if they are stale).
    K8s(k8s::Args),
    /// Write a synthetic BitNet GGUF model (random ternary weights, real LLaMA-3 vocabulary).
    GenModel(gen_model::GenModelArgs),
    /// Run everything CI checks (installs test prerequisites first).
    Ci(ci::CiArgs),
    /// pp/tg speed per kernel variant and thread count, side by side with llama.cpp.
    Bench(bench::BenchArgs),
    /// Load run against the release server on 127.0.0.1 with the tiny synthetic model: mixed
    /// streams, completions, /tokenize and disconnects; latency, errors and RSS growth.
    Load(load::LoadArgs),
    /// What each command needs from this machine: present (with versions) or missing.
    Doctor(prereq::DoctorArgs),
    /// Prove the README's commands on a fresh Debian 12 made by debootstrap, in Docker.
    FreshCheck(fresh::FreshArgs),
    /// Run the cargo-fuzz targets of fuzz/ on stable, each for --seconds, with exec counts.
    Fuzz(fuzz::FuzzArgs),
}

fn main() -> anyhow::Result<()> {
    use prereq::{Job, preflight};
    match Cli::parse().command {
        Command::BuildImages(args) => {
            let mut jobs = vec![Job::BuildImages];
            if args.load {
                jobs.push(Job::Load);
            }
            preflight("build-images", &jobs, &args.tiers, !args.no_install)?;
            images::run(args)
        }
        Command::Compose(args) => compose::run(&args),
        Command::K8s(args) => k8s::run(&args),
        Command::GenModel(args) => {
            preflight("gen-model", &[Job::GenModel], &[], true)?;
            gen_model::run(&args)
        }
        Command::Ci(args) => ci::run(&args),
        Command::Bench(args) => {
            let job = if args.no_peer {
                Job::GenModel
            } else {
                Job::Bench
            };
            preflight("bench", &[job], &[], true)?;
            bench::run(&args)
        }
        Command::Load(args) => {
            if args.model.is_none() {
                preflight("load", &[Job::GenModel], &[], true)?;
            }
            load::run(&args)
        }
        Command::Doctor(args) => prereq::doctor(&args),
        Command::FreshCheck(args) => {
            preflight("fresh-check", &[Job::FreshCheck], &[], !args.no_install)?;
            fresh::run(&args)
        }
        Command::Fuzz(args) => {
            preflight("fuzz", &[Job::Fuzz], &[], !args.no_install)?;
            fuzz::run(&args)
        }
    }
}
