//! `bitnet-server`: a CPU inference engine and HTTP server for BitNet b1.58 (ternary) models
//! stored as GGUF. See ARCHITECTURE.md at the repository root for the code map.

pub mod cli;
pub mod config;
pub mod cpu_guard;
pub mod download;
pub mod engine;
pub mod gguf;
pub mod health;
pub mod healthcheck;
pub mod http;
pub mod kernels;
pub mod memory;
pub mod model;
pub mod quant;
pub mod rng;
pub mod sampling;
pub mod secret;
pub mod serve;
pub mod stop;
pub mod synth;
pub mod tokenizer;
