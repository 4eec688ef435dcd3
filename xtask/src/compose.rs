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
//! `full-stack` (the mounted model plus Neo4j 5). The YAML is written by `yaml.rs`, not by a
//! serializer: every scalar that is not a plain safe identifier is double-quoted so YAML 1.1
//! readers (docker-compose v1) and YAML 1.2 readers (Compose v2) read the same values.
//!
//! This module does NOT run Docker, build images or read the server crate's code.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::deploy::{
    self, CTX, HF_ENDPOINT, HF_FILE, HF_REPO, Inputs, MODEL_2B4T, MODEL_FILE, PARALLEL, REVISION,
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

/// Variables set on the full-stack server for applications sharing its environment; the server
/// itself has no Neo4j client and does not read them.
pub const STACK_ENV: &[&str] = &["NEO4J_URI", "NEO4J_USERNAME"];

// ---------------------------------------------------------------------------------------------
// Variables the user sets (compose interpolation), documented in .env.example.

struct Var {
    name: &'static str,
    /// `None`: passed through from the environment, never given a value in any file.
    default: Option<String>,
    help: &'static str,
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
    let s = |x: &str| Some(x.to_string());
    vec![
        Var {
            name: "BITNET_IMAGE",
            default: Some(inp.multi_arch_tag()),
            help: "Image; the default is the multi-arch tag (the best tier for this host after \
                   `cargo xtask build-images --load`). Pin a tier with one of the tags below.",
            profiles: "all",
        },
        Var {
            name: "BITNET_PUBLISH_ADDR",
            default: s("127.0.0.1"),
            help: "Host address the API port is published on (0.0.0.0 for every interface).",
            profiles: "all",
        },
        Var {
            name: "BITNET_PUBLISH_PORT",
            default: s("8080"),
            help: "Host port of the API.",
            profiles: "all",
        },
        Var {
            name: "BITNET_MEM_LIMIT",
            default: Some(format!("{mem}m")),
            help: "Memory limit: model file + KV cache (2 x layers x KV heads x head dim x 2 \
                   bytes x context x parallel) + 512 MiB headroom, rounded up to 256 MiB. \
                   Default sized for the 2B-4T I2_S file (1.19 GB) at context 4096, parallel 4.",
            profiles: "all",
        },
        Var {
            name: "BITNET_CPUS",
            default: s("2"),
            help: "CPU limit (the server uses as many threads as the limit allows).",
            profiles: "all",
        },
        Var {
            name: "BITNET_CTX_SIZE",
            default: Some(CTX.to_string()),
            help: "Context length per sequence (raise BITNET_MEM_LIMIT with it).",
            profiles: "all",
        },
        Var {
            name: "BITNET_PARALLEL",
            default: Some(PARALLEL.to_string()),
            help: "Requests generating at once (raise BITNET_MEM_LIMIT with it).",
            profiles: "all",
        },
        Var {
            name: "BITNET_LOG_FORMAT",
            default: s("text"),
            help: "text, or json (one object per line) for log collectors.",
            profiles: "all",
        },
        Var {
            name: "BITNET_HEALTH_INTERVAL",
            default: Some(inp.spec.config.healthcheck.interval.clone()),
            help: "How often Docker runs the healthcheck.",
            profiles: "all",
        },
        Var {
            name: "BITNET_START_PERIOD",
            default: Some(inp.spec.config.healthcheck.start_period.clone()),
            help: "Healthcheck grace period after start (failures before it do not count).",
            profiles: "volume-mount, full-stack",
        },
        Var {
            name: "BITNET_DOWNLOAD_START_PERIOD",
            default: Some(format!("{}s", download_start_period_s(&MODEL_2B4T))),
            help: "Healthcheck grace period of the download profile: long enough for the 1.19 GB \
                   2B-4T file at 1 MB/s. A failed download (e.g. a sha256 mismatch) shows as \
                   unhealthy only after it; /health and the logs name the problem at once.",
            profiles: "runtime-download",
        },
        Var {
            name: "BITNET_API_KEY",
            default: None,
            help: "Require `Authorization: Bearer <key>` (passed through, never written here).",
            profiles: "all",
        },
        Var {
            name: "BITNET_MODELS_DIR",
            default: s("./models"),
            help: "Host directory with the model, mounted read-only at /models (readable by uid \
                   65532: `chmod -R a+rX`). Relative to compose/.",
            profiles: "volume-mount, full-stack",
        },
        Var {
            name: "BITNET_MODEL_FILE",
            default: s(MODEL_FILE),
            help: "File name of the model inside BITNET_MODELS_DIR.",
            profiles: "volume-mount, full-stack",
        },
        Var {
            name: "BITNET_HF_REPO",
            default: s(HF_REPO),
            help: "Hugging Face repo to download from (set it empty to use BITNET_MODEL_URL).",
            profiles: "runtime-download",
        },
        Var {
            name: "BITNET_HF_FILE",
            default: s(HF_FILE),
            help: "File inside the repo.",
            profiles: "runtime-download",
        },
        Var {
            name: "BITNET_REVISION",
            default: s(REVISION),
            help: "Branch, tag or commit of the repo (a commit hash makes restarts offline-safe).",
            profiles: "runtime-download",
        },
        Var {
            name: "BITNET_SHA256",
            default: s(""),
            help: "Expected sha256 of the file (default: the digest the hub publishes).",
            profiles: "runtime-download",
        },
        Var {
            name: "BITNET_MODEL_URL",
            default: s(""),
            help: "Download from this URL instead of the hub (with BITNET_HF_REPO= and \
                   BITNET_HF_FILE= empty).",
            profiles: "runtime-download",
        },
        Var {
            name: "HF_ENDPOINT",
            default: s(HF_ENDPOINT),
            help: "Hub endpoint (a mirror).",
            profiles: "runtime-download",
        },
        Var {
            name: "HF_TOKEN",
            default: None,
            help: "Token for gated/private repos: set it in the shell or your own .env (passed \
                   through, never written into a generated file).",
            profiles: "runtime-download",
        },
        Var {
            name: "NEO4J_IMAGE",
            default: s("neo4j:5"),
            help: "Neo4j 5 image (must be pullable or already loaded).",
            profiles: "full-stack",
        },
        Var {
            name: "NEO4J_PASSWORD",
            default: s(""),
            help: "Password of the neo4j user (at least 8 characters; Neo4j refuses to start \
                   without one).",
            profiles: "full-stack",
        },
        Var {
            name: "NEO4J_MEM_LIMIT",
            default: s("2g"),
            help: "Neo4j memory limit (heap 1G + page cache 512M + headroom).",
            profiles: "full-stack",
        },
    ]
}

// ---------------------------------------------------------------------------------------------
// The compose file.

const PROFILES: [&str; 3] = ["volume-mount", "runtime-download", "full-stack"];

/// How a server service gets its model.
enum Source {
    Mounted,
    Downloaded,
}

fn server_service(inp: &Inputs, vars: &[Var], profile: &str, source: Source) -> Result<Y> {
    let cfg = &inp.spec.config;
    let port = inp.port()?;
    let mount = inp.model_mount()?;
    let v = |name: &str| interp(vars, name);

    let mut env = vec![
        "BITNET_HOST=0.0.0.0".to_string(),
        format!("BITNET_PORT={port}"),
        format!("BITNET_SHUTDOWN_TIMEOUT={SHUTDOWN_TIMEOUT_S}"),
        format!("BITNET_CTX_SIZE={}", v("BITNET_CTX_SIZE")),
        format!("BITNET_PARALLEL={}", v("BITNET_PARALLEL")),
        format!("BITNET_LOG_FORMAT={}", v("BITNET_LOG_FORMAT")),
    ];
    let mut volumes = Vec::new();
    let mut start_period = v("BITNET_START_PERIOD");
    match source {
        Source::Mounted => {
            env.push(format!("BITNET_MODEL={mount}/{}", v("BITNET_MODEL_FILE")));
            volumes.push(format!("{}:{mount}:ro", v("BITNET_MODELS_DIR")));
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
    // Secrets: the name only, so the value comes from the environment at `up` time.
    env.push("BITNET_API_KEY".into());
    if matches!(source, Source::Downloaded) {
        env.push("HF_TOKEN".into());
    }
    if profile == "full-stack" {
        env.push("NEO4J_URI=bolt://neo4j:7687".into());
        env.push("NEO4J_USERNAME=neo4j".into());
    }

    let stack: &[&str] = if profile == "full-stack" {
        STACK_ENV
    } else {
        &[]
    };
    deploy::check_server_env(
        env.iter().map(|e| e.split('=').next().unwrap_or_default()),
        stack,
    )?;

    let hc = &cfg.healthcheck;
    let mut entries: Vec<(&str, Y)> = vec![
        ("profiles", flow(&[profile])),
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
        ("mem_limit", st(v("BITNET_MEM_LIMIT"))),
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
                v("BITNET_PUBLISH_PORT")
            ))]),
        ),
        (
            "volumes",
            Y::List(volumes.into_iter().map(Y::Str).collect()),
        ),
    ];
    if matches!(source, Source::Downloaded) {
        // A hub or mirror on the Docker host (Docker 20.10+).
        entries.push((
            "extra_hosts",
            Y::List(vec![st("host.docker.internal:host-gateway")]),
        ));
    }
    if profile == "full-stack" {
        entries.push((
            "depends_on",
            map(vec![(
                "neo4j",
                map(vec![("condition", st("service_healthy"))]),
            )]),
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
                st(format!("NEO4J_AUTH=neo4j/{}", v("NEO4J_PASSWORD"))),
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
    let mut services = match map(vec![
        (
            "server",
            server_service(inp, vars, "volume-mount", Source::Mounted)?,
        ),
        (
            "server-download",
            server_service(inp, vars, "runtime-download", Source::Downloaded)?,
        ),
        (
            "server-stack",
            server_service(inp, vars, "full-stack", Source::Mounted)?,
        ),
        ("neo4j", neo4j_service(vars)),
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
    services[2].2 = Some(
        "Profile full-stack: the mounted model plus Neo4j 5; starts once Neo4j is healthy.".into(),
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

fn env_example(inp: &Inputs, vars: &[Var]) -> String {
    let mut out = header("#");
    out.push_str(
        "# Copy to compose/.env (or export the variables) and uncomment what you change.\n\
         # Values shown are the defaults in compose.yaml.\n",
    );
    for v in vars {
        out.push('\n');
        for line in deploy::wrap(v.help, 96) {
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
    out
}

/// The generated files: (name, contents).
fn generate(root: &Path) -> Result<Vec<(String, String)>> {
    let inp = Inputs::read(root)?;
    let vars = variables(&inp);
    Ok(vec![
        ("compose.yaml".into(), compose_yaml(&inp, &vars)?),
        (".env.example".into(), env_example(&inp, &vars)),
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
}
