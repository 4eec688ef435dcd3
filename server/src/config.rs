//! `serve` configuration: every flag also reads a `BITNET_*` environment variable (and the
//! Hugging Face variables `HF_ENDPOINT`, `HF_TOKEN`, `HF_HUB_OFFLINE`), all documented by
//! `bitnet-server serve --help`. Secrets (`HF_TOKEN`, `--api-key`) are never echoed by `--help`
//! or `Debug`.
//!
//! This module does NOT start anything: [`ServeArgs::to_options`] turns flags into the typed
//! options `serve::run` takes, rejecting contradictory or out-of-range values.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::connections::ConnectionLimits;
use crate::download::{self, DownloadOptions, ModelSource, Sha256Hex};
use crate::engine::EngineConfig;
use crate::http::ApiConfig;
use crate::http::metrics::Limits;
use crate::secret::Secret;
use bitnet_model::LoadOptions;

/// `--shutdown-timeout`'s default: the drain plus [`crate::serve::FINAL_WRITE_GRACE`] ends
/// before `docker stop` (10 s) sends SIGKILL.
pub const DEFAULT_SHUTDOWN_TIMEOUT_S: f64 = 8.0;

/// `--header-timeout`'s default: generous for a client on a slow link (a request head is
/// usually one packet), short enough that a slowloris connection frees its slot soon.
pub const DEFAULT_HEADER_TIMEOUT_S: f64 = 10.0;

/// `--keep-alive-timeout`'s default: nginx's, above the 60 s idle timeout common in load
/// balancers.
pub const DEFAULT_KEEP_ALIVE_TIMEOUT_S: f64 = 75.0;

/// `--write-timeout`'s default: nginx's `send_timeout`. A reader this stalled has gone.
pub const DEFAULT_WRITE_TIMEOUT_S: f64 = 60.0;

/// `--body-timeout`'s default: a `--max-body` of 2 MiB at 40 KB/s.
pub const DEFAULT_BODY_TIMEOUT_S: f64 = 60.0;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for log collectors).
    Json,
}

/// Flags of `bitnet-server serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(
        long,
        env = "BITNET_HOST",
        default_value = "0.0.0.0",
        help_heading = "Server"
    )]
    pub host: String,

    /// Port to listen on.
    #[arg(
        long,
        env = "BITNET_PORT",
        default_value_t = 8080,
        help_heading = "Server"
    )]
    pub port: u16,

    /// Require `Authorization: Bearer <KEY>` on every endpoint except /health and /metrics.
    /// Surrounding whitespace is ignored; an empty BITNET_API_KEY counts as unset, but an
    /// empty `--api-key ""` or a whitespace-only key is refused.
    #[arg(
        long,
        env = "BITNET_API_KEY",
        hide_env_values = true,
        help_heading = "Server"
    )]
    pub api_key: Option<Secret>,

    /// Largest accepted request body, in bytes (suffixes: K, M, KiB, MiB, e.g. 2MiB).
    #[arg(long, env = "BITNET_MAX_BODY", default_value = "2MiB", value_parser = parse_size, help_heading = "Server")]
    pub max_body: usize,

    /// Seconds to let in-flight requests finish after SIGTERM/SIGINT before cancelling them;
    /// `/health` says `draining` (503) meanwhile. The process exits within this + 1 s: keep that
    /// below the orchestrator's stop timeout (Docker: 10 s, Kubernetes: 30 s by default).
    #[arg(
        long,
        env = "BITNET_SHUTDOWN_TIMEOUT",
        default_value_t = DEFAULT_SHUTDOWN_TIMEOUT_S,
        help_heading = "Server"
    )]
    pub shutdown_timeout: f64,

    /// Seconds for a request line and headers to arrive in full, from the connection's opening
    /// or its first byte after an idle keep-alive wait; a slower client is disconnected.
    /// Responses (streams included) are not limited by it.
    #[arg(
        long,
        env = "BITNET_HEADER_TIMEOUT",
        default_value_t = DEFAULT_HEADER_TIMEOUT_S,
        help_heading = "Server"
    )]
    pub header_timeout: f64,

    /// Seconds a kept-alive connection may stay idle between requests before the server closes
    /// it; 0 turns keep-alive off. Keep it above the idle timeout of a load balancer in front
    /// (often 60 s), or the balancer may reuse a connection the server is closing.
    #[arg(
        long,
        env = "BITNET_KEEP_ALIVE_TIMEOUT",
        default_value_t = DEFAULT_KEEP_ALIVE_TIMEOUT_S,
        help_heading = "Server"
    )]
    pub keep_alive_timeout: f64,

    /// Seconds a response may wait for a client that stopped reading (no byte could be sent
    /// for this long) before the connection is closed and its generation cancelled. A client
    /// that reads slowly but steadily is not affected.
    #[arg(
        long,
        env = "BITNET_WRITE_TIMEOUT",
        default_value_t = DEFAULT_WRITE_TIMEOUT_S,
        help_heading = "Server"
    )]
    pub write_timeout: f64,

    /// Seconds for a request body to arrive in full once its headers have; a slower one gets
    /// 408.
    #[arg(
        long,
        env = "BITNET_BODY_TIMEOUT",
        default_value_t = DEFAULT_BODY_TIMEOUT_S,
        help_heading = "Server"
    )]
    pub body_timeout: f64,

    /// The most connections open at once; at the cap new ones wait in the listen backlog until
    /// one closes [default: the open-file limit (raised to its hard limit at start) less 128,
    /// at most 4096].
    #[arg(long, env = "BITNET_MAX_CONNECTIONS", help_heading = "Server")]
    pub max_connections: Option<usize>,

    /// Local GGUF model file (no download).
    #[arg(long, short = 'm', env = "BITNET_MODEL", help_heading = "Model source",
          conflicts_with_all = ["hf_repo", "model_url"])]
    pub model: Option<PathBuf>,

    /// Hugging Face repo to download the model from, e.g. microsoft/bitnet-b1.58-2B-4T-gguf.
    #[arg(
        long,
        env = "BITNET_HF_REPO",
        requires = "hf_file",
        conflicts_with = "model_url",
        help_heading = "Model source"
    )]
    pub hf_repo: Option<String>,

    /// File inside --hf-repo, e.g. ggml-model-i2_s.gguf.
    #[arg(
        long,
        env = "BITNET_HF_FILE",
        requires = "hf_repo",
        help_heading = "Model source"
    )]
    pub hf_file: Option<String>,

    /// Branch, tag or commit of --hf-repo.
    #[arg(
        long,
        env = "BITNET_REVISION",
        default_value = "main",
        help_heading = "Model source"
    )]
    pub revision: String,

    /// Download the model from this http(s) URL.
    #[arg(long, env = "BITNET_MODEL_URL", help_heading = "Model source")]
    pub model_url: Option<String>,

    /// Expected sha256 of the model file (64 hex characters). Without it, Hub downloads are
    /// checked against the hub's published LFS digest; URLs are not checked.
    #[arg(long, env = "BITNET_SHA256", help_heading = "Model source")]
    pub sha256: Option<String>,

    /// Download cache directory [default: $XDG_CACHE_HOME/bitnet-serve or ~/.cache/bitnet-serve].
    /// Laid out like the Hugging Face hub cache.
    #[arg(long, env = "BITNET_MODEL_DIR", help_heading = "Model source")]
    pub model_dir: Option<PathBuf>,

    /// Name the API serves the model under [default: the repo id, or the file name without .gguf].
    #[arg(long, env = "BITNET_MODEL_ID", help_heading = "Model source")]
    pub model_id: Option<String>,

    /// Another name clients may give as `model` (like llama-server's --alias), listed in
    /// /v1/models after the model id; responses still name the model id. Repeat the flag or
    /// separate names with commas (BITNET_ALIAS=gpt-4o-mini,bitnet). The model file's name,
    /// with and without .gguf, is always accepted.
    #[arg(
        long,
        env = "BITNET_ALIAS",
        value_delimiter = ',',
        value_name = "NAME",
        help_heading = "Model source"
    )]
    pub alias: Vec<String>,

    /// Accept any `model` value, for apps that hard-code a model name: this server serves one
    /// model, so every request goes to it and responses name its id. Without it an unknown
    /// name is a 404 `model_not_found`.
    #[arg(long, env = "BITNET_ACCEPT_ANY_MODEL", help_heading = "Model source")]
    pub accept_any_model: bool,

    /// Hugging Face endpoint (a mirror, or a local test server).
    #[arg(long, env = "HF_ENDPOINT", default_value = download::DEFAULT_ENDPOINT, help_heading = "Download")]
    pub hf_endpoint: String,

    /// Hugging Face access token for gated or private repos (sent only to --hf-endpoint).
    #[arg(
        long,
        env = "HF_TOKEN",
        hide_env_values = true,
        help_heading = "Download"
    )]
    pub hf_token: Option<Secret>,

    /// Never use the network: serve from the cache or fail (HF_HUB_OFFLINE=1).
    #[arg(long, env = "HF_HUB_OFFLINE", help_heading = "Download")]
    pub offline: bool,

    /// Retries after consecutive download failures without progress.
    #[arg(
        long,
        env = "BITNET_DOWNLOAD_RETRIES",
        default_value_t = 8,
        help_heading = "Download"
    )]
    pub download_retries: u32,

    /// Seconds without receiving data before a download attempt is retried.
    #[arg(
        long,
        env = "BITNET_DOWNLOAD_READ_TIMEOUT",
        default_value_t = 60.0,
        help_heading = "Download"
    )]
    pub download_read_timeout: f64,

    /// Context length per sequence in tokens [default: the model's trained length]. Refused
    /// when above the trained length (see --allow-ctx-beyond-training) or when the KV cache of
    /// --parallel sequences this long (f16) cannot fit in the available memory (the cgroup
    /// limit in a container).
    #[arg(long, short = 'c', env = "BITNET_CTX_SIZE", help_heading = "Inference")]
    pub ctx_size: Option<usize>,

    /// Accept a --ctx-size above the model's trained context (the output degrades past it);
    /// without it such a value is refused. One whose KV cache cannot fit in memory is refused
    /// either way.
    #[arg(
        long,
        env = "BITNET_ALLOW_CTX_BEYOND_TRAINING",
        help_heading = "Inference"
    )]
    pub allow_ctx_beyond_training: bool,

    /// Threads for the forward pass [default: all available cores].
    #[arg(long, short = 't', env = "BITNET_THREADS", help_heading = "Inference")]
    pub threads: Option<usize>,

    /// The most requests generating at once (decoded together in one batch).
    #[arg(
        long,
        short = 'p',
        env = "BITNET_PARALLEL",
        default_value_t = 4,
        help_heading = "Inference"
    )]
    pub parallel: usize,

    /// RAM for the prompt cache: the KV of ended requests, kept so that a later prompt starting
    /// the same way (the next turn of a chat, a RAG prompt with the same system text and
    /// passages) skips computing that prefix; least recently used entries go first. 0 disables
    /// it. Counted with the KV cache of --parallel x --ctx-size in the memory check [default:
    /// 1GiB, lowered to half of what that KV cache and the model file leave of the available
    /// memory].
    #[arg(long, env = "BITNET_CACHE_RAM", value_parser = parse_size, help_heading = "Inference")]
    pub cache_ram: Option<usize>,

    /// The most requests waiting for a slot; beyond it requests get 503 with Retry-After.
    #[arg(
        long,
        env = "BITNET_QUEUE_SIZE",
        default_value_t = 64,
        help_heading = "Inference"
    )]
    pub queue_size: usize,
}

/// A configuration problem, worded for the command line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Everything `serve::run` needs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    pub source: ModelSource,
    pub download: DownloadOptions,
    pub api: ApiConfig,
    pub engine: EngineConfig,
    pub load: LoadOptions,
    pub shutdown_timeout: Duration,
    /// Connection cap and timers.
    pub connections: ConnectionLimits,
    /// Delays between attempts when acquiring or loading the model fails.
    pub retry: RetryPolicy,
}

/// When acquiring or loading the model fails, `/health` answers 503 `failed` with the reason
/// and the server tries again after `first`, doubling per failure up to `max`: a network
/// outage, a full disk or a volume mounted late heals without a restart, and an orchestrator
/// that restarts unhealthy containers still sees the failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub first: Duration,
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            first: Duration::from_secs(5),
            max: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// The wait after failure number `n` (1-based).
    pub fn delay(&self, n: u32) -> Duration {
        let factor = 2u32.saturating_pow(n.saturating_sub(1).min(16));
        self.first.saturating_mul(factor).min(self.max)
    }
}

impl ServeArgs {
    /// Check the flags and build [`ServeOptions`].
    pub fn to_options(&self) -> Result<ServeOptions, ConfigError> {
        let err = |m: String| ConfigError(m);
        let listen: SocketAddr = format!("{}:{}", bracket_ipv6(&self.host), self.port)
            .parse()
            .map_err(|_| {
                err(format!(
                    "--host {:?} is not an IP address (e.g. 0.0.0.0 or ::)",
                    self.host
                ))
            })?;
        let sha256 = self
            .sha256
            .as_deref()
            .map(Sha256Hex::parse)
            .transpose()
            .map_err(|e| err(format!("--sha256: {e}")))?;
        let source = match (&self.model, &self.hf_repo, &self.hf_file, &self.model_url) {
            (Some(path), None, None, None) => ModelSource::Local {
                path: path.clone(),
                sha256,
            },
            (None, Some(repo), Some(file), None) => {
                ModelSource::hub(repo, file, &self.revision, sha256)
                    .map_err(|e| err(e.to_string()))?
            }
            (None, None, None, Some(url)) => {
                ModelSource::url(url, sha256).map_err(|e| err(e.to_string()))?
            }
            (None, None, None, None) => {
                return Err(err(
                    "no model given: pass --model PATH, --hf-repo REPO --hf-file FILE, or \
                     --model-url URL (or BITNET_MODEL / BITNET_HF_REPO + BITNET_HF_FILE / \
                     BITNET_MODEL_URL)"
                        .into(),
                ));
            }
            _ => {
                return Err(err(
                    "give exactly one model source: --model, --hf-repo with --hf-file, or \
                     --model-url"
                        .into(),
                ));
            }
        };
        if self.parallel == 0 {
            return Err(err("--parallel must be at least 1".into()));
        }
        if self.queue_size == 0 {
            return Err(err("--queue-size must be at least 1".into()));
        }
        if self.threads == Some(0) {
            return Err(err(
                "--threads must be at least 1 (omit it to use every core)".into(),
            ));
        }
        if self.ctx_size == Some(0) {
            return Err(err(
                "--ctx-size must be at least 1 (omit it for the model's length)".into(),
            ));
        }
        if self.max_body < 1024 {
            return Err(err(format!(
                "--max-body {} is too small; use at least 1KiB",
                self.max_body
            )));
        }
        let seconds = |flag: &str, v: f64| {
            if v.is_finite() && (0.0..=86_400.0).contains(&v) {
                Ok(Duration::from_secs_f64(v))
            } else {
                Err(err(format!(
                    "{flag} must be between 0 and 86400 seconds, got {v}"
                )))
            }
        };
        let shutdown_timeout = seconds("--shutdown-timeout", self.shutdown_timeout)?;
        let read_timeout = seconds("--download-read-timeout", self.download_read_timeout)?;
        let header_timeout = seconds("--header-timeout", self.header_timeout)?;
        let body_timeout = seconds("--body-timeout", self.body_timeout)?;
        let write_timeout = seconds("--write-timeout", self.write_timeout)?;
        for (flag, value, what) in [
            ("--header-timeout", header_timeout, "sends"),
            ("--body-timeout", body_timeout, "sends"),
            ("--write-timeout", write_timeout, "reads"),
        ] {
            if value.is_zero() {
                return Err(err(format!(
                    "{flag} must be more than 0: without it a client that {what} slowly holds \
                     its connection forever"
                )));
            }
        }
        let keep_alive_timeout = seconds("--keep-alive-timeout", self.keep_alive_timeout)?;
        if self.max_connections == Some(0) {
            return Err(err(
                "--max-connections must be at least 1 (omit it to size it from the open-file \
                 limit)"
                    .into(),
            ));
        }
        if read_timeout.is_zero() {
            return Err(err("--download-read-timeout must be more than 0".into()));
        }
        let api_key = match &self.api_key {
            // `main` already dropped an empty BITNET_API_KEY (empty env = unset), so a blank
            // key here came from `--api-key ""` or is only whitespace: refusing it beats
            // silently serving without authentication.
            Some(key) if key.is_blank() => {
                return Err(err(
                    "--api-key (BITNET_API_KEY) is empty or only whitespace, which would leave \
                     the API open; set a real key, or omit --api-key / unset BITNET_API_KEY to \
                     serve without one"
                        .into(),
                ));
            }
            Some(key) => Some(Secret::new(key.expose().trim())),
            None => None,
        };
        let endpoint = self.hf_endpoint.trim_end_matches('/').to_string();
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(err(format!(
                "HF_ENDPOINT {endpoint:?} must start with http:// or https://"
            )));
        }
        let model_id = self
            .model_id
            .clone()
            .unwrap_or_else(|| source.default_model_id());
        let mut aliases = Vec::new();
        for name in &self.alias {
            let name = name.trim();
            if name.is_empty() {
                return Err(err(
                    "--alias (BITNET_ALIAS) has an empty name; give names separated by commas, \
                     e.g. --alias gpt-4o-mini,bitnet"
                        .into(),
                ));
            }
            if name != model_id && !aliases.iter().any(|a| a == name) {
                aliases.push(name.to_string());
            }
        }
        let file_name = source.file_name();
        let mut file_names = vec![file_name.clone()];
        if let Some(stem) = file_name.strip_suffix(".gguf") {
            file_names.push(stem.to_string());
        }
        Ok(ServeOptions {
            listen,
            download: DownloadOptions {
                cache_dir: self.model_dir.clone().unwrap_or_else(default_cache_dir),
                endpoint,
                token: self.hf_token.clone().filter(|t| !t.expose().is_empty()),
                offline: self.offline,
                read_timeout,
                max_retries: self.download_retries,
                ..DownloadOptions::default()
            },
            source,
            api: ApiConfig {
                model_id,
                aliases,
                file_names,
                accept_any_model: self.accept_any_model,
                api_key,
                max_body: self.max_body,
                body_timeout,
                limits: Limits {
                    queue_size: self.queue_size,
                    parallel: self.parallel,
                },
            },
            engine: EngineConfig {
                parallel: self.parallel,
                queue_size: self.queue_size,
                // Sized at load from --cache-ram and the memory left (`cli::serve`).
                cache_ram: None,
                ..EngineConfig::default()
            },
            // The output head (`--head`) is the serve command's flag; it sets `load.head`.
            load: LoadOptions {
                n_ctx: self.ctx_size,
                threads: self.threads.unwrap_or(0),
                ..LoadOptions::default()
            },
            shutdown_timeout,
            connections: ConnectionLimits {
                header_timeout,
                keep_alive_timeout,
                write_timeout,
                max_connections: self.max_connections,
            },
            retry: RetryPolicy::default(),
        })
    }
}

fn bracket_ipv6(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// `$XDG_CACHE_HOME/bitnet-serve`, `~/.cache/bitnet-serve`, or `./models`.
pub fn default_cache_dir() -> PathBuf {
    let from = |var: &str| {
        std::env::var_os(var)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(xdg) = from("XDG_CACHE_HOME") {
        return xdg.join("bitnet-serve");
    }
    if let Some(home) = from("HOME") {
        return home.join(".cache").join("bitnet-serve");
    }
    PathBuf::from("models")
}

/// `2097152`, `512K`, `2M`, `2MiB`, `1G` → bytes (K/M/G are binary multiples).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: usize = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 2097152 or 2MiB)"))?;
    let mult: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {s:?}; use K, M or G"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct T {
        #[command(flatten)]
        args: ServeArgs,
    }

    fn parse(argv: &[&str]) -> Result<ServeOptions, String> {
        let t = T::try_parse_from(std::iter::once("x").chain(argv.iter().copied()))
            .map_err(|e| e.to_string())?;
        t.args.to_options().map_err(|e| e.to_string())
    }

    #[test]
    fn sources() {
        let o = parse(&["--model", "/m/x.gguf"]).unwrap();
        assert!(matches!(o.source, ModelSource::Local { .. }));
        assert_eq!(o.api.model_id, "x");
        let o = parse(&[
            "--hf-repo",
            "o/n",
            "--hf-file",
            "f.gguf",
            "--revision",
            "v1",
        ])
        .unwrap();
        assert!(matches!(o.source, ModelSource::Hub { ref revision, .. } if revision == "v1"));
        assert_eq!(o.api.model_id, "o/n");
        assert!(o.api.file_names.contains(&"f.gguf".to_string()));
        assert!(o.api.aliases.is_empty());
        assert!(parse(&["--hf-repo", "o/n"]).is_err(), "hf-file is required");
        assert!(parse(&["--model", "a", "--model-url", "http://x/y"]).is_err());
        let e = parse(&[]).unwrap_err();
        assert!(e.contains("no model given"), "{e}");
        let e = parse(&["--model", "a", "--sha256", "xyz"]).unwrap_err();
        assert!(e.contains("--sha256"), "{e}");
    }

    /// Issue 18: `--alias` is repeatable and comma-separated (BITNET_ALIAS too: clap splits
    /// the variable on the same delimiter), trimmed and deduplicated; an empty name is refused.
    #[test]
    fn aliases_and_accept_any_model() {
        let o = parse(&[
            "--model",
            "/m/x.gguf",
            "--alias",
            "gpt-4o-mini, bitnet",
            "--alias",
            "llama,gpt-4o-mini",
            "--alias",
            "x",
        ])
        .unwrap();
        assert_eq!(o.api.model_id, "x");
        assert_eq!(o.api.aliases, ["gpt-4o-mini", "bitnet", "llama"]);
        assert_eq!(o.api.file_names, ["x.gguf", "x"]);
        assert!(!o.api.accept_any_model);
        for bad in ["a,,b", " ", ","] {
            let e = parse(&["--model", "a", "--alias", bad]).unwrap_err();
            assert!(
                e.contains("--alias") && e.contains("empty name"),
                "{bad:?}: {e}"
            );
        }
        let o = parse(&["--model", "a", "--accept-any-model"]).unwrap();
        assert!(o.api.accept_any_model);
    }

    #[test]
    fn limits_and_sizes() {
        assert!(parse(&["--model", "a", "--parallel", "0"]).is_err());
        assert!(parse(&["--model", "a", "--queue-size", "0"]).is_err());
        assert!(parse(&["--model", "a", "--shutdown-timeout", "-1"]).is_err());
        assert_eq!(
            parse(&["--model", "a", "--max-body", "10MiB"])
                .unwrap()
                .api
                .max_body,
            10 << 20
        );
        assert_eq!(parse(&["--model", "a"]).unwrap().api.max_body, 2 << 20);
        assert_eq!(parse_size("512k").unwrap(), 512 << 10);
        let cache_ram = |argv: &[&str]| {
            T::try_parse_from(["x", "--model", "a"].iter().chain(argv))
                .map(|t| t.args.cache_ram)
                .map_err(|e| e.to_string())
        };
        assert_eq!(
            cache_ram(&[]).unwrap(),
            None,
            "sized at load when not given"
        );
        assert_eq!(
            cache_ram(&["--cache-ram", "512MiB"]).unwrap(),
            Some(512 << 20)
        );
        assert_eq!(cache_ram(&["--cache-ram", "0"]).unwrap(), Some(0));
        assert!(cache_ram(&["--cache-ram", "lots"]).is_err());
        assert_eq!(
            parse(&["--model", "a", "--cache-ram", "1G"])
                .unwrap()
                .engine
                .cache_ram,
            None,
            "the loader sets the budget"
        );
        assert!(parse_size("2X").is_err());
        assert!(parse_size("").is_err());
        let o = parse(&["--model", "a", "--host", "::1", "--port", "9"]).unwrap();
        assert_eq!(o.listen.to_string(), "[::1]:9");
    }

    /// Issue 16, item 2: the connection timers and cap, their defaults and bounds.
    #[test]
    fn connection_timers_and_cap() {
        let o = parse(&["--model", "a"]).unwrap();
        assert_eq!(o.connections.header_timeout, Duration::from_secs(10));
        assert_eq!(o.connections.keep_alive_timeout, Duration::from_secs(75));
        assert_eq!(o.connections.write_timeout, Duration::from_secs(60));
        assert_eq!(o.connections.max_connections, None);
        assert_eq!(o.api.body_timeout, Duration::from_secs(60));
        let o = parse(&[
            "--model",
            "a",
            "--header-timeout",
            "2.5",
            "--keep-alive-timeout",
            "0",
            "--max-connections",
            "100",
        ])
        .unwrap();
        assert_eq!(o.connections.header_timeout, Duration::from_millis(2500));
        assert!(o.connections.keep_alive_timeout.is_zero());
        assert_eq!(o.connections.max_connections, Some(100));
        for bad in [
            ["--header-timeout", "0"],
            ["--body-timeout", "0"],
            ["--write-timeout", "0"],
            ["--keep-alive-timeout", "nan"],
            ["--max-connections", "0"],
        ] {
            let e = parse(&["--model", "a", bad[0], bad[1]]).unwrap_err();
            assert!(e.contains(bad[0]), "{bad:?}: {e}");
        }
    }

    /// Issue 16, defect 10: the drain must end inside `docker stop`'s default 10 s.
    #[test]
    fn default_shutdown_fits_dockers_stop_timeout() {
        let o = parse(&["--model", "a"]).unwrap();
        let exit_by = o.shutdown_timeout + crate::serve::FINAL_WRITE_GRACE;
        eprintln!(
            "default shutdown timeout {:?}, exit by {exit_by:?}",
            o.shutdown_timeout
        );
        assert!(exit_by < Duration::from_secs(10), "{exit_by:?}");
    }

    #[test]
    fn retries_back_off_to_a_cap() {
        let r = RetryPolicy::default();
        let d: Vec<u64> = (1..=8).map(|n| r.delay(n).as_secs()).collect();
        assert_eq!(d, vec![5, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(r.delay(u32::MAX).as_secs(), 300);
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let o = parse(&[
            "--model",
            "a",
            "--api-key",
            "sekrit-key",
            "--hf-token",
            "hf_sekrit",
        ])
        .unwrap();
        let dbg = format!("{o:?}");
        assert!(!dbg.contains("sekrit"), "{dbg}");
        assert_eq!(o.api.api_key.unwrap().expose(), "sekrit-key");
    }

    #[test]
    fn blank_api_keys_are_refused_and_keys_trimmed() {
        for blank in ["", "   ", "\t\n"] {
            let e = parse(&["--model", "a", "--api-key", blank]).unwrap_err();
            assert!(
                e.contains("BITNET_API_KEY") && e.contains("empty or only whitespace"),
                "{blank:?}: {e}"
            );
        }
        let o = parse(&["--model", "a", "--api-key", "  sk-1 \n"]).unwrap();
        assert_eq!(o.api.api_key.unwrap().expose(), "sk-1");
        assert!(parse(&["--model", "a"]).unwrap().api.api_key.is_none());
    }
}
