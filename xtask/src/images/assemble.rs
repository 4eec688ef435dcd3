//! Image assembly without a daemon: the base layer (distroless-equivalent files from
//! `images/image.toml`), the third-party licence layer, the app layer (binary + SPDX SBOM), the
//! config (user, entrypoint, volume, port, healthcheck, labels, platform) and the manifest, all
//! written as blobs into the OCI layout; then the multi-platform index. Pure apart from writing
//! blobs. It does NOT build binaries, load into Docker or push.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::cargo_meta::Graph;
use super::layer::{Entry, Kind, Layer, LayerBuilder};
use super::oci::{
    self, Descriptor, ExecConfig, Healthcheck, History, ImageConfig, Index, Layout, MT_CONFIG,
    MT_INDEX, MT_LAYER_GZIP, MT_MANIFEST, Manifest, Platform, RootFs,
};
use super::profile::Profile;
use super::spec::{self, ImageSpec, ResolvedEntry, parse_duration};

/// Image-wide metadata (same for every tier).
#[derive(Debug, Clone)]
pub struct Meta {
    /// Local image name, e.g. `bitnet-server`.
    pub name: String,
    /// Version (tag prefix).
    pub version: String,
    /// Git revision (`-dirty` if the tree had uncommitted changes).
    pub revision: String,
    /// SOURCE_DATE_EPOCH.
    pub epoch: u64,
    /// RFC 3339 of `epoch`.
    pub created: String,
    /// Source repository URL.
    pub source: String,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// SPDX licence expression of the project.
    pub licenses: String,
}

/// A finished tier image (also the cache record).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TierImage {
    /// Tier name.
    pub tier: String,
    /// Tag suffix.
    pub suffix: String,
    /// Platform (with variant).
    pub platform: Platform,
    /// Serves the plain (variant-less) entry of its architecture.
    pub default_for_arch: bool,
    /// The manifest descriptor (no platform set).
    pub manifest: Descriptor,
    /// Config descriptor.
    pub config: Descriptor,
    /// Layer descriptors, bottom first.
    pub layers: Vec<Descriptor>,
}

impl TierImage {
    /// Sum of the compressed layer sizes (what a pull downloads, besides small JSON).
    pub fn compressed_size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum::<u64>() + self.config.size + self.manifest.size
    }

    /// Every blob the image needs.
    pub fn blobs(&self) -> impl Iterator<Item = &Descriptor> {
        [&self.manifest, &self.config]
            .into_iter()
            .chain(&self.layers)
    }
}

fn to_entry(e: &ResolvedEntry) -> Entry {
    let kind = match &e.data {
        Some(d) => Kind::File(d.clone()),
        None => Kind::Dir,
    };
    Entry {
        kind,
        mode: e.mode,
        uid: e.uid,
        gid: e.gid,
    }
}

/// The base layer from the resolved `[[base]]` entries.
pub fn base_layer(entries: &[ResolvedEntry], epoch: u64) -> Result<Layer> {
    let mut b = LayerBuilder::new();
    for e in entries {
        b.add(&e.path, to_entry(e))?;
    }
    b.build(epoch)
}

/// File names that hold licence or notice texts.
fn is_licence_file(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    [
        "LICENSE",
        "LICENCE",
        "COPYING",
        "NOTICE",
        "UNLICENSE",
        "COPYRIGHT",
    ]
    .iter()
    .any(|p| n.starts_with(p))
}

/// The licence layer: every licence/notice file at the top of each compiled crate's directory
/// (plus its `license-file`), as `<dir>/<crate>-<version>/<file>`. Workspace crates are skipped
/// (the project's own licence is an app file).
pub fn licence_layer(
    graph: &Graph,
    packages: &BTreeSet<String>,
    dir: &str,
    epoch: u64,
) -> Result<Layer> {
    let dir = spec::clean_path(dir)?;
    let mut b = LayerBuilder::new();
    b.add(
        &dir,
        Entry {
            kind: Kind::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
        },
    )?;
    for id in packages {
        let Some(p) = graph.packages.get(id) else {
            continue;
        };
        if p.source.is_none() {
            continue;
        }
        let mut files: BTreeSet<String> = std::fs::read_dir(&p.manifest_dir)
            .with_context(|| format!("reading {}", p.manifest_dir.display()))?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| is_licence_file(n))
            .collect();
        if let Some(lf) = &p.license_file {
            files.insert(lf.clone());
        }
        for f in files {
            let src = p.manifest_dir.join(&f);
            let Ok(data) = std::fs::read(&src) else {
                continue;
            };
            let leaf = Path::new(&f)
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or(f);
            let path = format!("{dir}/{}-{}/{leaf}", p.name, p.version);
            b.add(
                &path,
                Entry {
                    kind: Kind::File(data),
                    mode: 0o644,
                    uid: 0,
                    gid: 0,
                },
            )?;
        }
    }
    b.build(epoch)
}

/// The app layer: the binary (0755), the SBOM, and the `[[app.files]]`.
pub fn app_layer(
    spec: &ImageSpec,
    binary: &[u8],
    sbom: &[u8],
    files: &[ResolvedEntry],
    epoch: u64,
) -> Result<Layer> {
    let mut b = LayerBuilder::new();
    let file = |data: &[u8], mode| Entry {
        kind: Kind::File(data.to_vec()),
        mode,
        uid: 0,
        gid: 0,
    };
    b.add(
        &spec::clean_path(&spec.app.binary_path)?,
        file(binary, 0o755),
    )?;
    b.add(&spec::clean_path(&spec.app.sbom_path)?, file(sbom, 0o644))?;
    for e in files {
        b.add(&e.path, to_entry(e))?;
    }
    b.build(epoch)
}

/// Labels (config) = annotations (manifest) for one tier; `profile = None` gives the index's.
pub fn labels(
    spec: &ImageSpec,
    meta: &Meta,
    profile: Option<&Profile>,
) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    let oci = |k: &str| format!("org.opencontainers.image.{k}");
    l.insert(oci("created"), meta.created.clone());
    l.insert(oci("version"), meta.version.clone());
    l.insert(oci("revision"), meta.revision.clone());
    l.insert(oci("source"), meta.source.clone());
    l.insert(oci("url"), meta.source.clone());
    l.insert(oci("licenses"), meta.licenses.clone());
    l.insert(oci("title"), meta.title.clone());
    l.insert(oci("description"), meta.description.clone());
    if let Some(v) = &spec.image.vendor {
        l.insert(oci("vendor"), v.clone());
    }
    if let Some(d) = &spec.image.documentation {
        l.insert(oci("documentation"), d.clone());
    }
    if let Some(p) = profile {
        let pre = &spec.image.label_prefix;
        l.insert(format!("{pre}.cpu.tier"), p.name.clone());
        l.insert(format!("{pre}.cpu.features"), p.required_features.join(","));
        l.insert(
            format!("{pre}.cpu.guard-exit-code"),
            bitnet_cpu_guard::EXIT_CPU_UNSUPPORTED.to_string(),
        );
    }
    for (k, v) in &spec.config.labels {
        l.insert(k.clone(), v.clone());
    }
    l
}

fn exec_config(spec: &ImageSpec, labels: BTreeMap<String, String>) -> Result<ExecConfig> {
    let c = &spec.config;
    let h = &c.healthcheck;
    let ns = |s: &str| -> Result<u64> { Ok(parse_duration(s)?.as_nanos() as u64) };
    let set = |items: &[String]| -> BTreeMap<String, BTreeMap<String, String>> {
        items.iter().map(|i| (i.clone(), BTreeMap::new())).collect()
    };
    let ports: Vec<String> = c
        .exposed_ports
        .iter()
        .map(|p| {
            if p.contains('/') {
                p.clone()
            } else {
                format!("{p}/tcp")
            }
        })
        .collect();
    Ok(ExecConfig {
        user: c.user.clone(),
        exposed_ports: set(&ports),
        env: c.env.clone(),
        entrypoint: c.entrypoint.clone(),
        cmd: c.cmd.clone(),
        volumes: set(&c.volumes),
        working_dir: c.workdir.clone(),
        labels,
        stop_signal: c.stop_signal.clone(),
        healthcheck: Some(Healthcheck {
            test: h.test.clone(),
            interval: ns(&h.interval)?,
            timeout: ns(&h.timeout)?,
            start_period: ns(&h.start_period)?,
            retries: h.retries,
        }),
    })
}

/// The three layers of one tier, already built.
pub struct TierLayers<'a> {
    /// Shared base layer.
    pub base: &'a Layer,
    /// Third-party licences.
    pub licences: &'a Layer,
    /// Binary + SBOM.
    pub app: &'a Layer,
    /// Number of crates in the licence layer's graph (for the history comment).
    pub crates: usize,
}

/// Write the tier's layers, config and manifest into the layout.
pub fn write_tier(
    layout: &Layout,
    spec: &ImageSpec,
    meta: &Meta,
    profile: &Profile,
    layers: &TierLayers<'_>,
) -> Result<TierImage> {
    let labels = labels(spec, meta, Some(profile));
    let mut layer_descs = Vec::new();
    for l in [layers.base, layers.licences, layers.app] {
        let d = layout.put(MT_LAYER_GZIP, &l.gz)?;
        debug_assert_eq!(d.digest, l.digest);
        layer_descs.push(d);
    }
    let history = |by: String| History {
        created: meta.created.clone(),
        created_by: by,
        comment: None,
    };
    let config = ImageConfig {
        created: meta.created.clone(),
        architecture: profile.platform.architecture.clone(),
        os: profile.platform.os.clone(),
        variant: profile.platform.variant.clone(),
        config: exec_config(spec, labels.clone())?,
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: [layers.base, layers.licences, layers.app]
                .iter()
                .map(|l| l.diff_id.clone())
                .collect(),
        },
        history: vec![
            history("cargo xtask build-images: base layer (images/image.toml)".into()),
            history(format!(
                "cargo xtask build-images: licences of {} crates",
                layers.crates
            )),
            history(format!(
                "cargo xtask build-images: {} binary ({}) and SPDX SBOM",
                profile.name, profile.target
            )),
        ],
    };
    let config_desc = layout.put(MT_CONFIG, &oci::canonical_json(&config)?)?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: MT_MANIFEST.into(),
        config: config_desc.clone(),
        layers: layer_descs.clone(),
        annotations: labels,
    };
    let manifest_desc = layout.put(MT_MANIFEST, &oci::canonical_json(&manifest)?)?;
    Ok(TierImage {
        tier: profile.name.clone(),
        suffix: profile.tag_suffix.clone(),
        platform: Platform {
            architecture: profile.platform.architecture.clone(),
            os: profile.platform.os.clone(),
            variant: profile.platform.variant.clone(),
        },
        default_for_arch: profile.default_for_arch,
        manifest: manifest_desc,
        config: config_desc,
        layers: layer_descs,
    })
}

/// True if clients normalise this variant to "no variant" anyway (arm64 v8), so a plain duplicate
/// entry would add nothing.
fn variant_is_implicit(p: &Platform) -> bool {
    p.architecture == "arm64" && p.variant.as_deref() == Some("v8")
}

/// The multi-platform index: each tier with its variant (in the given order, best first per
/// architecture), then — for the `default_for_arch` tier — a plain entry without a variant, for
/// clients that do not match variants (Docker 20.10, containerd/CRI, Podman).
pub fn index(images: &[TierImage], annotations: BTreeMap<String, String>) -> Index {
    let mut manifests = Vec::new();
    let mut arches: Vec<&str> = Vec::new();
    for i in images {
        if !arches.contains(&i.platform.architecture.as_str()) {
            arches.push(&i.platform.architecture);
        }
    }
    for arch in arches {
        let of_arch: Vec<&TierImage> = images
            .iter()
            .filter(|i| i.platform.architecture == arch)
            .collect();
        for i in &of_arch {
            let mut d = i.manifest.clone();
            d.platform = Some(i.platform.clone());
            manifests.push(d);
        }
        if let Some(def) = of_arch.iter().find(|i| i.default_for_arch)
            && def.platform.variant.is_some()
            && !variant_is_implicit(&def.platform)
        {
            let mut d = def.manifest.clone();
            d.platform = Some(Platform {
                variant: None,
                ..def.platform.clone()
            });
            manifests.push(d);
        }
    }
    Index {
        schema_version: 2,
        media_type: MT_INDEX.into(),
        manifests,
        annotations,
    }
}

/// The layout's (and the hybrid tarball's) top-level `index.json`: the multi-platform index named
/// `<version>`, and each tier's manifest named `<version>-<suffix>` (ref.name for skopeo/umoci,
/// io.containerd.image.name for Docker's containerd image store).
pub fn layout_index(meta: &Meta, index_desc: &Descriptor, images: &[TierImage]) -> Index {
    let named = |mut d: Descriptor, tag: &str| {
        d.annotations
            .insert(oci::ANN_REF_NAME.into(), tag.to_string());
        d.annotations.insert(
            oci::ANN_CONTAINERD_NAME.into(),
            format!("{}:{tag}", meta.name),
        );
        d
    };
    let mut manifests = vec![named(index_desc.clone(), &meta.version)];
    for i in images {
        let mut d = i.manifest.clone();
        d.platform = Some(i.platform.clone());
        manifests.push(named(d, &format!("{}-{}", meta.version, i.suffix)));
    }
    Index {
        schema_version: 2,
        media_type: MT_INDEX.into(),
        manifests,
        annotations: BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(tier: &str, arch: &str, variant: &str, default: bool, digest: char) -> TierImage {
        let d = Descriptor {
            media_type: MT_MANIFEST.into(),
            digest: format!("sha256:{}", digest.to_string().repeat(64)),
            size: 1,
            platform: None,
            annotations: BTreeMap::new(),
        };
        TierImage {
            tier: tier.into(),
            suffix: tier.into(),
            platform: Platform {
                architecture: arch.into(),
                os: "linux".into(),
                variant: Some(variant.into()),
            },
            default_for_arch: default,
            manifest: d.clone(),
            config: d,
            layers: vec![],
        }
    }

    #[test]
    fn index_has_variants_then_a_plain_amd64_entry_pointing_at_the_default_tier() {
        let images = [
            img("v4", "amd64", "v4", false, 'a'),
            img("v3", "amd64", "v3", false, 'b'),
            img("v2", "amd64", "v2", true, 'c'),
            img("arm", "arm64", "v8", true, 'd'),
        ];
        let idx = index(&images, BTreeMap::new());
        let got: Vec<(String, Option<String>, char)> = idx
            .manifests
            .iter()
            .map(|m| {
                let p = m.platform.clone().unwrap();
                (p.architecture, p.variant, m.digest.chars().nth(7).unwrap())
            })
            .collect();
        let want = [
            ("amd64", Some("v4"), 'a'),
            ("amd64", Some("v3"), 'b'),
            ("amd64", Some("v2"), 'c'),
            ("amd64", None, 'c'),
            ("arm64", Some("v8"), 'd'),
        ];
        let want: Vec<(String, Option<String>, char)> = want
            .iter()
            .map(|(a, v, d)| (a.to_string(), v.map(String::from), *d))
            .collect();
        assert_eq!(got, want);
        // Never a "v1" variant.
        assert!(
            !oci::canonical_json(&idx)
                .unwrap()
                .windows(4)
                .any(|w| w == b"\"v1\"")
        );
    }

    #[test]
    fn licence_files_are_recognised() {
        for n in [
            "LICENSE",
            "LICENSE-MIT",
            "license-apache",
            "COPYING",
            "NOTICE",
            "UNLICENSE",
            "LICENCE.txt",
        ] {
            assert!(is_licence_file(n), "{n}");
        }
        for n in ["README.md", "Cargo.toml", "src"] {
            assert!(!is_licence_file(n), "{n}");
        }
    }
}
