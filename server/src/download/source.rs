//! Where the model comes from, validated: a local path, a Hugging Face repo file, or a URL.
//!
//! This module does NOT touch the network or the disk.

use std::fmt;
use std::path::PathBuf;

use super::DownloadError;

/// A sha256 digest as 64 lowercase hex characters.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Sha256Hex(String);

impl Sha256Hex {
    /// Parse 64 hex characters (any case; an optional `sha256:` prefix is accepted).
    pub fn parse(s: &str) -> Result<Self, DownloadError> {
        let t = s.trim();
        let t = t.strip_prefix("sha256:").unwrap_or(t);
        if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(t.to_ascii_lowercase()))
        } else {
            Err(DownloadError::InvalidSource(format!(
                "{s:?} is not a sha256 digest: expected 64 hex characters, e.g. the value \
                 `sha256sum model.gguf` prints"
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Sha256Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Sha256Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

/// Where to get the model file, and optionally the digest it must have. `Debug` and `Display`
/// show a URL redacted.
#[derive(Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A file already on disk (`--model`).
    Local {
        path: PathBuf,
        sha256: Option<Sha256Hex>,
    },
    /// A file in a Hugging Face model repo (`--hf-repo`, `--hf-file`, `--revision`).
    Hub {
        repo: String,
        file: String,
        revision: String,
        sha256: Option<Sha256Hex>,
    },
    /// Any HTTP(S) URL (`--model-url`).
    Url {
        url: String,
        sha256: Option<Sha256Hex>,
    },
}

impl ModelSource {
    /// A Hub source, validating the names so they cannot escape the cache directory.
    pub fn hub(
        repo: &str,
        file: &str,
        revision: &str,
        sha256: Option<Sha256Hex>,
    ) -> Result<Self, DownloadError> {
        validate_repo(repo)?;
        validate_relative_path("--hf-file", file)?;
        validate_relative_path("--revision", revision)?;
        Ok(ModelSource::Hub {
            repo: repo.to_string(),
            file: file.to_string(),
            revision: revision.to_string(),
            sha256,
        })
    }

    /// A URL source; only `http://` and `https://` are accepted.
    pub fn url(url: &str, sha256: Option<Sha256Hex>) -> Result<Self, DownloadError> {
        let parsed = reqwest::Url::parse(url).map_err(|e| {
            DownloadError::InvalidSource(format!(
                "--model-url {:?} is not a valid URL: {e}",
                super::redact_url(url)
            ))
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(DownloadError::InvalidSource(format!(
                "--model-url must be http:// or https://, not {}://",
                parsed.scheme()
            )));
        }
        Ok(ModelSource::Url {
            url: url.to_string(),
            sha256,
        })
    }

    /// The digest pinned by the user, if any.
    pub fn pinned_sha256(&self) -> Option<&Sha256Hex> {
        match self {
            ModelSource::Local { sha256, .. }
            | ModelSource::Hub { sha256, .. }
            | ModelSource::Url { sha256, .. } => sha256.as_ref(),
        }
    }

    /// The file name the model is known by (last path component).
    pub fn file_name(&self) -> String {
        let raw = match self {
            ModelSource::Local { path, .. } => path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            ModelSource::Hub { file, .. } => file.rsplit('/').next().unwrap_or(file).to_string(),
            ModelSource::Url { url, .. } => reqwest::Url::parse(url)
                .ok()
                .and_then(|u| {
                    u.path_segments()
                        .and_then(|mut s| s.next_back().map(str::to_string))
                        .filter(|s| !s.is_empty())
                })
                .unwrap_or_default(),
        };
        if raw.is_empty() {
            "model.gguf".to_string()
        } else {
            raw
        }
    }

    /// The default name the API serves this model under: the repo id for Hub sources, the
    /// file name without `.gguf` otherwise.
    pub fn default_model_id(&self) -> String {
        match self {
            ModelSource::Hub { repo, .. } => repo.clone(),
            _ => {
                let name = self.file_name();
                name.strip_suffix(".gguf").unwrap_or(&name).to_string()
            }
        }
    }
}

impl fmt::Display for ModelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelSource::Local { path, .. } => write!(f, "{}", path.display()),
            ModelSource::Hub {
                repo,
                file,
                revision,
                ..
            } => write!(f, "hf://{repo}/{file}@{revision}"),
            ModelSource::Url { url, .. } => f.write_str(&super::redact_url(url)),
        }
    }
}

impl fmt::Debug for ModelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelSource::Local { path, sha256 } => f
                .debug_struct("Local")
                .field("path", path)
                .field("sha256", sha256)
                .finish(),
            ModelSource::Hub {
                repo,
                file,
                revision,
                sha256,
            } => f
                .debug_struct("Hub")
                .field("repo", repo)
                .field("file", file)
                .field("revision", revision)
                .field("sha256", sha256)
                .finish(),
            ModelSource::Url { url, sha256 } => f
                .debug_struct("Url")
                .field("url", &super::redact_url(url))
                .field("sha256", sha256)
                .finish(),
        }
    }
}

fn validate_repo(repo: &str) -> Result<(), DownloadError> {
    let parts: Vec<&str> = repo.split('/').collect();
    let ok_part = |p: &str| {
        !p.is_empty()
            && p != "."
            && p != ".."
            && !p.starts_with("--")
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    };
    if parts.len() > 2 || !parts.iter().all(|p| ok_part(p)) {
        return Err(DownloadError::InvalidSource(format!(
            "--hf-repo {repo:?} is not a Hugging Face repo id: expected `owner/name` with \
             letters, digits, '-', '_' and '.', e.g. microsoft/bitnet-b1.58-2B-4T-gguf"
        )));
    }
    Ok(())
}

fn validate_relative_path(flag: &str, value: &str) -> Result<(), DownloadError> {
    let bad = value.is_empty()
        || value.starts_with('/')
        || value.contains('\\')
        || value.contains('\0')
        || value
            .split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == "..");
    if bad {
        return Err(DownloadError::InvalidSource(format!(
            "{flag} {value:?} is not a valid relative name: no empty, '.' or '..' segments, no \
             leading '/', no backslashes"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_parsing() {
        let h = "AB".repeat(32);
        assert_eq!(Sha256Hex::parse(&h).unwrap().as_str(), "ab".repeat(32));
        assert!(Sha256Hex::parse(&format!("sha256:{h}")).is_ok());
        let err = Sha256Hex::parse("abc").unwrap_err().to_string();
        assert!(err.contains("64 hex"), "{err}");
        assert!(Sha256Hex::parse(&"g".repeat(64)).is_err());
    }

    #[test]
    fn hub_names_cannot_escape_the_cache() {
        assert!(ModelSource::hub("org/name", "model.gguf", "main", None).is_ok());
        assert!(ModelSource::hub("gpt2", "sub/dir/model.gguf", "refs/pr/1", None).is_ok());
        for repo in ["../x", "a/b/c", "", "org/", "org/na me"] {
            assert!(ModelSource::hub(repo, "f", "main", None).is_err(), "{repo}");
        }
        for file in ["../f", "/etc/passwd", "a//b", "a\\b", "", "a/./b"] {
            assert!(
                ModelSource::hub("o/n", file, "main", None).is_err(),
                "{file}"
            );
        }
        assert!(ModelSource::hub("o/n", "f", "..", None).is_err());
    }

    #[test]
    fn url_scheme_and_names() {
        assert!(ModelSource::url("ftp://x/y", None).is_err());
        assert!(ModelSource::url("not a url", None).is_err());
        let s = ModelSource::url("https://example.com/a/b/m.gguf?x=1", None).unwrap();
        assert_eq!(s.file_name(), "m.gguf");
        assert_eq!(s.default_model_id(), "m");
        let s = ModelSource::url("https://example.com/", None).unwrap();
        assert_eq!(s.file_name(), "model.gguf");
        let s = ModelSource::hub("o/n", "sub/x.gguf", "main", None).unwrap();
        assert_eq!(
            (s.file_name().as_str(), s.default_model_id().as_str()),
            ("x.gguf", "o/n")
        );
    }
}
