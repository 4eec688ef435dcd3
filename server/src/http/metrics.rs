//! `GET /metrics` in the Prometheus text format (version 0.0.4), written by hand: request counts
//! by endpoint and status, token counters (prompt tokens computed and taken from the prompt
//! cache, generated tokens), queue depth, active sequences, decode throughput, the prompt
//! cache's size and the model's lifecycle state.
//!
//! This module does NOT keep engine counters (the engine does); it reads them when scraped.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use crate::engine::EngineStats;
use crate::health::{Health, ModelState};

/// Request counters (the only metrics the HTTP layer owns).
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
}

impl Metrics {
    /// Count one finished request (`endpoint` is the route pattern, not the raw path).
    pub fn record(&self, endpoint: &str, status: u16) {
        let mut map = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry((endpoint.to_string(), status)).or_insert(0) += 1;
    }

    /// The count for one endpoint and status (tests, diagnostics).
    pub fn count(&self, endpoint: &str, status: u16) -> u64 {
        let map = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&(endpoint.to_string(), status))
            .copied()
            .unwrap_or(0)
    }

    /// Render everything.
    pub fn render(
        &self,
        health: &Health,
        engine: Option<(&EngineStats, &str)>,
        limits: &Limits,
    ) -> String {
        let mut out = String::new();
        header(
            &mut out,
            "bitnet_requests_total",
            "counter",
            "HTTP requests by endpoint and status code.",
        );
        {
            let map = self.requests.lock().unwrap_or_else(|p| p.into_inner());
            for ((endpoint, status), n) in map.iter() {
                let _ = writeln!(
                    out,
                    "bitnet_requests_total{{endpoint=\"{}\",status=\"{status}\"}} {n}",
                    escape(endpoint)
                );
            }
        }
        let stats = engine.map(|(s, _)| *s).unwrap_or_default();
        let counters = [
            (
                "bitnet_prompt_tokens_total",
                "Prompt tokens processed (run through the model; cached ones are counted in \
                 bitnet_prompt_tokens_cached_total).",
                stats.prompt_tokens,
            ),
            (
                "bitnet_prompt_tokens_cached_total",
                "Prompt tokens taken from the prompt cache instead of being processed.",
                stats.prompt_tokens_cached,
            ),
            (
                "bitnet_generated_tokens_total",
                "Tokens generated.",
                stats.generated_tokens,
            ),
            (
                "bitnet_decode_steps_total",
                "Batched decode steps run.",
                stats.decode_steps,
            ),
        ];
        for (name, help, value) in counters {
            header(&mut out, name, "counter", help);
            let _ = writeln!(out, "{name} {value}");
        }
        let gauges = [
            (
                "bitnet_queue_depth",
                "Requests waiting for a decode slot.",
                stats.queued as f64,
            ),
            (
                "bitnet_queue_capacity",
                "The most requests that may wait (--queue-size).",
                limits.queue_size as f64,
            ),
            (
                "bitnet_active_sequences",
                "Requests being prefilled or decoded.",
                stats.active as f64,
            ),
            (
                "bitnet_parallel_sequences",
                "The most sequences decoded together (--parallel).",
                limits.parallel as f64,
            ),
            (
                "bitnet_tokens_per_second",
                "Generated tokens per second over the last second.",
                stats.tokens_per_second,
            ),
            (
                "bitnet_prompt_cache_entries",
                "Ended sequences whose KV the prompt cache keeps.",
                stats.prompt_cache_entries as f64,
            ),
            (
                "bitnet_prompt_cache_bytes",
                "Bytes of KV the prompt cache keeps (at most --cache-ram).",
                stats.prompt_cache_bytes as f64,
            ),
        ];
        for (name, help, value) in gauges {
            header(&mut out, name, "gauge", help);
            let _ = writeln!(out, "{name} {value}");
        }
        let state = health.state();
        header(
            &mut out,
            "bitnet_model_state",
            "gauge",
            "1 for the model's current lifecycle state.",
        );
        for name in ModelState::NAMES {
            let v = u8::from(state.name() == name);
            let _ = writeln!(out, "bitnet_model_state{{state=\"{name}\"}} {v}");
        }
        if let ModelState::Downloading { bytes, total, .. }
        | ModelState::Verifying { bytes, total } = &state
        {
            header(
                &mut out,
                "bitnet_model_download_bytes",
                "gauge",
                "Bytes of the model file downloaded or verified so far.",
            );
            let _ = writeln!(out, "bitnet_model_download_bytes {bytes}");
            if let Some(total) = total {
                header(
                    &mut out,
                    "bitnet_model_size_bytes",
                    "gauge",
                    "Size of the model file.",
                );
                let _ = writeln!(out, "bitnet_model_size_bytes {total}");
            }
        }
        header(
            &mut out,
            "bitnet_model_info",
            "gauge",
            "The served model and the kernel set in use.",
        );
        let kernel = engine.map(|(_, k)| k).unwrap_or("");
        let _ = writeln!(
            out,
            "bitnet_model_info{{model=\"{}\",kernel=\"{}\",version=\"{}\"}} 1",
            escape(health.model()),
            escape(kernel),
            env!("CARGO_PKG_VERSION")
        );
        out
    }
}

/// Configured limits shown as gauges.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    pub queue_size: usize,
    pub parallel: usize,
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escape a label value: backslash, double quote, newline.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_one_hot_state() {
        let m = Metrics::default();
        m.record("/v1/completions", 200);
        m.record("/v1/completions", 200);
        m.record("/v1/completions", 503);
        let health = Health::new("org/\"model\"");
        health.set(ModelState::Downloading {
            bytes: 10,
            total: Some(100),
            bytes_per_second: 1.0,
            by_another_process: false,
        });
        let stats = EngineStats {
            queued: 2,
            generated_tokens: 7,
            prompt_tokens: 5,
            prompt_tokens_cached: 11,
            prompt_cache_entries: 3,
            prompt_cache_bytes: 4096,
            ..Default::default()
        };
        let text = m.render(
            &health,
            Some((&stats, "avx2")),
            &Limits {
                queue_size: 8,
                parallel: 4,
            },
        );
        assert!(
            text.contains("bitnet_requests_total{endpoint=\"/v1/completions\",status=\"200\"} 2")
        );
        assert!(
            text.contains("bitnet_requests_total{endpoint=\"/v1/completions\",status=\"503\"} 1")
        );
        assert!(text.contains("bitnet_generated_tokens_total 7"));
        assert!(text.contains("bitnet_prompt_tokens_total 5"));
        assert!(text.contains("bitnet_prompt_tokens_cached_total 11"));
        assert!(text.contains("bitnet_prompt_cache_entries 3"));
        assert!(text.contains("bitnet_prompt_cache_bytes 4096"));
        assert!(text.contains("bitnet_queue_depth 2"));
        assert!(text.contains("bitnet_model_state{state=\"downloading\"} 1"));
        assert!(text.contains("bitnet_model_state{state=\"ready\"} 0"));
        assert!(text.contains("bitnet_model_download_bytes 10"));
        assert!(text.contains("model=\"org/\\\"model\\\"\""));
        // Every sample line belongs to a declared metric.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(text.contains(&format!("# TYPE {name} ")), "{line}");
        }
    }
}
