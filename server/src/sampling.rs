//! Turning logits into the next token: penalties, truncation (top-k, top-p, min-p),
//! temperature, and a seeded draw — the llama.cpp order, so the same settings behave alike.
//!
//! Stop strings and token limits are the generation loop's business, not the sampler's.

use bitnet_rng::SplitMix64;
use std::collections::HashMap;

/// Sampling settings of one request: THE type, used by the CLI (`generate` flags), the HTTP
/// layer (request bodies) and the engine (one sampler per request). `temperature == 0` means
/// greedy.
///
/// Ranges (checked by [`SamplingParams::validate`], the one check every entry point runs) are
/// OpenAI's where OpenAI has the parameter (temperature 0..=2, top_p 0..=1, presence and
/// frequency penalties -2..=2) and llama.cpp's meaning otherwise. Defaults are [`DEFAULT`]
/// (llama.cpp's server: temperature 0.8, top-k 40, top-p 0.95, min-p 0.05).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SamplingParams {
    pub temperature: f32,
    /// Keep the k most likely tokens (0 = off).
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches p (1.0 = off; 0 keeps only the top token).
    pub top_p: f32,
    /// Drop tokens below min_p × the top probability (0 = off).
    pub min_p: f32,
    /// llama.cpp repetition penalty over the last `repeat_last_n` tokens (1.0 = off).
    pub repeat_penalty: f32,
    pub repeat_last_n: usize,
    /// OpenAI presence penalty: subtracted once from every token already generated.
    pub presence_penalty: f32,
    /// OpenAI frequency penalty: subtracted per occurrence.
    pub frequency_penalty: f32,
    /// Seed of the draw. Always concrete: the edges (HTTP, CLI) turn "no seed" into a random one
    /// once, so every output can be reproduced from its seed.
    pub seed: u64,
}

/// The defaults, declared once (the CLI flags and the HTTP layer read them from here).
pub const DEFAULT: SamplingParams = SamplingParams {
    temperature: 0.8,
    top_k: 40,
    top_p: 0.95,
    min_p: 0.05,
    repeat_penalty: 1.0,
    repeat_last_n: 64,
    presence_penalty: 0.0,
    frequency_penalty: 0.0,
    seed: 0,
};

/// The highest temperature accepted (OpenAI's limit).
pub const MAX_TEMPERATURE: f32 = 2.0;
/// The highest repetition penalty accepted.
pub const MAX_REPEAT_PENALTY: f32 = 10.0;

impl Default for SamplingParams {
    fn default() -> Self {
        DEFAULT
    }
}

/// A sampling parameter out of range: which one, what it was, what is allowed, how to fix it.
/// The CLI prints it; the HTTP layer returns it as a 400 with `param`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{param}` must be {allowed}, got {got}; {fix}")]
pub struct SamplingError {
    /// The parameter's name in the HTTP APIs (the CLI flag is the same with `-` for `_`).
    pub param: &'static str,
    /// The value given, as text.
    pub got: String,
    /// The allowed range, in words.
    pub allowed: &'static str,
    /// What to send instead.
    pub fix: &'static str,
}

impl SamplingParams {
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            ..DEFAULT
        }
    }

    /// Checks every range; the error names the first parameter out of range.
    pub fn validate(&self) -> Result<(), SamplingError> {
        fn check(
            param: &'static str,
            v: f32,
            ok: bool,
            allowed: &'static str,
            fix: &'static str,
        ) -> Result<(), SamplingError> {
            if v.is_finite() && ok {
                return Ok(());
            }
            Err(SamplingError {
                param,
                got: v.to_string(),
                allowed,
                fix,
            })
        }
        let t = self.temperature;
        check(
            "temperature",
            t,
            (0.0..=MAX_TEMPERATURE).contains(&t),
            "between 0 and 2",
            "use 0 for greedy decoding, 0.8 by default, at most 2 (OpenAI's range)",
        )?;
        check(
            "top_p",
            self.top_p,
            (0.0..=1.0).contains(&self.top_p),
            "between 0 and 1",
            "use 1 to turn nucleus sampling off",
        )?;
        check(
            "min_p",
            self.min_p,
            (0.0..=1.0).contains(&self.min_p),
            "between 0 and 1",
            "use 0 to turn min-p off",
        )?;
        let r = self.repeat_penalty;
        check(
            "repeat_penalty",
            r,
            r > 0.0 && r <= MAX_REPEAT_PENALTY,
            "greater than 0 and at most 10",
            "use 1 to turn the repetition penalty off",
        )?;
        check(
            "presence_penalty",
            self.presence_penalty,
            (-2.0..=2.0).contains(&self.presence_penalty),
            "between -2 and 2",
            "use 0 to turn the presence penalty off",
        )?;
        check(
            "frequency_penalty",
            self.frequency_penalty,
            (-2.0..=2.0).contains(&self.frequency_penalty),
            "between -2 and 2",
            "use 0 to turn the frequency penalty off",
        )
    }
}

/// A sampler with its own random stream: the same params (seed) and logits give the same tokens.
pub struct Sampler {
    params: SamplingParams,
    rng: SplitMix64,
    candidates: Vec<(u32, f32)>,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Sampler {
        Sampler {
            rng: SplitMix64(params.seed),
            params,
            candidates: Vec::new(),
        }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks the next token. `logits` is modified in place by the penalties; `history` is the
    /// sequence so far (prompt and generated) and `generated` its generated suffix length.
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32], generated: usize) -> u32 {
        self.apply_penalties(logits, history, generated);
        let p = &self.params;
        if p.temperature <= 0.0 {
            return argmax(logits);
        }
        let c = &mut self.candidates;
        c.clear();
        c.extend(logits.iter().enumerate().map(|(i, &l)| (i as u32, l)));
        // top-k (partial sort keeps this O(n) for the usual small k).
        let k = if p.top_k == 0 {
            c.len()
        } else {
            p.top_k.min(c.len())
        };
        if k < c.len() {
            c.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1));
            c.truncate(k);
        }
        c.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        // Probabilities at temperature 1 for top-p/min-p (llama.cpp applies temperature last).
        let max = c[0].1;
        let mut probs: Vec<f32> = c.iter().map(|&(_, l)| (l - max).exp()).collect();
        let sum: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|q| *q /= sum);
        let mut keep = c.len();
        if p.top_p < 1.0 {
            let mut cum = 0.0;
            for (i, q) in probs.iter().enumerate() {
                cum += q;
                if cum >= p.top_p {
                    keep = i + 1;
                    break;
                }
            }
        }
        if p.min_p > 0.0 {
            let floor = p.min_p * probs[0];
            keep = keep.min(probs.iter().take_while(|&&q| q >= floor).count().max(1));
        }
        c.truncate(keep);
        // Temperature, then the draw.
        let weights: Vec<f64> = c
            .iter()
            .map(|&(_, l)| (((l - max) / p.temperature) as f64).exp())
            .collect();
        let total: f64 = weights.iter().sum();
        let mut r = self.rng.next_f64() * total;
        for (&(id, _), w) in c.iter().zip(&weights) {
            if r < *w {
                return id;
            }
            r -= w;
        }
        // Rounding left `r` past the end: the last candidate that can be drawn at all (a token
        // masked to -inf by a grammar has weight 0 and is never chosen).
        c.iter()
            .zip(&weights)
            .rev()
            .find(|(_, w)| **w > 0.0)
            .map_or(c[0].0, |(&(id, _), _)| id)
    }

    fn apply_penalties(&self, logits: &mut [f32], history: &[u32], generated: usize) {
        let p = &self.params;
        if p.repeat_penalty != 1.0 && p.repeat_last_n > 0 {
            let start = history.len().saturating_sub(p.repeat_last_n);
            let mut seen = std::collections::HashSet::new();
            for &t in &history[start..] {
                if let Some(l) = logits.get_mut(t as usize)
                    && seen.insert(t)
                {
                    *l = if *l > 0.0 {
                        *l / p.repeat_penalty
                    } else {
                        *l * p.repeat_penalty
                    };
                }
            }
        }
        if p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
            let mut counts: HashMap<u32, u32> = HashMap::new();
            for &t in &history[history.len().saturating_sub(generated)..] {
                *counts.entry(t).or_default() += 1;
            }
            for (t, n) in counts {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l -= p.presence_penalty + p.frequency_penalty * n as f32;
                }
            }
        }
    }
}

/// Index of the largest logit (the first one on ties).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// `log_softmax(logits)[i]` for every i.
pub fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let lse = logits
        .iter()
        .map(|&l| ((l - max) as f64).exp())
        .sum::<f64>()
        .ln() as f32
        + max;
    logits.iter().map(|&l| l - lse).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits() -> Vec<f32> {
        vec![1.0, 3.0, 2.0, 0.5, 2.9, -1.0]
    }

    fn draws(params: SamplingParams, n: usize) -> Vec<u32> {
        let mut s = Sampler::new(params);
        (0..n).map(|_| s.sample(&mut logits(), &[], 0)).collect()
    }

    #[test]
    fn greedy_takes_the_max() {
        assert_eq!(draws(SamplingParams::greedy(), 3), vec![1, 1, 1]);
    }

    #[test]
    fn same_seed_same_tokens_and_other_seed_differs() {
        let p = |seed| SamplingParams {
            temperature: 1.5,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed,
            ..Default::default()
        };
        assert_eq!(draws(p(42), 50), draws(p(42), 50));
        assert_ne!(draws(p(42), 50), draws(p(43), 50));
        let all = draws(p(1), 400);
        for id in 0..6 {
            assert!(
                all.contains(&id),
                "token {id} never drawn at high temperature"
            );
        }
    }

    #[test]
    fn truncations_limit_the_candidates() {
        let base = SamplingParams {
            temperature: 5.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: 3,
            ..Default::default()
        };
        let top2 = draws(
            SamplingParams {
                top_k: 2,
                ..base.clone()
            },
            200,
        );
        assert!(top2.iter().all(|&t| t == 1 || t == 4));
        // p(1) ≈ 0.42, p(4) ≈ 0.38 at T=1: top_p 0.5 keeps both, 0.3 keeps one.
        let tp = draws(
            SamplingParams {
                top_p: 0.3,
                ..base.clone()
            },
            100,
        );
        assert!(tp.iter().all(|&t| t == 1));
        // min_p 0.5: keeps tokens with p ≥ 0.21 → 1, 4 (0.38), 2 (0.155 < 0.21 dropped).
        let mp = draws(SamplingParams { min_p: 0.5, ..base }, 200);
        assert!(mp.iter().all(|&t| t == 1 || t == 4));
    }

    #[test]
    fn penalties() {
        let s = Sampler::new(SamplingParams {
            repeat_penalty: 2.0,
            presence_penalty: 0.5,
            frequency_penalty: 0.25,
            ..SamplingParams::greedy()
        });
        let mut l = logits();
        // history: token 1 twice (generated), token 5 in the prompt.
        s.apply_penalties(&mut l, &[5, 1, 1], 2);
        assert_eq!(l[1], 3.0 / 2.0 - 0.5 - 0.5);
        assert_eq!(l[5], -2.0);
        assert_eq!(l[2], 2.0);
    }

    #[test]
    fn validation_names_the_parameter() {
        let p = SamplingParams {
            top_p: -1.0,
            ..Default::default()
        };
        let e = p.validate().unwrap_err();
        assert_eq!((e.param, e.got.as_str()), ("top_p", "-1"));
        assert_eq!(
            e.to_string(),
            "`top_p` must be between 0 and 1, got -1; use 1 to turn nucleus sampling off"
        );
        let hot = SamplingParams {
            temperature: 5.0,
            ..Default::default()
        };
        assert_eq!(hot.validate().unwrap_err().param, "temperature");
        let nan = SamplingParams {
            min_p: f32::NAN,
            ..Default::default()
        };
        assert_eq!(nan.validate().unwrap_err().param, "min_p");
        // The edges of every range are accepted; top_p = 0 keeps just the top token.
        for ok in [
            SamplingParams::default(),
            SamplingParams {
                temperature: 2.0,
                top_p: 0.0,
                min_p: 1.0,
                repeat_penalty: 10.0,
                presence_penalty: -2.0,
                frequency_penalty: 2.0,
                ..Default::default()
            },
        ] {
            assert!(ok.validate().is_ok(), "{ok:?}");
        }
    }

    #[test]
    fn log_softmax_normalises() {
        let l = log_softmax(&logits());
        let s: f32 = l.iter().map(|v| v.exp()).sum();
        assert!((s - 1.0).abs() < 1e-5);
    }
}
