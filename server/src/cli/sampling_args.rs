//! Sampling flags shared by `generate` and `serve` (server-side defaults for requests).

use crate::sampling::SamplingParams;

#[derive(clap::Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Temperature; 0 = greedy.
    #[arg(
        long = "temp",
        alias = "temperature",
        default_value_t = 0.8,
        env = "BITNET_TEMPERATURE"
    )]
    pub temperature: f32,
    /// Keep the k most likely tokens (0 = all).
    #[arg(long, default_value_t = 40, env = "BITNET_TOP_K")]
    pub top_k: usize,
    /// Nucleus sampling: smallest set reaching this probability (1.0 = off).
    #[arg(long, default_value_t = 0.95, env = "BITNET_TOP_P")]
    pub top_p: f32,
    /// Drop tokens below this fraction of the top token's probability (0 = off).
    #[arg(long, default_value_t = 0.05, env = "BITNET_MIN_P")]
    pub min_p: f32,
    /// Repetition penalty over the last --repeat-last-n tokens (1.0 = off).
    #[arg(long, default_value_t = 1.0, env = "BITNET_REPEAT_PENALTY")]
    pub repeat_penalty: f32,
    /// How many recent tokens the repetition penalty looks at.
    #[arg(long, default_value_t = 64)]
    pub repeat_last_n: usize,
    /// Presence penalty (OpenAI semantics, -2..2).
    #[arg(long, default_value_t = 0.0)]
    pub presence_penalty: f32,
    /// Frequency penalty (OpenAI semantics, -2..2).
    #[arg(long, default_value_t = 0.0)]
    pub frequency_penalty: f32,
    /// Random seed: the same seed gives the same output.
    #[arg(long, env = "BITNET_SEED")]
    pub seed: Option<u64>,
}

impl SamplingArgs {
    pub fn params(&self) -> Result<SamplingParams, String> {
        let p = SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            seed: self.seed,
        };
        p.validate()?;
        Ok(p)
    }
}
