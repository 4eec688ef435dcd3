//! Model acquisition: turn a [`ModelSource`] into a verified file on local disk.
//!
//! - Local files are used in place (and hashed when `--sha256` is given).
//! - Hub files: `HEAD {HF_ENDPOINT}/{repo}/resolve/{revision}/{file}` (without following the
//!   CDN redirect) gives the commit, size and — for LFS files — the sha256; then the file is
//!   fetched into the cache (see [`cache`] for the layout) with resume and retries (see
//!   `fetch`), verified, fsynced and renamed into `blobs/<sha256>`.
//! - URLs: fetched the same way; without `--sha256` the digest is computed and logged, and the
//!   cached copy is reused on later starts.
//! - `HF_HUB_OFFLINE=1`: only the cache is consulted. `HF_TOKEN` is sent as a bearer token and
//!   never logged. It goes only to the endpoint's origin (scheme, host and port): the metadata
//!   `HEAD` follows only same-origin redirects, and the HTTP client drops it on a redirect to
//!   another origin (the CDN, or a protocol-relative `//other.host/…`).
//! - Replicas may share the cache (one volume, several containers, each server PID 1). Once the
//!   hub has said which blob to expect, everything is done under that blob's lock (an `flock` on
//!   `.locks/<key>.lock`): look in the cache, download, verify, rename, link the snapshot, write
//!   the ref. A second replica polls the lock meanwhile, reports the first one's `.part` size as
//!   [`Phase::Waiting`] (`/health`: `downloading`, "another process sharing the model cache is
//!   downloading it"), then finds the blob and only links it. Temporary names are unique per
//!   write, never per PID. The rules, and what a killed replica leaves behind, are in [`cache`].
//!
//! This module does NOT parse the file (see `gguf`) or publish health state itself: progress
//! goes to a [`ProgressSink`].

pub mod cache;
mod error;
pub(crate) mod fetch;
pub mod hub;
pub mod progress;
pub mod redact;
pub mod source;
pub mod tls;

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

pub use cache::RepoCache;
pub use error::DownloadError;
pub use progress::{NoProgress, Phase, Progress, ProgressSink};
pub use redact::redact_url;
pub use source::{ModelSource, Sha256Hex};

use crate::secret::Secret;
use cache::LockFile;
use progress::Meter;

/// The public hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// How often a process waiting for another's download tries the lock again (and reports the
/// other's progress).
const LOCK_POLL: Duration = Duration::from_millis(100);

/// How to download.
#[derive(Debug, Clone)]
pub struct DownloadOptions {
    /// The cache root (`--model-dir`).
    pub cache_dir: PathBuf,
    /// The hub base URL (`HF_ENDPOINT`).
    pub endpoint: String,
    /// Bearer token for gated/private repos (`HF_TOKEN`).
    pub token: Option<Secret>,
    /// Never touch the network (`HF_HUB_OFFLINE`).
    pub offline: bool,
    /// Time allowed to establish a connection.
    pub connect_timeout: Duration,
    /// Longest silence while reading before the attempt is abandoned (not a total deadline).
    pub read_timeout: Duration,
    /// Retries after consecutive failures without progress.
    pub max_retries: u32,
    /// The first retry delay; doubles per retry up to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        Self {
            cache_dir: PathBuf::from("models"),
            endpoint: DEFAULT_ENDPOINT.to_string(),
            token: None,
            offline: false,
            connect_timeout: Duration::from_secs(15),
            read_timeout: Duration::from_secs(60),
            max_retries: 8,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
        }
    }
}

/// A model file ready to load.
#[derive(Debug, Clone)]
pub struct Acquired {
    /// The file to open.
    pub path: PathBuf,
    /// Its sha256 when known (verified, or computed while downloading).
    pub sha256: Option<Sha256Hex>,
    /// Whether the digest was checked against an expected value (pin or hub metadata).
    pub verified: bool,
    /// Found in the cache (or on disk) without downloading.
    pub from_cache: bool,
}

/// Make the model file available locally, downloading it if needed.
pub async fn acquire(
    source: &ModelSource,
    options: &DownloadOptions,
    sink: &dyn ProgressSink,
) -> Result<Acquired, DownloadError> {
    match source {
        ModelSource::Local { path, sha256 } => acquire_local(path, sha256.as_ref(), sink).await,
        ModelSource::Hub { .. } | ModelSource::Url { .. } => {
            Remote::new(source, options, sink)?.acquire().await
        }
    }
}

async fn acquire_local(
    path: &Path,
    sha256: Option<&Sha256Hex>,
    sink: &dyn ProgressSink,
) -> Result<Acquired, DownloadError> {
    let meta = match tokio::fs::metadata(path).await {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(DownloadError::LocalMissing {
                path: path.to_path_buf(),
            });
        }
        Err(e) => return Err(DownloadError::io("reading", path, e)),
    };
    if !meta.is_file() {
        return Err(DownloadError::LocalNotFile {
            path: path.to_path_buf(),
        });
    }
    // Readable by this user? (A mounted directory owned by another uid is the usual cause; say so
    // here rather than as a loader error.)
    if let Err(e) = tokio::fs::File::open(path).await {
        return Err(DownloadError::io("reading", path, e));
    }
    let Some(expected) = sha256 else {
        return Ok(Acquired {
            path: path.to_path_buf(),
            sha256: None,
            verified: false,
            from_cache: true,
        });
    };
    let label = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (hasher, _) = hash_file_blocking(path.to_path_buf(), sink, &label, None).await?;
    let actual = Sha256Hex::parse(&hex::encode(hasher.finalize()))?;
    if &actual != expected {
        return Err(DownloadError::ChecksumMismatch {
            what: path.display().to_string(),
            expected: expected.to_string(),
            actual: actual.to_string(),
            deleted: false,
        });
    }
    Ok(Acquired {
        path: path.to_path_buf(),
        sha256: Some(actual),
        verified: true,
        from_cache: true,
    })
}

/// A Hub or URL source being acquired.
struct Remote<'a> {
    source: &'a ModelSource,
    options: &'a DownloadOptions,
    sink: &'a dyn ProgressSink,
    cache: RepoCache,
    url: String,
    /// The cache-relative file path inside a snapshot.
    file: String,
    pinned: Option<Sha256Hex>,
}

/// What the cache and the hub agree we should look for.
#[derive(Debug, Clone)]
struct Target {
    snapshot: String,
    expected: Option<Sha256Hex>,
    size: Option<u64>,
    /// `refs/<revision>` to record once the snapshot exists (Hub, named revisions only).
    record_ref: Option<(String, String)>,
}

impl Target {
    /// What names the download's `.part` file and lock: the expected digest, else the snapshot
    /// and file.
    fn key(&self, file: &str) -> String {
        match &self.expected {
            Some(sha) => sha.to_string(),
            None => format!("{}--{file}", self.snapshot),
        }
    }
}

impl<'a> Remote<'a> {
    fn new(
        source: &'a ModelSource,
        options: &'a DownloadOptions,
        sink: &'a dyn ProgressSink,
    ) -> Result<Self, DownloadError> {
        let cache = RepoCache::for_source(&options.cache_dir, source)
            .ok_or_else(|| DownloadError::InvalidSource("not a remote source".into()))?;
        let (url, file) = match source {
            ModelSource::Hub {
                repo,
                file,
                revision,
                ..
            } => (
                hub::resolve_url(&options.endpoint, repo, revision, file),
                file.clone(),
            ),
            ModelSource::Url { url, .. } => (url.clone(), sanitize(&source.file_name())),
            ModelSource::Local { .. } => unreachable!("handled by acquire_local"),
        };
        Ok(Self {
            source,
            options,
            sink,
            cache,
            url,
            file,
            pinned: source.pinned_sha256().cloned(),
        })
    }

    async fn acquire(&self) -> Result<Acquired, DownloadError> {
        if let Some(found) = self.cached_without_network() {
            tracing::info!(path = %found.path.display(), "using the cached model file");
            return Ok(found);
        }
        if self.options.offline {
            return Err(DownloadError::OfflineMiss {
                what: self.source.to_string(),
                cache: self.cache.dir().to_path_buf(),
            });
        }
        let target = match self.resolve_target().await {
            Ok(t) => t,
            Err(e @ DownloadError::Network { .. }) => {
                if let Some(found) = self.cached_named_revision() {
                    tracing::warn!(
                        error = %e,
                        path = %found.path.display(),
                        "the hub is unreachable; using the cached copy of this revision"
                    );
                    return Ok(found);
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        // From here on everything is written under the blob's lock: the download, the rename,
        // the snapshot link and the ref (see `cache`). Another replica may hold it, or may have
        // finished the same download while we waited.
        let key = target.key(&self.file);
        let (_lock, waited) = self.wait_for_lock(&target, &key).await?;
        if let Some(found) = self.cached_target(&target)? {
            if waited {
                tracing::info!(path = %found.path.display(), "another process downloaded the model file");
            } else {
                tracing::info!(path = %found.path.display(), "the cached model file is current");
            }
            return Ok(found);
        }
        self.download(&target, &key).await
    }

    /// Take the download lock for `key`. While another process holds it (a replica on the same
    /// volume downloading this blob), poll, reporting the size of its `.part` file as
    /// [`Phase::Waiting`]. Polling rather than a blocking `flock` on a blocking thread: the wait
    /// reports progress and ends with the future (a shutdown leaves no thread waiting on the
    /// lock). Returns the lock and whether we waited.
    async fn wait_for_lock(
        &self,
        target: &Target,
        key: &str,
    ) -> Result<(LockFile, bool), DownloadError> {
        let lock = self.cache.open_lock(key)?;
        if lock.try_lock()? {
            return Ok((lock, false));
        }
        tracing::info!(
            lock = %lock.path().display(),
            "another process sharing the model cache is downloading this file; waiting for it"
        );
        let part = self.cache.part(key);
        let part_len = || std::fs::metadata(&part).map(|m| m.len()).ok();
        let label = self.source.file_name();
        let mut seen = part_len().unwrap_or(0);
        let meter = Meter::new(self.sink, &label, Phase::Waiting, target.size, seen);
        meter.update(seen);
        loop {
            tokio::time::sleep(LOCK_POLL).await;
            if lock.try_lock()? {
                meter.finish(seen);
                return Ok((lock, true));
            }
            // The part file disappears when it is renamed into its blob: keep the last size.
            seen = part_len().unwrap_or(seen);
            meter.update(seen);
        }
    }

    /// Cache hits that need no network: a pinned digest whose blob exists, a commit-hash
    /// revision already in snapshots, or a URL fetched before.
    fn cached_without_network(&self) -> Option<Acquired> {
        if let Some(sha) = &self.pinned
            && let Some(path) = self.cache.existing_blob(sha)
        {
            return Some(Acquired {
                path,
                sha256: Some(sha.clone()),
                verified: true,
                from_cache: true,
            });
        }
        match self.source {
            ModelSource::Hub { revision, .. } if hub::is_commit_hash(revision) => {
                self.snapshot_hit(revision)
            }
            ModelSource::Url { .. } if self.pinned.is_none() => {
                self.snapshot_hit(cache::URL_SNAPSHOT)
            }
            ModelSource::Hub { .. } if self.options.offline => self.cached_named_revision(),
            _ => None,
        }
    }

    /// The snapshot recorded for a named revision (`refs/<revision>`), if present.
    fn cached_named_revision(&self) -> Option<Acquired> {
        let ModelSource::Hub { revision, .. } = self.source else {
            return None;
        };
        let commit = self.cache.read_ref(revision)?;
        self.snapshot_hit(&commit)
    }

    fn snapshot_hit(&self, snapshot: &str) -> Option<Acquired> {
        let path = self.cache.lookup_snapshot(snapshot, &self.file)?;
        let sha256 = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| Sha256Hex::parse(n).ok());
        if let (Some(pinned), Some(actual)) = (&self.pinned, &sha256)
            && pinned != actual
        {
            return None;
        }
        Some(Acquired {
            path,
            sha256,
            verified: false,
            from_cache: true,
        })
    }

    /// Ask the hub what the file is now (URLs: nothing to ask).
    async fn resolve_target(&self) -> Result<Target, DownloadError> {
        let ModelSource::Hub { revision, .. } = self.source else {
            return Ok(Target {
                snapshot: cache::URL_SNAPSHOT.to_string(),
                expected: self.pinned.clone(),
                size: None,
                record_ref: None,
            });
        };
        let meta = self.head().await?;
        let commit = meta.commit.clone().unwrap_or_else(|| revision.clone());
        if let (Some(pinned), Some(hub_sha)) = (&self.pinned, &meta.sha256)
            && pinned != hub_sha
        {
            tracing::warn!(
                pinned = %pinned,
                hub = %hub_sha,
                "--sha256 differs from the digest the hub publishes for this file; \
                 the download will be checked against --sha256"
            );
        }
        if meta.sha256.is_none() && self.pinned.is_none() {
            tracing::warn!(
                url = %redact_url(&self.url),
                "the hub publishes no sha256 for this file and --sha256 is not set; the file \
                 will be used without verification (its digest is logged once downloaded)"
            );
        }
        let record_ref = (commit != *revision).then(|| (revision.clone(), commit.clone()));
        Ok(Target {
            snapshot: commit,
            expected: self.pinned.clone().or(meta.sha256),
            size: meta.size,
            record_ref,
        })
    }

    /// HEAD the resolve URL without following the CDN redirect (relative redirects, used for
    /// renamed repos, are followed), with retries for transient failures.
    async fn head(&self) -> Result<hub::FileMetadata, DownloadError> {
        let client = tls::client(self.options, false, &self.url)?;
        let mut url = self.url.clone();
        let mut failures = 0;
        let mut redirects = 0;
        loop {
            let mut request = client.head(&url);
            if let Some(token) = &self.options.token {
                request = request.bearer_auth(token.expose());
            }
            let outcome = request.send().await;
            let response = match outcome {
                Ok(r) => r,
                Err(e) => {
                    failures += 1;
                    let reason = fetch::describe(&e);
                    if failures > self.options.max_retries {
                        return Err(DownloadError::Network {
                            url,
                            attempts: failures,
                            last: reason,
                        });
                    }
                    let delay = fetch::backoff(self.options, failures);
                    tracing::warn!(url = %redact_url(&url), "metadata request failed ({reason}); retrying in {:.1}s", delay.as_secs_f64());
                    tokio::time::sleep(delay).await;
                    continue;
                }
            };
            let status = response.status();
            let headers = response.headers();
            let meta = hub::parse_metadata(headers);
            if status.is_redirection() {
                let location = headers
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok());
                let has_metadata =
                    meta.sha256.is_some() || meta.size.is_some() || meta.commit.is_some();
                // Follow only redirects that stay on this origin (renamed repos): the token is
                // attached to every request here, so a redirect to another host, including a
                // protocol-relative `//other.host/…`, is where the metadata request ends.
                let next = location.and_then(|loc| same_origin_join(&url, loc));
                match next {
                    Some(next) if !has_metadata && redirects < 5 => {
                        redirects += 1;
                        url = next;
                        continue;
                    }
                    _ => return Ok(meta),
                }
            }
            return match status.as_u16() {
                200..=299 => Ok(meta),
                401 | 403 => Err(DownloadError::Unauthorized {
                    url,
                    status: status.as_u16(),
                    token_set: self.options.token.is_some(),
                }),
                404 => Err(DownloadError::NotFound { url }),
                s if s == 408 || s == 429 || status.is_server_error() => {
                    failures += 1;
                    if failures > self.options.max_retries {
                        return Err(DownloadError::Network {
                            url,
                            attempts: failures,
                            last: format!("HTTP {s}"),
                        });
                    }
                    tokio::time::sleep(fetch::backoff(self.options, failures)).await;
                    continue;
                }
                s => Err(DownloadError::Http {
                    url,
                    status: s,
                    detail: String::new(),
                }),
            };
        }
    }

    /// Is the target already complete in the cache? Records the snapshot link and ref if so.
    /// Call with the target's lock held.
    fn cached_target(&self, target: &Target) -> Result<Option<Acquired>, DownloadError> {
        let found = match &target.expected {
            Some(sha) => self.cache.existing_blob(sha).map(|path| Acquired {
                path,
                sha256: Some(sha.clone()),
                verified: true,
                from_cache: true,
            }),
            None => self.snapshot_hit(&target.snapshot),
        };
        if let Some(found) = &found
            && let Some(sha) = &found.sha256
        {
            self.record(target, sha)?;
        }
        Ok(found)
    }

    fn record(&self, target: &Target, sha: &Sha256Hex) -> Result<(), DownloadError> {
        let named_ref = target
            .record_ref
            .as_ref()
            .map(|(revision, commit)| (revision.as_str(), commit.as_str()));
        self.cache
            .record(&target.snapshot, &self.file, sha, named_ref)?;
        Ok(())
    }

    /// Download into `.part`, verify, rename into `blobs/`, record. Call with `key`'s lock held.
    async fn download(&self, target: &Target, key: &str) -> Result<Acquired, DownloadError> {
        let part = self.cache.part(key);
        let client = tls::client(self.options, true, &self.url)?;
        let label = self.source.file_name();
        let token = match self.source {
            ModelSource::Hub { .. } => self.options.token.as_ref(),
            // HF_TOKEN belongs to the hub; never send it to an arbitrary URL.
            _ => None,
        };
        tracing::info!(url = %redact_url(&self.url), part = %part.display(), "downloading the model file");
        let fetched = fetch::Transfer {
            client: &client,
            url: &self.url,
            token,
            part: &part,
            expected_size: target.size,
            digest_known: target.expected.is_some(),
            options: self.options,
            sink: self.sink,
            label: &label,
        }
        .run()
        .await?;
        // The digest was computed while writing; report the verification step for the record.
        let meter = Meter::new(
            self.sink,
            &label,
            Phase::Verifying,
            Some(fetched.size),
            fetched.size,
        );
        meter.finish(fetched.size);
        if let Some(expected) = &target.expected
            && expected != &fetched.sha256
        {
            let _ = tokio::fs::remove_file(&part).await;
            let _ = tokio::fs::remove_file(fetch::meta_path(&part)).await;
            return Err(DownloadError::ChecksumMismatch {
                what: redact_url(&self.url),
                expected: expected.to_string(),
                actual: fetched.sha256.to_string(),
                deleted: true,
            });
        }
        if let Some(size) = target.size
            && size != fetched.size
        {
            return Err(DownloadError::SizeMismatch {
                url: self.url.clone(),
                expected: size,
                actual: fetched.size,
            });
        }
        let blob = self.cache.blob(&fetched.sha256);
        tokio::fs::rename(&part, &blob)
            .await
            .map_err(|e| DownloadError::io("renaming the verified download to", &blob, e))?;
        if let Some(dir) = blob.parent() {
            let _ = cache::sync_dir(dir);
        }
        let _ = tokio::fs::remove_file(fetch::meta_path(&part)).await;
        self.record(target, &fetched.sha256)?;
        if target.expected.is_some() {
            tracing::info!(sha256 = %fetched.sha256, path = %blob.display(), "model file downloaded and verified");
        } else {
            tracing::warn!(
                sha256 = %fetched.sha256,
                path = %blob.display(),
                "model file downloaded WITHOUT verification; pass --sha256 {} to pin it",
                fetched.sha256
            );
        }
        Ok(Acquired {
            path: blob,
            sha256: Some(fetched.sha256),
            verified: target.expected.is_some(),
            from_cache: false,
        })
    }
}

/// `location` resolved against `base`, when the result has the same scheme, host and port as
/// `base` (the only redirects credentials may follow); `None` otherwise.
fn same_origin_join(base: &str, location: &str) -> Option<String> {
    let base = reqwest::Url::parse(base).ok()?;
    let next = base.join(location).ok()?;
    (next.origin() == base.origin()).then(|| next.to_string())
}

/// Hash a file (or its first `limit` bytes) on a blocking thread, reporting progress as
/// `verifying`. Returns the hasher state (so a download can continue it) and the byte count.
pub(crate) async fn hash_file_blocking(
    path: PathBuf,
    sink: &dyn ProgressSink,
    label: &str,
    limit: Option<u64>,
) -> Result<(Sha256, u64), DownloadError> {
    // The sink is borrowed; progress is relayed through a channel to this task.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let total = match limit {
        Some(l) => Some(l),
        None => tokio::fs::metadata(&path).await.ok().map(|m| m.len()),
    };
    let task_path = path.clone();
    let task = tokio::task::spawn_blocking(move || -> std::io::Result<(Sha256, u64)> {
        use std::io::Read;
        let file = std::fs::File::open(&task_path)?;
        let mut reader: Box<dyn Read> = match limit {
            Some(l) => Box::new(file.take(l)),
            None => Box::new(file),
        };
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut done = 0u64;
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            done += n as u64;
            let _ = tx.send(done);
        }
        Ok((hasher, done))
    });
    let meter = Meter::new(sink, label, Phase::Verifying, total, 0);
    while let Some(done) = rx.recv().await {
        meter.update(done);
    }
    let (hasher, done) = task
        .await
        .map_err(|e| DownloadError::Client(format!("hashing task failed: {e}")))?
        .map_err(|e| DownloadError::io("reading", &path, e))?;
    meter.finish(done);
    Ok((hasher, done))
}

/// Make a string safe as one file-name component: `[A-Za-z0-9._-]`, others become `_`, and no
/// leading dot.
pub(crate) fn sanitize(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with('.') {
        out.replace_range(0..1, "_");
    }
    if out.is_empty() { "_".to_string() } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_same_origin_redirects_are_followed() {
        let base = "http://127.0.0.1:8080/o/n/resolve/main/m.gguf";
        assert_eq!(
            same_origin_join(base, "/o/renamed/resolve/main/m.gguf").as_deref(),
            Some("http://127.0.0.1:8080/o/renamed/resolve/main/m.gguf")
        );
        for other in [
            "//127.0.0.2:8080/o/n",
            "//evil.example/x",
            "http://127.0.0.1:8081/x",
            "https://127.0.0.1:8080/x",
            "http://evil.example/x",
        ] {
            assert_eq!(same_origin_join(base, other), None, "{other}");
        }
    }

    #[test]
    fn sanitize_keeps_names_flat() {
        assert_eq!(sanitize("sub/dir/m.gguf"), "sub_dir_m.gguf");
        assert_eq!(sanitize("../x"), "_._x");
        assert_eq!(sanitize(""), "_");
    }

    #[tokio::test]
    async fn local_file_checks() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.gguf");
        let err = acquire(
            &ModelSource::Local {
                path: missing.clone(),
                sha256: None,
            },
            &DownloadOptions::default(),
            &NoProgress,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, DownloadError::LocalMissing { .. }), "{err}");
        let err = acquire(
            &ModelSource::Local {
                path: dir.path().to_path_buf(),
                sha256: None,
            },
            &DownloadOptions::default(),
            &NoProgress,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, DownloadError::LocalNotFile { .. }), "{err}");

        let file = dir.path().join("m.gguf");
        std::fs::write(&file, b"hello").unwrap();
        let good = Sha256Hex::parse(&hex::encode(Sha256::digest(b"hello"))).unwrap();
        let ok = acquire(
            &ModelSource::Local {
                path: file.clone(),
                sha256: Some(good),
            },
            &DownloadOptions::default(),
            &NoProgress,
        )
        .await
        .unwrap();
        assert!(ok.verified);
        let bad = Sha256Hex::parse(&"0".repeat(64)).unwrap();
        let err = acquire(
            &ModelSource::Local {
                path: file.clone(),
                sha256: Some(bad),
            },
            &DownloadOptions::default(),
            &NoProgress,
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("sha256 mismatch"), "{err}");
        assert!(file.exists(), "a user's own file is never deleted");
    }
}
