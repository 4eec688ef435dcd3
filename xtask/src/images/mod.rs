//! `cargo xtask build-images`: builds the server once per CPU tier (`profiles/*.toml`) as a static,
//! stripped musl binary, assembles one distroless image per tier without a daemon, and writes
//! - an OCI layout (`<out>/oci`): per-tier manifests and a multi-platform index (v4, v3, v2, a plain
//!   linux/amd64 entry → the default tier, arm64 v8);
//! - a hybrid tarball (`<out>/<name>-<version>.tar`) that `docker load` accepts on both image stores;
//! - `<out>/summary.json` (tiers, digests, sizes) and a summary table on stdout;
//!
//! then optionally loads it into Docker (`--load`) and pushes it to a registry (`--push`).
//!
//! Unchanged tiers are skipped at two levels (cargo build; image assembly) by input fingerprints,
//! so a no-change rerun does no compiling or compressing. Everything is reproducible from the
//! inputs and SOURCE_DATE_EPOCH (default: the last commit's time).
//!
//! This module only orchestrates; each step lives in its own submodule. It does NOT write compose
//! files or run the server.

mod archive;
mod assemble;
mod cargo_build;
mod cargo_meta;
mod docker;
mod dockerfile;
mod fingerprint;
mod layer;
mod oci;
mod profile;
mod registry;
mod sbom;
mod spec;
mod toolchain;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use assemble::{Meta, TierImage};
use cargo_build::{Built, Plan, Progress};
use fingerprint::{Fingerprint, read_stamp, write_stamp};
use layer::Layer;
use oci::{Layout, MT_INDEX};
use profile::Profile;
use spec::{ImageSpec, ResolvedEntry};

/// Arguments of `cargo xtask build-images`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only these tiers (profile names, comma-separated). Default: every profile.
    #[arg(long, value_delimiter = ',', value_name = "TIER,…")]
    pub tiers: Vec<String>,
    /// Image name for local tags, the tarball and the CPU guard's advice.
    #[arg(long, default_value = "bitnet-server")]
    pub name: String,
    /// Image version (tag prefix). Default: the server crate's version.
    #[arg(long, env = "BITNET_IMAGE_VERSION")]
    pub version: Option<String>,
    /// Output directory (relative paths are relative to the workspace root).
    #[arg(long, default_value = "target/images", value_name = "DIR")]
    pub out: PathBuf,
    /// Base of the per-tier cargo target directories (`<DIR>/<tier>`).
    #[arg(long, default_value = "target/tiers", value_name = "DIR")]
    pub target_dir: PathBuf,
    /// Load the tarball into Docker and tag `<name>:<version>-<tier>` and `<name>:<version>`.
    #[arg(long)]
    pub load: bool,
    /// Push to a registry repository, e.g. `ghcr.io/owner/bitnet-server`: tags
    /// `<version>-<tier>`, `<version>` and `latest`.
    #[arg(long, value_name = "REGISTRY/REPO")]
    pub push: Option<String>,
    /// Talk plain HTTP to the registry (default only for loopback registries).
    #[arg(long)]
    pub plain_http: bool,
    /// Tier builds at a time (default: half the cores, at least 1).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Rebuild and reassemble even if nothing changed.
    #[arg(long)]
    pub force: bool,
    /// Never install rustup targets or Debian packages; stop and say what is missing.
    #[arg(long)]
    pub no_install: bool,
}

/// `<out>/summary.json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Summary {
    /// Image name.
    pub name: String,
    /// Version.
    pub version: String,
    /// OCI layout directory.
    pub layout: PathBuf,
    /// Hybrid tarball.
    pub tarball: PathBuf,
    /// Digest of the multi-platform index.
    pub index_digest: String,
    /// Per tier.
    pub tiers: Vec<SummaryTier>,
    /// SOURCE_DATE_EPOCH used.
    pub source_date_epoch: u64,
}

/// One tier in `summary.json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct SummaryTier {
    /// Tier name.
    pub tier: String,
    /// Tag suffix.
    pub suffix: String,
    /// `os/arch/variant`.
    pub platform: String,
    /// Manifest digest.
    pub manifest_digest: String,
    /// Config digest (= Docker image id on the classic store).
    pub config_digest: String,
    /// Layers + config + manifest, compressed.
    pub compressed_bytes: u64,
    /// The built binary on this machine.
    pub binary: PathBuf,
    /// Whether the cargo build was skipped (unchanged).
    pub build_skipped: bool,
    /// Seconds the cargo build took (0 if skipped).
    pub build_seconds: f64,
    /// Whether assembly was skipped (unchanged).
    pub assembly_skipped: bool,
}

/// The server package's Cargo metadata we need (read from its Cargo.toml, no cargo call).
struct PackageInfo {
    version: String,
    description: String,
    license: String,
    repository: String,
}

fn workspace_members(root: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(root.join("Cargo.toml"))?;
    let v: toml::Value = toml::from_str(&text).context("invalid workspace Cargo.toml")?;
    let members = v["workspace"]["members"]
        .as_array()
        .context("workspace.members missing")?;
    let mut out = Vec::new();
    for m in members.iter().filter_map(|m| m.as_str()) {
        if let Some(prefix) = m.strip_suffix("/*") {
            for e in std::fs::read_dir(root.join(prefix))? {
                let p = e?.path();
                if p.join("Cargo.toml").is_file() {
                    out.push(p);
                }
            }
        } else {
            out.push(root.join(m));
        }
    }
    out.sort();
    Ok(out)
}

impl PackageInfo {
    fn read(root: &Path, package: &str) -> Result<(Self, PathBuf)> {
        let ws: toml::Value = toml::from_str(&std::fs::read_to_string(root.join("Cargo.toml"))?)?;
        let ws_pkg = &ws["workspace"]["package"];
        for dir in workspace_members(root)? {
            let text = std::fs::read_to_string(dir.join("Cargo.toml"))?;
            let v: toml::Value = toml::from_str(&text)?;
            let p = &v["package"];
            if p["name"].as_str() != Some(package) {
                continue;
            }
            // `key.workspace = true` → the workspace.package value.
            let field = |k: &str| -> String {
                match &p.get(k) {
                    Some(toml::Value::String(s)) => s.clone(),
                    Some(toml::Value::Table(t)) if t.get("workspace").is_some() => ws_pkg
                        .get(k)
                        .and_then(|v| v.as_str())
                        .unwrap_or_default()
                        .to_string(),
                    _ => String::new(),
                }
            };
            let info = PackageInfo {
                version: field("version"),
                description: field("description"),
                license: field("license"),
                repository: field("repository"),
            };
            if info.version.is_empty() {
                bail!("{}: package {package} has no version", dir.display());
            }
            return Ok((info, dir));
        }
        bail!("images/image.toml: app.package {package:?} is not a workspace member")
    }
}

fn git(root: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .current_dir(root)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// SOURCE_DATE_EPOCH from the environment, else the last commit's time.
fn source_date_epoch(root: &Path) -> Result<u64> {
    if let Ok(v) = std::env::var("SOURCE_DATE_EPOCH") {
        return v
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a number"));
    }
    match git(root, &["log", "-1", "--format=%ct"]).and_then(|s| s.parse().ok()) {
        Some(t) => Ok(t),
        None => {
            bail!("no SOURCE_DATE_EPOCH and no git history to take it from; set SOURCE_DATE_EPOCH")
        }
    }
}

fn revision(root: &Path) -> String {
    let Some(rev) = git(root, &["rev-parse", "HEAD"]) else {
        return "unknown".into();
    };
    let dirty = git(root, &["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|s| !s.is_empty());
    if dirty { format!("{rev}-dirty") } else { rev }
}

/// Inputs every tier's cargo build depends on: toolchain, workspace manifests, lock file, cargo
/// config, and the sources of every workspace member except xtask.
fn source_fingerprint(root: &Path, rustc_vv: &str) -> Result<String> {
    let mut f = Fingerprint::new("sources");
    f.str("rustc", rustc_vv);
    for file in [
        "Cargo.toml",
        "Cargo.lock",
        ".cargo/config.toml",
        ".cargo/config",
        "rust-toolchain.toml",
        "rust-toolchain",
    ] {
        f.file(file, &root.join(file));
    }
    for member in workspace_members(root)? {
        if member.file_name().is_some_and(|n| n == "xtask") {
            continue;
        }
        let rel = member
            .strip_prefix(root)
            .unwrap_or(&member)
            .to_string_lossy()
            .into_owned();
        f.file(&format!("{rel}/Cargo.toml"), &member.join("Cargo.toml"));
        f.file(&format!("{rel}/build.rs"), &member.join("build.rs"));
        f.tree(&format!("{rel}/src"), &member.join("src"))?;
    }
    Ok(f.finish())
}

fn cargo_home() -> Option<PathBuf> {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
}

/// The tiers of `profile`'s architecture, best first, as the guard's ladder.
fn ladder(all: &[Profile], profile: &Profile) -> String {
    all.iter()
        .filter(|p| p.platform.architecture == profile.platform.architecture)
        .map(|p| {
            format!(
                "{}|{}|{}",
                p.name,
                p.tag_suffix,
                p.required_features.join(",")
            )
        })
        .collect::<Vec<_>>()
        .join(";")
}

struct PlanInputs<'a> {
    root: &'a Path,
    target_base: &'a Path,
    out: &'a Path,
    all: &'a [Profile],
    spec: &'a ImageSpec,
    meta: &'a Meta,
    sources: &'a str,
    jobs_per_build: usize,
    force: bool,
}

fn plan(p: &Profile, i: &PlanInputs<'_>) -> Plan {
    let target_dir = i.target_base.join(&p.name);
    let mut flags = p.rustflags.clone();
    flags.extend(["-C".into(), "target-feature=+crt-static".into()]);
    // Paths in panic messages: the same on every machine, so binaries are comparable.
    flags.extend([
        "--remap-path-prefix".into(),
        format!("{}=/bitnet-serve", i.root.display()),
    ]);
    if let Some(home) = cargo_home() {
        flags.extend([
            "--remap-path-prefix".into(),
            format!("{}=/cargo", home.display()),
        ]);
    }
    let env: Vec<(String, String)> = vec![
        ("CARGO_ENCODED_RUSTFLAGS".into(), flags.join("\x1f")),
        ("CARGO_PROFILE_RELEASE_STRIP".into(), "symbols".into()),
        ("CARGO_TERM_COLOR".into(), "never".into()),
        ("BITNET_TIER".into(), p.name.clone()),
        ("BITNET_TIER_SUFFIX".into(), p.tag_suffix.clone()),
        (
            "BITNET_TIER_IMAGE".into(),
            format!("{}:{}", i.meta.name, i.meta.version),
        ),
        ("BITNET_TIER_FEATURES".into(), p.required_features.join(",")),
        ("BITNET_TIER_LADDER".into(), ladder(i.all, p)),
    ];
    let mut args: Vec<String> = [
        "build",
        "--release",
        "--locked",
        "--package",
        &i.spec.app.package,
        "--bin",
        &i.spec.app.bin,
        "--target",
        &p.target,
        "--message-format=json-render-diagnostics",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(["--target-dir".into(), target_dir.display().to_string()])
    .collect();
    let mut f = Fingerprint::new("tier-build");
    f.str("sources", i.sources).bytes("profile", &p.raw);
    for a in &args {
        f.str("arg", a);
    }
    for (k, v) in &env {
        f.str(k, v);
    }
    // Parallelism does not change the output, so it is not fingerprinted.
    args.extend(["--jobs".into(), i.jobs_per_build.to_string()]);
    Plan {
        tier: p.name.clone(),
        target: p.target.clone(),
        args,
        env,
        env_remove: [
            "RUSTFLAGS",
            "CARGO_BUILD_RUSTFLAGS",
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_TARGET",
            "CARGO_ENCODED_RUSTFLAGS",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        bin: i.spec.app.bin.clone(),
        fingerprint: f.finish(),
        stamp: target_dir.join("build-images.stamp.json"),
        log: i.out.join("logs").join(format!("{}.log", p.name)),
        force: i.force,
    }
}

#[derive(Serialize, Deserialize)]
struct AssemblyStamp {
    fingerprint: String,
    image: TierImage,
}

#[derive(Serialize, Deserialize, PartialEq)]
struct TarballStamp {
    index_json: String,
    manifest_json: String,
    size: u64,
}

/// Lazily computed inputs shared by the tiers that need assembling.
struct Shared<'a> {
    root: &'a Path,
    spec: &'a ImageSpec,
    base_entries: &'a [ResolvedEntry],
    base: Option<Layer>,
    graphs: BTreeMap<String, cargo_meta::Graph>,
    licence_layers: BTreeMap<BTreeSet<String>, (Layer, usize)>,
    checksums: Option<BTreeMap<(String, String), String>>,
}

impl Shared<'_> {
    fn base(&mut self, epoch: u64) -> Result<Layer> {
        if self.base.is_none() {
            self.base = Some(assemble::base_layer(self.base_entries, epoch)?);
        }
        Ok(self.base.clone().expect("just built"))
    }

    fn graph(&mut self, target: &str) -> Result<cargo_meta::Graph> {
        if !self.graphs.contains_key(target) {
            let g = cargo_meta::load(self.root, target, &self.spec.app.package)?;
            self.graphs.insert(target.to_string(), g);
        }
        Ok(self.graphs[target].clone())
    }
}

fn human(bytes: u64) -> String {
    format!("{:.2} MB", bytes as f64 / 1e6)
}

/// Run `cargo xtask build-images`.
pub fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    let root = crate::workspace_root();
    let abs = |p: &Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            root.join(p)
        }
    };
    let out = abs(&args.out);
    let target_base = abs(&args.target_dir);
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let lock = std::fs::File::create(out.join(".lock"))?;
    if lock.try_lock().is_err() {
        eprintln!(
            "build-images: waiting for another build-images using {}",
            out.display()
        );
        lock.lock()?;
    }
    let progress = Progress::detect();

    let all = profile::load_all(&root.join("profiles"))?;
    let tiers = profile::select(all.clone(), &args.tiers)?;
    let images_dir = root.join("images");
    let spec = ImageSpec::load(&images_dir)?;
    let (pkg, _pkg_dir) = PackageInfo::read(&root, &spec.app.package)?;
    let epoch = source_date_epoch(&root)?;
    let meta = Meta {
        name: args.name.clone(),
        version: args.version.clone().unwrap_or(pkg.version.clone()),
        revision: revision(&root),
        epoch,
        created: oci::rfc3339(epoch),
        source: spec.image.source.clone().unwrap_or(pkg.repository.clone()),
        title: spec.image.title.clone().unwrap_or(spec.app.package.clone()),
        description: spec
            .image
            .description
            .clone()
            .unwrap_or(pkg.description.clone()),
        licenses: spec.image.licenses.clone().unwrap_or(pkg.license.clone()),
    };
    validate_reference(&meta)?;

    // Toolchain prerequisites.
    let install = !args.no_install;
    let targets: BTreeSet<&str> = tiers.iter().map(|t| t.target.as_str()).collect();
    toolchain::ensure_targets(&targets.iter().copied().collect::<Vec<_>>(), install)?;
    for t in &tiers {
        toolchain::ensure_linker(&t.target, &t.rustflags, install)?;
    }
    let (rustc_vv, rustc_v) = toolchain::rustc_version()?;
    let sysroot = toolchain::sysroot()?;

    // Builds.
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let parallel = args
        .jobs
        .unwrap_or((cores / 2).max(1))
        .clamp(1, tiers.len().max(1));
    let sources = source_fingerprint(&root, &rustc_vv)?;
    let inputs = PlanInputs {
        root: &root,
        target_base: &target_base,
        out: &out,
        all: &all,
        spec: &spec,
        meta: &meta,
        sources: &sources,
        jobs_per_build: (cores / parallel).max(1),
        force: args.force,
    };
    let mut plans: Vec<Plan> = tiers.iter().map(|p| plan(p, &inputs)).collect();
    let base_entries: Vec<ResolvedEntry> = spec
        .base
        .iter()
        .map(|e| e.resolve(&images_dir, &sysroot))
        .collect::<Result<_>>()?;
    let app_files: Vec<ResolvedEntry> = spec
        .app
        .files
        .iter()
        .map(|e| e.resolve(&images_dir, &sysroot))
        .collect::<Result<_>>()?;
    let mut shared = Shared {
        root: &root,
        spec: &spec,
        base_entries: &base_entries,
        base: None,
        graphs: BTreeMap::new(),
        licence_layers: BTreeMap::new(),
        checksums: None,
    };
    // A cross C compiler only when a tier that really builds has C in its graph.
    for plan in plans.iter_mut() {
        let fresh = read_stamp::<serde_json::Value>(&plan.stamp)
            .is_some_and(|s| s["fingerprint"] == plan.fingerprint.as_str());
        if fresh && !args.force {
            continue;
        }
        let g = shared.graph(&plan.target)?;
        let c_crates = g.needs_c_toolchain(&g.runtime_closure(None));
        if !c_crates.is_empty() {
            progress.line(&format!(
                "[{}] C code in {}; setting up a C compiler for {}",
                plan.tier,
                c_crates.join(", "),
                plan.target
            ));
            plan.env
                .extend(toolchain::c_compiler_env(&plan.target, install)?);
        }
    }
    progress.line(&format!(
        "{} tier(s), {parallel} at a time, {} jobs each; SOURCE_DATE_EPOCH={epoch} ({})",
        plans.len(),
        inputs.jobs_per_build,
        meta.created
    ));
    let built = cargo_build::build_all(&plans, parallel, &progress)?;

    // Assembly.
    let layout = Layout::open(&out.join("oci"))?;
    let cache_dir = out.join("cache");
    let mut assembly_fp_common = Fingerprint::new("assembly");
    assembly_fp_common
        .tree("xtask/src/images", &root.join("xtask/src/images"))?
        .tree("images", &images_dir)?
        .str("meta", &format!("{meta:?}"))
        .str("rustc", &rustc_v);
    for e in base_entries.iter().chain(&app_files) {
        assembly_fp_common.str(
            "entry",
            &format!(
                "{} {:o} {} {} {:?}",
                e.path, e.mode, e.uid, e.gid, e.provenance
            ),
        );
        assembly_fp_common.bytes("data", e.data.as_deref().unwrap_or_default());
    }
    let assembly_common = assembly_fp_common.finish();
    let mut images = Vec::new();
    let mut assembled = Vec::new();
    for (p, b) in tiers.iter().zip(&built) {
        let mut f = Fingerprint::new("tier-assembly");
        f.str("common", &assembly_common)
            .str("build", &b.fingerprint)
            .str("binary", &b.binary_sha256)
            .bytes("profile", &p.raw);
        let fp = f.finish();
        let stamp_path = cache_dir.join(format!("{}.json", p.name));
        if !args.force
            && let Some(st) = read_stamp::<AssemblyStamp>(&stamp_path)
            && st.fingerprint == fp
            && st.image.blobs().all(|d| layout.has_blob(&d.digest, d.size))
        {
            images.push(st.image);
            assembled.push(false);
            continue;
        }
        let image = assemble_tier(&mut shared, &layout, &meta, p, b, &app_files, &rustc_v)?;
        write_stamp(
            &stamp_path,
            &AssemblyStamp {
                fingerprint: fp,
                image: image.clone(),
            },
        )?;
        images.push(image);
        assembled.push(true);
    }

    // Size budget.
    if let Some(budget) = spec.image.size_budget_mb {
        for img in &images {
            if img.compressed_size() as f64 > budget * 1e6 {
                bail!(
                    "{}: {} compressed exceeds the {budget} MB budget (images/image.toml \
                     image.size_budget_mb); layers: {}",
                    img.tier,
                    human(img.compressed_size()),
                    img.layers
                        .iter()
                        .map(|l| human(l.size))
                        .collect::<Vec<_>>()
                        .join(" + ")
                );
            }
        }
    }

    // Index, layout, tarball.
    let index = assemble::index(&images, assemble::labels(&spec, &meta, None));
    let index_json = oci::canonical_json(&index)?;
    let index_desc = layout.put(MT_INDEX, &index_json)?;
    let top = assemble::layout_index(&meta, &index_desc, &images);
    let top_json = layout.write_index(&top)?;
    let mut keep: BTreeSet<String> = images
        .iter()
        .flat_map(|i| i.blobs().map(|d| d.digest.clone()))
        .collect();
    keep.insert(index_desc.digest.clone());
    layout.gc(&keep)?;
    // The `docker build` context of images/Dockerfile: the same layers.
    let mut context = Vec::new();
    for img in &images {
        let [base, licences, app] = [0, 1, 2].map(|i| {
            img.layers
                .get(i)
                .map(|l| layout.blob_path(&l.digest))
                .transpose()
        });
        if let (Some(base), Some(licences), Some(app)) = (base?, licences?, app?) {
            context.push((img.tier.clone(), [base, licences, app]));
        }
    }
    dockerfile::write_context(&out.join("context"), &context)?;
    let default_tier = tiers
        .iter()
        .find(|p| p.default_for_arch && p.platform.architecture == "amd64")
        .or(tiers.first())
        .map(|p| p.name.as_str())
        .unwrap_or_default();
    let dockerfile_text = dockerfile::render(&spec, default_tier);
    if std::fs::read_to_string(out.join("context/Dockerfile"))
        .ok()
        .as_deref()
        != Some(&dockerfile_text)
    {
        oci::write_atomic(&out.join("context/Dockerfile"), dockerfile_text.as_bytes())?;
    }
    let manifest_json = archive::docker_manifest(&meta, &images)?;
    let tarball = out.join(format!(
        "{}-{}.tar",
        meta.name.replace('/', "_"),
        meta.version
    ));
    let tar_stamp_path = cache_dir.join("tarball.json");
    let want = |size| TarballStamp {
        index_json: layer::sha256_digest(&top_json),
        manifest_json: layer::sha256_digest(&manifest_json),
        size,
    };
    let current_size = std::fs::metadata(&tarball).map(|m| m.len()).unwrap_or(0);
    let tar_fresh =
        read_stamp::<TarballStamp>(&tar_stamp_path).is_some_and(|s| s == want(current_size));
    if !tar_fresh || args.force {
        archive::write(&tarball, &layout, &top_json, &manifest_json, &keep, epoch)?;
        let size = std::fs::metadata(&tarball)?.len();
        write_stamp(&tar_stamp_path, &want(size))?;
    }

    // Summary.
    let summary = Summary {
        name: meta.name.clone(),
        version: meta.version.clone(),
        layout: layout.root().to_path_buf(),
        tarball: tarball.clone(),
        index_digest: index_desc.digest.clone(),
        source_date_epoch: epoch,
        tiers: images
            .iter()
            .zip(&built)
            .zip(&assembled)
            .map(|((i, b), a)| SummaryTier {
                tier: i.tier.clone(),
                suffix: i.suffix.clone(),
                platform: format!(
                    "{}/{}{}",
                    i.platform.os,
                    i.platform.architecture,
                    i.platform
                        .variant
                        .as_deref()
                        .map(|v| format!("/{v}"))
                        .unwrap_or_default()
                ),
                manifest_digest: i.manifest.digest.clone(),
                config_digest: i.config.digest.clone(),
                compressed_bytes: i.compressed_size(),
                binary: b.binary.clone(),
                build_skipped: b.skipped,
                build_seconds: b.seconds,
                assembly_skipped: !a,
            })
            .collect(),
    };
    write_stamp(&out.join("summary.json"), &summary)?;
    print_summary(&summary, &meta);

    if args.load || args.push.is_some() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        if args.load {
            let feats: Vec<(&TierImage, &[String])> = images
                .iter()
                .zip(&tiers)
                .map(|(i, p)| (i, p.required_features.as_slice()))
                .collect();
            let best = docker::best_for_host(&feats);
            let tags = rt.block_on(docker::load(&tarball, &meta, &images, best))?;
            for t in tags {
                println!("loaded  {t}");
            }
        }
        if let Some(dest) = &args.push {
            let target = registry::Target::parse(dest, args.plain_http)?;
            let report = rt.block_on(registry::push(
                target,
                &layout,
                &meta,
                &images,
                &index_desc.digest,
                &index_json,
            ))?;
            for t in &report.tags {
                println!("pushed  {t}");
            }
            println!(
                "pushed  {} blob(s) uploaded, {} already there",
                report.uploaded, report.existing
            );
        }
    }
    eprintln!(
        "build-images: done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn validate_reference(meta: &Meta) -> Result<()> {
    let ok_name = !meta.name.is_empty()
        && meta
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/:".contains(c))
        && !meta.name.ends_with(':');
    if !ok_name {
        bail!(
            "--name {:?}: use a lowercase image name like bitnet-server or ghcr.io/owner/bitnet-server",
            meta.name
        );
    }
    let ok_tag = !meta.version.is_empty()
        && meta.version.len() <= 100
        && meta
            .version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !ok_tag {
        bail!(
            "--version {:?}: a tag is [A-Za-z0-9._-], at most 100 characters",
            meta.version
        );
    }
    Ok(())
}

fn assemble_tier(
    shared: &mut Shared<'_>,
    layout: &Layout,
    meta: &Meta,
    profile: &Profile,
    built: &Built,
    app_files: &[ResolvedEntry],
    rustc_v: &str,
) -> Result<TierImage> {
    let spec = shared.spec;
    let graph = shared.graph(&profile.target)?;
    let packages = graph.runtime_closure(Some(&built.compiled));
    if shared.checksums.is_none() {
        shared.checksums = Some(cargo_meta::lock_checksums(&shared.root.join("Cargo.lock"))?);
    }
    let base = shared.base(meta.epoch)?;
    if !shared.licence_layers.contains_key(&packages) {
        let l = assemble::licence_layer(&graph, &packages, &spec.app.third_party_dir, meta.epoch)?;
        shared
            .licence_layers
            .insert(packages.clone(), (l, packages.len()));
    }
    let (licences, crates) = shared.licence_layers[&packages].clone();
    let binary = std::fs::read(&built.binary)
        .with_context(|| format!("reading {}", built.binary.display()))?;
    let debian: Vec<spec::Provenance> = shared
        .base_entries
        .iter()
        .chain(app_files)
        .filter_map(|e| e.provenance.clone())
        .collect();
    let checksums = shared.checksums.as_ref().expect("loaded above");
    let doc = sbom::spdx(&sbom::SbomInput {
        image_name: &meta.name,
        version: &meta.version,
        suffix: &profile.tag_suffix,
        created: &meta.created,
        source_url: &meta.source,
        revision: &meta.revision,
        binary_path: &spec.app.binary_path,
        binary: &binary,
        graph: &graph,
        packages: &packages,
        checksums,
        debian: &debian,
        rustc_version: rustc_v,
        tool: concat!("bitnet-serve-xtask-", env!("CARGO_PKG_VERSION")),
    });
    let sbom_bytes = oci::canonical_json(&doc)?;
    let app = assemble::app_layer(spec, &binary, &sbom_bytes, app_files, meta.epoch)?;
    assemble::write_tier(
        layout,
        spec,
        meta,
        profile,
        &assemble::TierLayers {
            base: &base,
            licences: &licences,
            app: &app,
            crates,
        },
    )
}

fn print_summary(s: &Summary, meta: &Meta) {
    println!();
    println!(
        "{:<11} {:<16} {:<73} {:>10}",
        "TIER", "PLATFORM", "MANIFEST DIGEST", "COMPRESSED"
    );
    for t in &s.tiers {
        println!(
            "{:<11} {:<16} {:<73} {:>10}",
            t.tier,
            t.platform,
            t.manifest_digest,
            human(t.compressed_bytes)
        );
    }
    println!(
        "{:<11} {:<16} {:<73}",
        "index", "multi-platform", s.index_digest
    );
    println!();
    println!(
        "OCI layout  {}  (tags {}, {}-<tier>)",
        s.layout.display(),
        meta.version,
        meta.version
    );
    let size = std::fs::metadata(&s.tarball).map(|m| m.len()).unwrap_or(0);
    println!(
        "tarball     {}  ({}; `docker load -i` it)",
        s.tarball.display(),
        human(size)
    );
}
