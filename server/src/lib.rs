//! `bitnet-server`: a CPU inference engine and HTTP server for BitNet b1.58 (ternary) models
//! stored as GGUF. See ARCHITECTURE.md at the repository root for the code map.

pub mod cpu_guard;
pub mod tokenizer;
