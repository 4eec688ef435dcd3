//! Flags shared by every subcommand that loads a model.

use anyhow::{Context, Result};
use bitnet_gguf::GgufFile;
use bitnet_model::{HeadKind, LoadOptions, Model};
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// The GGUF model file.
    #[arg(long, short = 'm', env = "BITNET_MODEL")]
    pub model: PathBuf,
    /// Context limit in tokens (default: the model's trained context).
    #[arg(long, short = 'c', env = "BITNET_CTX_SIZE")]
    pub ctx_size: Option<usize>,
    /// Worker threads (0 = one per physical core).
    #[arg(long, short = 't', default_value_t = 0, env = "BITNET_THREADS")]
    pub threads: usize,
    /// Output head arithmetic: f16 (as published) or q8 (half the memory traffic, slightly
    /// different logits).
    #[arg(long, value_enum, default_value_t = HeadArg::F16, env = "BITNET_HEAD")]
    pub head: HeadArg,
}

/// `--head` values.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadArg {
    F16,
    Q8,
}

impl HeadArg {
    pub fn kind(self) -> HeadKind {
        match self {
            HeadArg::F16 => HeadKind::F16,
            HeadArg::Q8 => HeadKind::Q8,
        }
    }
}

impl ModelArgs {
    /// Maps and loads the model (kernels from the CPU or `BITNET_KERNEL`).
    pub fn load(&self) -> Result<(GgufFile, Model)> {
        self.load_with_ctx(self.ctx_size)
    }

    pub fn load_with_ctx(&self, n_ctx: Option<usize>) -> Result<(GgufFile, Model)> {
        let file = GgufFile::open(&self.model)?;
        let opts = LoadOptions {
            n_ctx,
            threads: self.threads,
            kernels: None,
            head: self.head.kind(),
        };
        let model = Model::load(&file, &opts)
            .with_context(|| format!("loading {}", self.model.display()))?;
        Ok((file, model))
    }
}
