//! `--push`: a small OCI distribution-spec client (reqwest + rustls/ring). Pushes blobs (HEAD,
//! then POST + monolithic PUT), then each tier manifest by digest and by `<version>-<suffix>`, then
//! the index by `<version>` and `latest` — manifests before the index, as registry 2.8 requires.
//! Auth: anonymous, Basic, or Bearer tokens from the registry's challenge, with credentials from
//! `BITNET_REGISTRY_USER`/`BITNET_REGISTRY_PASSWORD` or the Docker config (auths, credsStore,
//! credHelpers). Credentials are never printed, and go only where they belong (see
//! [`realm_gets_credentials`] and [`Client::send`]): the registry's own origin, or a token realm
//! over HTTPS (plain HTTP only on the registry's own loopback host); an upload `Location` on
//! another origin gets no `Authorization`. `--ca-cert` adds a PEM CA to the trusted roots.
//! It does NOT build images or talk to Docker.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;
use std::sync::Mutex;

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode, Url};

use super::assemble::{Meta, TierImage};
use super::oci::{Layout, MT_INDEX, MT_MANIFEST};

/// Where to push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Registry as written (`ghcr.io`, `127.0.0.1:5000`, `docker.io`).
    pub registry: String,
    /// Host the API is served on (`registry-1.docker.io` for Docker Hub).
    pub api_host: String,
    /// Repository path (`owner/name`).
    pub repo: String,
    /// `http` or `https`.
    pub scheme: &'static str,
}

impl Target {
    /// Parse `registry/repo` (Docker conventions: no registry part means Docker Hub; loopback
    /// registries use plain HTTP, as Docker does, unless `tls`: the caller gave a CA for it).
    pub fn parse(s: &str, plain_http: bool, tls: bool) -> Result<Self> {
        if plain_http && tls {
            bail!("--plain-http and --ca-cert contradict each other: a CA certificate means TLS");
        }
        let last = s.rsplit('/').next().unwrap_or(s);
        if s.contains('@') || last.contains(':') && s.contains('/') {
            bail!(
                "--push {s:?}: give a repository without tag or digest (e.g. ghcr.io/owner/bitnet-server); \
                 the tags pushed are <version>-<tier>, <version> and latest"
            );
        }
        let (first, rest) = s.split_once('/').unwrap_or(("", s));
        let is_registry = !first.is_empty()
            && (first.contains('.') || first.contains(':') || first == "localhost");
        let (registry, repo) = if is_registry {
            (first.to_string(), rest.to_string())
        } else if s.contains('/') {
            ("docker.io".to_string(), s.to_string())
        } else {
            ("docker.io".to_string(), format!("library/{s}"))
        };
        let valid = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(c);
        if repo.is_empty()
            || !repo.chars().all(valid)
            || repo.starts_with('/')
            || repo.ends_with('/')
        {
            bail!("--push {s:?}: repository {repo:?} must be lowercase [a-z0-9._-/]");
        }
        let host = registry
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(&registry);
        let loopback = host == "localhost" || host.starts_with("127.") || host == "[::1]";
        let api_host = if registry == "docker.io" {
            "registry-1.docker.io".to_string()
        } else {
            registry.clone()
        };
        Ok(Target {
            registry,
            api_host,
            repo,
            scheme: if plain_http || (loopback && !tls) {
                "http"
            } else {
                "https"
            },
        })
    }

    /// `<scheme>://<api host>/`: the origin the registry credentials belong to.
    fn origin(&self) -> Result<Url> {
        Url::parse(&format!("{}://{}/", self.scheme, self.api_host))
            .context("building the registry URL")
    }

    fn url(&self, path: &str) -> Result<Url> {
        Url::parse(&format!(
            "{}://{}/v2/{}/{path}",
            self.scheme, self.api_host, self.repo
        ))
        .context("building a registry URL")
    }
}

/// A username/secret pair whose Debug/Display never shows the secret.
#[derive(Clone)]
pub struct Credentials {
    user: String,
    secret: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({}, <redacted>)", self.user)
    }
}

impl Credentials {
    /// The `Authorization` value, marked sensitive (hyper and reqwest never show it in Debug).
    fn basic(&self) -> HeaderValue {
        sensitive(&format!(
            "Basic {}",
            B64.encode(format!("{}:{}", self.user, self.secret))
        ))
    }
}

/// A header value that Debug output never shows. Non-visible-ASCII bytes (impossible in base64
/// and in registry tokens) make it empty: the registry then refuses, nothing leaks.
fn sensitive(v: &str) -> HeaderValue {
    let mut h = HeaderValue::from_str(v).unwrap_or_else(|_| HeaderValue::from_static(""));
    h.set_sensitive(true);
    h
}

/// `scheme://host[:port]` of a URL, for messages: no path, no query (an upload Location or a
/// token realm may carry a signed query string).
fn shown(u: &Url) -> String {
    let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
    format!("{}://{}{port}", u.scheme(), u.host_str().unwrap_or("?"))
}

/// Same scheme, host and port.
fn same_origin(a: &Url, b: &Url) -> bool {
    a.origin() == b.origin()
}

/// `localhost`, `127.0.0.0/8` or `::1`.
fn is_loopback(u: &Url) -> bool {
    let host = u.host_str().unwrap_or("");
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// May the registry's credentials be sent (as Basic auth) to this token realm? The decision:
/// - `https://` realms, on any host: the challenge comes from the registry we authenticated over
///   TLS, and token services usually live on another host (Docker Hub: `auth.docker.io` for
///   `registry-1.docker.io`), as Docker itself does;
/// - `http://` realms only on the registry's own host when that host is loopback (a local test
///   registry): nothing crosses a network in clear text;
/// - nothing else (any other `http://` realm, any other scheme).
pub fn realm_gets_credentials(registry: &Url, realm: &Url) -> bool {
    match realm.scheme() {
        "https" => true,
        "http" => is_loopback(realm) && realm.host_str() == registry.host_str(),
        _ => false,
    }
}

/// Credentials for `registry`: env first, then the Docker config. `None` = anonymous.
pub fn find_credentials(registry: &str) -> Result<Option<Credentials>> {
    if let (Ok(user), Ok(secret)) = (
        std::env::var("BITNET_REGISTRY_USER"),
        std::env::var("BITNET_REGISTRY_PASSWORD"),
    ) {
        return Ok(Some(Credentials { user, secret }));
    }
    let dir = std::env::var_os("DOCKER_CONFIG")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".docker")));
    let Some(dir) = dir else { return Ok(None) };
    let Ok(text) = std::fs::read(dir.join("config.json")) else {
        return Ok(None);
    };
    let cfg: serde_json::Value = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not valid JSON", dir.join("config.json").display()))?;
    docker_config_credentials(&cfg, registry)
}

/// Keys Docker may use for a registry in config.json.
fn config_keys(registry: &str) -> Vec<String> {
    if registry == "docker.io" {
        vec![
            "https://index.docker.io/v1/".into(),
            "index.docker.io".into(),
            "docker.io".into(),
        ]
    } else {
        vec![
            registry.into(),
            format!("https://{registry}"),
            format!("http://{registry}"),
        ]
    }
}

fn docker_config_credentials(
    cfg: &serde_json::Value,
    registry: &str,
) -> Result<Option<Credentials>> {
    let keys = config_keys(registry);
    let helper = keys
        .iter()
        .find_map(|k| cfg["credHelpers"][k].as_str())
        .or_else(|| cfg["credsStore"].as_str());
    if let Some(helper) = helper {
        let prog = format!("docker-credential-{helper}");
        let mut child = std::process::Command::new(&prog)
            .arg("get")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .with_context(|| {
                format!("Docker config names credential helper {prog}, which cannot be run")
            })?;
        use std::io::Write as _;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(keys[0].as_bytes());
        }
        let out = child.wait_with_output()?;
        if out.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout)
                .with_context(|| format!("{prog} returned something that is not JSON"))?;
            if let (Some(u), Some(s)) = (v["Username"].as_str(), v["Secret"].as_str()) {
                return Ok(Some(Credentials {
                    user: u.into(),
                    secret: s.into(),
                }));
            }
        }
        // "credentials not found": fall through to auths / anonymous.
    }
    for k in &keys {
        let entry = &cfg["auths"][k];
        if let Some(auth) = entry["auth"].as_str().filter(|a| !a.is_empty()) {
            let decoded = B64
                .decode(auth)
                .context("Docker config: an `auth` entry is not base64")?;
            let decoded =
                String::from_utf8(decoded).context("Docker config: `auth` is not UTF-8")?;
            let (u, s) = decoded
                .split_once(':')
                .context("Docker config: `auth` is not user:password")?;
            return Ok(Some(Credentials {
                user: u.into(),
                secret: s.into(),
            }));
        }
        if let (Some(u), Some(s)) = (entry["username"].as_str(), entry["password"].as_str()) {
            return Ok(Some(Credentials {
                user: u.into(),
                secret: s.into(),
            }));
        }
    }
    Ok(None)
}

/// The parsed `WWW-Authenticate` challenge.
#[derive(Debug, PartialEq, Eq)]
enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

fn parse_challenge(h: &str) -> Option<Challenge> {
    let (scheme, params) = h.trim().split_once(' ').unwrap_or((h.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut realm = None;
    let mut service = None;
    let mut scope = None;
    // key="value" pairs; values may contain commas (scope lists), so split on `",`.
    let mut rest = params.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key.trim().trim_start_matches(',').trim();
        let (value, next) = if let Some(v) = after.strip_prefix('"') {
            let end = v.find('"')?;
            (&v[..end], &v[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        match key {
            "realm" => realm = Some(value.to_string()),
            "service" => service = Some(value.to_string()),
            "scope" => scope = Some(value.to_string()),
            _ => {}
        }
        rest = next.trim_start_matches(',').trim();
    }
    Some(Challenge::Bearer {
        realm: realm?,
        service,
        scope,
    })
}

/// A registry session.
pub struct Client {
    http: reqwest::Client,
    target: Target,
    /// Where the registry credentials and tokens may go (`Target::origin`).
    origin: Url,
    creds: Option<Credentials>,
    auth: Mutex<Option<HeaderValue>>,
}

/// Summary of a push.
#[derive(Debug, Default)]
pub struct PushReport {
    /// Blobs uploaded.
    pub uploaded: usize,
    /// Blobs the registry already had.
    pub existing: usize,
    /// `repo:tag@digest` lines.
    pub tags: Vec<String>,
}

fn short(body: &str) -> String {
    let b = body.trim();
    if b.len() > 1500 {
        format!("{}…", &b[..b.floor_char_boundary(1500)])
    } else {
        b.to_string()
    }
}

impl Client {
    /// A client for `target` with optional credentials; `ca_cert` (PEM, one or more
    /// certificates) is trusted in addition to the system roots.
    pub fn new(target: Target, creds: Option<Credentials>, ca_cert: Option<&Path>) -> Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("bitnet-serve-xtask/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(30))
            .timeout(std::time::Duration::from_secs(1800))
            // reqwest drops Authorization on cross-origin redirects; refuse TLS downgrades too.
            .redirect(reqwest::redirect::Policy::custom(|a| {
                let downgrade = a.previous().last().is_some_and(|p| p.scheme() == "https")
                    && a.url().scheme() != "https";
                if downgrade {
                    a.error("redirect from https to plain http refused")
                } else if a.previous().len() >= 10 {
                    a.error("too many redirects")
                } else {
                    a.follow()
                }
            }));
        if let Some(path) = ca_cert {
            let pem = std::fs::read(path)
                .with_context(|| format!("--ca-cert: cannot read {}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("--ca-cert: {} is not PEM", path.display()))?;
            if certs.is_empty() {
                bail!("--ca-cert: no certificate in {}", path.display());
            }
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder.build().context("cannot create the HTTP client")?;
        Ok(Client {
            http,
            origin: target.origin()?,
            target,
            creds,
            auth: Mutex::new(None),
        })
    }

    /// Send a request to `url` built by `make` (called again after an auth challenge). The
    /// registry's `Authorization` goes only to the registry's own origin: a request elsewhere
    /// (an upload `Location` on another host) is sent without it, and a 401 from there is not
    /// answered with credentials.
    async fn send<F>(&self, what: &str, url: &Url, make: F) -> Result<reqwest::Response>
    where
        F: Fn(&reqwest::Client, Url) -> reqwest::RequestBuilder,
    {
        let ours = same_origin(&self.origin, url);
        for attempt in 0..2 {
            let mut req = make(&self.http, url.clone());
            if ours && let Some(a) = self.auth.lock().ok().and_then(|g| g.clone()) {
                req = req.header(AUTHORIZATION, a);
            }
            // Errors without the URL: an upload Location may carry a signed query string.
            let resp = req
                .send()
                .await
                .map_err(|e| e.without_url())
                .with_context(|| format!("{what}: cannot reach {}", shown(url)))?;
            if resp.status() != StatusCode::UNAUTHORIZED || attempt == 1 || !ours {
                return Ok(resp);
            }
            let challenge = resp
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|h| h.to_str().ok())
                .and_then(parse_challenge)
                .with_context(|| {
                    format!("{what}: 401 without a usable WWW-Authenticate challenge")
                })?;
            let header = self.authenticate(challenge).await?;
            if let Ok(mut g) = self.auth.lock() {
                *g = Some(header);
            }
        }
        unreachable!("the loop returns on the second attempt")
    }

    async fn authenticate(&self, challenge: Challenge) -> Result<HeaderValue> {
        let login_hint = format!(
            "set BITNET_REGISTRY_USER and BITNET_REGISTRY_PASSWORD, or `docker login {}`",
            self.target.registry
        );
        match challenge {
            Challenge::Basic => match &self.creds {
                Some(c) => Ok(c.basic()),
                None => bail!("{} requires a login: {login_hint}", self.target.registry),
            },
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => {
                let scope =
                    scope.unwrap_or_else(|| format!("repository:{}:pull,push", self.target.repo));
                let mut url =
                    Url::parse(&realm).with_context(|| format!("bad token realm {realm:?}"))?;
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(s) = &service {
                        q.append_pair("service", s);
                    }
                    q.append_pair("scope", &scope);
                }
                let realm_shown = shown(&url);
                let mut req = self.http.get(url.clone());
                if let Some(c) = &self.creds {
                    if !realm_gets_credentials(&self.origin, &url) {
                        bail!(
                            "the registry's token service {realm_shown} is not HTTPS (nor plain HTTP on \
                             the registry's own loopback host): not sending the credentials for \
                             {} there",
                            self.target.registry
                        );
                    }
                    req = req.header(AUTHORIZATION, c.basic());
                }
                let resp = req
                    .send()
                    .await
                    .map_err(|e| e.without_url())
                    .with_context(|| {
                        format!("cannot reach the registry's token service {realm_shown}")
                    })?;
                let status = resp.status();
                if !status.is_success() {
                    bail!("token service refused ({status}); {login_hint}");
                }
                let body = resp.bytes().await.context("reading the token response")?;
                let v: serde_json::Value =
                    serde_json::from_slice(&body).context("token response is not JSON")?;
                let token = v["token"]
                    .as_str()
                    .or_else(|| v["access_token"].as_str())
                    .context("token response has no token")?;
                Ok(sensitive(&format!("Bearer {token}")))
            }
        }
    }

    async fn fail(what: &str, resp: reqwest::Response) -> anyhow::Error {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        let hint = match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                " (credentials missing or without push rights: set BITNET_REGISTRY_USER/BITNET_REGISTRY_PASSWORD or `docker login`)"
            }
            _ => "",
        };
        anyhow::anyhow!("{what}: registry answered {status}{hint}: {}", short(&body))
    }

    /// Upload a blob unless the registry has it. Returns true if uploaded.
    pub async fn push_blob(&self, digest: &str, bytes: bytes_of::Bytes) -> Result<bool> {
        let url = self.target.url(&format!("blobs/{digest}"))?;
        let head = self.send("HEAD blob", &url, |c, u| c.head(u)).await?;
        if head.status().is_success() {
            return Ok(false);
        }
        if head.status() != StatusCode::NOT_FOUND {
            return Err(Self::fail(&format!("checking blob {digest}"), head).await);
        }
        let start = self.target.url("blobs/uploads/")?;
        let resp = self
            .send("start upload", &start, |c, u| {
                c.post(u).header(reqwest::header::CONTENT_LENGTH, "0")
            })
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(Self::fail(&format!("starting the upload of {digest}"), resp).await);
        }
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .context("upload started without a Location header")?;
        let mut put_url = start.join(location).context("bad upload Location")?;
        if start.scheme() == "https" && put_url.scheme() != "https" {
            bail!(
                "the registry sent an upload Location that is not HTTPS; refusing to upload there"
            );
        }
        put_url.query_pairs_mut().append_pair("digest", digest);
        let resp = self
            .send("upload blob", &put_url, |c, u| {
                c.put(u)
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .body(bytes.clone())
            })
            .await?;
        if resp.status() != StatusCode::CREATED {
            return Err(Self::fail(&format!("uploading {digest}"), resp).await);
        }
        Ok(true)
    }

    /// PUT a manifest or index under `reference` (tag or digest); checks the digest the registry
    /// reports.
    pub async fn put_manifest(
        &self,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
        digest: &str,
    ) -> Result<()> {
        let url = self.target.url(&format!("manifests/{reference}"))?;
        let body = bytes_of::Bytes::copy_from_slice(bytes);
        let ct = HeaderValue::from_str(media_type)?;
        let resp = self
            .send("put manifest", &url, |c, u| {
                c.put(u).header(CONTENT_TYPE, ct.clone()).body(body.clone())
            })
            .await?;
        if resp.status() != StatusCode::CREATED {
            return Err(Self::fail(&format!("putting manifest {reference}"), resp).await);
        }
        if let Some(d) = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|d| d.to_str().ok())
            && d != digest
        {
            bail!(
                "registry stored {reference} as {d}, expected {digest} (it rewrote the manifest)"
            );
        }
        Ok(())
    }

    /// GET a manifest's digest (for verification): HEAD with the OCI Accept types.
    pub async fn manifest_digest(&self, reference: &str) -> Result<String> {
        let url = self.target.url(&format!("manifests/{reference}"))?;
        let accept = format!("{MT_INDEX}, {MT_MANIFEST}");
        let resp = self
            .send("head manifest", &url, |c, u| {
                c.request(Method::HEAD, u).header(ACCEPT, accept.clone())
            })
            .await?;
        if !resp.status().is_success() {
            return Err(Self::fail(&format!("looking up {reference}"), resp).await);
        }
        resp.headers()
            .get("docker-content-digest")
            .and_then(|d| d.to_str().ok())
            .map(String::from)
            .context("registry sent no Docker-Content-Digest")
    }
}

/// `bytes` as re-exported through reqwest's body type.
mod bytes_of {
    pub use tokio_util::bytes::Bytes;
}

/// Push every tier and the index, with the credentials [`find_credentials`] finds.
/// `index` is the multi-platform index (digest, bytes); `ca_cert` is `--ca-cert`.
pub async fn push(
    target: Target,
    ca_cert: Option<&Path>,
    layout: &Layout,
    meta: &Meta,
    images: &[TierImage],
    index: (&str, &[u8]),
) -> Result<PushReport> {
    let creds = find_credentials(&target.registry)?;
    Client::new(target, creds, ca_cert)?
        .push_all(layout, meta, images, index)
        .await
}

impl Client {
    /// The push itself: blobs, tier manifests, then the index under `<version>` and `latest`.
    pub async fn push_all(
        &self,
        layout: &Layout,
        meta: &Meta,
        images: &[TierImage],
        index: (&str, &[u8]),
    ) -> Result<PushReport> {
        let (index_digest, index_bytes) = index;
        let repo = format!("{}/{}", self.target.registry, self.target.repo);
        let client = self;
        let mut report = PushReport::default();
        let mut done = BTreeSet::new();
        for img in images {
            for blob in [&img.config].into_iter().chain(&img.layers) {
                if !done.insert(blob.digest.clone()) {
                    continue;
                }
                let bytes = bytes_of::Bytes::from(layout.read(&blob.digest)?);
                if client.push_blob(&blob.digest, bytes).await? {
                    report.uploaded += 1;
                    eprintln!(
                        "build-images: pushed blob {} ({:.2} MB)",
                        &blob.digest[..19],
                        blob.size as f64 / 1e6
                    );
                } else {
                    report.existing += 1;
                }
            }
            let manifest = layout.read(&img.manifest.digest)?;
            let tag = format!("{}-{}", meta.version, img.suffix);
            for reference in [img.manifest.digest.as_str(), tag.as_str()] {
                client
                    .put_manifest(reference, MT_MANIFEST, &manifest, &img.manifest.digest)
                    .await?;
            }
            report
                .tags
                .push(format!("{repo}:{tag}@{}", img.manifest.digest));
        }
        for tag in [meta.version.as_str(), "latest"] {
            client
                .put_manifest(tag, MT_INDEX, index_bytes, index_digest)
                .await?;
            let got = client.manifest_digest(tag).await?;
            if got != index_digest {
                bail!("{repo}:{tag} resolves to {got} after the push, expected {index_digest}");
            }
            report.tags.push(format!("{repo}:{tag}@{index_digest}"));
        }
        Ok(report)
    }
}

#[cfg(test)]
#[path = "registry_tests.rs"]
mod push_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_follow_docker_naming() {
        let t = Target::parse("ghcr.io/owner/bitnet-server", false, false).unwrap();
        assert_eq!(
            (t.api_host.as_str(), t.repo.as_str(), t.scheme),
            ("ghcr.io", "owner/bitnet-server", "https")
        );
        let t = Target::parse("127.0.0.1:5000/x/y", false, false).unwrap();
        assert_eq!((t.registry.as_str(), t.scheme), ("127.0.0.1:5000", "http"));
        let t = Target::parse("bitnet", false, false).unwrap();
        assert_eq!(
            (t.api_host.as_str(), t.repo.as_str()),
            ("registry-1.docker.io", "library/bitnet")
        );
        let t = Target::parse("me/bitnet", false, false).unwrap();
        assert_eq!(
            (t.registry.as_str(), t.repo.as_str()),
            ("docker.io", "me/bitnet")
        );
        assert!(
            Target::parse("ghcr.io/o/x:1.0", false, false)
                .unwrap_err()
                .to_string()
                .contains("without tag")
        );
        assert!(
            Target::parse("ghcr.io/O/X", false, false)
                .unwrap_err()
                .to_string()
                .contains("lowercase")
        );
        assert_eq!(
            Target::parse("reg.example:5000/a", true, false)
                .unwrap()
                .scheme,
            "http"
        );
        // A CA certificate for a loopback registry means TLS.
        assert_eq!(
            Target::parse("127.0.0.1:5000/a", false, true)
                .unwrap()
                .scheme,
            "https"
        );
        assert!(Target::parse("127.0.0.1:5000/a", true, true).is_err());
    }

    #[test]
    fn credentials_go_only_to_their_origin_and_to_safe_realms() {
        let u = |s: &str| Url::parse(s).unwrap();
        let reg = u("https://registry.example/");
        assert!(same_origin(
            &reg,
            &u("https://registry.example/v2/a/blobs/uploads/1?x=y")
        ));
        for other in [
            "https://registry.example:444/v2/",
            "http://registry.example/v2/",
            "https://uploads.example/v2/",
        ] {
            assert!(!same_origin(&reg, &u(other)), "{other}");
        }
        // Token realms: https anywhere; http only on the registry's own loopback host.
        assert!(realm_gets_credentials(
            &reg,
            &u("https://auth.example/token")
        ));
        assert!(!realm_gets_credentials(
            &reg,
            &u("http://auth.example/token")
        ));
        assert!(!realm_gets_credentials(
            &reg,
            &u("http://registry.example/token")
        ));
        assert!(!realm_gets_credentials(
            &reg,
            &u("ftp://registry.example/token")
        ));
        let local = u("http://127.0.0.1:5000/");
        assert!(realm_gets_credentials(
            &local,
            &u("http://127.0.0.1:5001/token")
        ));
        assert!(!realm_gets_credentials(
            &local,
            &u("http://127.0.0.2:5001/token")
        ));
        assert!(!realm_gets_credentials(
            &local,
            &u("http://auth.example/token")
        ));
        let v6 = u("http://[::1]:5000/");
        assert!(realm_gets_credentials(&v6, &u("http://[::1]:5001/token")));
        // The Authorization value never shows in Debug output.
        let c = Credentials {
            user: "u".into(),
            secret: "s3cret".into(),
        };
        let shown = format!("{:?}", c.basic());
        assert!(!shown.contains(&B64.encode("u:s3cret")), "{shown}");
    }

    #[test]
    fn challenges_parse() {
        assert_eq!(
            parse_challenge("Basic realm=\"Registry Realm\""),
            Some(Challenge::Basic)
        );
        let c = parse_challenge(
            "Bearer realm=\"https://auth.example/token\",service=\"registry.example\",scope=\"repository:a/b:pull,push\"",
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
        assert_eq!(parse_challenge("Negotiate abc"), None);
    }

    #[test]
    fn docker_config_auths_and_redaction() {
        let cfg =
            serde_json::json!({"auths": {"127.0.0.1:5000": {"auth": B64.encode("alice:s3cret")}}});
        let c = docker_config_credentials(&cfg, "127.0.0.1:5000")
            .unwrap()
            .unwrap();
        assert_eq!((c.user.as_str(), c.secret.as_str()), ("alice", "s3cret"));
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cret") && shown.contains("redacted"),
            "{shown}"
        );
        let hub = serde_json::json!({"auths": {"https://index.docker.io/v1/": {"username": "u", "password": "p"}}});
        assert!(
            docker_config_credentials(&hub, "docker.io")
                .unwrap()
                .is_some()
        );
        assert!(
            docker_config_credentials(&cfg, "ghcr.io")
                .unwrap()
                .is_none()
        );
        let bad = serde_json::json!({"auths": {"r": {"auth": "!!!"}}});
        assert!(
            docker_config_credentials(&bad, "r")
                .unwrap_err()
                .to_string()
                .contains("base64")
        );
    }
}
