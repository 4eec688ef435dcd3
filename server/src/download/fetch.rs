//! One file transfer into a `.part` file: resume with `Range` after a drop, bounded retries
//! with exponential backoff, and a sha256 computed over exactly the bytes on disk.
//!
//! Resume rules: existing `.part` bytes are re-hashed first; the request carries
//! `Range: bytes=N-` and, when we saw a strong validator (ETag or Last-Modified) for this URL
//! before, `If-Range`. Only a `206` whose `Content-Range` starts at N is appended; a `200`
//! means "whole file" and the part file is truncated first. Without an expected digest and
//! without a validator a part file cannot be trusted, so the transfer starts from zero.
//!
//! This module does NOT decide where files go or whether the digest is the right one (see the
//! parent module): it returns the digest of what it wrote.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{CONTENT_RANGE, ETAG, IF_RANGE, LAST_MODIFIED, RANGE};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::progress::{Meter, Phase, ProgressSink};
use super::source::Sha256Hex;
use super::{DownloadError, DownloadOptions};
use crate::secret::Secret;

/// What ended up in the part file.
#[derive(Debug)]
pub(crate) struct Fetched {
    pub sha256: Sha256Hex,
    pub size: u64,
}

/// Sidecar next to a `.part` file: which URL it belongs to and the validator for `If-Range`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct PartMeta {
    url: String,
    validator: Option<String>,
}

/// One transfer's parameters.
pub(crate) struct Transfer<'a> {
    pub client: &'a reqwest::Client,
    pub url: &'a str,
    pub token: Option<&'a Secret>,
    pub part: &'a Path,
    pub expected_size: Option<u64>,
    /// An expected digest exists, so resumed bytes will be checked even without a validator.
    pub digest_known: bool,
    pub options: &'a DownloadOptions,
    pub sink: &'a dyn ProgressSink,
    pub label: &'a str,
}

/// The sidecar path for a part file.
pub(crate) fn meta_path(part: &Path) -> PathBuf {
    let mut name = part.as_os_str().to_owned();
    name.push(".json");
    PathBuf::from(name)
}

enum Failure {
    Retry(String),
    Fatal(DownloadError),
}

struct State {
    file: tokio::fs::File,
    hasher: Sha256,
    offset: u64,
    validator: Option<String>,
    expected_size: Option<u64>,
}

impl Transfer<'_> {
    pub(crate) async fn run(&self) -> Result<Fetched, DownloadError> {
        let mut state = self.open().await?;
        let mut failures = 0u32;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let before = state.offset;
            match self.attempt(&mut state).await {
                Ok(()) => break,
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retry(reason)) => {
                    // A drop after real progress is a fresh start, not a repeated failure.
                    failures = if state.offset > before {
                        1
                    } else {
                        failures + 1
                    };
                    if failures > self.options.max_retries {
                        return Err(DownloadError::Network {
                            url: self.url.to_string(),
                            attempts,
                            last: reason,
                        });
                    }
                    let delay = backoff(self.options, failures);
                    tracing::warn!(
                        url = %super::redact_url(self.url),
                        offset = state.offset,
                        "download interrupted ({reason}); retrying in {:.1}s",
                        delay.as_secs_f64()
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        }
        state
            .file
            .flush()
            .await
            .map_err(|e| DownloadError::io("writing", self.part, e))?;
        state
            .file
            .sync_all()
            .await
            .map_err(|e| DownloadError::io("syncing", self.part, e))?;
        let digest = state.hasher.finalize();
        let sha256 = Sha256Hex::parse(&hex::encode(digest))?;
        Ok(Fetched {
            sha256,
            size: state.offset,
        })
    }

    /// Open (or create) the part file, re-hashing resumable bytes.
    async fn open(&self) -> Result<State, DownloadError> {
        let parent = self.part.parent().unwrap_or(Path::new("."));
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| DownloadError::io("creating the directory", parent, e))?;
        let meta_file = meta_path(self.part);
        let meta: PartMeta = tokio::fs::read(&meta_file)
            .await
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let existing = tokio::fs::metadata(self.part)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        let same_url = meta.url == self.url;
        let validator = if same_url { meta.validator } else { None };
        let trustworthy = self.digest_known || validator.is_some();
        let too_long = self.expected_size.is_some_and(|size| existing > size);
        let resume = existing > 0 && trustworthy && !too_long;

        let mut hasher = Sha256::new();
        let mut offset = 0;
        if resume {
            tracing::info!(
                part = %self.part.display(),
                bytes = existing,
                "resuming an interrupted download; re-hashing the bytes already on disk"
            );
            let (h, n) = super::hash_file_blocking(
                self.part.to_path_buf(),
                self.sink,
                self.label,
                Some(existing),
            )
            .await?;
            hasher = h;
            offset = n;
        } else if existing > 0 {
            tracing::info!(part = %self.part.display(), "discarding a partial download that cannot be verified");
        }
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(!resume)
            .open(self.part)
            .await
            .map_err(|e| DownloadError::io("creating", self.part, e))?;
        let mut state = State {
            file,
            hasher,
            offset,
            validator,
            expected_size: self.expected_size,
        };
        if resume {
            // Append after exactly the bytes we hashed.
            state
                .file
                .set_len(offset)
                .await
                .map_err(|e| DownloadError::io("writing", self.part, e))?;
            use tokio::io::AsyncSeekExt;
            state
                .file
                .seek(std::io::SeekFrom::Start(offset))
                .await
                .map_err(|e| DownloadError::io("writing", self.part, e))?;
        }
        self.write_meta(&state).await?;
        Ok(state)
    }

    async fn write_meta(&self, state: &State) -> Result<(), DownloadError> {
        let meta = PartMeta {
            url: self.url.to_string(),
            validator: state.validator.clone(),
        };
        let path = meta_path(self.part);
        let bytes = serde_json::to_vec(&meta).unwrap_or_default();
        tokio::fs::write(&path, bytes)
            .await
            .map_err(|e| DownloadError::io("writing", &path, e))
    }

    async fn restart(&self, state: &mut State) -> Result<(), Failure> {
        state
            .file
            .set_len(0)
            .await
            .map_err(|e| Failure::Fatal(DownloadError::io("truncating", self.part, e)))?;
        use tokio::io::AsyncSeekExt;
        state
            .file
            .seek(std::io::SeekFrom::Start(0))
            .await
            .map_err(|e| Failure::Fatal(DownloadError::io("truncating", self.part, e)))?;
        state.hasher = Sha256::new();
        state.offset = 0;
        Ok(())
    }

    async fn attempt(&self, state: &mut State) -> Result<(), Failure> {
        if state.expected_size.is_some_and(|size| state.offset == size) && state.offset > 0 {
            return Ok(());
        }
        let mut request = self.client.get(self.url);
        if let Some(token) = self.token {
            request = request.bearer_auth(token.expose());
        }
        if state.offset > 0 {
            request = request.header(RANGE, format!("bytes={}-", state.offset));
            if let Some(v) = &state.validator {
                request = request.header(IF_RANGE, v);
            }
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| Failure::Retry(describe(&e)))?;
        let status = response.status();
        match status {
            StatusCode::PARTIAL_CONTENT => {
                let range = response
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_content_range);
                match range {
                    Some((start, total)) if start == state.offset => {
                        if let (Some(total), None) = (total, state.expected_size) {
                            state.expected_size = Some(total);
                        }
                    }
                    _ => {
                        tracing::warn!(
                            url = %super::redact_url(self.url),
                            "the server answered the range request for byte {} with a different \
                             range; starting over",
                            state.offset
                        );
                        self.restart(state).await?;
                        return Err(Failure::Retry("unexpected Content-Range".into()));
                    }
                }
            }
            StatusCode::OK => {
                if state.offset > 0 {
                    tracing::info!(
                        url = %super::redact_url(self.url),
                        "the server sent the whole file instead of resuming at byte {} (the file \
                         changed or ranges are unsupported); starting over",
                        state.offset
                    );
                    self.restart(state).await?;
                }
                if state.expected_size.is_none() {
                    state.expected_size = response.content_length();
                }
            }
            StatusCode::RANGE_NOT_SATISFIABLE => {
                self.restart(state).await?;
                return Err(Failure::Retry("HTTP 416 for the resume range".into()));
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Err(Failure::Fatal(DownloadError::Unauthorized {
                    url: self.url.to_string(),
                    status: status.as_u16(),
                    token_set: self.token.is_some(),
                }));
            }
            StatusCode::NOT_FOUND => {
                return Err(Failure::Fatal(DownloadError::NotFound {
                    url: self.url.to_string(),
                }));
            }
            s if s == StatusCode::REQUEST_TIMEOUT
                || s == StatusCode::TOO_MANY_REQUESTS
                || s.is_server_error() =>
            {
                return Err(Failure::Retry(format!("HTTP {}", s.as_u16())));
            }
            s => {
                let detail = response.text().await.unwrap_or_default();
                let detail: String = detail.chars().take(200).collect();
                return Err(Failure::Fatal(DownloadError::Http {
                    url: self.url.to_string(),
                    status: s.as_u16(),
                    detail,
                }));
            }
        }

        let validator = response
            .headers()
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.starts_with("W/"))
            .or_else(|| {
                response
                    .headers()
                    .get(LAST_MODIFIED)
                    .and_then(|v| v.to_str().ok())
            })
            .map(str::to_string);
        if validator.is_some() && validator != state.validator {
            state.validator = validator;
            self.write_meta(state).await.map_err(Failure::Fatal)?;
        }

        let meter = Meter::new(
            self.sink,
            self.label,
            Phase::Downloading,
            state.expected_size,
            state.offset,
        );
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    state
                        .file
                        .write_all(&chunk)
                        .await
                        .map_err(|e| Failure::Fatal(DownloadError::io("writing", self.part, e)))?;
                    state.hasher.update(&chunk);
                    state.offset += chunk.len() as u64;
                    if let Some(size) = state.expected_size
                        && state.offset > size
                    {
                        let _ = tokio::fs::remove_file(self.part).await;
                        let _ = tokio::fs::remove_file(meta_path(self.part)).await;
                        return Err(Failure::Fatal(DownloadError::SizeMismatch {
                            url: self.url.to_string(),
                            expected: size,
                            actual: state.offset,
                        }));
                    }
                    meter.update(state.offset);
                }
                Ok(None) => break,
                Err(e) => {
                    meter.finish(state.offset);
                    return Err(Failure::Retry(describe(&e)));
                }
            }
        }
        meter.finish(state.offset);
        match state.expected_size {
            Some(size) if state.offset < size => Err(Failure::Retry(format!(
                "the connection closed after {} of {size} bytes",
                state.offset
            ))),
            _ => Ok(()),
        }
    }
}

/// `bytes 100-199/1000` → (100, Some(1000)); `bytes 100-199/*` → (100, None).
fn parse_content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end: u64 = end.trim().parse().ok()?;
    if end < start {
        return None;
    }
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((start, total))
}

/// The delay before retry number `n` (1-based): base·2^(n-1), capped.
pub(crate) fn backoff(options: &DownloadOptions, n: u32) -> Duration {
    let factor = 2u32.saturating_pow(n.saturating_sub(1).min(16));
    options
        .backoff_base
        .saturating_mul(factor)
        .min(options.backoff_max)
}

/// A transport error in one line, without URLs that could carry credentials in query strings.
pub(crate) fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "the connection broke while receiving the body"
    } else if e.is_redirect() {
        "too many redirects"
    } else {
        "request failed"
    };
    let mut detail = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parsing() {
        assert_eq!(
            parse_content_range("bytes 100-199/1000"),
            Some((100, Some(1000)))
        );
        assert_eq!(parse_content_range("bytes 0-0/*"), Some((0, None)));
        assert_eq!(parse_content_range("bytes 5-1/10"), None);
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let o = DownloadOptions {
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(4),
            ..DownloadOptions::default()
        };
        let d: Vec<u64> = (1..=6).map(|n| backoff(&o, n).as_millis() as u64).collect();
        assert_eq!(d, vec![500, 1000, 2000, 4000, 4000, 4000]);
    }
}
