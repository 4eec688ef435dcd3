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
    /// Accept a --ctx-size above the model's trained context (the output degrades past it).
    #[arg(long, env = "BITNET_ALLOW_CTX_BEYOND_TRAINING")]
    pub allow_ctx_beyond_training: bool,
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
    /// `--ctx-size` is refused above the trained context (unless allowed) or when one
    /// sequence's KV cache cannot fit in the available memory.
    pub fn load(&self) -> Result<(GgufFile, Model)> {
        self.load_checked(self.ctx_size, self.allow_ctx_beyond_training)
    }

    /// With a context the subcommand chose (perplexity's `--chunk`, bench's pp + tg): refused
    /// only when its KV cache cannot fit in the available memory.
    pub fn load_with_ctx(&self, n_ctx: Option<usize>) -> Result<(GgufFile, Model)> {
        self.load_checked(n_ctx, true)
    }

    fn load_checked(
        &self,
        n_ctx: Option<usize>,
        allow_beyond_training: bool,
    ) -> Result<(GgufFile, Model)> {
        let file = GgufFile::open(&self.model)?;
        if let Ok(config) = bitnet_model::ModelConfig::from_gguf(&file) {
            crate::memory::check_context(
                &config,
                n_ctx,
                1,
                crate::memory::CacheRam {
                    requested: Some(0),
                    file_bytes: 0,
                },
                allow_beyond_training,
                crate::memory::available().as_ref(),
            )
            .map_err(anyhow::Error::msg)?;
        }
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
