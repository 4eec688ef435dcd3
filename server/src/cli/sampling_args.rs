//! Sampling flags of `generate`. Defaults come from [`crate::sampling::DEFAULT`] and the ranges
//! from [`SamplingParams::validate`], the same as the HTTP API's.

use crate::sampling::{DEFAULT, SamplingError, SamplingParams};

#[derive(clap::Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Temperature, 0..=2 (OpenAI's range); 0 = greedy.
    #[arg(
        long = "temp",
        alias = "temperature",
        default_value_t = DEFAULT.temperature,
        allow_negative_numbers = true,
        env = "BITNET_TEMPERATURE"
    )]
    pub temperature: f32,
    /// Keep the k most likely tokens (0 = all).
    #[arg(long, default_value_t = DEFAULT.top_k, env = "BITNET_TOP_K")]
    pub top_k: usize,
    /// Nucleus sampling, 0..=1: smallest set reaching this probability (1.0 = off).
    #[arg(long, default_value_t = DEFAULT.top_p, allow_negative_numbers = true, env = "BITNET_TOP_P")]
    pub top_p: f32,
    /// Drop tokens below this fraction of the top token's probability, 0..=1 (0 = off).
    #[arg(long, default_value_t = DEFAULT.min_p, allow_negative_numbers = true, env = "BITNET_MIN_P")]
    pub min_p: f32,
    /// Repetition penalty over the last --repeat-last-n tokens, (0, 10] (1.0 = off).
    #[arg(
        long,
        default_value_t = DEFAULT.repeat_penalty,
        allow_negative_numbers = true,
        env = "BITNET_REPEAT_PENALTY"
    )]
    pub repeat_penalty: f32,
    /// How many recent tokens the repetition penalty looks at.
    #[arg(long, default_value_t = DEFAULT.repeat_last_n)]
    pub repeat_last_n: usize,
    /// Presence penalty (OpenAI semantics, -2..=2).
    #[arg(long, default_value_t = DEFAULT.presence_penalty, allow_negative_numbers = true)]
    pub presence_penalty: f32,
    /// Frequency penalty (OpenAI semantics, -2..=2).
    #[arg(long, default_value_t = DEFAULT.frequency_penalty, allow_negative_numbers = true)]
    pub frequency_penalty: f32,
    /// Random seed: the same seed gives the same output [default: a random one, printed].
    #[arg(long, env = "BITNET_SEED")]
    pub seed: Option<u64>,
}

impl SamplingArgs {
    /// The checked parameters, with a missing seed drawn once here.
    pub fn params(&self) -> Result<SamplingParams, SamplingError> {
        let p = SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            seed: self.seed.unwrap_or_else(bitnet_rng::random_u64),
        };
        p.validate()?;
        Ok(p)
    }
}
