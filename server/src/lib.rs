//! `bitnet-server`: the binary's library: command line, configuration, model download, the
//! generation engine and scheduler, and the HTTP API. The model, kernels, GGUF reader and tokenizer
//! are crates of their own; see ARCHITECTURE.md at the repository root for the crate map.

pub mod cli;
pub mod config;
pub mod connections;
pub mod download;
pub mod engine;
pub mod health;
pub mod healthcheck;
pub mod http;
pub mod memory;
pub mod sampling;
pub mod secret;
pub mod serve;
