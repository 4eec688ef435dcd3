//! A fake Hugging Face hub on 127.0.0.1 for download tests.
//!
//! `GET|HEAD /{owner}/{name}/resolve/{rev}/{file}` answers like the real hub for an LFS file:
//! `302` to `/cdn/{sha256}` with `X-Linked-Etag`, `X-Linked-Size` and `X-Repo-Commit`.
//! `/cdn/{sha256}` and `/files/{name}` serve bytes with `Range`/`If-Range` support. Faults can be
//! injected: cut the connection after N bytes, corrupt a byte, require a token, throttle.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// One request as the hub saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub range: Option<String>,
    pub if_range: Option<String>,
}

#[derive(Default)]
pub struct Faults {
    /// For each upcoming body GET, cut the connection after this many bytes (front first).
    pub cuts: Mutex<Vec<usize>>,
    /// Serve the content with one byte flipped (the headers keep the true digest).
    pub corrupt: AtomicBool,
    /// Answer 401 on /resolve unless this bearer token is presented.
    pub require_token: Mutex<Option<String>>,
    /// Sleep this long between 16 KiB chunks.
    pub throttle: Mutex<Duration>,
    /// Leave out X-Linked-Etag (as for a file without published digest).
    pub hide_sha: AtomicBool,
    /// Redirect /resolve with no metadata headers at all (like a renamed repo's redirect).
    pub bare_redirect: AtomicBool,
}

struct Inner {
    /// (repo, file) → content
    files: Mutex<HashMap<(String, String), Vec<u8>>>,
    /// URL-served files by name.
    plain: Mutex<HashMap<String, Vec<u8>>>,
    seen: Mutex<Vec<Seen>>,
    faults: Faults,
    /// Redirect /resolve to another server's /cdn (a cross-host CDN, like the real hub's).
    cdn_base: Mutex<Option<String>>,
    body_gets: AtomicUsize,
}

#[derive(Clone)]
pub struct FakeHub {
    pub base: String,
    inner: Arc<Inner>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Deterministic pseudo-random content.
pub fn content(len: usize, seed: u8) -> Vec<u8> {
    let mut x = u32::from(seed).wrapping_mul(2654435761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

impl FakeHub {
    pub async fn start() -> FakeHub {
        Self::start_on("127.0.0.1").await
    }

    /// A hub on another loopback address (e.g. 127.0.0.2: another host as far as clients go).
    pub async fn start_on(ip: &str) -> FakeHub {
        let inner = Arc::new(Inner {
            files: Mutex::new(HashMap::new()),
            plain: Mutex::new(HashMap::new()),
            seen: Mutex::new(Vec::new()),
            faults: Faults::default(),
            cdn_base: Mutex::new(None),
            body_gets: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/{owner}/{name}/resolve/{rev}/{*file}", get(resolve))
            .route("/cdn/{sha}", get(cdn))
            .route("/files/{name}", get(plain))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeHub {
            base,
            inner,
            task: Arc::new(task),
        }
    }

    pub fn add(&self, repo: &str, file: &str, bytes: Vec<u8>) {
        self.inner
            .files
            .lock()
            .unwrap()
            .insert((repo.into(), file.into()), bytes);
    }

    pub fn add_plain(&self, name: &str, bytes: Vec<u8>) {
        self.inner.plain.lock().unwrap().insert(name.into(), bytes);
    }

    /// Send /resolve redirects to `other`'s /cdn (which must hold the same file).
    pub fn redirect_cdn_to(&self, other: &FakeHub) {
        *self.inner.cdn_base.lock().unwrap() = Some(other.base.clone());
    }

    /// Send /resolve redirects to `other`'s /cdn as a protocol-relative `//host:port/cdn/…`.
    pub fn redirect_cdn_protocol_relative_to(&self, other: &FakeHub) {
        let authority = other.base.trim_start_matches("http:");
        *self.inner.cdn_base.lock().unwrap() = Some(authority.to_string());
    }

    pub fn faults(&self) -> &Faults {
        &self.inner.faults
    }

    pub fn cut_next_gets(&self, after: &[usize]) {
        *self.inner.faults.cuts.lock().unwrap() = after.to_vec();
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.inner.seen.lock().unwrap().clone()
    }

    /// Body GETs served (CDN and plain files).
    pub fn body_gets(&self) -> usize {
        self.inner.body_gets.load(Ordering::SeqCst)
    }

    pub fn stop(&self) {
        self.task.abort();
    }
}

fn record(inner: &Inner, method: &Method, path: String, headers: &HeaderMap) {
    let h = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    inner.seen.lock().unwrap().push(Seen {
        method: method.to_string(),
        path,
        authorization: h(header::AUTHORIZATION),
        range: h(header::RANGE),
        if_range: h(header::IF_RANGE),
    });
}

async fn resolve(
    State(inner): State<Arc<Inner>>,
    Path((owner, name, rev, file)): Path<(String, String, String, String)>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    record(
        &inner,
        &method,
        format!("/{owner}/{name}/resolve/{rev}/{file}"),
        &headers,
    );
    let required = inner.faults.require_token.lock().unwrap().clone();
    if let Some(token) = required {
        let ok = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == format!("Bearer {token}"));
        if !ok {
            return (StatusCode::UNAUTHORIZED, "Invalid credentials").into_response();
        }
    }
    let repo = format!("{owner}/{name}");
    let files = inner.files.lock().unwrap();
    let Some(bytes) = files.get(&(repo, file)) else {
        return (StatusCode::NOT_FOUND, "Entry not found").into_response();
    };
    let sha = sha256_hex(bytes);
    let location = format!(
        "{}/cdn/{sha}",
        inner.cdn_base.lock().unwrap().clone().unwrap_or_default()
    );
    if inner.faults.bare_redirect.load(Ordering::SeqCst) {
        return Response::builder()
            .status(StatusCode::FOUND)
            .header(header::LOCATION, location)
            .body(Body::empty())
            .unwrap();
    }
    let mut r = Response::builder()
        .status(StatusCode::FOUND)
        .header(header::LOCATION, location)
        .header("x-linked-size", bytes.len().to_string())
        .header("x-repo-commit", COMMIT)
        .header(header::ETAG, "W/\"git-etag\"");
    if !inner.faults.hide_sha.load(Ordering::SeqCst) {
        r = r.header("x-linked-etag", format!("\"{sha}\""));
    }
    r.body(Body::empty()).unwrap()
}

async fn cdn(
    State(inner): State<Arc<Inner>>,
    Path(sha): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    record(&inner, &method, format!("/cdn/{sha}"), &headers);
    let bytes = {
        let files = inner.files.lock().unwrap();
        files.values().find(|b| sha256_hex(b) == sha).cloned()
    };
    match bytes {
        Some(b) => serve_bytes(&inner, &method, &headers, b, format!("\"{sha}\"")),
        None => (StatusCode::NOT_FOUND, "no such blob").into_response(),
    }
}

async fn plain(
    State(inner): State<Arc<Inner>>,
    Path(name): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    record(&inner, &method, format!("/files/{name}"), &headers);
    let bytes = inner.plain.lock().unwrap().get(&name).cloned();
    match bytes {
        Some(b) => {
            let etag = format!("\"{}\"", &sha256_hex(&b)[..16]);
            serve_bytes(&inner, &method, &headers, b, etag)
        }
        None => (StatusCode::NOT_FOUND, "no such file").into_response(),
    }
}

fn serve_bytes(
    inner: &Arc<Inner>,
    method: &Method,
    headers: &HeaderMap,
    mut bytes: Vec<u8>,
    etag: String,
) -> Response {
    if inner.faults.corrupt.load(Ordering::SeqCst) && !bytes.is_empty() {
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x5a;
    }
    let len = bytes.len();
    let if_range_ok = headers
        .get(header::IF_RANGE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v == etag);
    let start = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.strip_suffix('-'))
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|_| if_range_ok);
    let mut builder = Response::builder()
        .header(header::ETAG, etag)
        .header(header::ACCEPT_RANGES, "bytes");
    let start = match start {
        Some(s) if s >= len => {
            return builder
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{len}"))
                .body(Body::empty())
                .unwrap();
        }
        Some(s) => {
            builder = builder.status(StatusCode::PARTIAL_CONTENT).header(
                header::CONTENT_RANGE,
                format!("bytes {s}-{}/{len}", len - 1),
            );
            s
        }
        None => {
            builder = builder.status(StatusCode::OK);
            0
        }
    };
    builder = builder.header(header::CONTENT_LENGTH, (len - start).to_string());
    if method == Method::HEAD {
        return builder.body(Body::empty()).unwrap();
    }
    inner.body_gets.fetch_add(1, Ordering::SeqCst);
    let cut = {
        let mut cuts = inner.faults.cuts.lock().unwrap();
        if cuts.is_empty() {
            None
        } else {
            Some(cuts.remove(0))
        }
    };
    let throttle = *inner.faults.throttle.lock().unwrap();
    let body = bytes[start..].to_vec();
    let stream = futures_util::stream::unfold(
        (body, 0usize, cut, throttle),
        |(body, pos, cut, throttle)| async move {
            if pos >= body.len() {
                return None;
            }
            if let Some(c) = cut
                && pos >= c
            {
                // Let the bytes already sent reach the client before the connection breaks (a reset
                // would make the client's kernel discard unread data).
                tokio::time::sleep(Duration::from_millis(150)).await;
                return Some((
                    Err(std::io::Error::other("injected connection cut")),
                    (body, usize::MAX, None, throttle),
                ));
            }
            if !throttle.is_zero() {
                tokio::time::sleep(throttle).await;
            }
            let mut end = (pos + 16 * 1024).min(body.len());
            if let Some(c) = cut {
                end = end.min(c.max(pos + 1));
            }
            let chunk = Bytes::copy_from_slice(&body[pos..end]);
            Some((Ok(chunk), (body, end, cut, throttle)))
        },
    );
    builder.body(Body::from_stream(stream)).unwrap()
}
