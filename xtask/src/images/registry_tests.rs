//! `--push` against in-test registries on 127.0.0.1 (threads speaking HTTP/1.1, over TLS with a
//! throw-away CA from rcgen where a test says so), pushing a minimal OCI layout made here: where
//! the credentials go is what these tests check (issue 16, defect 6). The push of real images to
//! Debian's `docker-registry` is in `xtask/tests/images.rs`.

use super::*;
use crate::images::oci::{Descriptor, Platform};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;

const USER: &str = "pusher";
const PASSWORD: &str = "correct-horse-battery";
const TOKEN: &str = "tok-4711";
const REPO: &str = "bitnet/server";

/// One request as a test server saw it.
#[derive(Debug, Clone)]
struct Seen {
    server: &'static str,
    method: String,
    path: String,
    authorization: Option<String>,
}

struct Request {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn reply(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Response {
    Response {
        status,
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body: body.to_vec(),
    }
}

type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// Shared state of the fake registry and the other hosts.
#[derive(Default)]
struct State {
    blobs: HashMap<String, Vec<u8>>,
    manifests: HashMap<String, Vec<u8>>,
    seen: Vec<Seen>,
    uploads: usize,
}

type Shared = Arc<Mutex<State>>;

fn read_request(stream: &mut impl Read) -> Option<Request> {
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

fn write_response(stream: &mut impl Write, resp: &Response) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} X\r\nConnection: close\r\nContent-Length: {}\r\n",
        resp.status,
        resp.body.len()
    );
    for (k, v) in &resp.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(&resp.body)?;
    stream.flush()
}

/// A listener on `ip`, port chosen by the OS, and that port.
fn listen(ip: &str) -> (TcpListener, u16) {
    let listener = TcpListener::bind((ip, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

/// Serve `handler` on `listener`, one request per connection, over TLS if `tls` is given.
fn serve(listener: TcpListener, tls: Option<Arc<rustls::ServerConfig>>, handler: Handler) {
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let (tls, handler) = (tls.clone(), handler.clone());
            std::thread::spawn(move || {
                let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(30)));
                match tls {
                    Some(cfg) => {
                        let Ok(c) = rustls::ServerConnection::new(cfg) else {
                            return;
                        };
                        let mut s = rustls::StreamOwned::new(c, conn);
                        if let Some(req) = read_request(&mut s) {
                            let _ = write_response(&mut s, &handler(&req));
                            s.conn.send_close_notify();
                            let _ = s.flush();
                        }
                    }
                    None => {
                        if let Some(req) = read_request(&mut conn) {
                            let _ = write_response(&mut conn, &handler(&req));
                        }
                    }
                }
            });
        }
    });
}

fn record(state: &Shared, server: &'static str, req: &Request) {
    state.lock().unwrap().seen.push(Seen {
        server,
        method: req.method.clone(),
        path: req.path.clone(),
        authorization: req.headers.get("authorization").cloned(),
    });
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// `PUT …?digest=…`: verify and store the blob.
fn store_blob(state: &Shared, req: &Request) -> Response {
    let digest = req
        .path
        .split_once("digest=")
        .map(|(_, d)| d.replace("%3A", ":"))
        .unwrap_or_default();
    if sha256(&req.body) != digest {
        return reply(400, &[], b"digest mismatch");
    }
    state.lock().unwrap().blobs.insert(digest, req.body.clone());
    reply(201, &[], b"")
}

fn basic() -> String {
    format!("Basic {}", B64.encode(format!("{USER}:{PASSWORD}")))
}

/// How the fake registry authenticates API requests.
#[derive(Clone)]
enum Auth {
    /// `Basic` with USER/PASSWORD.
    Basic,
    /// `Bearer` TOKEN from this realm URL.
    Bearer(String),
}

/// The registry API (`/v2/…`) and, when `token_path` is set, a token service on the same server.
/// `upload_location(n)` is the `Location` of the n-th upload.
fn registry_handler(state: Shared, auth: Auth, upload_location: Location) -> Handler {
    Arc::new(move |req: &Request| {
        record(&state, "registry", req);
        let got = req
            .headers
            .get("authorization")
            .cloned()
            .unwrap_or_default();
        if req.path.starts_with("/token") {
            return if got == basic() {
                reply(200, &[], format!("{{\"token\":\"{TOKEN}\"}}").as_bytes())
            } else {
                reply(401, &[], b"{}")
            };
        }
        let (ok, challenge) = match &auth {
            Auth::Basic => (got == basic(), "Basic realm=\"test\"".to_string()),
            Auth::Bearer(realm) => (
                got == format!("Bearer {TOKEN}"),
                format!(
                    "Bearer realm=\"{realm}\",service=\"test-registry\",scope=\"repository:{REPO}:pull,push\""
                ),
            ),
        };
        if !ok {
            return reply(401, &[("WWW-Authenticate", &challenge)], b"{}");
        }
        let Some(rest) = req.path.strip_prefix(&format!("/v2/{REPO}/")) else {
            return reply(404, &[], b"");
        };
        let mut st = state.lock().unwrap();
        match (req.method.as_str(), rest) {
            ("HEAD", r) if r.starts_with("blobs/sha256:") => {
                let d = &r["blobs/".len()..];
                reply(if st.blobs.contains_key(d) { 200 } else { 404 }, &[], b"")
            }
            ("POST", "blobs/uploads/") => {
                st.uploads += 1;
                let loc = upload_location(st.uploads);
                reply(202, &[("Location", &loc)], b"")
            }
            ("PUT", r) if r.starts_with("blobs/uploads/") => {
                drop(st);
                store_blob(&state, req)
            }
            ("PUT", r) if r.starts_with("manifests/") => {
                let digest = sha256(&req.body);
                st.manifests
                    .insert(r["manifests/".len()..].to_string(), req.body.clone());
                reply(201, &[("Docker-Content-Digest", &digest)], b"")
            }
            ("HEAD", r) if r.starts_with("manifests/") => {
                match st.manifests.get(&r["manifests/".len()..]) {
                    Some(m) => reply(200, &[("Docker-Content-Digest", &sha256(m))], b""),
                    None => reply(404, &[], b""),
                }
            }
            _ => reply(405, &[], b""),
        }
    })
}

/// A one-tier image and its index in a fresh OCI layout.
struct Fixture {
    _dir: tempfile::TempDir,
    layout: Layout,
    meta: Meta,
    images: Vec<TierImage>,
    index: (String, Vec<u8>),
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::open(&dir.path().join("oci")).unwrap();
    let config = layout
        .put(
            "application/vnd.oci.image.config.v1+json",
            b"{\"architecture\":\"amd64\",\"os\":\"linux\"}",
        )
        .unwrap();
    let layer = layout
        .put(
            "application/vnd.oci.image.layer.v1.tar+gzip",
            b"not really a tarball, the registry does not look",
        )
        .unwrap();
    let manifest_json = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": MT_MANIFEST,
        "config": config, "layers": [layer],
    }))
    .unwrap();
    let manifest = layout.put(MT_MANIFEST, &manifest_json).unwrap();
    let platform = Platform {
        architecture: "amd64".into(),
        os: "linux".into(),
        variant: None,
    };
    let index_json = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": MT_INDEX,
        "manifests": [Descriptor { platform: Some(platform.clone()), ..manifest.clone() }],
    }))
    .unwrap();
    let index_digest = sha256(&index_json);
    let images = vec![TierImage {
        tier: "x86-64-v2".into(),
        suffix: "amd64-v2".into(),
        platform,
        default_for_arch: true,
        manifest,
        config,
        layers: vec![layer],
    }];
    let meta = Meta {
        name: "bitnet-server".into(),
        version: "0.0.1-test".into(),
        revision: "test".into(),
        epoch: 0,
        created: "1970-01-01T00:00:00Z".into(),
        source: String::new(),
        title: String::new(),
        description: String::new(),
        licenses: "MIT".into(),
    };
    Fixture {
        _dir: dir,
        layout,
        meta,
        images,
        index: (index_digest, index_json),
    }
}

fn creds() -> Option<Credentials> {
    Some(Credentials {
        user: USER.into(),
        secret: PASSWORD.into(),
    })
}

fn push_to(target: Target, ca_cert: Option<&Path>, f: &Fixture) -> Result<PushReport> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = Client::new(target, creds(), ca_cert)?;
    rt.block_on(client.push_all(&f.layout, &f.meta, &f.images, (&f.index.0, &f.index.1)))
}

/// A CA and a server certificate for 127.0.0.1 signed by it: (CA PEM, server TLS config).
fn tls_pair() -> (String, Arc<rustls::ServerConfig>) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "bitnet-serve test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    (ca_cert.pem(), Arc::new(cfg))
}

fn local_upload(n: usize) -> String {
    format!("/v2/{REPO}/blobs/uploads/{n}?state=abc")
}

#[test]
fn push_over_tls_with_a_private_ca_and_a_bearer_realm() {
    let f = fixture();
    let (ca_pem, tls) = tls_pair();
    let ca_file = f._dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca_pem).unwrap();
    let state = Shared::default();
    // The token realm is on the registry itself, over https, as ghcr.io does.
    let (listener, port) = listen("127.0.0.1");
    let realm = format!("https://127.0.0.1:{port}/token");
    serve(
        listener,
        Some(tls),
        registry_handler(state.clone(), Auth::Bearer(realm), Arc::new(local_upload)),
    );
    let target = || Target::parse(&format!("127.0.0.1:{port}/{REPO}"), false, true).unwrap();
    assert_eq!(target().scheme, "https");

    // Without the CA the certificate is not trusted: nothing is sent, no credentials leave.
    let err = format!("{:#}", push_to(target(), None, &f).unwrap_err());
    eprintln!("without --ca-cert: {err}");
    assert!(err.contains("cannot reach"), "{err}");
    assert!(state.lock().unwrap().seen.is_empty());

    let report = push_to(target(), Some(&ca_file), &f).unwrap();
    eprintln!("with --ca-cert: {report:?}");
    assert_eq!((report.uploaded, report.existing), (2, 0));
    let st = state.lock().unwrap();
    assert_eq!(
        st.manifests.get("latest").map(|m| sha256(m)),
        Some(f.index.0.clone())
    );
    let token_calls: Vec<&Seen> = st
        .seen
        .iter()
        .filter(|s| s.path.starts_with("/token"))
        .collect();
    assert_eq!(token_calls.len(), 1, "{:#?}", st.seen);
    assert_eq!(token_calls[0].method, "GET");
    assert_eq!(
        token_calls[0].authorization.as_deref(),
        Some(basic().as_str())
    );
    // The registry API itself only ever sees the token, never the password.
    for s in st.seen.iter().filter(|s| s.path.starts_with("/v2/")) {
        let a = s.authorization.as_deref().unwrap_or("");
        assert!(a.is_empty() || a == format!("Bearer {TOKEN}"), "{s:?}");
    }
    eprintln!(
        "requests: {} ({} with the bearer token, 1 token request with basic credentials)",
        st.seen.len(),
        st.seen
            .iter()
            .filter(|s| s.authorization.as_deref() == Some(&format!("Bearer {TOKEN}")))
            .count()
    );
}

type Location = Arc<dyn Fn(usize) -> String + Send + Sync>;

/// Another host on 127.0.0.2 (another loopback address, so another origin) that records what it
/// gets as `label` and answers with `answer`, and the registry on 127.0.0.1, whose auth and
/// upload `Location` `registry(other port)` decides. Returns the registry's target.
fn registry_and_other_host(
    state: &Shared,
    label: &'static str,
    answer: fn(&Shared, &Request) -> Response,
    registry: impl FnOnce(u16) -> (Auth, Location),
) -> Target {
    let (listener, other) = listen("127.0.0.2");
    let st = state.clone();
    serve(
        listener,
        None,
        Arc::new(move |req: &Request| {
            record(&st, label, req);
            answer(&st, req)
        }),
    );
    let (auth, location) = registry(other);
    let (listener, port) = listen("127.0.0.1");
    serve(
        listener,
        None,
        registry_handler(state.clone(), auth, location),
    );
    Target::parse(&format!("127.0.0.1:{port}/{REPO}"), false, false).unwrap()
}

/// Requests `label` saw, and how many of them carried `Authorization`.
fn requests_at(state: &Shared, label: &str) -> (usize, usize) {
    let st = state.lock().unwrap();
    let at: Vec<&Seen> = st.seen.iter().filter(|s| s.server == label).collect();
    let with_auth = at.iter().filter(|s| s.authorization.is_some()).count();
    (at.len(), with_auth)
}

#[test]
fn an_upload_location_on_another_host_gets_no_authorization() {
    let f = fixture();
    let state = Shared::default();
    let target = registry_and_other_host(&state, "upload-host", store_blob, |other| {
        let location: Location =
            Arc::new(move |n| format!("http://127.0.0.2:{other}/upload/{n}?signature=s3"));
        (Auth::Basic, location)
    });
    let report = push_to(target, None, &f);
    let (seen, leaked) = requests_at(&state, "upload-host");
    eprintln!(
        "upload host saw {seen} request(s), {leaked} with Authorization; push: {:?}",
        report.as_ref().map(|r| r.uploaded)
    );
    assert_eq!(leaked, 0, "the upload host got the registry's credentials");
    assert_eq!(seen, 2, "{:#?}", state.lock().unwrap().seen);
    assert_eq!(report.unwrap().uploaded, 2);
}

#[test]
fn a_plain_http_token_realm_on_another_host_gets_no_credentials() {
    let f = fixture();
    let state = Shared::default();
    let target = registry_and_other_host(
        &state,
        "realm",
        |_, _| reply(200, &[], format!("{{\"token\":\"{TOKEN}\"}}").as_bytes()),
        |other| {
            let realm = format!("http://127.0.0.2:{other}/token");
            (Auth::Bearer(realm), Arc::new(local_upload))
        },
    );
    let result = push_to(target, None, &f);
    let (seen, leaked) = requests_at(&state, "realm");
    let shown = match &result {
        Ok(r) => format!("pushed {} blob(s)", r.uploaded),
        Err(e) => format!("{e:#}"),
    };
    eprintln!("realm saw {seen} request(s), {leaked} with credentials; push: {shown}");
    assert_eq!(
        leaked, 0,
        "credentials went to a plain-HTTP realm on another host"
    );
    assert!(shown.contains("not sending the credentials"), "{shown}");
    assert!(
        !shown.contains(PASSWORD) && !shown.contains(&basic()),
        "{shown}"
    );
}
