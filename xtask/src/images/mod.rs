//! `cargo xtask build-images`: builds the server once per CPU tier (`profiles/*.toml`) as a static,
//! stripped musl binary, assembles one distroless image per tier without a daemon, and writes
//! - an OCI layout (`<out>/oci`): per-tier manifests and a multi-platform index (v4, v3, v2, a plain
//!   linux/amd64 entry → the default tier, arm64 v8);
//! - a hybrid tarball (`<out>/<name>-<version>.tar`) that `docker load` accepts on both image stores;
//! - `<out>/context`: the same layers plus a Dockerfile, for `docker build` users;
//! - `<out>/summary.json` (tiers, digests, sizes) and a summary table on stdout;
//!
//! then optionally loads it into Docker (`--load`) and pushes it to a registry (`--push`).
//!
//! Unchanged tiers are skipped at two levels (cargo build; image assembly) by input fingerprints,
//! so a no-change rerun does no compiling or compressing. Everything is reproducible from the
//! inputs and SOURCE_DATE_EPOCH (default: the last commit's time).
//!
//! Steps: `profile`/`spec`/`project` read the inputs, `plan` decides each cargo build,
//! `cargo_build` runs them, `assemble` (with `layer`, `sbom`, `cargo_meta`, `oci`) makes the
//! images, `archive`/`dockerfile` write the other outputs, `docker`/`registry` publish.
//! This module only orchestrates them. It does NOT write compose files (`xtask compose`; it only
//! prints the command to run next) or run the server.

mod archive;
mod assemble;
mod cargo_build;
mod cargo_meta;
mod docker;
mod dockerfile;
mod fingerprint;
mod layer;
mod oci;
mod plan;
pub mod profile;
pub mod project;
mod registry;
mod sbom;
pub mod spec;
mod summary;
mod toolchain;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use assemble::{Meta, TierImage};
use cargo_build::{Built, Plan, Progress};
use fingerprint::{Fingerprint, read_stamp, write_stamp};
use layer::Layer;
use oci::{Descriptor, Layout, MT_INDEX};
use profile::Profile;
use project::PackageInfo;
use spec::{ImageSpec, ResolvedEntry};
use summary::{Summary, human};

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
    /// Trust this CA (PEM file, one or more certificates) for `--push`, besides the system
    /// roots; implies TLS, loopback registries included.
    #[arg(long, value_name = "PEM")]
    pub ca_cert: Option<PathBuf>,
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

/// Everything decided before building: paths, profiles, the image data, metadata, toolchain.
struct Run {
    args: Args,
    root: PathBuf,
    out: PathBuf,
    target_base: PathBuf,
    all: Vec<Profile>,
    tiers: Vec<Profile>,
    spec: ImageSpec,
    meta: Meta,
    rustc_vv: String,
    rustc_v: String,
    base_entries: Vec<ResolvedEntry>,
    app_files: Vec<ResolvedEntry>,
    progress: Progress,
}

/// Lazily computed inputs shared by the tiers that need assembling.
#[derive(Default)]
struct Shared {
    base: Option<Layer>,
    graphs: BTreeMap<String, cargo_meta::Graph>,
    licence_layers: BTreeMap<BTreeSet<String>, (Layer, usize)>,
    checksums: Option<BTreeMap<(String, String), String>>,
}

impl Shared {
    fn graph(&mut self, run: &Run, target: &str) -> Result<cargo_meta::Graph> {
        if !self.graphs.contains_key(target) {
            let g = cargo_meta::load(&run.root, target, &run.spec.app.package)?;
            self.graphs.insert(target.to_string(), g);
        }
        Ok(self.graphs[target].clone())
    }
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
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let lock = std::fs::File::create(out.join(".lock"))?;
    if lock.try_lock().is_err() {
        eprintln!(
            "build-images: waiting for another build-images using {}",
            out.display()
        );
        lock.lock()?;
    }
    let run = prepare(args, root, out)?;
    let mut shared = Shared::default();
    let built = build_tiers(&run, &mut shared)?;
    let (images, assembled) = assemble_tiers(&run, &mut shared, &built)?;
    let (layout, index_desc, index_json, tarball) = write_outputs(&run, &images)?;
    let rows: Vec<(&TierImage, &Built, bool)> = images
        .iter()
        .zip(&built)
        .zip(&assembled)
        .map(|((i, b), a)| (i, b, *a))
        .collect();
    let summary = Summary::new(
        &run.meta,
        layout.root().to_path_buf(),
        tarball.clone(),
        &index_desc.digest,
        &rows,
    );
    write_stamp(&run.out.join("summary.json"), &summary)?;
    summary.print();
    publish(&run, &layout, &images, &tarball, &index_desc, &index_json)?;
    println!("{}", crate::compose::next_step_hint(run.args.load));
    eprintln!(
        "build-images: done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Read profiles and image data, settle the metadata, make sure the toolchain is there.
fn prepare(args: Args, root: PathBuf, out: PathBuf) -> Result<Run> {
    let target_base = if args.target_dir.is_absolute() {
        args.target_dir.clone()
    } else {
        root.join(&args.target_dir)
    };
    let all = profile::load_all(&root.join("profiles"))?;
    let tiers = profile::select(all.clone(), &args.tiers)?;
    let images_dir = root.join("images");
    let spec = ImageSpec::load(&images_dir)?;
    let pkg = PackageInfo::read(&root, &spec.app.package)?;
    let epoch = project::source_date_epoch(&root)?;
    let meta = Meta {
        name: args.name.clone(),
        version: args.version.clone().unwrap_or(pkg.version.clone()),
        revision: project::revision(&root),
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

    let (rustc_vv, rustc_v) = toolchain::rustc_version()?;
    let sysroot = toolchain::sysroot()?;
    let resolve = |entries: &[spec::EntrySpec]| -> Result<Vec<ResolvedEntry>> {
        entries
            .iter()
            .map(|e| e.resolve(&images_dir, &sysroot))
            .collect()
    };
    let base_entries = resolve(&spec.base)?;
    let app_files = resolve(&spec.app.files)?;
    Ok(Run {
        args,
        root,
        out,
        target_base,
        all,
        tiers,
        spec,
        meta,
        rustc_vv,
        rustc_v,
        base_entries,
        app_files,
        progress: Progress::detect(),
    })
}

/// Plan and run the tier builds (unchanged tiers are skipped inside `cargo_build`).
fn build_tiers(run: &Run, shared: &mut Shared) -> Result<Vec<Built>> {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let parallel = run
        .args
        .jobs
        .unwrap_or((cores / 2).max(1))
        .clamp(1, run.tiers.len().max(1));
    let sources = project::source_fingerprint(&run.root, &run.rustc_vv)?;
    let inputs = plan::PlanInputs {
        root: &run.root,
        target_base: &run.target_base,
        out: &run.out,
        all: &run.all,
        spec: &run.spec,
        meta: &run.meta,
        sources: &sources,
        jobs_per_build: (cores / parallel).max(1),
        force: run.args.force,
    };
    let mut plans: Vec<Plan> = run.tiers.iter().map(|p| plan::plan(p, &inputs)).collect();
    // A C compiler only when a tier that really builds has C in its graph.
    for plan in plans.iter_mut() {
        let fresh = read_stamp::<serde_json::Value>(&plan.stamp)
            .is_some_and(|s| s["fingerprint"] == plan.fingerprint.as_str());
        if fresh && !run.args.force {
            continue;
        }
        let g = shared.graph(run, &plan.target)?;
        let c_crates = g.needs_c_toolchain(&g.runtime_closure(None));
        if !c_crates.is_empty() {
            run.progress.line(&format!(
                "[{}] C code in {}; setting up a C compiler for {}",
                plan.tier,
                c_crates.join(", "),
                plan.target
            ));
            let (needs, env) = crate::prereq::c_compiler(&plan.target)?;
            crate::prereq::ensure("build-images", &needs, !run.args.no_install)?;
            plan.env.extend(env);
        }
    }
    run.progress.line(&format!(
        "{} tier(s), {parallel} at a time, {} jobs each; SOURCE_DATE_EPOCH={} ({})",
        plans.len(),
        inputs.jobs_per_build,
        run.meta.epoch,
        run.meta.created
    ));
    cargo_build::build_all(&plans, parallel, &run.progress)
}

/// Assemble (or reuse, when its inputs are unchanged) each tier's image in the layout. Returns
/// the images and, per tier, whether it was assembled now.
fn assemble_tiers(
    run: &Run,
    shared: &mut Shared,
    built: &[Built],
) -> Result<(Vec<TierImage>, Vec<bool>)> {
    let layout = Layout::open(&run.out.join("oci"))?;
    let mut common = Fingerprint::new("assembly");
    common
        .tree("xtask/src/images", &run.root.join("xtask/src/images"))?
        .tree("images", &run.root.join("images"))?
        .str("meta", &format!("{:?}", run.meta))
        .str("rustc", &run.rustc_v);
    for e in run.base_entries.iter().chain(&run.app_files) {
        common.str(
            "entry",
            &format!(
                "{} {:o} {} {} {:?}",
                e.path, e.mode, e.uid, e.gid, e.provenance
            ),
        );
        common.bytes("data", e.data.as_deref().unwrap_or_default());
    }
    let common = common.finish();
    let mut images = Vec::new();
    let mut assembled = Vec::new();
    for (p, b) in run.tiers.iter().zip(built) {
        let mut f = Fingerprint::new("tier-assembly");
        f.str("common", &common)
            .str("build", &b.fingerprint)
            .str("binary", &b.binary_sha256)
            .bytes("profile", &p.raw);
        let fp = f.finish();
        let stamp_path = run.out.join("cache").join(format!("{}.json", p.name));
        if !run.args.force
            && let Some(st) = read_stamp::<AssemblyStamp>(&stamp_path)
            && st.fingerprint == fp
            && st.image.blobs().all(|d| layout.has_blob(&d.digest, d.size))
        {
            images.push(st.image);
            assembled.push(false);
            continue;
        }
        let image = assemble_tier(run, shared, &layout, p, b)?;
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
    if let Some(budget) = run.spec.image.size_budget_mb {
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
    Ok((images, assembled))
}

/// Write the index, the layout's index.json (and drop unreferenced blobs), the `docker build`
/// context and the hybrid tarball.
fn write_outputs(
    run: &Run,
    images: &[TierImage],
) -> Result<(Layout, Descriptor, Vec<u8>, PathBuf)> {
    let (meta, out) = (&run.meta, &run.out);
    let layout = Layout::open(&out.join("oci"))?;
    let index = assemble::index(images, assemble::labels(&run.spec, meta, None));
    let index_json = oci::canonical_json(&index)?;
    let index_desc = layout.put(MT_INDEX, &index_json)?;
    let top_json = layout.write_index(&assemble::layout_index(meta, &index_desc, images))?;
    let mut keep: BTreeSet<String> = images
        .iter()
        .flat_map(|i| i.blobs().map(|d| d.digest.clone()))
        .collect();
    keep.insert(index_desc.digest.clone());
    layout.gc(&keep)?;

    // The `docker build` context of images/Dockerfile: the same layers, and the Dockerfile.
    let mut context = Vec::new();
    for img in images {
        let paths: Vec<PathBuf> = img
            .layers
            .iter()
            .map(|l| layout.blob_path(&l.digest))
            .collect::<Result<_>>()?;
        if let [base, licences, app] = &paths[..] {
            context.push((
                img.tier.clone(),
                [base.clone(), licences.clone(), app.clone()],
            ));
        }
    }
    dockerfile::write_context(&out.join("context"), &context)?;
    let default_tier = run
        .tiers
        .iter()
        .find(|p| p.default_for_arch && p.platform.architecture == "amd64")
        .or(run.tiers.first())
        .map(|p| p.name.as_str())
        .unwrap_or_default();
    let text = dockerfile::render(&run.spec, default_tier);
    let path = out.join("context/Dockerfile");
    if std::fs::read_to_string(&path).ok().as_deref() != Some(&text) {
        oci::write_atomic(&path, text.as_bytes())?;
    }

    let manifest_json = archive::docker_manifest(meta, images)?;
    let tarball = out.join(format!(
        "{}-{}.tar",
        meta.name.replace('/', "_"),
        meta.version
    ));
    let stamp_path = out.join("cache/tarball.json");
    let want = |size| TarballStamp {
        index_json: layer::sha256_digest(&top_json),
        manifest_json: layer::sha256_digest(&manifest_json),
        size,
    };
    let current = std::fs::metadata(&tarball).map(|m| m.len()).unwrap_or(0);
    if run.args.force || read_stamp::<TarballStamp>(&stamp_path).is_none_or(|s| s != want(current))
    {
        archive::write(
            &tarball,
            &layout,
            &top_json,
            &manifest_json,
            &keep,
            meta.epoch,
        )?;
        write_stamp(&stamp_path, &want(std::fs::metadata(&tarball)?.len()))?;
    }
    Ok((layout, index_desc, index_json, tarball))
}

/// `--load` and `--push`.
fn publish(
    run: &Run,
    layout: &Layout,
    images: &[TierImage],
    tarball: &Path,
    index_desc: &Descriptor,
    index_json: &[u8],
) -> Result<()> {
    if !run.args.load && run.args.push.is_none() {
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if run.args.load {
        let feats: Vec<(&TierImage, &[String])> = images
            .iter()
            .zip(&run.tiers)
            .map(|(i, p)| (i, p.required_features.as_slice()))
            .collect();
        let best = docker::best_for_host(&feats);
        for t in rt.block_on(docker::load(tarball, &run.meta, images, best))? {
            println!("loaded  {t}");
        }
    }
    if let Some(dest) = &run.args.push {
        let ca_cert = run.args.ca_cert.as_deref();
        let target = registry::Target::parse(dest, run.args.plain_http, ca_cert.is_some())?;
        let report = rt.block_on(registry::push(
            target,
            ca_cert,
            layout,
            &run.meta,
            images,
            (&index_desc.digest, index_json),
        ))?;
        for t in &report.tags {
            println!("pushed  {t}");
        }
        println!(
            "pushed  {} blob(s) uploaded, {} already there",
            report.uploaded, report.existing
        );
    }
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
    run: &Run,
    shared: &mut Shared,
    layout: &Layout,
    profile: &Profile,
    built: &Built,
) -> Result<TierImage> {
    let (spec, meta) = (&run.spec, &run.meta);
    let graph = shared.graph(run, &profile.target)?;
    let packages = graph.runtime_closure(Some(&built.compiled));
    if shared.checksums.is_none() {
        shared.checksums = Some(cargo_meta::lock_checksums(&run.root.join("Cargo.lock"))?);
    }
    if shared.base.is_none() {
        shared.base = Some(assemble::base_layer(&run.base_entries, meta.epoch)?);
    }
    if !shared.licence_layers.contains_key(&packages) {
        let l = assemble::licence_layer(&graph, &packages, &spec.app.third_party_dir, meta.epoch)?;
        shared
            .licence_layers
            .insert(packages.clone(), (l, packages.len()));
    }
    let binary = std::fs::read(&built.binary)
        .with_context(|| format!("reading {}", built.binary.display()))?;
    let debian: Vec<spec::Provenance> = run
        .base_entries
        .iter()
        .chain(&run.app_files)
        .filter_map(|e| e.provenance.clone())
        .collect();
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
        checksums: shared.checksums.as_ref().expect("loaded above"),
        debian: &debian,
        rustc_version: &run.rustc_v,
        tool: concat!("bitnet-serve-xtask-", env!("CARGO_PKG_VERSION")),
    });
    let app = assemble::app_layer(
        spec,
        &binary,
        &oci::canonical_json(&doc)?,
        &run.app_files,
        meta.epoch,
    )?;
    let (licences, crates) = &shared.licence_layers[&packages];
    let base = shared.base.as_ref().expect("built above");
    assemble::write_tier(
        layout,
        spec,
        meta,
        profile,
        &assemble::TierLayers {
            base,
            licences,
            app: &app,
            crates: *crates,
        },
    )
}
