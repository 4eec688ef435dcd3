//! The model's lifecycle state, shared by the background loader (which writes it) and the
//! `/health` and `/metrics` endpoints (which read it).
//!
//! `missing → downloading{bytes,total,rate} → verifying → loading → ready`, or `failed{reason}`
//! from any step. A local `--model` file skips `downloading`; a file without a checksum to check
//! skips `verifying`. While another process sharing the model cache downloads the file, this one
//! is `downloading` too, with that download's bytes and a message that says it is waiting.
//!
//! Separately from the model's state, the server can be *draining* (after SIGTERM/SIGINT, while
//! in-flight requests finish): `/health` then reports state and status `draining` (503), unless
//! the model had failed, which it keeps reporting.
//!
//! This module does NOT drive the lifecycle (see `serve`) or format HTTP responses beyond the
//! serialisable [`HealthReport`].

use std::sync::RwLock;
use std::time::Instant;

use serde::Serialize;

/// Where the model is in its lifecycle.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelState {
    /// No usable model file yet (acquisition has not started, or is checking the cache).
    Missing,
    /// Fetching the file: bytes on disk so far, the expected size when known, and the rate.
    /// `by_another_process`: another process sharing the model cache (a replica on the same
    /// volume) is downloading it and this one waits for its lock; the bytes are that download's.
    Downloading {
        bytes: u64,
        total: Option<u64>,
        bytes_per_second: f64,
        by_another_process: bool,
    },
    /// Checking the file's sha256 (bytes hashed so far of `total`).
    Verifying { bytes: u64, total: Option<u64> },
    /// Reading and preparing the weights.
    Loading,
    /// Serving.
    Ready,
    /// Acquisition or loading failed, or the engine died; `/health` answers 503 with the reason.
    Failed { reason: String },
}

impl ModelState {
    /// The state's name as used in JSON and metrics labels.
    pub fn name(&self) -> &'static str {
        match self {
            ModelState::Missing => "missing",
            ModelState::Downloading { .. } => "downloading",
            ModelState::Verifying { .. } => "verifying",
            ModelState::Loading => "loading",
            ModelState::Ready => "ready",
            ModelState::Failed { .. } => "failed",
        }
    }

    /// Every state name, for one-hot metrics.
    pub const NAMES: [&'static str; 6] = [
        "missing",
        "downloading",
        "verifying",
        "loading",
        "ready",
        "failed",
    ];

    /// A sentence for "not ready" errors, e.g. `downloading (312.0 MiB of 1.1 GiB, 41%)`.
    pub fn describe(&self) -> String {
        match self {
            ModelState::Missing => "waiting for the model file".to_string(),
            ModelState::Downloading {
                bytes,
                total,
                bytes_per_second,
                by_another_process,
            } => {
                let mut s = if *by_another_process {
                    "another process sharing the model cache is downloading the model; waiting \
                     for it ("
                        .to_string()
                } else {
                    "downloading the model (".to_string()
                };
                s += &human_bytes(*bytes);
                if let Some(total) = total {
                    s += &format!(" of {}", human_bytes(*total));
                    if *total > 0 {
                        s += &format!(", {:.0}%", *bytes as f64 * 100.0 / *total as f64);
                    }
                }
                if *bytes_per_second > 0.0 {
                    s += &format!(", {}/s", human_bytes(*bytes_per_second as u64));
                }
                s + ")"
            }
            ModelState::Verifying { .. } => "verifying the model file's sha256".to_string(),
            ModelState::Loading => "loading the model".to_string(),
            ModelState::Ready => "ready".to_string(),
            ModelState::Failed { reason } => format!("the model failed: {reason}"),
        }
    }
}

/// `1536` → `1.5 KiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Download progress as reported by `/health`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProgressReport {
    pub bytes: u64,
    pub total: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_per_second: Option<f64>,
}

/// The `/health` body.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HealthReport {
    /// llama.cpp-compatible summary: `ok` when ready, `loading` on the way, `error` on failure,
    /// `draining` while shutting down.
    pub status: &'static str,
    /// The lifecycle state: missing | downloading | verifying | loading | ready | failed, or
    /// `draining` while shutting down.
    pub state: &'static str,
    /// The name the API serves the model under.
    pub model: String,
    /// The kernel set chosen for this CPU, once the model is loaded.
    pub kernel: Option<String>,
    /// For an embedding model, once loaded: the width of its vectors (what a vector index
    /// must be created with). Absent for a generation model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding_dim: Option<usize>,
    /// Human-readable detail for the current state.
    pub message: String,
    /// Byte progress while downloading or verifying.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<ProgressReport>,
    /// Why the model failed, when `state` is `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Seconds spent in the current state.
    pub seconds_in_state: f64,
}

#[derive(Debug)]
struct Inner {
    state: ModelState,
    kernel: Option<String>,
    embedding_dim: Option<usize>,
    since: Instant,
    /// When shutdown began (see [`Health::begin_draining`]).
    draining_since: Option<Instant>,
}

/// The shared lifecycle state.
#[derive(Debug)]
pub struct Health {
    model: String,
    inner: RwLock<Inner>,
}

impl Health {
    /// A new state in `missing` for the model served as `model`.
    pub fn new(model: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            inner: RwLock::new(Inner {
                state: ModelState::Missing,
                kernel: None,
                embedding_dim: None,
                since: Instant::now(),
                draining_since: None,
            }),
        }
    }

    /// The served model name.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Move to `state`. Progress updates within the same state keep the state's start time.
    pub fn set(&self, state: ModelState) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if inner.state.name() != state.name() {
            inner.since = Instant::now();
            match &state {
                ModelState::Failed { reason } => tracing::error!(%reason, "model failed"),
                ModelState::Downloading { .. } | ModelState::Verifying { .. } => {
                    tracing::info!(state = state.name(), "model state")
                }
                other => tracing::info!(state = other.name(), "model state"),
            }
        }
        inner.state = state;
    }

    /// The engine can serve no more (see `EngineHandle::fatal`): `failed` with a reason that
    /// says the process exits. Idempotent.
    pub fn engine_failed(&self, message: &str) {
        let reason = format!(
            "the inference engine stopped: {message}; the server exits (status 1) so that it \
             is restarted"
        );
        if self.state()
            != (ModelState::Failed {
                reason: reason.clone(),
            })
        {
            self.set(ModelState::Failed { reason });
        }
    }

    /// The server is shutting down: `/health` says `draining` (503) from now on, so that load
    /// balancers stop sending requests while in-flight ones finish. Idempotent.
    pub fn begin_draining(&self) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if inner.draining_since.is_none() {
            inner.draining_since = Some(Instant::now());
            tracing::info!(state = "draining", "server state");
        }
    }

    /// Whether [`Health::begin_draining`] was called.
    pub fn is_draining(&self) -> bool {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .draining_since
            .is_some()
    }

    /// Record what the load chose and found: the kernel set, and the vector width when the
    /// model is an embedding model.
    pub fn set_loaded(&self, kernel: impl Into<String>, embedding_dim: Option<usize>) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        inner.kernel = Some(kernel.into());
        inner.embedding_dim = embedding_dim;
    }

    /// The current state.
    pub fn state(&self) -> ModelState {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .state
            .clone()
    }

    pub fn is_ready(&self) -> bool {
        matches!(
            self.inner.read().unwrap_or_else(|p| p.into_inner()).state,
            ModelState::Ready
        )
    }

    /// The `/health` body.
    pub fn report(&self) -> HealthReport {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let state = &inner.state;
        let progress = match state {
            ModelState::Downloading {
                bytes,
                total,
                bytes_per_second,
                ..
            } => Some(ProgressReport {
                bytes: *bytes,
                total: *total,
                bytes_per_second: Some(*bytes_per_second),
            }),
            ModelState::Verifying { bytes, total } => Some(ProgressReport {
                bytes: *bytes,
                total: *total,
                bytes_per_second: None,
            }),
            _ => None,
        };
        let draining = match (state, inner.draining_since) {
            (ModelState::Failed { .. }, _) | (_, None) => None,
            (_, Some(since)) => Some(since),
        };
        if let Some(since) = draining {
            return HealthReport {
                status: "draining",
                state: "draining",
                model: self.model.clone(),
                kernel: inner.kernel.clone(),
                embedding_dim: inner.embedding_dim,
                message: "shutting down: in-flight requests are finishing; new requests get 503"
                    .to_string(),
                progress: None,
                reason: None,
                seconds_in_state: since.elapsed().as_secs_f64(),
            };
        }
        HealthReport {
            status: match state {
                ModelState::Ready => "ok",
                ModelState::Failed { .. } => "error",
                _ => "loading",
            },
            state: state.name(),
            model: self.model.clone(),
            kernel: inner.kernel.clone(),
            embedding_dim: inner.embedding_dim,
            message: state.describe(),
            progress,
            reason: match state {
                ModelState::Failed { reason } => Some(reason.clone()),
                _ => None,
            },
            seconds_in_state: inner.since.elapsed().as_secs_f64(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_follows_the_state() {
        let h = Health::new("m");
        assert_eq!(h.report().state, "missing");
        assert_eq!(h.report().status, "loading");
        h.set(ModelState::Downloading {
            bytes: 512,
            total: Some(1024),
            bytes_per_second: 10.0,
            by_another_process: false,
        });
        let r = h.report();
        assert_eq!(r.state, "downloading");
        assert_eq!(r.progress.as_ref().unwrap().bytes, 512);
        assert!(r.message.contains("50%"), "{}", r.message);
        h.set(ModelState::Downloading {
            bytes: 768,
            total: Some(1024),
            bytes_per_second: 10.0,
            by_another_process: true,
        });
        let r = h.report();
        assert_eq!(r.state, "downloading", "the same lifecycle state");
        assert_eq!(r.progress.as_ref().unwrap().bytes, 768);
        assert!(
            r.message
                .starts_with("another process sharing the model cache")
                && r.message.contains("75%"),
            "{}",
            r.message
        );
        h.set(ModelState::Failed {
            reason: "sha256 mismatch".into(),
        });
        let r = h.report();
        assert_eq!((r.status, r.state), ("error", "failed"));
        assert_eq!(r.reason.as_deref(), Some("sha256 mismatch"));
        h.set_loaded("avx2", None);
        h.set(ModelState::Ready);
        let r = h.report();
        assert_eq!((r.status, r.kernel.as_deref()), ("ok", Some("avx2")));
        assert!(h.is_ready());
    }

    #[test]
    fn draining_overrides_ready_but_not_failed() {
        let h = Health::new("m");
        h.set(ModelState::Ready);
        h.begin_draining();
        let r = h.report();
        assert_eq!((r.status, r.state), ("draining", "draining"));
        assert!(h.is_draining());
        h.set(ModelState::Failed {
            reason: "engine died".into(),
        });
        assert_eq!(h.report().state, "failed");
    }

    #[test]
    fn human_bytes_units() {
        assert_eq!(human_bytes(10), "10 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }
}
