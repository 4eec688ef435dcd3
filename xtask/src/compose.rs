//! `cargo xtask compose`: writes `compose/compose.yaml` and `compose/.env.example` from data — the
//! image spec (`images/image.toml`: user, port, model volume, healthcheck), the tier profiles
//! (`profiles/*.toml`: the tag suffix that pins a tier), the server crate's version (the default
//! image tag) and a small table of the server's environment variables
//! ([`deploy::SERVER_ENV`](crate::deploy::SERVER_ENV), checked against `bitnet-server serve
//! --help` by `xtask/tests/compose.rs`); those inputs, the memory rule and the write/`--check`
//! logic are shared with `cargo xtask k8s` in `deploy.rs`. `--check` compares instead of writing
//! and fails, naming the refresh command, when the checked-in files are stale.
//!
//! Three profiles: `volume-mount` (a host directory read-only at /models), `runtime-download` (the
//! model downloaded at start into a named volume; a restart resumes a partial download) and
//! `full-stack` (two mounted-model servers, chat and embeddings, plus Neo4j 5). The environment
//! an application on the full-stack profile needs (base URLs, model ids, embedding dimension,
//! Neo4j URI and user; secrets by name only) is one table, [`rag_env`]: it is written into
//! `compose/rag-env.yaml`, a template service an application's own compose file takes with
//! `extends`, and documented in `.env.example`. The YAML is written by `yaml.rs`, not by a
//! serializer: every scalar that is not a plain safe identifier is double-quoted so YAML 1.1
//! readers (docker-compose v1) and YAML 1.2 readers (Compose v2) read the same values.
//!
//! This module does NOT run Docker, build images or read the server crate's code.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::deploy::{
    self, CTX, EMBED_DIM, EMBED_DIM_270M, EMBED_HF_FILE, EMBED_HF_REPO, HF_ENDPOINT, HF_FILE,
    HF_REPO, Inputs, MODEL_2B4T, MODEL_EMBED_0_6B, MODEL_FILE, PARALLEL, REVISION,
    SHUTDOWN_TIMEOUT_S, STOP_GRACE_S, download_start_period_s, memory_limit_mib,
};
use crate::images::profile::Profile;
use crate::images::spec::parse_duration;
use crate::yaml::{Y, flow, map, st, write_node};

/// Arguments of `cargo xtask compose`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Do not write: fail if the files in the output directory differ from what would be written.
    #[arg(long)]
    pub check: bool,
    /// Output directory (relative paths are relative to the workspace root).
    #[arg(long, default_value = "compose", value_name = "DIR")]
    pub out: PathBuf,
}

/// The command that refreshes the generated files.
pub const REFRESH: &str = "cargo xtask compose";

/// Default host port of the embedding server (the chat server's is 8080).
const EMBED_PUBLISH_PORT: u16 = 8081;

/// The services of the full-stack profile (their names are the host names inside the compose
/// network).
pub const CHAT_SERVICE: &str = "server-stack";
pub const EMBED_SERVICE: &str = "server-embed";
pub const NEO4J_SERVICE: &str = "neo4j";
/// Neo4j's Bolt port and the user `NEO4J_AUTH` creates.
const NEO4J_BOLT_PORT: u16 = 7687;
const NEO4J_USER: &str = "neo4j";

/// The file an application's compose file extends (`extends: {file: rag-env.yaml, service:
/// rag-env}`), and the template service in it.
pub const RAG_ENV_FILE: &str = "rag-env.yaml";
pub const RAG_ENV_SERVICE: &str = "rag-env";

/// One variable of the environment an application on the full-stack profile needs.
struct AppVar {
    name: &'static str,
    /// The value as written into the compose files (`${…}` when the user may override it);
    /// `None` for a secret, passed through by name only and never given a value in any file.
    value: Option<String>,
    help: &'static str,
}

/// The environment a RAG application on the full-stack profile needs: OpenAI-compatible base
/// URLs of the two servers, their model ids, the embedding width, and Neo4j's address, user and
/// password. The one list: `rag-env.yaml`, the chat server's environment (its non-secret part,
/// for applications sharing the stack's settings; the server reads none of it) and the
/// `.env.example` block are all written from it.
fn rag_env(inp: &Inputs, vars: &[Var]) -> Result<Vec<AppVar>> {
    let port = inp.port()?;
    let v = |name: &str| Some(interp(vars, name));
    Ok(vec![
        AppVar {
            name: "OPENAI_BASE_URL",
            value: Some(format!("http://{CHAT_SERVICE}:{port}/v1")),
            help: "OpenAI-compatible base URL of the chat server.",
        },
        AppVar {
            name: "CHAT_MODEL",
            value: v("BITNET_CHAT_MODEL_ID"),
            help: "Model id the chat server answers to (BITNET_CHAT_MODEL_ID).",
        },
        AppVar {
            name: "EMBEDDINGS_BASE_URL",
            value: Some(format!("http://{EMBED_SERVICE}:{port}/v1")),
            help: "OpenAI-compatible base URL of the embedding server.",
        },
        AppVar {
            name: "EMBEDDING_MODEL",
            value: v("BITNET_EMBED_MODEL_ID"),
            help: "Model id the embedding server answers to (BITNET_EMBED_MODEL_ID).",
        },
        AppVar {
            name: "EMBEDDING_DIMENSION",
            value: v("EMBEDDING_DIMENSION"),
            help: "Width of the vectors, e.g. for a Neo4j vector index.",
        },
        AppVar {
            name: "NEO4J_URI",
            value: Some(format!("bolt://{NEO4J_SERVICE}:{NEO4J_BOLT_PORT}")),
            help: "Bolt address of Neo4j.",
        },
        AppVar {
            name: "NEO4J_USERNAME",
            value: Some(NEO4J_USER.to_string()),
            help: "Neo4j user.",
        },
        AppVar {
            name: "NEO4J_PASSWORD",
            value: None,
            help: "Neo4j password (from the environment of `up`; never in a file).",
        },
        AppVar {
            name: "BITNET_API_KEY",
            value: None,
            help: "The servers' API key, if set (an OpenAI client's api_key).",
        },
    ])
}

/// `NAME=value`, or the bare name of a secret (its value comes from the environment at `up`).
fn env_entry(name: &str, value: Option<&str>) -> String {
    match value {
        Some(value) => format!("{name}={value}"),
        None => name.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Variables the user sets (compose interpolation), documented in .env.example.

struct Var {
    name: &'static str,
    /// `None`: passed through from the environment, never given a value in any file.
    default: Option<String>,
    help: Cow<'static, str>,
    profiles: &'static str,
}

/// Variables whose default applies only when unset, not when set empty.
const KEEP_EMPTY: &[&str] = &["BITNET_HF_REPO", "BITNET_HF_FILE"];

/// `${NAME:-default}` for a variable of the table.
fn interp(vars: &[Var], name: &str) -> String {
    let v = vars
        .iter()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("{name} is not in the variable table"));
    match &v.default {
        // Set but empty keeps these empty (the server then counts them as unset), so a URL
        // source can replace the hub default.
        Some(d) if KEEP_EMPTY.contains(&name) => format!("${{{name}-{d}}}"),
        Some(d) => format!("${{{name}:-{d}}}"),
        None => format!("${{{name}:-}}"),
    }
}

fn variables(inp: &Inputs) -> Vec<Var> {
    let mem = memory_limit_mib(&MODEL_2B4T, CTX, PARALLEL);
    let embed_mem = memory_limit_mib(&MODEL_EMBED_0_6B, CTX, PARALLEL);
    let s = |x: &str| Some(x.to_string());
    vec![
        Var {
            name: "BITNET_IMAGE",
            default: Some(inp.multi_arch_tag()),
            help: "Image; the default is the multi-arch tag (the best tier for this host after \
                   `cargo xtask build-images --load`). Pin a tier with one of the tags below."
                .into(),
            profiles: "all",
        },
        Var {
            name: "BITNET_PUBLISH_ADDR",
            default: s("127.0.0.1"),
            help: "Host address the API port is published on (0.0.0.0 for every interface).".into(),
            profiles: "all",
        },
        Var {
            name: "BITNET_PUBLISH_PORT",
            default: s("8080"),
            help: "Host port of the API.".into(),
            profiles: "all",
        },
        Var {
            name: "BITNET_MEM_LIMIT",
            default: Some(format!("{mem}m")),
            help: "Memory limit: model file + KV cache (2 x layers x KV heads x head dim x 2 \
                   bytes x context x parallel) + 512 MiB headroom, rounded up to 256 MiB. \
                   Default sized for the 2B-4T I2_S file (1.19 GB) at context 4096, parallel 4."
                .into(),
            profiles: "all",
        },
        Var {
            name: "BITNET_CPUS",
            default: s("2"),
            help: "CPU limit (the server uses as many threads as the limit allows).".into(),
            profiles: "all",
        },
        Var {
            name: "BITNET_CTX_SIZE",
            default: Some(CTX.to_string()),
            help: "Context length per sequence (raise BITNET_MEM_LIMIT with it).".into(),
            profiles: "all",
        },
        Var {
            name: "BITNET_PARALLEL",
            default: Some(PARALLEL.to_string()),
            help: "Requests generating at once (raise BITNET_MEM_LIMIT with it).".into(),
            profiles: "all",
        },
        Var {
            name: "BITNET_LOG_FORMAT",
            default: s("text"),
            help: "text, or json (one object per line) for log collectors.".into(),
            profiles: "all",
        },
        Var {
            name: "BITNET_HEALTH_INTERVAL",
            default: Some(inp.spec.config.healthcheck.interval.clone()),
            help: "How often Docker runs the healthcheck.".into(),
            profiles: "all",
        },
        Var {
            name: "BITNET_START_PERIOD",
            default: Some(inp.spec.config.healthcheck.start_period.clone()),
            help: "Healthcheck grace period after start (failures before it do not count).".into(),
            profiles: "volume-mount, full-stack",
        },
        Var {
            name: "BITNET_DOWNLOAD_START_PERIOD",
            default: Some(format!("{}s", download_start_period_s(&MODEL_2B4T))),
            help: "Healthcheck grace period of the download profile: long enough for the 1.19 GB \
                   2B-4T file at 1 MB/s. A failed download (e.g. a sha256 mismatch) shows as \
                   unhealthy only after it; /health and the logs name the problem at once."
                .into(),
            profiles: "runtime-download",
        },
        Var {
            name: "BITNET_API_KEY",
            default: None,
            help: "Require `Authorization: Bearer <key>` (passed through, never written here)."
                .into(),
            profiles: "all",
        },
        Var {
            name: "BITNET_MODELS_DIR",
            default: s("./models"),
            help: "Host directory with the model, mounted read-only at /models (readable by uid \
                   65532: `chmod -R a+rX`). Relative to compose/."
                .into(),
            profiles: "volume-mount, full-stack",
        },
        Var {
            name: "BITNET_MODEL_FILE",
            default: s(MODEL_FILE),
            help: "File name of the model inside BITNET_MODELS_DIR.".into(),
            profiles: "volume-mount, full-stack",
        },
        Var {
            name: "BITNET_CHAT_MODEL_ID",
            default: s(HF_REPO),
            help: "Model id the full-stack chat server answers to (CHAT_MODEL in rag-env.yaml)."
                .into(),
            profiles: "full-stack",
        },
        Var {
            name: "BITNET_EMBED_MODELS_DIR",
            default: s("./models"),
            help: "Host directory with the embedding model, mounted read-only at /models of the \
                   embedding server (readable by uid 65532). Relative to compose/."
                .into(),
            profiles: "full-stack",
        },
        Var {
            name: "BITNET_EMBED_MODEL_FILE",
            default: s(EMBED_HF_FILE),
            help: format!(
                "File name of the embedding model inside BITNET_EMBED_MODELS_DIR; the default \
                 is the published file of the Hugging Face repo {EMBED_HF_REPO}. The server \
                 serves embeddings because the file is an embedding model; no flag says so."
            )
            .into(),
            profiles: "full-stack",
        },
        Var {
            name: "BITNET_EMBED_MODEL_ID",
            default: s(EMBED_HF_REPO),
            help: "Model id the embedding server answers to (EMBEDDING_MODEL in rag-env.yaml)."
                .into(),
            profiles: "full-stack",
        },
        Var {
            name: "BITNET_EMBED_PUBLISH_PORT",
            default: Some(EMBED_PUBLISH_PORT.to_string()),
            help: "Host port of the embedding server's API (on BITNET_PUBLISH_ADDR).".into(),
            profiles: "full-stack",
        },
        Var {
            name: "BITNET_EMBED_MEM_LIMIT",
            default: Some(format!("{embed_mem}m")),
            help: "Memory limit of the embedding server, by the rule of BITNET_MEM_LIMIT with \
                   BITNET_EMBED_CTX_SIZE and BITNET_PARALLEL. Default sized for the 0.6b \
                   embedding model (28 layers, 8 KV heads, head dim 128; file about 0.7 GB, an \
                   estimate) at context 4096, parallel 4."
                .into(),
            profiles: "full-stack",
        },
        Var {
            name: "BITNET_EMBED_CTX_SIZE",
            default: Some(CTX.to_string()),
            help: "Longest input of the embedding server, in tokens (at most the model's trained \
                   context: 2048 for the 270m model; raise BITNET_EMBED_MEM_LIMIT with it)."
                .into(),
            profiles: "full-stack",
        },
        Var {
            name: "EMBEDDING_DIMENSION",
            default: Some(EMBED_DIM.to_string()),
            help: format!(
                "Width of the embedding vectors, for applications (EMBEDDING_DIMENSION in \
                 rag-env.yaml): {EMBED_DIM} for the 0.6b model, {EMBED_DIM_270M} for the 270m \
                 one. The servers do not read it; it must match the mounted model."
            )
            .into(),
            profiles: "full-stack",
        },
        Var {
            name: "BITNET_HF_REPO",
            default: s(HF_REPO),
            help: "Hugging Face repo to download from (set it empty to use BITNET_MODEL_URL)."
                .into(),
            profiles: "runtime-download",
        },
        Var {
            name: "BITNET_HF_FILE",
            default: s(HF_FILE),
            help: "File inside the repo.".into(),
            profiles: "runtime-download",
        },
        Var {
            name: "BITNET_REVISION",
            default: s(REVISION),
            help: "Branch, tag or commit of the repo (a commit hash makes restarts offline-safe)."
                .into(),
            profiles: "runtime-download",
        },
        Var {
            name: "BITNET_SHA256",
            default: s(""),
            help: "Expected sha256 of the file (default: the digest the hub publishes).".into(),
            profiles: "runtime-download",
        },
        Var {
            name: "BITNET_MODEL_URL",
            default: s(""),
            help: "Download from this URL instead of the hub (with BITNET_HF_REPO= and \
                   BITNET_HF_FILE= empty)."
                .into(),
            profiles: "runtime-download",
        },
        Var {
            name: "HF_ENDPOINT",
            default: s(HF_ENDPOINT),
            help: "Hub endpoint (a mirror).".into(),
            profiles: "runtime-download",
        },
        Var {
            name: "HF_TOKEN",
            default: None,
            help: "Token for gated/private repos: set it in the shell or your own .env (passed \
                   through, never written into a generated file)."
                .into(),
            profiles: "runtime-download",
        },
        Var {
            name: "NEO4J_IMAGE",
            default: s("neo4j:5"),
            help: "Neo4j 5 image (must be pullable or already loaded).".into(),
            profiles: "full-stack",
        },
        Var {
            name: "NEO4J_PASSWORD",
            default: None,
            help: "Password of the neo4j user (at least 8 characters; Neo4j refuses to start \
                   without one)."
                .into(),
            profiles: "full-stack",
        },
        Var {
            name: "NEO4J_MEM_LIMIT",
            default: s("2g"),
            help: "Neo4j memory limit (heap 1G + page cache 512M + headroom).".into(),
            profiles: "full-stack",
        },
    ]
}

// ---------------------------------------------------------------------------------------------
// The compose file.

const PROFILES: [&str; 3] = ["volume-mount", "runtime-download", "full-stack"];

/// How a server service gets its model.
enum Source {
    /// From a host directory: the variables naming the directory and the file in it.
    Mounted {
        dir: &'static str,
        file: &'static str,
    },
    Downloaded,
}

const MOUNTED: Source = Source::Mounted {
    dir: "BITNET_MODELS_DIR",
    file: "BITNET_MODEL_FILE",
};

/// One bitnet-server service: where its model comes from and which variables size and name it.
struct Server {
    profile: &'static str,
    source: Source,
    mem_limit: &'static str,
    ctx_size: &'static str,
    publish_port: &'static str,
    /// The variable whose value the server reports as its model id (`BITNET_MODEL_ID`), if any.
    model_id: Option<&'static str>,
    /// Set the non-secret part of [`rag_env`] (the full-stack chat server, see there).
    app_env: bool,
    /// A service that must be healthy first.
    depends_on: Option<&'static str>,
}

fn server_service(inp: &Inputs, vars: &[Var], s: Server) -> Result<Y> {
    let cfg = &inp.spec.config;
    let port = inp.port()?;
    let mount = inp.model_mount()?;
    let v = |name: &str| interp(vars, name);

    let mut env = vec![
        "BITNET_HOST=0.0.0.0".to_string(),
        format!("BITNET_PORT={port}"),
        format!("BITNET_SHUTDOWN_TIMEOUT={SHUTDOWN_TIMEOUT_S}"),
        format!("BITNET_CTX_SIZE={}", v(s.ctx_size)),
        format!("BITNET_PARALLEL={}", v("BITNET_PARALLEL")),
        format!("BITNET_LOG_FORMAT={}", v("BITNET_LOG_FORMAT")),
    ];
    let mut volumes = Vec::new();
    let mut start_period = v("BITNET_START_PERIOD");
    match s.source {
        Source::Mounted { dir, file } => {
            env.push(format!("BITNET_MODEL={mount}/{}", v(file)));
            volumes.push(format!("{}:{mount}:ro", v(dir)));
        }
        Source::Downloaded => {
            for name in [
                "BITNET_HF_REPO",
                "BITNET_HF_FILE",
                "BITNET_REVISION",
                "BITNET_SHA256",
                "BITNET_MODEL_URL",
                "HF_ENDPOINT",
            ] {
                env.push(format!("{name}={}", v(name)));
            }
            // The image's model directory is owned by the server's uid, so a new named volume
            // mounted there starts with that owner and the download cache is writable.
            env.push(format!("BITNET_MODEL_DIR={mount}"));
            volumes.push(format!("model-cache:{mount}"));
            start_period = v("BITNET_DOWNLOAD_START_PERIOD");
        }
    }
    if let Some(id) = s.model_id {
        env.push(format!("BITNET_MODEL_ID={}", v(id)));
    }
    // Secrets: the name only, so the value comes from the environment at `up` time.
    env.push("BITNET_API_KEY".into());
    if matches!(s.source, Source::Downloaded) {
        env.push("HF_TOKEN".into());
    }
    let mut app_names = Vec::new();
    if s.app_env {
        for a in rag_env(inp, vars)? {
            if let Some(value) = &a.value {
                env.push(env_entry(a.name, Some(value)));
                app_names.push(a.name);
            }
        }
    }
    deploy::check_server_env(
        env.iter().map(|e| e.split('=').next().unwrap_or_default()),
        &app_names,
    )?;

    let hc = &cfg.healthcheck;
    let mut entries: Vec<(&str, Y)> = vec![
        ("profiles", flow(&[s.profile])),
        ("image", st(v("BITNET_IMAGE"))),
        // No --model in the command: every setting comes from the environment below.
        ("command", flow(&["serve"])),
        ("user", st(cfg.user.clone())),
        ("read_only", Y::Bool(true)),
        ("tmpfs", flow(&["/tmp"])),
        ("cap_drop", flow(&["ALL"])),
        ("security_opt", flow(&["no-new-privileges:true"])),
        ("init", Y::Bool(true)),
        ("restart", st("unless-stopped")),
        ("stop_grace_period", st(format!("{STOP_GRACE_S}s"))),
        ("mem_limit", st(v(s.mem_limit))),
        ("cpus", st(v("BITNET_CPUS"))),
        (
            "environment",
            Y::List(env.into_iter().map(Y::Str).collect()),
        ),
        (
            "ports",
            Y::List(vec![st(format!(
                "{}:{}:{port}",
                v("BITNET_PUBLISH_ADDR"),
                v(s.publish_port)
            ))]),
        ),
        (
            "volumes",
            Y::List(volumes.into_iter().map(Y::Str).collect()),
        ),
    ];
    if matches!(s.source, Source::Downloaded) {
        // A hub or mirror on the Docker host (Docker 20.10+).
        entries.push((
            "extra_hosts",
            Y::List(vec![st("host.docker.internal:host-gateway")]),
        ));
    }
    if let Some(dep) = s.depends_on {
        entries.push((
            "depends_on",
            map(vec![(dep, map(vec![("condition", st("service_healthy"))]))]),
        ));
    }
    entries.push((
        "healthcheck",
        map(vec![
            ("test", flow(&hc.test)),
            ("interval", st(v("BITNET_HEALTH_INTERVAL"))),
            ("timeout", st(hc.timeout.clone())),
            ("start_period", st(start_period)),
            ("retries", Y::Int(hc.retries.into())),
        ]),
    ));
    Ok(map(entries))
}

fn neo4j_service(vars: &[Var]) -> Y {
    let v = |name: &str| interp(vars, name);
    map(vec![
        ("profiles", flow(&["full-stack"])),
        ("image", st(v("NEO4J_IMAGE"))),
        // Neo4j's entrypoint runs as a non-root user when given one; it writes its config, so
        // the root file system stays writable.
        ("user", st("7474:7474")),
        ("cap_drop", flow(&["ALL"])),
        ("security_opt", flow(&["no-new-privileges:true"])),
        ("init", Y::Bool(true)),
        ("restart", st("unless-stopped")),
        ("stop_grace_period", st("60s")),
        ("mem_limit", st(v("NEO4J_MEM_LIMIT"))),
        ("cpus", st(v("BITNET_CPUS"))),
        (
            "environment",
            Y::List(vec![
                st(format!("NEO4J_AUTH={NEO4J_USER}/{}", v("NEO4J_PASSWORD"))),
                st("NEO4J_server_memory_heap_max__size=1G"),
                st("NEO4J_server_memory_pagecache_size=512M"),
            ]),
        ),
        ("volumes", Y::List(vec![st("neo4j-data:/data")])),
        (
            "healthcheck",
            map(vec![
                (
                    "test",
                    flow(&[
                        "CMD-SHELL",
                        "wget -q --spider http://localhost:7474 || exit 1",
                    ]),
                ),
                ("interval", st("10s")),
                ("timeout", st("5s")),
                ("start_period", st("60s")),
                ("retries", Y::Int(10)),
            ]),
        ),
    ])
}

fn compose_yaml(inp: &Inputs, vars: &[Var]) -> Result<String> {
    parse_duration(&inp.spec.config.healthcheck.start_period)?;
    let chat = |profile, source| Server {
        profile,
        source,
        mem_limit: "BITNET_MEM_LIMIT",
        ctx_size: "BITNET_CTX_SIZE",
        publish_port: "BITNET_PUBLISH_PORT",
        model_id: None,
        app_env: false,
        depends_on: None,
    };
    let mut services = match map(vec![
        (
            "server",
            server_service(inp, vars, chat("volume-mount", MOUNTED))?,
        ),
        (
            "server-download",
            server_service(inp, vars, chat("runtime-download", Source::Downloaded))?,
        ),
        (
            CHAT_SERVICE,
            server_service(
                inp,
                vars,
                Server {
                    model_id: Some("BITNET_CHAT_MODEL_ID"),
                    app_env: true,
                    depends_on: Some(NEO4J_SERVICE),
                    ..chat("full-stack", MOUNTED)
                },
            )?,
        ),
        (
            EMBED_SERVICE,
            server_service(
                inp,
                vars,
                Server {
                    profile: "full-stack",
                    source: Source::Mounted {
                        dir: "BITNET_EMBED_MODELS_DIR",
                        file: "BITNET_EMBED_MODEL_FILE",
                    },
                    mem_limit: "BITNET_EMBED_MEM_LIMIT",
                    ctx_size: "BITNET_EMBED_CTX_SIZE",
                    publish_port: "BITNET_EMBED_PUBLISH_PORT",
                    model_id: Some("BITNET_EMBED_MODEL_ID"),
                    app_env: false,
                    depends_on: None,
                },
            )?,
        ),
        (NEO4J_SERVICE, neo4j_service(vars)),
    ]) {
        Y::Map(e) => e,
        _ => unreachable!(),
    };
    services[0].2 =
        Some("Profile volume-mount: the model from a host directory, read-only.".into());
    services[1].2 = Some(
        "Profile runtime-download: the model downloaded at start into the model-cache volume\n\
         (Range-resumed after a restart, sha256-verified before use)."
            .into(),
    );
    services[2].2 = Some(format!(
        "Profile full-stack: the chat server (mounted model), the embedding server and Neo4j 5.\n\
         The chat server starts once Neo4j is healthy; applications take their environment from\n\
         {RAG_ENV_FILE} (extends)."
    ));
    services[3].2 = Some(
        "The embedding server: the same image, an embedding model mounted; depends on nothing."
            .into(),
    );
    let doc = Y::Map(vec![
        ("services".into(), Y::Map(services), None),
        (
            "volumes".into(),
            map(vec![
                ("model-cache", map(vec![])),
                ("neo4j-data", map(vec![])),
            ]),
            None,
        ),
    ]);
    let mut out = header("#");
    out.push_str(&format!(
        "# Profiles: {}. Variables and defaults: .env.example.\n\
         # Every service runs as {} with a read-only root, no capabilities and no-new-privileges;\n\
         # stop_grace_period ({STOP_GRACE_S}s) exceeds BITNET_SHUTDOWN_TIMEOUT ({SHUTDOWN_TIMEOUT_S}s) \
         so SIGTERM drains.\n\n",
        PROFILES.join(", "),
        inp.spec.config.user
    ));
    write_node(&mut out, &doc, 0);
    Ok(out)
}

fn header(c: &str) -> String {
    deploy::header(c, REFRESH, "compose.rs")
}

fn env_example(inp: &Inputs, vars: &[Var], app: &[AppVar]) -> String {
    let mut out = header("#");
    out.push_str(
        "# Copy to compose/.env (or export the variables) and uncomment what you change.\n\
         # Values shown are the defaults in compose.yaml.\n",
    );
    for v in vars {
        out.push('\n');
        for line in deploy::wrap(&v.help, 96) {
            let _ = writeln!(out, "# {line}");
        }
        let _ = writeln!(out, "# ({})", v.profiles);
        if v.name == "BITNET_IMAGE" {
            let mut tiers: Vec<&Profile> = inp.profiles.iter().collect();
            tiers.sort_by(|a, b| a.name.cmp(&b.name));
            for p in tiers {
                let _ = writeln!(out, "#   {}   ({})", inp.tier_tag(p), p.name);
            }
        }
        match &v.default {
            Some(d) => {
                let _ = writeln!(out, "#{}={d}", v.name);
            }
            None => {
                let _ = writeln!(out, "#{}=", v.name);
            }
        }
    }
    let _ = write!(
        out,
        "\n# -------------------------------------------------------------------------------------\n\
         # Not variables to set: the environment an application on the full-stack profile gets\n\
         # from {RAG_ENV_FILE}, written from the variables above (secrets by name only):\n"
    );
    for a in app {
        let _ = writeln!(out, "#   {}", env_entry(a.name, a.value.as_deref()));
    }
    out.push_str("# The application's own compose file takes it with `extends`:\n");
    out.push_str(&app_example("#"));
    out
}

/// How an application's compose file takes the environment (`.env.example` and `rag-env.yaml`
/// show it).
fn app_example(c: &str) -> String {
    format!(
        "{c}   services:\n\
         {c}     app:\n\
         {c}       extends: {{file: {RAG_ENV_FILE}, service: {RAG_ENV_SERVICE}}}\n\
         {c}       profiles: [full-stack]\n\
         {c}       image: my-rag-app\n\
         {c} saved as compose/app.yaml (the path in `file:` is relative to it), then:\n\
         {c}   NEO4J_PASSWORD=... docker-compose -f compose.yaml -f app.yaml --profile full-stack up -d\n"
    )
}

/// `rag-env.yaml`: the template service an application extends.
fn rag_env_yaml(inp: &Inputs, vars: &[Var]) -> Result<String> {
    let app = rag_env(inp, vars)?;
    let mut out = header("#");
    out.push_str(
        "# The environment an application on the full-stack profile needs. Not a project of its\n\
         # own (do not pass it with -f): an application's compose file takes it with `extends`:\n",
    );
    out.push_str(&app_example("#"));
    out.push_str(
        "# Secrets are names only: their values come from the environment of `up`. Variables and\n\
         # defaults: .env.example.\n#\n",
    );
    let width = app.iter().map(|a| a.name.len()).max().unwrap_or(0);
    for a in &app {
        let _ = writeln!(out, "# {:width$}  {}", a.name, a.help);
    }
    out.push('\n');
    let env = app
        .iter()
        .map(|a| Y::Str(env_entry(a.name, a.value.as_deref())))
        .collect();
    let doc = map(vec![(
        "services",
        map(vec![(
            RAG_ENV_SERVICE,
            map(vec![("environment", Y::List(env))]),
        )]),
    )]);
    write_node(&mut out, &doc, 0);
    Ok(out)
}

/// The generated files: (name, contents).
fn generate(root: &Path) -> Result<Vec<(String, String)>> {
    let inp = Inputs::read(root)?;
    let vars = variables(&inp);
    let app = rag_env(&inp, &vars)?;
    Ok(vec![
        ("compose.yaml".into(), compose_yaml(&inp, &vars)?),
        (RAG_ENV_FILE.into(), rag_env_yaml(&inp, &vars)?),
        (".env.example".into(), env_example(&inp, &vars, &app)),
    ])
}

pub fn run(args: &Args) -> Result<()> {
    let out = deploy::workspace_path(&args.out);
    let files = generate(&crate::workspace_root())?;
    deploy::write_or_check(&out, &files, args.check, REFRESH, None)?;
    if !args.check {
        println!(
            "next: cd {} && docker-compose --profile volume-mount up -d   (or runtime-download, \
             full-stack; see README \"Deploy with Compose\")",
            out.display()
        );
    }
    Ok(())
}

/// The compose command `build-images` prints at its end (once the images are loaded).
pub fn next_step_hint(loaded: bool) -> String {
    let up = "cd compose && BITNET_MODELS_DIR=/path/to/models docker-compose --profile \
              volume-mount up -d   (or runtime-download, full-stack: README \"Deploy with Compose\")";
    if loaded {
        format!("next: {up}")
    } else {
        format!("next: add --load to put the images into Docker, then {up}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_secret_free() {
        let root = crate::workspace_root();
        let a = generate(&root).unwrap();
        let b = generate(&root).unwrap();
        assert_eq!(a, b);
        let yaml = &a[0].1;
        assert!(yaml.contains("      - HF_TOKEN\n"), "{yaml}");
        assert!(!yaml.contains("HF_TOKEN="), "{yaml}");
        assert!(yaml.contains("user: \"65532:65532\""), "{yaml}");
        assert!(
            yaml.contains("test: [CMD, \"/usr/local/bin/bitnet-server\", healthcheck]"),
            "{yaml}"
        );
    }

    /// The lines of service `name` in the generated compose file (up to the next service).
    fn service(yaml: &str, name: &str) -> String {
        let head = format!("  {name}:");
        let mut lines = yaml.lines().skip_while(|l| *l != head);
        let first = lines
            .next()
            .unwrap_or_else(|| panic!("no service {name}:\n{yaml}"));
        let body = lines.take_while(|l| l.starts_with("   "));
        std::iter::once(first)
            .chain(body)
            .map(|l| format!("{l}\n"))
            .collect()
    }

    #[test]
    fn full_stack_runs_a_chat_and_an_embedding_server_beside_neo4j() {
        let root = crate::workspace_root();
        let files = generate(&root).unwrap();
        let yaml = &files[0].1;
        let embed = &service(yaml, EMBED_SERVICE);
        let chat = &service(yaml, CHAT_SERVICE);
        assert!(embed.contains("profiles: [full-stack]"), "{embed}");
        // Its own model directory and file (the published file by default), port and id.
        assert!(
            embed.contains(
                "\"BITNET_MODEL=/models/${BITNET_EMBED_MODEL_FILE:-bitnet-embeddings-0.6b-bf16-i2_s.gguf}\""
            ),
            "{embed}"
        );
        assert!(
            embed.contains("\"${BITNET_EMBED_MODELS_DIR:-./models}:/models:ro\""),
            "{embed}"
        );
        assert!(
            embed.contains(":${BITNET_EMBED_PUBLISH_PORT:-8081}:8080\""),
            "{embed}"
        );
        assert!(
            embed.contains(
                "\"BITNET_MODEL_ID=${BITNET_EMBED_MODEL_ID:-microsoft/bitnet-embedding-0.6b}\""
            ),
            "{embed}"
        );
        // Its own context (the 270m model is trained for 2048 tokens, the chat model for 4096).
        assert!(
            embed.contains("\"BITNET_CTX_SIZE=${BITNET_EMBED_CTX_SIZE:-4096}\""),
            "{embed}"
        );
        // Memory by the same rule, for the 0.6b shape: 3072 MiB at context 4096 × 4.
        let mib = memory_limit_mib(&MODEL_EMBED_0_6B, CTX, PARALLEL);
        assert_eq!(mib, 3072);
        assert!(
            embed.contains(&format!(
                "mem_limit: \"${{BITNET_EMBED_MEM_LIMIT:-{mib}m}}\""
            )),
            "{embed}"
        );
        // Depends on nothing but its model; healthchecked like every server.
        assert!(!embed.contains("depends_on"), "{embed}");
        assert!(
            embed.contains("test: [CMD, \"/usr/local/bin/bitnet-server\", healthcheck]"),
            "{embed}"
        );
        // The chat server as before: its model, after Neo4j.
        assert!(
            chat.contains("\"BITNET_MODEL=/models/${BITNET_MODEL_FILE:-model.gguf}\""),
            "{chat}"
        );
        assert!(chat.contains("depends_on:\n      neo4j:"), "{chat}");
        assert!(
            chat.contains(":${BITNET_PUBLISH_PORT:-8080}:8080\""),
            "{chat}"
        );
    }

    #[test]
    fn the_app_environment_names_the_services_and_never_a_password() {
        let root = crate::workspace_root();
        let files = generate(&root).unwrap();
        let get = |name: &str| &files.iter().find(|(n, _)| n == name).unwrap().1;
        let (yaml, rag, example) = (get("compose.yaml"), get(RAG_ENV_FILE), get(".env.example"));
        let entries: Vec<&str> = rag
            .lines()
            .filter_map(|l| l.strip_prefix("      - "))
            .map(|l| l.trim_matches('"'))
            .collect();
        assert_eq!(
            entries,
            [
                "OPENAI_BASE_URL=http://server-stack:8080/v1",
                "CHAT_MODEL=${BITNET_CHAT_MODEL_ID:-microsoft/bitnet-b1.58-2B-4T-gguf}",
                "EMBEDDINGS_BASE_URL=http://server-embed:8080/v1",
                "EMBEDDING_MODEL=${BITNET_EMBED_MODEL_ID:-microsoft/bitnet-embedding-0.6b}",
                "EMBEDDING_DIMENSION=${EMBEDDING_DIMENSION:-1024}",
                "NEO4J_URI=bolt://neo4j:7687",
                "NEO4J_USERNAME=neo4j",
                "NEO4J_PASSWORD",
                "BITNET_API_KEY",
            ],
            "{rag}"
        );
        assert!(rag.contains("  rag-env:\n    environment:\n"), "{rag}");
        // The host names in the URLs are services of the compose file.
        for host in [CHAT_SERVICE, EMBED_SERVICE, NEO4J_SERVICE] {
            assert!(yaml.contains(&format!("\n  {host}:\n")), "{host}");
        }
        // The chat server carries the same non-secret entries (as it carried NEO4J_URI before).
        let chat = service(yaml, CHAT_SERVICE);
        for e in entries.iter().filter(|e| e.contains('=')) {
            assert!(chat.contains(&format!("- \"{e}\"")), "{e} in\n{chat}");
        }
        // The embedding server gets none of them.
        let embed = service(yaml, EMBED_SERVICE);
        assert!(
            !embed.contains("NEO4J") && !embed.contains("BASE_URL"),
            "{embed}"
        );
        // .env.example documents every entry and every new variable with its default.
        for e in &entries {
            assert!(example.contains(&format!("#   {e}\n")), "{e}");
        }
        for v in [
            "#BITNET_EMBED_MODELS_DIR=./models",
            "#BITNET_EMBED_MODEL_FILE=bitnet-embeddings-0.6b-bf16-i2_s.gguf",
            "#BITNET_EMBED_PUBLISH_PORT=8081",
            "#BITNET_EMBED_MEM_LIMIT=3072m",
            "#BITNET_EMBED_CTX_SIZE=4096",
            "#EMBEDDING_DIMENSION=1024",
        ] {
            assert!(example.contains(&format!("{v}\n")), "{v}");
        }
        // The password is never given a value: only `${NEO4J_PASSWORD:-}` (empty while unset, so
        // profiles without Neo4j need none), the bare name, or the empty example line.
        for (name, text) in &files {
            let mut rest = text.as_str();
            while let Some(i) = rest.find("NEO4J_PASSWORD") {
                let after = &rest[i + "NEO4J_PASSWORD".len()..];
                let ok = after.starts_with(":-}")
                    || after.starts_with("=\n")
                    || after.starts_with('\n')
                    || after.starts_with(' ')
                    || after.starts_with(')')
                    || after.starts_with("=...");
                assert!(
                    ok,
                    "{name}: NEO4J_PASSWORD{}",
                    &after[..after.len().min(20)]
                );
                rest = after;
            }
        }
    }
}
