//! The `bitnet-server` binary: `serve` exits 0 on SIGTERM, `healthcheck` exit codes, `--help`
//! documents the environment variables without showing secrets, bad flags exit 2.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Setup, TestServer};

const BIN: &str = env!("CARGO_BIN_EXE_bitnet-server");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Environment without the variables serve and healthcheck read, so the host cannot leak in.
fn clean(cmd: &mut Command) -> &mut Command {
    for (k, _) in std::env::vars() {
        if k.starts_with("BITNET_") || k.starts_with("HF_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// Kills the child if the test fails before it is reaped, so no server outlives the test.
struct Reap(std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn healthcheck(url: &str) -> (i32, String) {
    let out = clean(&mut Command::new(BIN))
        .args(["healthcheck", "--url", url, "--timeout", "2"])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

/// Poll `url` with the healthcheck subcommand until it reports `failed`; its output.
fn wait_until_failed(url: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let (_, text) = healthcheck(url);
        if text.contains("\"state\":\"failed\"") {
            return text;
        }
        assert!(Instant::now() < deadline, "never reached `failed`: {text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sigterm(child: &std::process::Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
#[ignore = "asserts a wall-clock bound: run by cargo xtask ci"]
fn serve_exits_zero_on_sigterm_and_healthcheck_reports_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.gguf");
    std::fs::write(&model, b"placeholder").unwrap();
    let port = free_port();
    let child = clean(&mut Command::new(BIN))
        .args([
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--log-format",
            "json",
        ])
        .arg("--model")
        .arg(&model)
        .env("BITNET_API_KEY", "sk-never-logged")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Reap(child);
    let url = format!("http://127.0.0.1:{port}/health");
    let deadline = Instant::now() + Duration::from_secs(10);
    let (code, text) = loop {
        let (code, text) = healthcheck(&url);
        // Wait past `missing`/`loading` to the final state.
        if text.contains("\"state\":\"failed\"") || Instant::now() > deadline {
            break (code, text);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // This binary has no engine linked yet, so the model ends in `failed`: not ready.
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("\"state\":\"failed\""), "{text}");

    let started = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "serve did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(exit.code(), Some(0));
    let mut logs = String::new();
    std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut logs).unwrap();
    assert!(
        logs.lines().all(|l| l.trim_start().starts_with('{')),
        "JSON log lines:\n{logs}"
    );
    assert!(logs.contains("SIGTERM"), "{logs}");
    assert!(
        logs.contains("\"message\":\"shut down\""),
        "went through the drain path:\n{logs}"
    );
    assert!(!logs.contains("sk-never-logged"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_exits_zero_when_ready() {
    let s = TestServer::ready(Setup::default()).await;
    let url = s.url("/health");
    let (code, text) = tokio::task::spawn_blocking(move || healthcheck(&url))
        .await
        .unwrap();
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("\"state\":\"ready\""), "{text}");
    s.shutdown().await.unwrap();
    let (code, _) = healthcheck(&format!("http://127.0.0.1:{}/health", free_port()));
    assert_eq!(code, 1, "nothing listening");
}

#[test]
fn help_documents_env_vars_and_hides_secrets() {
    let out = clean(&mut Command::new(BIN))
        .args(["serve", "--help"])
        .env("HF_TOKEN", "hf_should_not_show")
        .env("BITNET_API_KEY", "sk_should_not_show")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for var in [
        "BITNET_HOST",
        "BITNET_PORT",
        "BITNET_MODEL",
        "BITNET_HF_REPO",
        "BITNET_HF_FILE",
        "BITNET_REVISION",
        "BITNET_MODEL_URL",
        "BITNET_SHA256",
        "BITNET_MODEL_DIR",
        "BITNET_CTX_SIZE",
        "BITNET_ALLOW_CTX_BEYOND_TRAINING",
        "BITNET_THREADS",
        "BITNET_PARALLEL",
        "BITNET_QUEUE_SIZE",
        "BITNET_MAX_BODY",
        "BITNET_SHUTDOWN_TIMEOUT",
        "BITNET_HEADER_TIMEOUT",
        "BITNET_KEEP_ALIVE_TIMEOUT",
        "BITNET_BODY_TIMEOUT",
        "BITNET_WRITE_TIMEOUT",
        "BITNET_MAX_CONNECTIONS",
        "BITNET_LOG_FORMAT",
        "BITNET_API_KEY",
        "HF_ENDPOINT",
        "HF_TOKEN",
        "HF_HUB_OFFLINE",
        "BITNET_ALIAS",
        "BITNET_ACCEPT_ANY_MODEL",
    ] {
        assert!(
            help.contains(&format!("[env: {var}")),
            "{var} missing from --help"
        );
    }
    assert!(!help.contains("should_not_show"), "{help}");
}

#[test]
fn bad_configuration_exits_2_with_a_message() {
    let out = clean(&mut Command::new(BIN))
        .args(["serve"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no model given"));
    let out = clean(&mut Command::new(BIN))
        .args(["serve", "--model", "x", "--sha256", "nothex"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("64 hex"));
    // BITNET_ALIAS is split on commas like --alias: the empty name between two commas exists
    // only after the split, and is refused before the model is looked at.
    let out = clean(&mut Command::new(BIN))
        .args(["serve", "--model", "x"])
        .env("BITNET_ALIAS", "gpt-4o-mini,,bitnet")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("BITNET_ALIAS") && stderr.contains("empty name"),
        "{stderr}"
    );
}

/// A server whose stderr reader went away (closed pipe) must still log without panicking and
/// still shut down on SIGTERM. (The subscriber's fallback `eprintln!` used to panic the task
/// that waited for the signal, leaving a server that ignored SIGTERM.)
#[test]
#[ignore = "asserts a wall-clock bound: run by cargo xtask ci"]
fn sigterm_works_when_stderr_is_a_closed_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.gguf");
    std::fs::write(&model, b"placeholder").unwrap();
    let port = free_port();
    let mut child = clean(&mut Command::new(BIN))
        .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()])
        .arg("--model")
        .arg(&model)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    let mut child = Reap(child);
    wait_until_failed(
        &format!("http://127.0.0.1:{port}/health"),
        Duration::from_secs(10),
    );
    sigterm(&child.0);
    let started = Instant::now();
    let exit = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "serve ignored SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(exit.code(), Some(0));
}

/// Issue 16, defect 5: credentials in `--model-url` (user:password@ and a presigned query
/// string) appear neither in the logs nor in the public `/health` reason.
#[test]
fn model_url_credentials_reach_neither_logs_nor_health() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // Nothing listens there: the download fails after one attempt with a network error.
    let dead = free_port();
    let url = format!(
        "http://alice:pw-s3cret@127.0.0.1:{dead}/m.gguf?X-Amz-Signature=sig-s3cret&token=tok-s3cret"
    );
    let child = clean(&mut Command::new(BIN))
        .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--log-format", "json", "--download-retries", "0"])
        .args(["--model-url", &url])
        .arg("--model-dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Reap(child);
    let text = wait_until_failed(
        &format!("http://127.0.0.1:{port}/health"),
        Duration::from_secs(20),
    );
    sigterm(&child.0);
    let _ = child.0.wait();
    let mut logs = String::new();
    std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut logs).unwrap();
    eprintln!(
        "secrets in /health: {}, in the logs: {} (of {} log lines)\n/health: {text}",
        text.matches("s3cret").count(),
        logs.matches("s3cret").count(),
        logs.lines().count()
    );
    assert!(!text.contains("s3cret"), "{text}");
    assert!(!logs.contains("s3cret"), "{logs}");
    assert!(
        text.contains("127.0.0.1") && text.contains("m.gguf"),
        "{text}"
    );
    assert!(
        logs.contains("X-Amz-Signature=***"),
        "the query names stay: {logs}"
    );
}

/// `serve` of `model` on `host:port` with a clean environment, stdout discarded.
fn serve_on(host: &str, port: u16, model: &Path) -> Command {
    let mut c = Command::new(BIN);
    clean(&mut c)
        .args(["serve", "--host", host, "--port", &port.to_string()])
        .arg("--model")
        .arg(model)
        .stdout(Stdio::null());
    c
}

/// A small synthetic BitNet model trained for `n_ctx` tokens, written into `dir`.
fn synth_model(dir: &Path, n_ctx: usize) -> std::path::PathBuf {
    use bitnet_gguf::GgmlType;
    use bitnet_synth::{self as synth, Shape};
    let shape = Shape {
        name: "serve-test",
        n_embd: 128,
        n_layer: 2,
        n_head: 4,
        n_head_kv: 2,
        n_ff: 256,
        n_ctx,
    };
    let w = synth::build(
        &shape,
        GgmlType::I2S,
        GgmlType::F16,
        &synth::toy_vocab(40),
        1,
    );
    let path = dir.join("serve-test.gguf");
    std::fs::write(&path, w.to_bytes()).unwrap();
    path
}

/// Run `cmd` (stderr piped) for at most `limit`; its exit code (1000 + the code when it was
/// still running and had to be stopped with SIGTERM) and stderr.
fn exit_within(cmd: &mut Command, limit: Duration) -> (Option<i32>, String) {
    let mut child = Reap(cmd.stderr(Stdio::piped()).spawn().unwrap());
    let started = Instant::now();
    let code = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s.code();
        }
        if started.elapsed() > limit {
            sigterm(&child.0);
            break child.0.wait().unwrap().code().map(|c| c + 1000);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    (code, stderr)
}

/// Start `serve` on `host` with a placeholder model and `env`, wait until it answers, stop it
/// with SIGTERM; its exit code and logs.
fn serve_logs(host: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.gguf");
    std::fs::write(&model, b"placeholder").unwrap();
    let port = free_port();
    let child = serve_on(host, port, &model)
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Reap(child);
    wait_until_failed(
        &format!("http://127.0.0.1:{port}/health"),
        Duration::from_secs(10),
    );
    sigterm(&child.0);
    let status = child.0.wait().unwrap();
    let mut logs = String::new();
    std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut logs).unwrap();
    (status.code(), logs)
}

/// Issue 16, defect 9: serving without a key on a non-loopback address logs a warning (and
/// only then); an empty BITNET_API_KEY counts as unset (compose passes one), but a blank key
/// is refused with exit 2 and a message naming the variable.
#[test]
fn open_non_loopback_servers_warn_and_blank_keys_are_refused() {
    const WARNING: &str = "WITHOUT an API key";
    let (code, logs) = serve_logs("0.0.0.0", &[("BITNET_API_KEY", "")]);
    assert_eq!(code, Some(0), "{logs}");
    let open_any = logs.matches(WARNING).count();
    let (_, logs_loopback) = serve_logs("127.0.0.1", &[]);
    let open_loopback = logs_loopback.matches(WARNING).count();
    let (_, logs_keyed) = serve_logs("0.0.0.0", &[("BITNET_API_KEY", " sk-1 ")]);
    let keyed_any = logs_keyed.matches(WARNING).count();
    eprintln!(
        "warnings: 0.0.0.0 without a key {open_any}, 127.0.0.1 without a key {open_loopback}, \
         0.0.0.0 with a key {keyed_any}"
    );
    let mut blank = Vec::new();
    for (how, args, env) in [
        ("flag", vec!["--api-key", ""], None),
        ("env", vec![], Some("  \t")),
    ] {
        let mut c = serve_on("127.0.0.1", free_port(), Path::new("m.gguf"));
        c.args(&args);
        if let Some(v) = env {
            c.env("BITNET_API_KEY", v);
        }
        // A server that accepted the key would run until stopped.
        let (code, stderr) = exit_within(&mut c, Duration::from_secs(10));
        eprintln!("blank key by {how}: exit {code:?} (1000+ = was still serving): {stderr}");
        blank.push((how, code, stderr));
    }
    assert_eq!(open_any, 1, "{logs}");
    assert_eq!(open_loopback, 0, "{logs_loopback}");
    assert_eq!(keyed_any, 0, "{logs_keyed}");
    for (how, code, stderr) in blank {
        assert_eq!(code, Some(2), "{how}: {stderr}");
        assert!(
            stderr.contains("BITNET_API_KEY") && stderr.contains("empty or only whitespace"),
            "{how}: {stderr}"
        );
    }
}

/// Issue 16, defect 11: a --ctx-size above the model's trained context, or one whose KV cache
/// cannot fit in memory, stops `serve` at start with exit 2 and the figures, instead of a
/// server that aborts on allocation once a long request grows the cache.
#[test]
fn a_context_the_model_or_the_machine_cannot_hold_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let model = synth_model(dir.path(), 256);
    let huge = (1u64 << 31).to_string();
    let mut seen = Vec::new();
    for extra in [vec![], vec!["--allow-ctx-beyond-training"]] {
        let mut c = serve_on("127.0.0.1", free_port(), &model);
        c.args(["--ctx-size", &huge]).args(&extra);
        let (code, stderr) = exit_within(&mut c, Duration::from_secs(10));
        eprintln!("--ctx-size {huge} {extra:?}: exit {code:?} (1000+ = was serving): {stderr}");
        seen.push((code, stderr));
    }
    let (code, stderr) = &seen[0];
    assert_eq!(*code, Some(2), "{stderr}");
    assert!(
        stderr.contains("trained context of 256") && stderr.contains("--allow-ctx-beyond-training"),
        "{stderr}"
    );
    let (code, stderr) = &seen[1];
    assert_eq!(*code, Some(2), "{stderr}");
    assert!(
        stderr.contains("KV cache")
            && stderr.contains("available")
            && stderr.contains("--parallel"),
        "{stderr}"
    );
}

/// Issue 16, defect 10, end to end: SIGTERM during a stream from the real engine (a small
/// synthetic model). While draining, `/health` answers 503 `draining` and a new request 503
/// `shutting_down`; the stream runs to its end; the process exits 0 within the default
/// shutdown timeout (8 s) + 1 s, inside `docker stop`'s 10 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_stream_with_health_draining_and_exits_zero() {
    use serde_json::{Value, json};
    let dir = tempfile::tempdir().unwrap();
    let model = synth_model(dir.path(), 8192);
    let port = free_port();
    let child = serve_on("127.0.0.1", port, &model)
        .args(["--parallel", "1", "--threads", "1"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Reap(child);
    let base = format!("http://127.0.0.1:{port}");
    let http = common::client();
    wait_ready(&http, &base).await;
    // Size the stream to about 1 s at this machine's streaming speed over 512 tokens; it
    // slows as the context grows (attention), so it lasts a few seconds, inside the 8 s drain.
    let streaming = |n: usize| {
        http.post(format!("{base}/completion"))
            .json(&json!({"prompt": "a", "n_predict": n, "ignore_eos": true,
                          "temperature": 0, "stream": true}))
            .send()
    };
    let timed = Instant::now();
    streaming(512).await.unwrap().text().await.unwrap();
    let rate = 512.0 / timed.elapsed().as_secs_f64();
    let n_predict = (rate as usize).clamp(256, 2000);

    let mut stream = streaming(n_predict).await.unwrap();
    let mut body = String::from_utf8(stream.chunk().await.unwrap().unwrap().to_vec()).unwrap();
    sigterm(&child.0);
    let signalled = Instant::now();
    let health = loop {
        let seen = match http.get(format!("{base}/health")).send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                let v: Value = r.json().await.unwrap_or_default();
                format!("{status} {}", v["state"].as_str().unwrap_or("?"))
            }
            Err(e) => format!("no answer ({e})"),
        };
        if seen != "200 ready" || signalled.elapsed() > Duration::from_secs(2) {
            break seen;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let new_request = match http
        .post(format!("{base}/completion"))
        .json(&json!({"prompt": "a", "n_predict": 1}))
        .send()
        .await
    {
        Ok(r) => {
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap_or_default();
            format!("{status} {}", v["error"]["code"].as_str().unwrap_or("?"))
        }
        Err(e) => format!("no answer ({e})"),
    };
    while let Ok(Some(chunk)) = stream.chunk().await {
        body.push_str(&String::from_utf8_lossy(&chunk));
    }
    let exit = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(20),
            "serve ignored SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = signalled.elapsed();
    let events = common::sse_data(&body);
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    eprintln!(
        "n_predict {n_predict} at {rate:.0} tok/s; after SIGTERM: /health -> {health}; new \
         request -> {new_request}; stream -> {} events, last stop={} tokens_predicted={}; exit \
         {:?} after {took:?}",
        events.len(),
        last["stop"],
        last["tokens_predicted"],
        exit.code()
    );
    assert_eq!(health, "503 draining");
    assert_eq!(new_request, "503 shutting_down");
    assert_eq!(last["stop"], true, "{body}");
    assert_eq!(last["tokens_predicted"].as_u64(), Some(n_predict as u64));
    assert_eq!(exit.code(), Some(0));
    assert!(took < Duration::from_secs(9), "{took:?}");
}

/// An HTTPS server on 127.0.0.1 that answers every GET or HEAD with `body` (HTTP/1.1, one request
/// per connection), presenting a certificate for 127.0.0.1 signed by a throw-away CA. Serves at
/// most `max` connections, then its thread ends. Returns the port and the CA certificate (PEM).
fn https_file_server(body: Vec<u8>, max: usize) -> (u16, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    use std::io::{Read, Write};
    use std::sync::Arc;
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "bitnet-serve download test CA");
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap(),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(max) {
            let Ok(conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut s =
                rustls::StreamOwned::new(rustls::ServerConnection::new(tls.clone()).unwrap(), conn);
            // The request head; a client that refuses the certificate ends the handshake here.
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
                    _ => break,
                }
            }
            if !head.windows(4).any(|w| w == b"\r\n\r\n") {
                continue;
            }
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n\
                 Connection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(answer.as_bytes());
            if !head.starts_with(b"HEAD ") {
                let _ = s.write_all(&body);
            }
            s.conn.send_close_notify();
            let _ = s.flush();
        }
    });
    (port, ca_pem)
}

/// Issue 16, item 12: the server's TLS (rustls with ring) downloads a model over HTTPS from a
/// host whose certificate chains to a CA in `SSL_CERT_FILE`, checks its sha256 and serves it;
/// the same host is refused when that CA is not trusted.
#[test]
fn a_model_url_over_https_is_downloaded_when_its_ca_is_trusted_and_refused_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let model = std::fs::read(synth_model(dir.path(), 64)).unwrap();
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&model))
    };
    let (https_port, ca_pem) = https_file_server(model, 20);
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let url = format!("https://127.0.0.1:{https_port}/m.gguf");
    let serve = |port: u16, ca: &Path, cache: &Path| {
        let mut c = Command::new(BIN);
        clean(&mut c)
            .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--download-retries",
                "0",
                "--model-url",
                &url,
                "--sha256",
                &sha,
            ])
            .arg("--model-dir")
            .arg(cache)
            .env("SSL_CERT_FILE", ca)
            .env_remove("SSL_CERT_DIR")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        Reap(c.spawn().unwrap())
    };

    // Trusted: downloaded, verified, loaded, ready.
    let port = free_port();
    let child = serve(port, &ca_file, &dir.path().join("cache-trusted"));
    let health = format!("http://127.0.0.1:{port}/health");
    let deadline = Instant::now() + Duration::from_secs(60);
    let text = loop {
        let (code, text) = healthcheck(&health);
        if code == 0 || text.contains("\"state\":\"failed\"") {
            break text;
        }
        assert!(Instant::now() < deadline, "never became ready: {text}");
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("trusted CA: {text}");
    assert!(text.starts_with("ready"), "{text}");
    sigterm(&child.0);
    drop(child);

    // The same host when SSL_CERT_FILE holds another CA (that of a server that serves nothing):
    // the certificate is refused.
    let (_, other_ca) = https_file_server(Vec::new(), 0);
    let other_file = dir.path().join("other-ca.pem");
    std::fs::write(&other_file, other_ca).unwrap();
    let port = free_port();
    let _child = serve(port, &other_file, &dir.path().join("cache-untrusted"));
    let text = wait_until_failed(
        &format!("http://127.0.0.1:{port}/health"),
        Duration::from_secs(30),
    );
    eprintln!("untrusted CA: {text}");
    assert!(
        text.contains("invalid peer certificate"),
        "the reason should name the certificate: {text}"
    );
}

/// Poll `{base}/health` until it says ready (at most 20 s).
async fn wait_ready(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = http.get(format!("{base}/health")).send().await;
        let text = match r {
            Ok(r) if r.status() == 200 => return,
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(e) => e.to_string(),
        };
        assert!(Instant::now() < deadline, "never ready: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A client that keeps no idle connection, so the server's open files are only the test's.
fn unpooled_client() -> reqwest::Client {
    bitnet_server::download::tls::install_crypto_provider();
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The open file descriptors of process `pid`.
fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Connect to 127.0.0.1:`port`, retrying while the listen backlog is full.
async fn connect(port: u16) -> tokio::net::TcpStream {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            Ok(tcp) => return tcp,
            Err(e) => assert!(Instant::now() < deadline, "connect: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Read from `tcp` until the server closes it (Ok: how long after `since`), it answers
/// (Err), or `limit` passes (Err); meanwhile send `drip` one byte every 300 ms.
async fn until_closed(
    tcp: &mut tokio::net::TcpStream,
    since: Instant,
    drip: Option<u8>,
    limit: Duration,
) -> Result<Duration, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = [0u8; 1024];
    while since.elapsed() < limit {
        tokio::select! {
            read = tcp.read(&mut buf) => return match read {
                Ok(0) | Err(_) => Ok(since.elapsed()),
                Ok(n) => Err(format!("answered: {:?}", String::from_utf8_lossy(&buf[..n]))),
            },
            _ = tokio::time::sleep(Duration::from_millis(300)), if drip.is_some() => {
                if tcp.write_all(&[drip.unwrap()]).await.is_err() {
                    return Ok(since.elapsed());
                }
            }
            _ = tokio::time::sleep(limit.saturating_sub(since.elapsed())), if drip.is_none() => {}
        }
    }
    Err(format!("still open after {limit:?}"))
}

/// Issue 16, item 2 (slowloris): 1,000 connections that send a request head one byte every
/// 300 ms and 100 idle keep-alive ones, against the binary with a synthetic model. While they
/// are held, `/health` and a completion answer within 2 s; the server then closes every slow
/// one at the head timeout (4 s) and every idle one at the keep-alive timeout (2 s), and its
/// open files return to the baseline. Without the timers none is ever closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "holds 1,100 connections for seconds and asserts wall-clock bounds: run by cargo xtask ci"]
async fn a_thousand_slow_connections_are_cut_by_the_timers_while_health_and_completions_answer() {
    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const SLOW: usize = 1000;
    const IDLE: usize = 100;
    const HEAD: Duration = Duration::from_secs(4);
    const KEEP_ALIVE: Duration = Duration::from_secs(2);
    // This process holds the client end of every connection.
    bitnet_server::connections::raise_file_limit();
    let dir = tempfile::tempdir().unwrap();
    let model = synth_model(dir.path(), 512);
    let port = free_port();
    // Settings through the environment, not flags: a server without them starts anyway and
    // fails this test on its behaviour, not on an unknown flag.
    let child = serve_on("127.0.0.1", port, &model)
        .args(["--parallel", "2", "--threads", "1"])
        .env("BITNET_HEADER_TIMEOUT", HEAD.as_secs().to_string())
        .env(
            "BITNET_KEEP_ALIVE_TIMEOUT",
            KEEP_ALIVE.as_secs().to_string(),
        )
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let child = Reap(child);
    let pid = child.0.id();
    let base = format!("http://127.0.0.1:{port}");
    let http = unpooled_client();
    wait_ready(&http, &base).await;
    let complete = || async {
        let started = Instant::now();
        let r = http
            .post(format!("{base}/completion"))
            .json(&json!({"prompt": "a", "n_predict": 8, "temperature": 0}))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let v: serde_json::Value = r.json().await.unwrap();
        (status, v["tokens_predicted"].as_u64(), started.elapsed())
    };
    assert_eq!(complete().await.0, 200, "warm-up completion");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let baseline = open_files(pid);

    let slow: Vec<_> = (0..SLOW)
        .map(|_| {
            tokio::spawn(async move {
                let mut tcp = connect(port).await;
                let since = Instant::now();
                tcp.write_all(b"POST /completion HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                    .await
                    .unwrap();
                until_closed(&mut tcp, since, Some(b'a'), HEAD * 3).await
            })
        })
        .collect();
    let idle: Vec<_> = (0..IDLE)
        .map(|_| {
            tokio::spawn(async move {
                let mut tcp = connect(port).await;
                tcp.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                    .await
                    .unwrap();
                // The whole response: its head, then Content-Length bytes.
                let mut got = Vec::new();
                let mut buf = [0u8; 1024];
                let complete = |got: &[u8]| {
                    let text = String::from_utf8_lossy(got);
                    let (head, body) = text.split_once("\r\n\r\n")?;
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().to_string())
                        })?
                        .parse()
                        .ok()?;
                    (body.len() >= length).then_some(())
                };
                while complete(&got).is_none() {
                    let n = tcp.read(&mut buf).await.unwrap();
                    assert!(n > 0, "closed before the response: {got:?}");
                    got.extend_from_slice(&buf[..n]);
                }
                until_closed(&mut tcp, Instant::now(), None, KEEP_ALIVE * 4).await
            })
        })
        .collect();
    // Every connection is open on the server's side.
    let opened = Instant::now();
    let mut peak = open_files(pid);
    while peak < baseline + SLOW + IDLE && opened.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        peak = peak.max(open_files(pid));
    }
    let opening = opened.elapsed();
    let timed = Instant::now();
    let health = http.get(format!("{base}/health")).send().await;
    let health_took = timed.elapsed();
    let health = health
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string());
    let (status, tokens, completion_took) = complete().await;
    let slow_still_open = slow.iter().filter(|t| !t.is_finished()).count();
    let at_probe = open_files(pid);

    let mut slow_closed = Vec::new();
    let mut failures = Vec::new();
    for t in slow {
        match t.await.unwrap() {
            Ok(after) => slow_closed.push(after),
            Err(e) => failures.push(e),
        }
    }
    let mut idle_closed = Vec::new();
    for t in idle {
        match t.await.unwrap() {
            Ok(after) => idle_closed.push(after),
            Err(e) => failures.push(e),
        }
    }
    let settled = Instant::now();
    let mut after = open_files(pid);
    while after > baseline && settled.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        after = open_files(pid);
    }
    let span = |v: &[Duration]| {
        let min = v.iter().min().copied().unwrap_or_default();
        let max = v.iter().max().copied().unwrap_or_default();
        format!("{:.2}..{:.2} s", min.as_secs_f64(), max.as_secs_f64())
    };
    eprintln!(
        "server open files: baseline {baseline}, peak {peak} ({opening:?} to open \
         {SLOW}+{IDLE}), {at_probe} at the probes, {after} after; while held: /health -> \
         {health:?} in {health_took:?}, completion -> {status} ({tokens:?} tokens) in \
         {completion_took:?}, slow ones still open {slow_still_open}; closed by the server: \
         {}/{SLOW} slow after {}, {}/{IDLE} idle after {}; failures: {} {:?}",
        slow_closed.len(),
        span(&slow_closed),
        idle_closed.len(),
        span(&idle_closed),
        failures.len(),
        failures.iter().take(3).collect::<Vec<_>>()
    );
    assert!(peak >= baseline + SLOW + IDLE, "the server held them all");
    assert_eq!(health, Ok(200));
    assert!(health_took < Duration::from_secs(2), "{health_took:?}");
    assert_eq!((status, tokens), (200, Some(8)));
    assert!(
        completion_took < Duration::from_secs(2),
        "{completion_took:?}"
    );
    assert_eq!(
        slow_still_open, SLOW,
        "probes answered while the slow ones were held"
    );
    let first = failures.first();
    assert_eq!(
        slow_closed.len(),
        SLOW,
        "{} failures, first {first:?}",
        failures.len()
    );
    assert_eq!(
        idle_closed.len(),
        IDLE,
        "{} failures, first {first:?}",
        failures.len()
    );
    for (closed, timer) in [(&slow_closed, HEAD), (&idle_closed, KEEP_ALIVE)] {
        let (min, max) = (closed.iter().min().unwrap(), closed.iter().max().unwrap());
        assert!(
            *min >= timer.mul_f64(0.9),
            "closed before the timer: {min:?}"
        );
        assert!(
            *max < timer + Duration::from_secs(2),
            "closed late: {max:?}"
        );
    }
    assert!(
        after <= baseline,
        "open files {after} > baseline {baseline}"
    );
}

/// Issue 16, item 2 (connection cap): at `--max-connections` the server stops accepting, so
/// its open files stay at the cap; a client beyond it waits in the listen backlog and is
/// answered once the head timeout frees a slot, instead of being refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "asserts wall-clock bounds: run by cargo xtask ci"]
async fn at_the_connection_cap_a_new_client_waits_for_a_slot_and_files_stay_bounded() {
    const CAP: usize = 32;
    const HEAD: Duration = Duration::from_secs(2);
    let dir = tempfile::tempdir().unwrap();
    let model = synth_model(dir.path(), 512);
    let port = free_port();
    let child = serve_on("127.0.0.1", port, &model)
        .args(["--parallel", "1", "--threads", "1"])
        .env("BITNET_MAX_CONNECTIONS", CAP.to_string())
        .env("BITNET_HEADER_TIMEOUT", HEAD.as_secs().to_string())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let child = Reap(child);
    let pid = child.0.id();
    let base = format!("http://127.0.0.1:{port}");
    let http = unpooled_client();
    wait_ready(&http, &base).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let baseline = open_files(pid);
    // CAP + 8 silent connections: the kernel completes every handshake, the server accepts CAP.
    let mut silent = Vec::new();
    for _ in 0..CAP + 8 {
        silent.push(connect(port).await);
    }
    let opened = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sampler = tokio::spawn(async move {
        let mut peak = 0;
        for _ in 0..100 {
            peak = peak.max(open_files(pid));
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        peak
    });
    let asked = Instant::now();
    let health = http.get(format!("{base}/health")).send().await;
    let waited = asked.elapsed();
    let since_connected = opened.elapsed();
    let health = health
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string());
    let peak = sampler.await.unwrap();
    eprintln!(
        "cap {CAP}, {} silent connections: server open files baseline {baseline}, peak {peak}; \
         /health -> {health:?} after {waited:?} ({since_connected:?} after the silent ones \
         connected)",
        CAP + 8,
    );
    drop(silent);
    assert!(
        peak <= baseline + CAP,
        "peak {peak} > baseline {baseline} + cap {CAP}"
    );
    assert_eq!(health, Ok(200));
    assert!(
        waited >= Duration::from_secs(1),
        "/health was accepted past the cap after {waited:?}"
    );
    assert!(waited < HEAD + Duration::from_secs(2), "{waited:?}");
}

/// The connection timers never cut a response, and a body that trickles in is bounded: a
/// stream lasting 4x the head and keep-alive timeouts arrives whole; a body stalled after its
/// head gets 408 naming `--body-timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_leave_streams_whole_and_a_trickled_body_gets_408() {
    use bitnet_server::connections::ConnectionLimits;
    use serde_json::{Value, json};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = TestServer::ready(Setup {
        step_delay: Duration::from_millis(20),
        endless: true,
        n_ctx: 256,
        connections: ConnectionLimits {
            header_timeout: Duration::from_millis(300),
            keep_alive_timeout: Duration::from_millis(300),
            write_timeout: Duration::from_millis(300),
            max_connections: None,
        },
        body_timeout: Duration::from_millis(500),
        ..Setup::default()
    })
    .await;
    let started = Instant::now();
    let body = common::client()
        .post(s.url("/completion"))
        .json(&json!({"prompt": "a", "n_predict": 60, "temperature": 0, "stream": true}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let took = started.elapsed();
    let events = common::sse_data(&body);
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();

    let mut tcp = connect(s.base.rsplit(':').next().unwrap().parse().unwrap()).await;
    tcp.write_all(
        b"POST /completion HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"prompt\":",
    )
    .await
    .unwrap();
    let asked = Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer).to_string();
    eprintln!(
        "stream: {} events in {took:?}, last stop={} tokens_predicted={}; stalled body -> {:?} \
         after {:?}",
        events.len(),
        last["stop"],
        last["tokens_predicted"],
        answer.lines().next(),
        asked.elapsed()
    );
    assert_eq!(last["stop"], true, "{body}");
    assert_eq!(last["tokens_predicted"].as_u64(), Some(60), "{body}");
    assert!(
        took > Duration::from_millis(900),
        "the stream outlasted the timers: {took:?}"
    );
    assert!(read.is_ok(), "the stalled body was never answered");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains("--body-timeout") && answer.contains("request_timeout"),
        "{answer}"
    );
    s.shutdown().await.unwrap();
}

/// Issue 16, item 2 (slow readers): a client that asks for a long stream and then stops
/// reading fills the socket's buffers; once no byte could go out for `--write-timeout` the
/// server closes the connection, which cancels the generation and frees its sequence. Without
/// the timer the generation runs on to `n_predict` (minutes here) and the connection stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_a_stream_is_cut_and_its_generation_cancelled() {
    use bitnet_server::connections::ConnectionLimits;
    use std::sync::atomic::Ordering;
    use tokio::io::AsyncWriteExt;
    const WRITE: Duration = Duration::from_millis(500);
    const N_PREDICT: usize = 1_000_000;
    let s = TestServer::ready(Setup {
        endless: true,
        n_ctx: N_PREDICT + 64,
        step_delay: Duration::from_micros(200),
        connections: ConnectionLimits {
            write_timeout: WRITE,
            ..Setup::default().connections
        },
        ..Setup::default()
    })
    .await;
    let port: u16 = s.base.rsplit(':').next().unwrap().parse().unwrap();
    // A small receive buffer, so that the server's writes stall after little data.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut tcp = socket.connect(([127, 0, 0, 1], port).into()).await.unwrap();
    let body = format!(r#"{{"prompt":"a","n_predict":{N_PREDICT},"temperature":0,"stream":true}}"#);
    tcp.write_all(
        format!(
            "POST /completion HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    // Never read. The generation starts, the buffers fill, the writes stall.
    let started = Instant::now();
    let deadline = started + Duration::from_secs(30);
    while s.stats.created.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the generation never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    while !s.stats.was_freed(0) {
        assert!(
            Instant::now() < deadline,
            "the generation still runs {:?} after the client stopped reading (steps so far: \
             {:?})",
            started.elapsed(),
            s.stats.steps.lock().unwrap().get(&0)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    let steps = s.stats.steps.lock().unwrap().get(&0).copied().unwrap_or(0);
    eprintln!(
        "a stream nobody reads: cut and its generation cancelled after {took:?} ({steps} of \
         {N_PREDICT} tokens generated; write timeout {WRITE:?})"
    );
    assert!(steps < N_PREDICT, "it ran to the end: {steps}");
    assert!(took >= WRITE, "cut before the write timeout: {took:?}");
    drop(tcp);
    s.shutdown().await.unwrap();
}
