//! The Hugging Face hub's file-resolution protocol: the `/{repo}/resolve/{revision}/{file}` URL
//! and the metadata headers a `HEAD` on it returns before redirecting to the CDN.
//!
//! - `X-Repo-Commit`: the commit the revision resolved to;
//! - `X-Linked-Etag`: for LFS/Xet files, the file's sha256 (quoted);
//! - `X-Linked-Size`: for LFS/Xet files, the size in bytes;
//! - `ETag` / `Content-Length`: for small files stored in git (the ETag is then a git sha1).
//!
//! This module does NOT download file bodies (see `fetch`).

use reqwest::header::{HeaderMap, LOCATION};

use super::source::Sha256Hex;

/// What a `HEAD` on a resolve URL told us.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileMetadata {
    /// The commit the revision points at.
    pub commit: Option<String>,
    /// The sha256 of the file, when the hub published it (LFS files).
    pub sha256: Option<Sha256Hex>,
    /// The file size in bytes, when known.
    pub size: Option<u64>,
    /// The ETag (for non-LFS files a git blob id).
    pub etag: Option<String>,
}

/// `{endpoint}/{repo}/resolve/{revision}/{file}`, with the revision and each path segment
/// percent-encoded.
pub fn resolve_url(endpoint: &str, repo: &str, revision: &str, file: &str) -> String {
    let file_enc: Vec<String> = file.split('/').map(percent_encode).collect();
    format!(
        "{}/{}/resolve/{}/{}",
        endpoint.trim_end_matches('/'),
        repo,
        percent_encode(revision),
        file_enc.join("/")
    )
}

/// Percent-encode everything but RFC 3986 unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Strip `W/` and quotes from an ETag value.
pub fn unquote_etag(raw: &str) -> String {
    let t = raw.trim();
    let t = t.strip_prefix("W/").unwrap_or(t);
    t.trim_matches('"').to_string()
}

/// Read the hub's metadata headers from a HEAD response (redirect or final).
pub fn parse_metadata(headers: &HeaderMap) -> FileMetadata {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let linked_etag = get("x-linked-etag").map(|e| unquote_etag(&e));
    let etag = get("etag").map(|e| unquote_etag(&e));
    let sha256 = linked_etag
        .as_deref()
        .or(etag.as_deref())
        .filter(|e| e.len() == 64)
        .and_then(|e| Sha256Hex::parse(e).ok());
    let size = get("x-linked-size")
        .or_else(|| {
            if headers.contains_key(LOCATION) {
                None
            } else {
                get("content-length")
            }
        })
        .and_then(|s| s.trim().parse().ok());
    FileMetadata {
        commit: get("x-repo-commit").filter(|c| is_safe_commit(c)),
        sha256,
        size,
        etag: linked_etag.or(etag),
    }
}

/// A commit id must be usable as a directory name.
fn is_safe_commit(c: &str) -> bool {
    !c.is_empty() && c.len() <= 128 && c.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Is this revision a full commit id (40 hex characters)?
pub fn is_commit_hash(revision: &str) -> bool {
    revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn resolve_url_encodes_segments() {
        assert_eq!(
            resolve_url(
                "https://huggingface.co/",
                "o/n",
                "refs/pr/1",
                "dir/a b.gguf"
            ),
            "https://huggingface.co/o/n/resolve/refs%2Fpr%2F1/dir/a%20b.gguf"
        );
    }

    #[test]
    fn lfs_redirect_headers() {
        let sha = "c".repeat(64);
        let mut h = HeaderMap::new();
        h.insert(
            "x-linked-etag",
            HeaderValue::from_str(&format!("\"{sha}\"")).unwrap(),
        );
        h.insert("x-linked-size", HeaderValue::from_static("1187801280"));
        h.insert("x-repo-commit", HeaderValue::from_static("0123abcd"));
        h.insert("etag", HeaderValue::from_static("W/\"cdn-etag\""));
        h.insert("location", HeaderValue::from_static("https://cdn/x"));
        h.insert("content-length", HeaderValue::from_static("1234"));
        let m = parse_metadata(&h);
        assert_eq!(m.sha256.unwrap().as_str(), sha);
        assert_eq!(m.size, Some(1187801280));
        assert_eq!(m.commit.as_deref(), Some("0123abcd"));
    }

    #[test]
    fn git_file_headers_have_no_sha256() {
        let mut h = HeaderMap::new();
        h.insert(
            "etag",
            HeaderValue::from_static("\"0123456789abcdef0123456789abcdef01234567\""),
        );
        h.insert("content-length", HeaderValue::from_static("42"));
        h.insert("x-repo-commit", HeaderValue::from_static("../evil"));
        let m = parse_metadata(&h);
        assert_eq!(m.sha256, None);
        assert_eq!(m.size, Some(42));
        assert_eq!(m.commit, None);
    }

    #[test]
    fn commit_hash_detection() {
        assert!(is_commit_hash(&"a".repeat(40)));
        assert!(!is_commit_hash("main"));
    }
}
