//! The generated compose files (`cargo xtask compose`) against the real tools: `docker-compose`
//! v1.29 (Debian 12's) brings each profile up with the image `build-images --load` made, the
//! service turns healthy and answers through the published port, a download from a hub-style
//! server on the Docker host resumes after a kill and refuses a wrong sha256, two replicas started
//! together on one fresh model-cache volume both become ready (30 rounds), the full-stack
//! profile's chat and embedding servers turn healthy and an application container extending
//! `compose/rag-env.yaml` reaches both at the base URLs of its environment, bad input gives a
//! clear message, and `--check` catches a hand edit. Compose v2 (Debian 13's, unpacked under
//! `target/tools/` by the ci preflight, `xtask/src/debtool.rs`) reads every profile the same way,
//! serves the volume-mount profile and rejects an unknown profile.
//!
//! The image comes from one `build-images --load --tiers <this host's best x86 tier>` into
//! `target/images-test` (the directory `images.rs` shares, so CI builds once). Without Docker or
//! docker-compose the Docker tests skip with a message; `BITNET_REQUIRE_COMPOSE_TEST=1` (set by
//! `cargo xtask ci`) turns a skip into a failure.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

mod common;
use common::{
    check_catches_a_hand_edit, http, http_at, post_json_ok, root, run, text, tiny_model, xtask,
    xtask_lock,
};

// ---------------------------------------------------------------------------------------------
// Tools, the image, and one compose project per test.

/// Why the Docker tests cannot run here, if they cannot.
fn missing_tools() -> Option<String> {
    let ok = |cmd: &[&str]| {
        Command::new(cmd[0])
            .args(&cmd[1..])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !ok(&["docker", "info"]) {
        return Some("no Docker daemon (`docker info` failed)".into());
    }
    if !ok(&["docker-compose", "version"]) {
        return Some("docker-compose is not installed".into());
    }
    if !ok(&[Compose::V2.program().to_str().unwrap(), "version"]) {
        return Some(format!(
            "Compose v2 is not at {} (`cargo xtask doctor --install ci` fetches it)",
            Compose::V2.program().display()
        ));
    }
    None
}

/// The two Compose implementations users run.
#[derive(Clone, Copy, Debug)]
enum Compose {
    /// docker-compose 1.29 (Python), Debian 12's package, on PATH.
    V1,
    /// Compose v2 (Go), Debian 13's package, unpacked under target/tools.
    V2,
}

impl Compose {
    fn program(self) -> PathBuf {
        match self {
            Compose::V1 => "docker-compose".into(),
            Compose::V2 => root().join("target/tools/compose-v2/docker-compose"),
        }
    }
}

/// Skip (or fail, when CI requires these tests) without Docker and docker-compose.
macro_rules! require_docker {
    () => {
        if let Some(why) = missing_tools() {
            if std::env::var_os("BITNET_REQUIRE_COMPOSE_TEST").is_some() {
                panic!("compose tests required but {why}");
            }
            eprintln!("SKIPPED: {why}; the compose tests need Docker and docker-compose");
            return;
        }
    };
}

/// This CPU's best x86-64 tier (the image `bitnet-server:<version>` then points at).
fn best_tier() -> &'static str {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags: Vec<&str> = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    let has = |f: &[&str]| f.iter().all(|x| flags.contains(x));
    if has(&["avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"]) {
        "x86-64-v4"
    } else if has(&["avx2", "bmi1", "bmi2", "fma", "f16c", "movbe"]) {
        "x86-64-v3"
    } else {
        "x86-64-v2"
    }
}

/// `bitnet-server:<version>`, loaded once per test process.
fn image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let _g = xtask_lock();
        let out = root().join("target/images-test");
        let started = Instant::now();
        let (o, _) = xtask(
            &[
                "build-images",
                "--out",
                out.to_str().unwrap(),
                "--load",
                "--tiers",
                best_tier(),
            ],
            &[],
        );
        assert!(o.status.success(), "build-images failed:\n{}", text(&o));
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(
            stdout.contains("docker-compose --profile volume-mount up -d"),
            "build-images --load names the compose command to run next:\n{stdout}"
        );
        let summary: Value =
            serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
        eprintln!(
            "build-images --load --tiers {}: {:.0?}",
            best_tier(),
            started.elapsed()
        );
        format!(
            "{}:{}",
            summary["name"].as_str().unwrap(),
            summary["version"].as_str().unwrap()
        )
    })
}

fn compose_file() -> PathBuf {
    root().join("compose/compose.yaml")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One docker-compose project (unique name) over the checked-in compose file, torn down with
/// `down -v` when dropped.
struct Project {
    compose: Compose,
    name: String,
    env: Vec<(String, String)>,
    port: u16,
    /// The embedding server's published port (full-stack).
    embed_port: u16,
    down_checked: bool,
}

impl Project {
    fn new(tag: &str, env: &[(&str, &str)]) -> Project {
        Project::with(Compose::V1, tag, env)
    }

    fn with(compose: Compose, tag: &str, env: &[(&str, &str)]) -> Project {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "bitnettest{}{}{}",
            tag,
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let port = free_port();
        let embed_port = free_port();
        let mut all: Vec<(String, String)> = vec![
            ("BITNET_PUBLISH_ADDR".into(), "127.0.0.1".into()),
            ("BITNET_PUBLISH_PORT".into(), port.to_string()),
            ("BITNET_EMBED_PUBLISH_PORT".into(), embed_port.to_string()),
            ("BITNET_HEALTH_INTERVAL".into(), "2s".into()),
            ("BITNET_MEM_LIMIT".into(), "1g".into()),
            ("BITNET_EMBED_MEM_LIMIT".into(), "1g".into()),
            ("BITNET_CPUS".into(), "1".into()),
            ("BITNET_CTX_SIZE".into(), "256".into()),
            ("BITNET_EMBED_CTX_SIZE".into(), "256".into()),
        ];
        for (k, v) in env {
            all.retain(|(a, _)| a != k);
            all.push((k.to_string(), v.to_string()));
        }
        Project {
            compose,
            name,
            env: all,
            port,
            embed_port,
            down_checked: false,
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(self.compose.program());
        c.args(["-f", compose_file().to_str().unwrap(), "-p", &self.name]);
        c.args(args);
        // Only what the test sets: nothing from the caller's shell leaks into the project.
        for (k, _) in std::env::vars() {
            if k.starts_with("BITNET_")
                || k.starts_with("HF_")
                || k.starts_with("NEO4J_")
                || k == "EMBEDDING_DIMENSION"
            {
                c.env_remove(k);
            }
        }
        c.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        c
    }

    fn compose(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run docker-compose")
    }

    fn container(&self, service: &str) -> String {
        let o = run(&mut self.cmd(&["ps", "-q", service]));
        let id = String::from_utf8_lossy(&o.stdout).trim().to_string();
        assert!(!id.is_empty(), "no container for {service}");
        id
    }

    fn inspect(&self, service: &str, format: &str) -> String {
        let id = self.container(service);
        String::from_utf8_lossy(
            &run(Command::new("docker").args(["inspect", "-f", format, &id])).stdout,
        )
        .trim()
        .to_string()
    }

    fn logs(&self, service: &str) -> String {
        text(&run(
            Command::new("docker").args(["logs", &self.container(service)])
        ))
    }

    /// Wait for Docker's health status `want`; panic with the logs otherwise.
    fn wait_health(&self, service: &str, want: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let h = self.inspect(service, "{{.State.Health.Status}}");
            if h == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{service}: health {h}, wanted {want}\n{}",
                self.logs(service)
            );
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    fn health(&self) -> (u16, String) {
        http(self.port, "GET", "/health", None).unwrap_or((0, String::new()))
    }

    /// Poll /health until `pred` holds.
    fn wait_health_body(&self, pred: impl Fn(&str) -> bool, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let (_, body) = self.health();
            if pred(&body) {
                return body;
            }
            assert!(Instant::now() < deadline, "/health: {body}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// A chat completion for the model the server lists.
    fn chat(&self) -> String {
        let (_, models) = http(self.port, "GET", "/v1/models", None).expect("GET /v1/models");
        let models: Value = serde_json::from_str(&models).unwrap();
        let id = models["data"][0]["id"].as_str().unwrap().to_string();
        let request = serde_json::json!({
            "model": id,
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 4,
            "temperature": 0,
        });
        let (v, body) = post_json_ok(self.port, "/v1/chat/completions", &request);
        assert!(v["choices"][0]["message"]["content"].is_string(), "{body}");
        body
    }

    /// `down -v`, then prove nothing of the project is left.
    fn down(&mut self) {
        run(&mut self.cmd(
            &[
                ALL_PROFILES,
                &["down", "-v", "--remove-orphans", "-t", "20"],
            ]
            .concat(),
        ));
        self.down_checked = true;
        let label = format!("label=com.docker.compose.project={}", self.name);
        for kind in [
            &["ps", "-aq", "--filter"][..],
            &["network", "ls", "-q", "--filter"],
            &["volume", "ls", "-q", "--filter"],
        ] {
            let mut args = kind.to_vec();
            args.push(&label);
            let o = run(Command::new("docker").args(&args));
            assert!(
                String::from_utf8_lossy(&o.stdout).trim().is_empty(),
                "left behind after down -v: docker {args:?}: {}",
                text(&o)
            );
        }
    }
}

/// `down` must name the profiles: Compose v2 leaves the containers of inactive profiles running
/// (v1 stops them all). The README's `down` commands name the profile for the same reason.
const ALL_PROFILES: &[&str] = &[
    "--profile",
    "volume-mount",
    "--profile",
    "runtime-download",
    "--profile",
    "full-stack",
];

impl Drop for Project {
    fn drop(&mut self) {
        if !self.down_checked {
            let _ = self
                .compose(&[ALL_PROFILES, &["down", "-v", "--remove-orphans", "-t", "5"]].concat());
        }
    }
}

/// A temp directory with the tiny model, readable by uid 65532.
fn models_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    tiny_model(dir.path());
    chmod(dir.path(), 0o755);
    chmod(&dir.path().join("model.gguf"), 0o644);
    dir
}

fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The container settings every service must have, as Docker applied them.
fn assert_hardened(p: &Project, service: &str) {
    let get = |f: &str| p.inspect(service, f);
    assert_eq!(get("{{.Config.User}}"), "65532:65532");
    assert_eq!(get("{{.HostConfig.ReadonlyRootfs}}"), "true");
    assert_eq!(get("{{json .HostConfig.CapDrop}}"), r#"["ALL"]"#);
    assert_eq!(
        get("{{json .HostConfig.SecurityOpt}}"),
        r#"["no-new-privileges:true"]"#
    );
    assert_eq!(get("{{.HostConfig.Init}}"), "true");
    assert!(get("{{json .HostConfig.Tmpfs}}").contains("/tmp"));
    assert_eq!(get("{{.HostConfig.Memory}}"), (1u64 << 30).to_string());
    assert_eq!(get("{{.HostConfig.NanoCpus}}"), "1000000000");
    assert_eq!(get("{{.HostConfig.RestartPolicy.Name}}"), "unless-stopped");
    assert_eq!(
        get("{{json .Config.Healthcheck.Test}}"),
        r#"["CMD","/usr/local/bin/bitnet-server","healthcheck"]"#
    );
}

// ---------------------------------------------------------------------------------------------
// Generator.

#[test]
fn check_passes_on_the_checked_in_files_and_fails_on_a_hand_edit() {
    let (o, _) = xtask(&["compose", "--check"], &[]);
    assert!(o.status.success(), "{}", text(&o));

    let tmp = tempfile::tempdir().unwrap();
    for f in ["compose.yaml", "rag-env.yaml", ".env.example"] {
        std::fs::copy(root().join("compose").join(f), tmp.path().join(f)).unwrap();
    }
    let out = tmp.path().to_str().unwrap();
    let (o, _) = xtask(&["compose", "--check", "--out", out], &[]);
    assert!(o.status.success(), "{}", text(&o));
    check_catches_a_hand_edit(
        "compose",
        tmp.path(),
        "compose.yaml",
        "restart: unless-stopped",
        "restart: always",
    );
}

/// Every environment variable the compose file sets on a bitnet-server service is one
/// `bitnet-server serve` (the image's binary) accepts.
#[test]
#[ignore = "needs Docker, docker-compose and a tier image: run by cargo xtask ci"]
fn every_env_var_the_compose_file_sets_is_accepted_by_the_server() {
    require_docker!();
    // The shipped binary's own flags: `serve --help` lists `[env: NAME=]` for each.
    let help = text(&run(Command::new("docker").args([
        "run",
        "--rm",
        "--network",
        "none",
        image(),
        "serve",
        "--help",
    ])));
    let accepted: Vec<String> = help
        .split("[env: ")
        .skip(1)
        .filter_map(|s| s.split(['=', ']']).next().map(str::to_string))
        .collect();
    assert!(accepted.contains(&"BITNET_MODEL".to_string()), "{help}");

    let yaml = std::fs::read_to_string(compose_file()).unwrap();
    // Set for the stack's applications (the chat server carries them too); the server reads none.
    let app_env: Vec<String> = rag_env()
        .into_iter()
        .map(|e| e.split('=').next().unwrap().to_string())
        .collect();
    assert!(app_env.contains(&"NEO4J_URI".to_string()), "{app_env:?}");
    let mut checked = 0;
    let mut in_server = false;
    let mut in_env = false;
    for line in yaml.lines() {
        if line.starts_with("  ") && !line.starts_with("   ") {
            in_server = line.trim_start().starts_with("server");
        }
        if line.starts_with("    ") && !line.starts_with("     ") {
            in_env = line.trim() == "environment:";
            continue;
        }
        if in_server && in_env {
            let item = line.trim().trim_start_matches("- ").trim_matches('"');
            let name = item.split('=').next().unwrap();
            if app_env.iter().any(|a| a == name) {
                continue;
            }
            assert!(
                accepted.iter().any(|a| a == name),
                "compose sets {name}, which `bitnet-server serve` does not accept:\n{help}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 20, "parsed only {checked} environment entries");
    // SIGTERM drains: the grace period exceeds the shutdown timeout the compose file sets.
    assert!(
        yaml.contains("BITNET_SHUTDOWN_TIMEOUT=8") && yaml.contains("stop_grace_period: \"12s\"")
    );
    // The image's CMD passes --model; the services replace it so the environment decides.
    assert!(yaml.contains("command: [serve]"));
}

// ---------------------------------------------------------------------------------------------
// volume-mount

fn volume_mount_serves_a_chat_completion_and_down_leaves_nothing(compose: Compose) {
    require_docker!();
    let image = image();
    let models = models_dir();
    let mut p = Project::with(
        compose,
        "vm",
        &[("BITNET_MODELS_DIR", models.path().to_str().unwrap())],
    );
    let o = p.compose(&["--profile", "volume-mount", "up", "-d"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(p.inspect("server", "{{.Config.Image}}"), image);
    p.wait_health("server", "healthy", Duration::from_secs(120));
    let body = p.chat();
    eprintln!("volume-mount ({compose:?}) chat completion: {body}");
    assert_hardened(&p, "server");
    // Logs are plain text for `docker logs` (no TTY): no ANSI colour escapes.
    let logs = p.logs("server");
    assert!(logs.contains("model loaded"), "{logs}");
    assert!(
        !logs.contains("\x1b["),
        "ANSI escapes in container logs:\n{logs}"
    );
    p.down();
}

#[test]
#[ignore = "needs Docker, docker-compose and a tier image: run by cargo xtask ci"]
fn volume_mount_profile_serves_a_chat_completion_and_down_leaves_nothing() {
    volume_mount_serves_a_chat_completion_and_down_leaves_nothing(Compose::V1);
}

#[test]
#[ignore = "needs Docker, docker-compose and a tier image: run by cargo xtask ci"]
fn compose_v2_volume_mount_profile_serves_a_chat_completion_and_down_leaves_nothing() {
    volume_mount_serves_a_chat_completion_and_down_leaves_nothing(Compose::V2);
}

/// Both implementations resolve every profile to the same services, images, users, mounts and
/// limits (the YAML 1.1 vs 1.2 pitfalls would show here as differing values).
#[test]
#[ignore = "needs Docker, docker-compose and Compose v2: run by cargo xtask ci"]
fn v1_and_v2_read_every_profile_the_same() {
    require_docker!();
    for profile in ["volume-mount", "runtime-download", "full-stack"] {
        let mut seen = Vec::new();
        for compose in [Compose::V1, Compose::V2] {
            let p = Project::with(
                compose,
                "cfg",
                &[
                    ("BITNET_MODELS_DIR", "/srv/models"),
                    ("NEO4J_PASSWORD", "not-a-real-secret"),
                ],
            );
            let o = p.compose(&["--profile", profile, "config"]);
            assert!(o.status.success(), "{compose:?} {profile}: {}", text(&o));
            let config: serde_json::Value =
                serde_yaml_ng::from_slice(&o.stdout).expect("config prints YAML");
            seen.push(essentials(&config, profile));
        }
        assert_eq!(seen[0], seen[1], "{profile}: v1 vs v2");
        eprintln!("{profile}: v1 and v2 agree on {} services", seen[0].len());
    }
}

/// What must not differ between readers: per service of `profile` its image, user, read-only
/// flag, capabilities, environment, mount targets and health-check command. (v1's `config`
/// prints every service with its `profiles`, v2's only the selected ones; v1 writes mounts in
/// the short `source:target:mode` form, v2 in the long one.)
fn essentials(config: &serde_json::Value, profile: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (name, svc) in config["services"].as_object().expect("services") {
        let in_profile = svc["profiles"]
            .as_array()
            .is_none_or(|ps| ps.iter().any(|p| p == profile));
        if !in_profile {
            continue;
        }
        let env: std::collections::BTreeMap<String, String> = match &svc["environment"] {
            Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), scalar(v))).collect(),
            Value::Array(a) => a
                .iter()
                .filter_map(|e| e.as_str()?.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            _ => Default::default(),
        };
        let mut mounts: Vec<String> = svc["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| match v {
                Value::String(short) => short.split(':').nth(1).unwrap_or_default().to_string(),
                long => scalar(&long["target"]),
            })
            .collect();
        mounts.sort();
        out.push(format!(
            "{name}: image={} user={} read_only={} cap_drop={} env={env:?} mounts={mounts:?} \
             healthcheck={}",
            scalar(&svc["image"]),
            scalar(&svc["user"]),
            scalar(&svc["read_only"]),
            svc["cap_drop"],
            svc["healthcheck"]["test"],
        ));
    }
    out.sort();
    out
}

/// A scalar as text whatever type the reader gave it (`true` vs `"true"`, `8` vs `"8"`).
fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// runtime-download: a hub-style file server on the Docker host.

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// Serves one file as `/{repo}/resolve/{rev}/{file}` like the hub (X-Linked-Etag = sha256,
/// X-Linked-Size, X-Repo-Commit; Range/If-Range), throttled, counting the body bytes it sends.
struct Hub {
    port: u16,
    sent: Arc<AtomicU64>,
    ranges: Arc<Mutex<Vec<String>>>,
}

/// The address containers reach the host on (`host-gateway`): the default bridge's gateway,
/// from Docker's IPAM data or, when Docker leaves it implicit, the docker0 interface.
fn bridge_gateway() -> String {
    let o = run(Command::new("docker").args([
        "network",
        "inspect",
        "bridge",
        "-f",
        "{{range .IPAM.Config}}{{.Gateway}}{{end}}",
    ]));
    let gw = String::from_utf8_lossy(&o.stdout).trim().to_string();
    if !gw.is_empty() {
        return gw;
    }
    let o = run(Command::new("ip").args(["-4", "-o", "addr", "show", "docker0"]));
    let line = String::from_utf8_lossy(&o.stdout).to_string();
    line.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .unwrap_or_else(|| panic!("no IPv4 address on docker0: {line}"))
        .to_string()
}

impl Hub {
    fn start(content: Vec<u8>, bytes_per_sec: u64) -> Hub {
        // Bound to the bridge gateway only: reachable from containers, not from the network.
        let listener = TcpListener::bind((bridge_gateway().as_str(), 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let sent = Arc::new(AtomicU64::new(0));
        let ranges = Arc::new(Mutex::new(Vec::new()));
        let content = Arc::new(content);
        let sha = hex::encode(Sha256::digest(content.as_slice()));
        let (s, r) = (sent.clone(), ranges.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (content, sha, s, r) = (content.clone(), sha.clone(), s.clone(), r.clone());
                std::thread::spawn(move || {
                    let _ = serve_hub(conn, &content, &sha, bytes_per_sec, &s, &r);
                });
            }
        });
        Hub { port, sent, ranges }
    }
}

fn serve_hub(
    conn: TcpStream,
    content: &[u8],
    sha: &str,
    bytes_per_sec: u64,
    sent: &AtomicU64,
    ranges: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut w = conn;
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request)? == 0 {
            return Ok(());
        }
        let mut range = None;
        let mut if_range = None;
        loop {
            let mut h = String::new();
            reader.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap_or((h, ""));
            match k.to_ascii_lowercase().as_str() {
                "range" => range = Some(v.trim().to_string()),
                "if-range" => if_range = Some(v.trim().to_string()),
                _ => {}
            }
        }
        let mut parts = request.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("");
        let etag = format!("\"{sha}\"");
        if !path.contains("/resolve/") {
            write!(w, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")?;
            continue;
        }
        let len = content.len() as u64;
        let mut start = 0;
        if let Some(r) = &range {
            ranges.lock().unwrap().push(r.clone());
            let ok_validator = if_range.as_deref().is_none_or(|v| v == etag);
            if let Some(n) = r.strip_prefix("bytes=").and_then(|x| x.strip_suffix('-'))
                && ok_validator
            {
                start = n.parse().unwrap_or(0).min(len);
            }
        }
        let common = format!(
            "X-Repo-Commit: {COMMIT}\r\nX-Linked-Etag: {etag}\r\nX-Linked-Size: {len}\r\n\
             ETag: {etag}\r\nAccept-Ranges: bytes\r\nContent-Length: {}\r\n",
            len - start
        );
        if start > 0 {
            write!(
                w,
                "HTTP/1.1 206 Partial Content\r\n{common}Content-Range: bytes {start}-{}/{len}\r\n\r\n",
                len - 1
            )?;
        } else {
            write!(w, "HTTP/1.1 200 OK\r\n{common}\r\n")?;
        }
        if method == "HEAD" {
            continue;
        }
        let chunk = 32 * 1024;
        let pause = Duration::from_secs_f64(chunk as f64 / bytes_per_sec as f64);
        for piece in content[start as usize..].chunks(chunk) {
            w.write_all(piece)?;
            sent.fetch_add(piece.len() as u64, Ordering::SeqCst);
            std::thread::sleep(pause);
        }
        w.flush()?;
    }
}

fn download_env(hub: &Hub) -> Vec<(String, String)> {
    vec![
        (
            "HF_ENDPOINT".into(),
            format!("http://host.docker.internal:{}", hub.port),
        ),
        ("BITNET_HF_REPO".into(), "test/tiny-bitnet".into()),
        ("BITNET_HF_FILE".into(), "model.gguf".into()),
        ("BITNET_DOWNLOAD_START_PERIOD".into(), "300s".into()),
    ]
}

fn refs(v: &[(String, String)]) -> Vec<(&str, &str)> {
    v.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect()
}

/// The entries of the model-cache volume, as seen through a container (no shell in it).
fn cache_listing(container: &str) -> Vec<String> {
    let o = run(Command::new("docker").args(["cp", &format!("{container}:/models"), "-"]));
    let mut ar = tar::Archive::new(o.stdout.as_slice());
    ar.entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect()
}

#[test]
#[ignore = "needs Docker, docker-compose and a tier image: run by cargo xtask ci"]
fn runtime_download_resumes_after_a_kill_and_serves() {
    require_docker!();
    image();
    let models = models_dir();
    let content = std::fs::read(models.path().join("model.gguf")).unwrap();
    let size = content.len() as u64;
    // About 12 s for the whole file.
    let hub = Hub::start(content, (size / 12).max(64 * 1024));
    let env = download_env(&hub);
    let mut p = Project::new("dl", &refs(&env));
    let o = p.compose(&["--profile", "runtime-download", "up", "-d"]);
    assert!(o.status.success(), "{}", text(&o));
    let deadline = Instant::now() + Duration::from_secs(60);
    while hub.sent.load(Ordering::SeqCst) < size / 3 {
        assert!(
            Instant::now() < deadline,
            "download did not start\n{}",
            p.logs("server-download")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, mid) = p.health();
    assert!(mid.contains("downloading"), "/health mid-download: {mid}");
    let o = p.compose(&["kill", "server-download"]);
    assert!(o.status.success(), "{}", text(&o));
    let first = hub.sent.swap(0, Ordering::SeqCst);
    assert!(first < size, "killed mid-download: {first} of {size}");
    let o = p.compose(&["--profile", "runtime-download", "up", "-d"]);
    assert!(o.status.success(), "{}", text(&o));
    p.wait_health("server-download", "healthy", Duration::from_secs(120));
    let second = hub.sent.load(Ordering::SeqCst);
    let ranges = hub.ranges.lock().unwrap().clone();
    eprintln!(
        "runtime-download: file {size} B; first run sent {first} B before the kill; after the \
         restart {second} B (Range requests {ranges:?})"
    );
    assert!(second < size, "resumed, not restarted: {second} of {size}");
    assert!(ranges.iter().any(|r| r != "bytes=0-"), "{ranges:?}");
    p.chat();
    assert_hardened(&p, "server-download");
    p.down();
}

#[test]
#[ignore = "needs Docker, docker-compose and a tier image: run by cargo xtask ci"]
fn runtime_download_with_a_wrong_sha256_stays_unhealthy_and_says_why() {
    require_docker!();
    image();
    let models = models_dir();
    let content = std::fs::read(models.path().join("model.gguf")).unwrap();
    let hub = Hub::start(content, 64 << 20);
    let mut env = download_env(&hub);
    env.push(("BITNET_SHA256".into(), "ab".repeat(32)));
    env.push(("BITNET_DOWNLOAD_START_PERIOD".into(), "2s".into()));
    let mut p = Project::new("sha", &refs(&env));
    let o = p.compose(&["--profile", "runtime-download", "up", "-d"]);
    assert!(o.status.success(), "{}", text(&o));
    let body = p.wait_health_body(|b| b.contains("failed"), Duration::from_secs(60));
    eprintln!("/health with a wrong sha256: {body}");
    assert!(body.contains("sha256 mismatch"), "{body}");
    p.wait_health("server-download", "unhealthy", Duration::from_secs(60));
    let logs = p.logs("server-download");
    assert!(logs.contains("sha256 mismatch"), "{logs}");
    assert_eq!(
        p.inspect("server-download", "{{.RestartCount}}"),
        "0",
        "no crash loop"
    );
    let files = cache_listing(&p.container("server-download"));
    eprintln!("model-cache after the mismatch: {files:?}");
    let kept: Vec<&String> = files
        .iter()
        .filter(|f| {
            let name = f.trim_end_matches('/').rsplit('/').next().unwrap_or("");
            name == "model.gguf"
                || (name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()))
        })
        .collect();
    assert!(
        kept.is_empty(),
        "an unverified file was kept under a final name: {kept:?}"
    );
    p.down();
}

/// One-off containers of a service (`docker-compose run -d`), removed with `docker rm -f` when
/// dropped, whatever happened.
struct OneOffs(Vec<String>);

impl Drop for OneOffs {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f"])
                .args(&self.0)
                .output();
        }
    }
}

/// Poll a replica's /health (on its bridge address) until it says `ready`. `Err` when it says
/// `failed`, its container stops, or `limit` passes. `Ok(true)` when /health showed it waiting
/// for the other replica's download on the way.
fn wait_ready(container: &str, limit: Duration) -> Result<bool, String> {
    let inspect = |format: &str| {
        let o = run(Command::new("docker").args(["inspect", "-f", format, container]));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let ip = inspect("{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}");
    let deadline = Instant::now() + limit;
    let mut waited = false;
    let mut last = String::new();
    while Instant::now() < deadline {
        match http_at(&ip, 8080, "GET", "/health", None) {
            Ok((_, body)) => {
                let v: Value = serde_json::from_str(&body).unwrap_or_default();
                waited |= v["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("another process sharing the model cache"));
                match v["state"].as_str() {
                    Some("ready") => return Ok(waited),
                    Some("failed") => return Err(format!("/health failed: {body}")),
                    _ => last = body,
                }
            }
            Err(e) => {
                if inspect("{{.State.Running}}") != "true" {
                    return Err(format!("the container stopped ({e})"));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("not ready after {limit:?}; last /health: {last}"))
}

/// Issue 16, item 7: two replicas of the runtime-download service start at once on one fresh
/// model-cache volume, 30 times. Each round: remove the volume, start two one-off containers of
/// the service (`docker-compose run -d`: its image, user, read-only root, environment and
/// volume, without the published port) concurrently, and poll both /health endpoints until
/// `ready`. A replica that says `failed`, stops, or is not ready within a minute is a failure.
/// Both servers are PID 1 in their containers, as in production.
#[test]
#[ignore = "needs Docker: run by cargo xtask ci"]
fn two_replicas_on_one_fresh_volume_start_together_30_times_without_a_failure() {
    require_docker!();
    image();
    const ROUNDS: usize = 30;
    let models = models_dir();
    let content = std::fs::read(models.path().join("model.gguf")).unwrap();
    let size = content.len() as u64;
    let sha = hex::encode(Sha256::digest(&content));
    // A second per download: the second replica finds the first one downloading.
    let hub = Hub::start(content, size.max(64 * 1024));
    let mut p = Project::new("race", &refs(&download_env(&hub)));
    let volume = format!("{}_model-cache", p.name);
    // The project's network once, so that the concurrent starts race on the cache only.
    let o = p.compose(&["--profile", "runtime-download", "up", "--no-start"]);
    assert!(o.status.success(), "{}", text(&o));
    run(&mut p.cmd(&["--profile", "runtime-download", "rm", "-f"]));
    let started = Instant::now();
    let (mut failures, mut waited, mut slowest) = (Vec::new(), 0, Duration::ZERO);
    for round in 1..=ROUNDS {
        let _ = Command::new("docker")
            .args(["volume", "rm", &volume])
            .output();
        let round_start = Instant::now();
        let sent_before = hub.sent.load(Ordering::SeqCst);
        let starts: Vec<Output> = std::thread::scope(|s| {
            let start = || {
                s.spawn(|| {
                    p.compose(&[
                        "--profile",
                        "runtime-download",
                        "run",
                        "-d",
                        "--no-deps",
                        "server-download",
                    ])
                })
            };
            let (a, b) = (start(), start());
            vec![a.join().unwrap(), b.join().unwrap()]
        });
        let mut replicas = OneOffs(Vec::new());
        let mut round_failures = Vec::new();
        for o in &starts {
            let name = String::from_utf8_lossy(&o.stdout).trim().to_string();
            if o.status.success() && !name.is_empty() {
                replicas
                    .0
                    .push(name.lines().last().unwrap_or_default().to_string());
            } else {
                round_failures.push(format!("docker-compose run failed: {}", text(o)));
            }
        }
        for c in &replicas.0 {
            match wait_ready(c, Duration::from_secs(60)) {
                Ok(w) => waited += usize::from(w),
                Err(why) => {
                    let logs = text(&run(Command::new("docker").args(["logs", c])));
                    round_failures.push(format!("{c}: {why}\n{logs}"));
                }
            }
        }
        slowest = slowest.max(round_start.elapsed());
        if round_failures.is_empty() {
            // One transfer for both, one verified blob, the snapshot link, nothing temporary.
            let sent = hub.sent.load(Ordering::SeqCst) - sent_before;
            let files = cache_listing(&replicas.0[0]);
            let has = |suffix: &str| {
                files
                    .iter()
                    .any(|f| f.trim_end_matches('/').ends_with(suffix))
            };
            let blob = format!("blobs/{sha}");
            let snapshot = format!("snapshots/{COMMIT}/model.gguf");
            let temporary = files
                .iter()
                .filter(|f| f.contains(".part") || f.ends_with(".tmp"))
                .collect::<Vec<_>>();
            if sent != size || !has(&blob) || !has(&snapshot) || !temporary.is_empty() {
                round_failures.push(format!("the hub sent {sent} of {size} B; cache: {files:?}"));
            }
        }
        failures.extend(
            round_failures
                .into_iter()
                .map(|f| format!("round {round}: {f}")),
        );
    }
    eprintln!(
        "two replicas on one fresh volume, {ROUNDS} rounds: {} failures; {waited} replicas \
         showed /health waiting for the other's download; {:.0?} in all, slowest round {:.1?}",
        failures.len(),
        started.elapsed(),
        slowest
    );
    p.down();
    assert!(failures.is_empty(), "{failures:#?}");
}

// ---------------------------------------------------------------------------------------------
// full-stack

/// The environment entries of `compose/rag-env.yaml` (`NAME=value`, or a secret's bare name).
fn rag_env() -> Vec<String> {
    let text = std::fs::read_to_string(root().join("compose/rag-env.yaml")).unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("      - "))
        .map(|l| l.trim_matches('"').to_string())
        .collect()
}

/// An application's compose file, as the README shows it: a service that extends the template
/// of `compose/rag-env.yaml` (named by its absolute path, so the file can live in a temp dir).
/// It runs the server image's own HTTP probe, so it needs no other image.
fn app_compose_file(dir: &Path, image: &str) -> PathBuf {
    let path = dir.join("app.yaml");
    let rag = root().join("compose/rag-env.yaml");
    std::fs::write(
        &path,
        format!(
            "services:\n  app:\n    extends: {{file: \"{}\", service: rag-env}}\n    \
             profiles: [full-stack]\n    image: \"{image}\"\n    command: [healthcheck]\n",
            rag.display()
        ),
    )
    .unwrap();
    path
}

/// `config` of the full-stack profile plus the application file: the app's environment.
fn app_environment(p: &Project, app: &Path) -> std::collections::BTreeMap<String, String> {
    let o = p.compose(&[
        "-f",
        app.to_str().unwrap(),
        "--profile",
        "full-stack",
        "config",
    ]);
    assert!(o.status.success(), "{:?}: {}", p.compose, text(&o));
    let config: Value = serde_yaml_ng::from_slice(&o.stdout).expect("config prints YAML");
    match &config["services"]["app"]["environment"] {
        Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), scalar(v))).collect(),
        Value::Array(a) => a
            .iter()
            .filter_map(|e| e.as_str()?.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        other => panic!("{:?}: app environment {other}", p.compose),
    }
}

/// Both Compose implementations give an application that extends `rag-env.yaml` the stack's
/// environment: the URLs and ids as generated, the embedding dimension from the user's
/// variables, and the Neo4j password from the environment of the command (never from a file).
#[test]
#[ignore = "needs docker-compose and Compose v2: run by cargo xtask ci"]
fn an_app_extending_rag_env_gets_the_stack_environment_in_v1_and_v2() {
    require_docker!();
    let tmp = tempfile::tempdir().unwrap();
    let app = app_compose_file(tmp.path(), "bitnet-server:test");
    for compose in [Compose::V1, Compose::V2] {
        let p = Project::with(
            compose,
            "app",
            &[
                ("NEO4J_PASSWORD", "not-a-real-secret"),
                ("EMBEDDING_DIMENSION", "640"),
            ],
        );
        let env = app_environment(&p, &app);
        eprintln!("{compose:?}: the app's environment: {env:?}");
        for entry in rag_env() {
            match entry.split_once('=') {
                Some((k, _)) if k == "EMBEDDING_DIMENSION" => {
                    assert_eq!(env.get(k).map(String::as_str), Some("640"), "{compose:?}")
                }
                Some((k, v)) if !v.contains("${") => {
                    assert_eq!(env.get(k).map(String::as_str), Some(v), "{compose:?}")
                }
                Some((k, _)) => assert!(env.contains_key(k), "{compose:?}: {k}"),
                None => {}
            }
        }
        assert_eq!(
            env["EMBEDDINGS_BASE_URL"], "http://server-embed:8080/v1",
            "{compose:?}"
        );
        assert_eq!(env["NEO4J_PASSWORD"], "not-a-real-secret", "{compose:?}");
        // Unset, the password stays unset: no file supplies one.
        let p = Project::with(compose, "app", &[]);
        let env = app_environment(&p, &app);
        assert!(
            env.get("NEO4J_PASSWORD")
                .is_none_or(|v| v.is_empty() || v == "null"),
            "{compose:?}: {env:?}"
        );
        assert_eq!(env["EMBEDDING_DIMENSION"], "1024", "{compose:?}");
    }
}

/// The full-stack profile: `config` validates; the chat server and the embedding server (an
/// embedding model from `gen-model --preset qwen3-embed-tiny`) turn healthy; and an application
/// container that extends `rag-env.yaml`, in the project's network, reaches both servers at the
/// base URLs its environment names. Neo4j itself is not started (`--no-deps`): its image cannot
/// be pulled here and the project builds none.
#[test]
#[ignore = "needs Docker, docker-compose and a tier image: run by cargo xtask ci"]
fn full_stack_config_validates_and_its_servers_run_without_neo4j() {
    require_docker!();
    let image = image();
    let models = models_dir();
    let embed = models.path().join("embed.gguf");
    let (o, _) = xtask(
        &[
            "gen-model",
            "--preset",
            "qwen3-embed-tiny",
            "--out",
            embed.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "gen-model failed:\n{}", text(&o));
    chmod(&embed, 0o644);
    let mut p = Project::new(
        "fs",
        &[
            ("BITNET_MODELS_DIR", models.path().to_str().unwrap()),
            ("BITNET_EMBED_MODELS_DIR", models.path().to_str().unwrap()),
            ("BITNET_EMBED_MODEL_FILE", "embed.gguf"),
            ("NEO4J_PASSWORD", "not-a-real-secret"),
        ],
    );
    let o = p.compose(&["--profile", "full-stack", "config"]);
    assert!(o.status.success(), "{}", text(&o));
    let config = String::from_utf8_lossy(&o.stdout);
    assert!(config.contains("condition: service_healthy"), "{config}");
    let neo4j = Command::new("docker")
        .args(["image", "inspect", "neo4j:5"])
        .output()
        .unwrap();
    if !neo4j.status.success() {
        eprintln!(
            "NOTE: the neo4j:5 image is not present and cannot be pulled here; only the servers \
             of the full-stack profile are brought up (--no-deps)"
        );
    }
    let o = p.compose(&[
        "--profile",
        "full-stack",
        "up",
        "-d",
        "--no-deps",
        "server-stack",
        "server-embed",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    p.wait_health("server-stack", "healthy", Duration::from_secs(120));
    p.wait_health("server-embed", "healthy", Duration::from_secs(120));
    p.chat();
    for service in ["server-stack", "server-embed"] {
        assert_hardened(&p, service);
    }

    // The embedding server on its own published port: ready, and a unit vector per input.
    let (status, health) = http(p.embed_port, "GET", "/health", None).expect("embed /health");
    assert_eq!(status, 200, "{health}");
    assert!(health.contains("ready"), "{health}");
    let request = serde_json::json!({
        "model": "microsoft/bitnet-embedding-0.6b",
        "input": ["graph databases store relationships", "hello"],
    });
    let (v, body) = post_json_ok(p.embed_port, "/v1/embeddings", &request);
    let vectors = v["data"].as_array().expect("data");
    assert_eq!(vectors.len(), 2, "{body}");
    for e in vectors {
        let x: Vec<f64> = e["embedding"]
            .as_array()
            .expect("embedding")
            .iter()
            .map(|f| f.as_f64().unwrap())
            .collect();
        let norm = x.iter().map(|f| f * f).sum::<f64>().sqrt();
        assert!(
            !x.is_empty() && (norm - 1.0).abs() < 1e-3,
            "norm {norm}: {body}"
        );
    }
    eprintln!(
        "full-stack: server-embed answered /v1/embeddings with {} vectors of {} dimensions",
        vectors.len(),
        vectors[0]["embedding"].as_array().unwrap().len()
    );

    // The chat server carries the application environment, as generated.
    let chat_env = p.inspect("server-stack", "{{range .Config.Env}}{{println .}}{{end}}");
    for entry in rag_env()
        .iter()
        .filter(|e| !e.contains("${") && e.contains('='))
    {
        assert!(
            chat_env.lines().any(|l| l == entry),
            "{entry} in\n{chat_env}"
        );
    }

    // An application container in the project's network reaches both servers at the base URLs
    // of its environment (the probe prints the body of GET <base>/models).
    let tmp = tempfile::tempdir().unwrap();
    let app = app_compose_file(tmp.path(), image);
    let env = app_environment(&p, &app);
    for (base, id) in [
        ("EMBEDDINGS_BASE_URL", "microsoft/bitnet-embedding-0.6b"),
        ("OPENAI_BASE_URL", "microsoft/bitnet-b1.58-2B-4T-gguf"),
    ] {
        let url = format!("{}/models", env[base]);
        let o = p.compose(&[
            "-f",
            app.to_str().unwrap(),
            "--profile",
            "full-stack",
            "run",
            "--rm",
            "-T",
            "--no-deps",
            "app",
            "healthcheck",
            "--timeout",
            "10",
            "--url",
            &url,
        ]);
        let out = text(&o);
        eprintln!("app container: GET {url} → {}", out.trim());
        assert!(o.status.success(), "{out}");
        assert!(out.contains(&format!("\"{id}\"")), "{id} in {out}");
    }
    p.down();
}

// ---------------------------------------------------------------------------------------------
// Bad input.

/// Compose v2 rejects an unknown profile ("no service selected", non-zero exit). docker-compose
/// 1.29 does not: `up` selects no service, creates only the network, and exits 0 — nothing a
/// compose file can change; the README lists the profiles and `config --profiles` prints them.
/// Show what each prints and that nothing runs.
#[test]
#[ignore = "needs Docker, docker-compose and a tier image: run by cargo xtask ci"]
fn unknown_profile_starts_nothing_and_compose_v2_says_so() {
    require_docker!();
    for compose in [Compose::V1, Compose::V2] {
        let mut p = Project::with(compose, "np", &[]);
        let up = p.compose(&["--profile", "no-such-profile", "up", "-d"]);
        eprintln!(
            "{compose:?}: --profile no-such-profile up -d → {}\n{}",
            up.status,
            text(&up)
        );
        if let Compose::V2 = compose {
            assert!(!up.status.success());
            assert!(text(&up).contains("no service selected"), "{}", text(&up));
        }
        let o = p.compose(&["--profile", "no-such-profile", "ps", "-q"]);
        assert!(
            String::from_utf8_lossy(&o.stdout).trim().is_empty(),
            "nothing was started"
        );
        let o = p.compose(&["config", "--profiles"]);
        assert_eq!(
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .collect::<Vec<_>>(),
            ["full-stack", "runtime-download", "volume-mount"],
            "{compose:?} lists the profiles"
        );
        p.down();
    }
}

/// Bring up volume-mount with `env`; /health must fail naming every one of `want`, the logs the
/// first, and the container must keep running (no restart loop).
fn failed_model_is_named(tag: &str, models: &Path, env: &[(&str, &str)], want: &[&str]) {
    let mut all = vec![("BITNET_MODELS_DIR", models.to_str().unwrap())];
    all.extend_from_slice(env);
    let p = Project::new(tag, &all);
    let o = p.compose(&["--profile", "volume-mount", "up", "-d"]);
    assert!(o.status.success(), "{}", text(&o));
    let body = p.wait_health_body(|b| b.contains("failed"), Duration::from_secs(60));
    eprintln!("/health ({tag}): {body}");
    assert!(want.iter().all(|w| body.contains(w)), "{want:?} in {body}");
    let logs = p.logs("server");
    assert!(logs.contains(want[0]), "{logs}");
    assert_eq!(
        p.inspect("server", "{{.RestartCount}}"),
        "0",
        "no crash loop"
    );
    assert_eq!(p.inspect("server", "{{.State.Status}}"), "running");
}

#[test]
#[ignore = "needs Docker, docker-compose and a tier image: run by cargo xtask ci"]
fn missing_model_file_and_unreadable_model_dir_are_named_by_health_and_logs() {
    require_docker!();
    image();
    // A file name that is not in the directory.
    let models = models_dir();
    failed_model_is_named(
        "mm",
        models.path(),
        &[("BITNET_MODEL_FILE", "missing.gguf")],
        &["/models/missing.gguf does not exist", "BITNET_MODEL"],
    );
    // A directory only its owner (not uid 65532) may enter.
    chmod(models.path(), 0o700);
    failed_model_is_named(
        "ur",
        models.path(),
        &[],
        &["permission denied", "65532", "readable"],
    );
}
