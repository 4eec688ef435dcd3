//! Download errors, each worded to say what went wrong, where, and what to do about it.
//!
//! This module does NOT decide what is retryable (see `fetch`).

use std::io;
use std::path::PathBuf;

use super::redact_url;

/// Why the model file could not be made available. URLs print through [`redact_url`]; a
/// `what` is already redacted by whoever builds the error.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("invalid model source: {0}")]
    InvalidSource(String),

    #[error("model file {path} does not exist: check --model (BITNET_MODEL) and the volume mount")]
    LocalMissing { path: PathBuf },

    #[error("model path {path} is not a regular file: --model must name the .gguf file itself")]
    LocalNotFile { path: PathBuf },

    #[error(
        "offline mode (HF_HUB_OFFLINE) is on and {what} is not in the cache at {cache}: start once \
         with network access, copy the file into that directory, or unset HF_HUB_OFFLINE"
    )]
    OfflineMiss { what: String, cache: PathBuf },

    #[error(
        "{} was not found (HTTP 404): check the repo id, file name and revision",
        redact_url(url)
    )]
    NotFound { url: String },

    #[error(
        "access to {} was refused (HTTP {status}): {}",
        redact_url(url),
        if *token_set {
            "HF_TOKEN is set but lacks access; accept the model's licence on its page or use a \
             token with read access"
        } else {
            "the repo may be gated or private; set HF_TOKEN to a token with read access"
        }
    )]
    Unauthorized {
        url: String,
        status: u16,
        token_set: bool,
    },

    #[error("{} answered HTTP {status}{}", redact_url(url), if detail.is_empty() { String::new() } else { format!(": {detail}") })]
    Http {
        url: String,
        status: u16,
        detail: String,
    },

    #[error(
        "could not download {} after {attempts} attempts; last error: {last}. Check network \
         access to the host (and HF_ENDPOINT / proxy settings)",
        redact_url(url)
    )]
    Network {
        url: String,
        attempts: u32,
        last: String,
    },

    #[error(
        "sha256 mismatch for {what}: expected {expected}, got {actual}. The file was not used{}",
        if *deleted { " and the partial download was deleted; it will be fetched again on the next start" } else { "" }
    )]
    ChecksumMismatch {
        what: String,
        expected: String,
        actual: String,
        deleted: bool,
    },

    #[error(
        "size mismatch for {}: the server announced {expected} bytes but sent {actual}; the \
         partial file was kept and the download will resume on the next start",
        redact_url(url)
    )]
    SizeMismatch {
        url: String,
        expected: u64,
        actual: u64,
    },

    #[error("{}", describe_io(action, path, source))]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },

    #[error("could not set up the HTTP client: {0}")]
    Client(String),
}

impl DownloadError {
    /// Wrap an I/O error with what we were doing and on which path.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        DownloadError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// ENOSPC, EACCES and EROFS get a sentence that says what to change.
fn describe_io(action: &str, path: &std::path::Path, err: &io::Error) -> String {
    let path = path.display();
    match err.kind() {
        io::ErrorKind::StorageFull => format!(
            "no space left on device while {action} {path}: free space on that volume or point \
             --model-dir (BITNET_MODEL_DIR) at a larger one; the partial download is kept and \
             resumes on the next start"
        ),
        io::ErrorKind::PermissionDenied if action == "reading" => format!(
            "permission denied while reading {path}: make the file readable, and every directory \
             above it searchable, by the user the server runs as (uid 65532 in the container \
             image), e.g. `chmod -R a+rX` on the host directory mounted at /models"
        ),
        io::ErrorKind::PermissionDenied => format!(
            "permission denied while {action} {path}: make the directory writable by the user \
             the server runs as (uid 65532 in the container image), or choose another \
             --model-dir (BITNET_MODEL_DIR)"
        ),
        io::ErrorKind::ReadOnlyFilesystem => format!(
            "read-only file system while {action} {path}: mount the model volume read-write, or \
             pass --model with a file that is already on it"
        ),
        io::ErrorKind::QuotaExceeded => format!(
            "disk quota exceeded while {action} {path}: raise the quota or choose another \
             --model-dir (BITNET_MODEL_DIR)"
        ),
        _ => format!("I/O error while {action} {path}: {err}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn disk_full_is_reported_with_path_and_remedy() {
        // /dev/full answers every write with ENOSPC.
        let Ok(mut f) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
            return;
        };
        let err = f
            .write_all(&[0u8; 4096])
            .and_then(|_| f.flush())
            .unwrap_err();
        let msg = DownloadError::io("writing", "/models/x.part", err).to_string();
        assert!(msg.contains("no space left on device"), "{msg}");
        assert!(
            msg.contains("/models/x.part") && msg.contains("--model-dir"),
            "{msg}"
        );
    }

    #[test]
    fn permission_and_read_only_messages() {
        let e = io::Error::from(io::ErrorKind::PermissionDenied);
        let msg = DownloadError::io("creating", "/models/blobs", e).to_string();
        assert!(
            msg.contains("permission denied") && msg.contains("/models/blobs"),
            "{msg}"
        );
        let e = io::Error::from(io::ErrorKind::PermissionDenied);
        let msg = DownloadError::io("reading", "/models/model.gguf", e).to_string();
        assert!(
            msg.contains("readable") && msg.contains("65532") && !msg.contains("writable"),
            "{msg}"
        );
        let e = io::Error::from(io::ErrorKind::ReadOnlyFilesystem);
        let msg = DownloadError::io("creating", "/models", e).to_string();
        assert!(msg.contains("read-only file system"), "{msg}");
    }
}
