//! `cargo xtask k8s`: writes plain Kubernetes manifests under `deploy/kubernetes/` from the data
//! the compose generator uses (`deploy.rs`: image spec, tier profiles, server version, the
//! server's environment variables, the memory rule, the drain timing), with the YAML writer of
//! `yaml.rs`. `--check` compares instead of writing and fails, naming the refresh command, when a
//! checked-in file is stale or no longer generated.
//!
//! The files (every path relative to `deploy/kubernetes/`):
//! - `common/`: ServiceAccount (no token), Service, NetworkPolicy, PodDisruptionBudget — shared
//!   by every Deployment below (they select pods by `app.kubernetes.io/name` only).
//! - `default/{download,volume}.yaml`: one Deployment + HorizontalPodAutoscaler on the
//!   multi-arch tag (containerd picks the amd64 entry, the x86-64-v2 floor, or arm64), for
//!   clusters without node-feature-discovery. Pick one file: the model downloaded by the server
//!   into an emptyDir, or a read-only PersistentVolumeClaim.
//! - `tiers/{download,volume}/<tier>.yaml`: the same per CPU tier, pinned to the tier's tag, with
//!   a required node affinity on the tier's node-feature-discovery labels (so a pod lands only
//!   where its build runs) and a preferred affinity away from nodes a better tier can use.
//! - `kustomization.yaml`: `common/` + `default/download.yaml`, for `kubectl apply -k`.
//!
//! Autoscaling: the HPA reads the per-pod custom metric [`LOAD_METRIC`] — (active sequences +
//! queued requests) / decode slots, from the server's `/metrics` — served by the Prometheus
//! adapter (rule in the README). An HPA over the core API validates against the core schemas
//! and needs no CRD, unlike a KEDA ScaledObject; scale to zero buys little for a server that
//! needs minutes to fetch and map a 1.2 GB model.
//!
//! This module does NOT talk to a cluster, build images or read the server crate's code.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::{Result, bail};

use crate::deploy::{
    self, CTX, HF_ENDPOINT, HF_FILE, HF_REPO, Inputs, MODEL_2B4T, MODEL_FILE, PARALLEL, REVISION,
    SHUTDOWN_TIMEOUT_S, STOP_GRACE_S, download_cache_gib, download_start_period_s,
    memory_limit_mib,
};
use crate::images::profile::Profile;
use crate::images::spec::parse_duration;
use crate::yaml::{Y, document, flow, map, st};

/// Arguments of `cargo xtask k8s`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Do not write: fail if the files in the output directory differ from what would be written.
    #[arg(long)]
    pub check: bool,
    /// Output directory (relative paths are relative to the workspace root).
    #[arg(long, default_value = "deploy/kubernetes", value_name = "DIR")]
    pub out: PathBuf,
    /// Tier profiles to generate for (relative paths are relative to the workspace root).
    #[arg(long, default_value = "profiles", value_name = "DIR")]
    pub profiles: PathBuf,
}

/// The command that refreshes the generated files.
pub const REFRESH: &str = "cargo xtask k8s";

const NAME_LABEL: &str = "app.kubernetes.io/name";
const VERSION_LABEL: &str = "app.kubernetes.io/version";
/// The tier a pod runs (`multi-arch` for the default set); part of each Deployment's selector.
const TIER_LABEL: &str = "bitnet-serve/tier";
/// `download` or `volume`: how the pod gets its model (the download egress policy selects it).
const SOURCE_LABEL: &str = "bitnet-serve/model-source";
const ARCH_LABEL: &str = "kubernetes.io/arch";
const OS_LABEL: &str = "kubernetes.io/os";
/// node-feature-discovery's label prefix for x86 CPUID flags (value `"true"`).
const NFD_CPUID: &str = "feature.node.kubernetes.io/cpu-cpuid.";

/// The optional Secret the pods read `BITNET_API_KEY` (key `api-key`) and `HF_TOKEN` (key
/// `hf-token`) from; no generated file holds its values.
const SECRET: &str = "bitnet-server";
/// The PersistentVolumeClaim holding the model for the volume variant (made by the operator).
const MODELS_CLAIM: &str = "bitnet-models";
/// Seconds the preStop hook waits so endpoints drop the pod before SIGTERM starts the drain.
const PRESTOP_S: u64 = 5;
/// The custom metric the HPA scales on, and its per-pod target (0.8 = 80% of slots in use;
/// queued requests push it past 1).
pub const LOAD_METRIC: &str = "bitnet_load";
const LOAD_TARGET: &str = "800m";
const MAX_REPLICAS: u64 = 8;
/// CPUs per pod (the server sizes its thread pool from the cgroup limit).
const CPUS: &str = "2";

// ---------------------------------------------------------------------------------------------
// CPU features as node labels.

/// How a node tells the scheduler it has a CPU feature a tier requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodeSign {
    /// node-feature-discovery labels it by default: `feature.node.kubernetes.io/cpu-cpuid.<NAME>`.
    Cpuid(&'static str),
    /// NFD detects it as `<NAME>`, but its default `sources.cpu.cpuid.attributeBlacklist` keeps
    /// the label off nodes; the image's CPU guard (exit 78, naming the right tag) is the check.
    Unlabelled(&'static str),
    /// Present on every CPU that has the named label's feature.
    ImpliedBy(&'static str),
    /// Part of the architecture (`kubernetes.io/arch`).
    Arch,
}

/// A profile's rustc feature name as a node sign; `None` for a feature nobody has mapped yet.
fn node_sign(feature: &str) -> Option<NodeSign> {
    use NodeSign::*;
    Some(match feature {
        "avx" => Cpuid("AVX"),
        "avx2" => Cpuid("AVX2"),
        "fma" => Cpuid("FMA3"),
        "avx512f" => Cpuid("AVX512F"),
        "avx512bw" => Cpuid("AVX512BW"),
        "avx512cd" => Cpuid("AVX512CD"),
        "avx512dq" => Cpuid("AVX512DQ"),
        "avx512vl" => Cpuid("AVX512VL"),
        "sse3" => Unlabelled("SSE3"),
        "ssse3" => Unlabelled("SSSE3"),
        "sse4.1" => Unlabelled("SSE4"),
        "sse4.2" => Unlabelled("SSE42"),
        "popcnt" => Unlabelled("POPCNT"),
        "cmpxchg16b" => Unlabelled("CX16"),
        "bmi1" => Unlabelled("BMI1"),
        "bmi2" => Unlabelled("BMI2"),
        "f16c" => Unlabelled("F16C"),
        "lzcnt" => Unlabelled("LZCNT"),
        // NFD reports AVX only when the OS enabled XSAVE state, and every AVX2 CPU (Haswell,
        // Excavator and later) has MOVBE.
        "xsave" => ImpliedBy("AVX"),
        "movbe" => ImpliedBy("AVX2"),
        "neon" => Arch,
        _ => return None,
    })
}

/// Where one tier may run, as node labels.
#[derive(Debug)]
struct Placement {
    /// `kubernetes.io/arch` value.
    arch: String,
    /// NFD label keys the node must carry (value `"true"`), sorted.
    labels: BTreeSet<String>,
    /// Required features no default label shows (the CPU guard checks them), for the comment.
    unlabelled: Vec<String>,
}

fn placement(p: &Profile) -> Result<Placement> {
    let mut labels = BTreeSet::new();
    let mut unlabelled = Vec::new();
    for f in &p.required_features {
        match node_sign(f) {
            Some(NodeSign::Cpuid(name)) => {
                labels.insert(format!("{NFD_CPUID}{name}"));
            }
            Some(NodeSign::ImpliedBy(name)) => {
                let needs = format!("{NFD_CPUID}{name}");
                if !p
                    .required_features
                    .iter()
                    .any(|g| node_sign(g) == Some(NodeSign::Cpuid(name)))
                {
                    bail!(
                        "profile {}: {f} is shown only through {needs}, which the tier does not \
                         require",
                        p.name
                    );
                }
            }
            Some(NodeSign::Unlabelled(name)) => unlabelled.push(format!("{f} ({name})")),
            Some(NodeSign::Arch) => {}
            None => bail!(
                "profile {}: no node label is known for CPU feature {f:?}; add it to \
                 k8s::node_sign (node-feature-discovery's cpuid name, or Unlabelled)",
                p.name
            ),
        }
    }
    Ok(Placement {
        arch: p.platform.architecture.clone(),
        labels,
        unlabelled,
    })
}

/// `key In [values]`.
fn expr_in(key: &str, values: &[&str]) -> Y {
    map(vec![
        ("key", st(key)),
        ("operator", st("In")),
        ("values", flow(values)),
    ])
}

/// The node affinity of one tier: required = its architecture and every label its features
/// show; preferred = away from nodes that carry the labels of the next better tier of the same
/// architecture (one term per such label, so a node missing any of them scores).
fn tier_affinity(p: &Profile, all: &[Profile]) -> Result<(Y, Placement)> {
    let me = placement(p)?;
    let mut required = vec![
        expr_in(OS_LABEL, &["linux"]),
        expr_in(ARCH_LABEL, &[&me.arch]),
    ];
    for l in &me.labels {
        required.push(expr_in(l, &["true"]));
    }
    let mut better: Option<Placement> = None;
    for q in all.iter().filter(|q| q.name != p.name) {
        let other = placement(q)?;
        let superset = other.arch == me.arch
            && other.labels.len() > me.labels.len()
            && other.labels.is_superset(&me.labels);
        if superset
            && better
                .as_ref()
                .is_none_or(|b| other.labels.len() < b.labels.len())
        {
            better = Some(other);
        }
    }
    let mut node_affinity = vec![(
        "requiredDuringSchedulingIgnoredDuringExecution",
        map(vec![(
            "nodeSelectorTerms",
            Y::List(vec![map(vec![("matchExpressions", Y::List(required))])]),
        )]),
    )];
    if let Some(b) = better {
        let missing: Vec<&String> = b.labels.difference(&me.labels).collect();
        let weight = (100 / missing.len().max(1)) as u64;
        let terms = missing
            .into_iter()
            .map(|l| {
                map(vec![
                    ("weight", Y::Int(weight)),
                    (
                        "preference",
                        map(vec![(
                            "matchExpressions",
                            Y::List(vec![map(vec![
                                ("key", st(l.as_str())),
                                ("operator", st("DoesNotExist")),
                            ])]),
                        )]),
                    ),
                ])
            })
            .collect();
        node_affinity.push((
            "preferredDuringSchedulingIgnoredDuringExecution",
            Y::List(terms),
        ));
    }
    Ok((map(vec![("nodeAffinity", map(node_affinity))]), me))
}

/// The default set's affinity: Linux on any architecture a tier is built for.
fn multi_arch_affinity(all: &[Profile]) -> Y {
    let archs: BTreeSet<&str> = all
        .iter()
        .map(|p| p.platform.architecture.as_str())
        .collect();
    let archs: Vec<&str> = archs.into_iter().collect();
    map(vec![(
        "nodeAffinity",
        map(vec![(
            "requiredDuringSchedulingIgnoredDuringExecution",
            map(vec![(
                "nodeSelectorTerms",
                Y::List(vec![map(vec![(
                    "matchExpressions",
                    Y::List(vec![
                        expr_in(OS_LABEL, &["linux"]),
                        expr_in(ARCH_LABEL, &archs),
                    ]),
                )])]),
            )]),
        )]),
    )])
}

// ---------------------------------------------------------------------------------------------
// Objects.

/// How a pod gets its model.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The server downloads it into an emptyDir (per pod; a restart of the container resumes).
    Download,
    /// A read-only PersistentVolumeClaim holding `model.gguf`.
    Volume,
}

impl Source {
    fn name(self) -> &'static str {
        match self {
            Source::Download => "download",
            Source::Volume => "volume",
        }
    }
}

/// One Deployment: the multi-arch default (`tier: None`) or one tier.
struct Variant<'a> {
    tier: Option<&'a Profile>,
    source: Source,
}

impl Variant<'_> {
    fn name(&self, inp: &Inputs) -> String {
        match self.tier {
            None => inp.image.clone(),
            Some(p) => format!("{}-{}", inp.image, p.name),
        }
    }

    fn tier_label(&self) -> &str {
        self.tier.map_or("multi-arch", |p| p.name.as_str())
    }

    fn image(&self, inp: &Inputs) -> String {
        match self.tier {
            None => inp.multi_arch_tag(),
            Some(p) => inp.tier_tag(p),
        }
    }
}

fn labels(inp: &Inputs, extra: &[(&str, &str)]) -> Y {
    let mut entries = vec![
        (NAME_LABEL, st(inp.image.clone())),
        (VERSION_LABEL, st(inp.version.clone())),
    ];
    entries.extend(extra.iter().map(|(k, v)| (*k, st(*v))));
    map(entries)
}

/// An API object: `apiVersion`, `kind`, metadata (`name`, the common labels and `extra`), then
/// `rest` (its `spec` or other fields).
fn object(
    inp: &Inputs,
    (api, kind): (&str, &str),
    name: &str,
    extra: &[(&str, &str)],
    rest: Vec<(&str, Y)>,
) -> Y {
    let mut entries = vec![
        ("apiVersion", st(api)),
        ("kind", st(kind)),
        (
            "metadata",
            map(vec![("name", st(name)), ("labels", labels(inp, extra))]),
        ),
    ];
    entries.extend(rest);
    map(entries)
}

fn env_value(name: &str, value: impl Into<String>) -> Y {
    map(vec![("name", st(name)), ("value", st(value))])
}

fn env_secret(name: &str, key: &str) -> Y {
    map(vec![
        ("name", st(name)),
        (
            "valueFrom",
            map(vec![(
                "secretKeyRef",
                map(vec![
                    ("name", st(SECRET)),
                    ("key", st(key)),
                    ("optional", Y::Bool(true)),
                ]),
            )]),
        ),
    ])
}

fn secs(s: &str) -> Result<u64> {
    Ok(parse_duration(s)?.as_secs())
}

/// An HTTP GET of `/health` on the API port: 200 only when the model is ready.
fn probe(period: u64, timeout: u64, failures: u64) -> Y {
    map(vec![
        (
            "httpGet",
            map(vec![("path", st("/health")), ("port", st("http"))]),
        ),
        ("periodSeconds", Y::Int(period)),
        ("timeoutSeconds", Y::Int(timeout)),
        ("failureThreshold", Y::Int(failures)),
    ])
}

fn container(inp: &Inputs, v: &Variant) -> Result<Y> {
    let port = inp.port()?;
    let mount = inp.model_mount()?;
    let hc = &inp.spec.config.healthcheck;
    let (uid, gid) = user_ids(inp)?;

    let mut env = vec![
        env_value("BITNET_HOST", "0.0.0.0"),
        env_value("BITNET_PORT", port),
        env_value("BITNET_SHUTDOWN_TIMEOUT", SHUTDOWN_TIMEOUT_S.to_string()),
        env_value("BITNET_CTX_SIZE", CTX.to_string()),
        env_value("BITNET_PARALLEL", PARALLEL.to_string()),
        env_value("BITNET_LOG_FORMAT", "json"),
    ];
    let start_s = match v.source {
        Source::Download => {
            env.push(env_value("BITNET_HF_REPO", HF_REPO));
            env.push(env_value("BITNET_HF_FILE", HF_FILE));
            env.push(env_value("BITNET_REVISION", REVISION));
            env.push(env_value("HF_ENDPOINT", HF_ENDPOINT));
            env.push(env_value("BITNET_MODEL_DIR", mount));
            download_start_period_s(&MODEL_2B4T)
        }
        Source::Volume => {
            env.push(env_value("BITNET_MODEL", format!("{mount}/{MODEL_FILE}")));
            secs(&hc.start_period)?
        }
    };
    env.push(env_secret("BITNET_API_KEY", "api-key"));
    if v.source == Source::Download {
        env.push(env_secret("HF_TOKEN", "hf-token"));
    }
    deploy::check_server_env(
        env.iter().map(|e| match e {
            Y::Map(entries) => match &entries[0].1 {
                Y::Str(name) => name.as_str(),
                _ => "",
            },
            _ => "",
        }),
        &[],
    )?;

    let period = 10;
    let memory = format!("{}Mi", memory_limit_mib(&MODEL_2B4T, CTX, PARALLEL));
    let mut requests = vec![("cpu", st(CPUS)), ("memory", st(memory.clone()))];
    if v.source == Source::Download {
        requests.push((
            "ephemeral-storage",
            st(format!("{}Gi", download_cache_gib(&MODEL_2B4T))),
        ));
    }
    let mut model_mount = vec![("name", st("models")), ("mountPath", st(mount))];
    if v.source == Source::Volume {
        model_mount.push(("readOnly", Y::Bool(true)));
    }
    Ok(map(vec![
        ("name", st("server")),
        ("image", st(v.image(inp))),
        ("imagePullPolicy", st("IfNotPresent")),
        // No --model: every setting comes from the environment below.
        ("args", flow(&["serve"])),
        (
            "ports",
            Y::List(vec![map(vec![
                ("name", st("http")),
                ("containerPort", Y::Int(port.parse()?)),
                ("protocol", st("TCP")),
            ])]),
        ),
        ("env", Y::List(env)),
        (
            "resources",
            map(vec![
                ("requests", map(requests)),
                (
                    "limits",
                    map(vec![("cpu", st(CPUS)), ("memory", st(memory))]),
                ),
            ]),
        ),
        (
            "volumeMounts",
            Y::List(vec![
                map(model_mount),
                map(vec![("name", st("tmp")), ("mountPath", st("/tmp"))]),
            ]),
        ),
        // Until the model is ready (download, sha256, load) only this probe runs; a failed
        // download or load (`/health` state `failed`; the server itself retries with backoff)
        // restarts the container when the window ends.
        (
            "startupProbe",
            probe(period, secs(&hc.timeout)?, start_s.div_ceil(period)),
        ),
        ("readinessProbe", probe(5, secs(&hc.timeout)?, 2)),
        // The image healthcheck's timing. Restarts a server that stops answering or stops
        // saying ready (a dead engine turns `/health` to 503 `failed` and ends the process).
        (
            "livenessProbe",
            probe(
                secs(&hc.interval)?,
                secs(&hc.timeout)?,
                u64::from(hc.retries),
            ),
        ),
        (
            "lifecycle",
            map(vec![(
                "preStop",
                map(vec![("sleep", map(vec![("seconds", Y::Int(PRESTOP_S))]))]),
            )]),
        ),
        (
            "securityContext",
            security_context(
                (uid, gid),
                vec![
                    ("readOnlyRootFilesystem", Y::Bool(true)),
                    ("allowPrivilegeEscalation", Y::Bool(false)),
                    ("capabilities", map(vec![("drop", flow(&["ALL"]))])),
                ],
            ),
        ),
    ]))
}

/// A pod's or container's security context: the image's non-root user, `extra`, and the
/// runtime's default seccomp profile.
fn security_context((uid, gid): (u64, u64), extra: Vec<(&str, Y)>) -> Y {
    let mut entries = vec![
        ("runAsNonRoot", Y::Bool(true)),
        ("runAsUser", Y::Int(uid)),
        ("runAsGroup", Y::Int(gid)),
    ];
    entries.extend(extra);
    entries.push(("seccompProfile", map(vec![("type", st("RuntimeDefault"))])));
    map(entries)
}

/// The image's `user` (`65532:65532`) as numbers.
fn user_ids(inp: &Inputs) -> Result<(u64, u64)> {
    let user = &inp.spec.config.user;
    let parsed = user
        .split_once(':')
        .and_then(|(u, g)| Some((u.parse().ok()?, g.parse().ok()?)));
    match parsed {
        Some((0, _)) | None => {
            bail!("images/image.toml: config.user {user:?} must be a non-root numeric UID:GID")
        }
        Some(ids) => Ok(ids),
    }
}

fn deployment(inp: &Inputs, v: &Variant) -> Result<(Y, String)> {
    let name = v.name(inp);
    let (affinity, note) = match v.tier {
        None => (
            multi_arch_affinity(&inp.profiles),
            "Multi-arch tag: the plain amd64 entry of the index (the x86-64-v2 floor) or arm64; \
             no node-feature-discovery needed."
                .to_string(),
        ),
        Some(p) => {
            let (aff, place) = tier_affinity(p, &inp.profiles)?;
            let mut note = format!(
                "Tier {}: runs only on {} nodes with the node-feature-discovery labels below",
                p.name, place.arch
            );
            if !place.unlabelled.is_empty() {
                note += &format!(
                    "; not labelled by NFD's default config, so checked only by the image's CPU \
                     guard: {}",
                    place.unlabelled.join(", ")
                );
            }
            note.push('.');
            (aff, note)
        }
    };
    let (uid, gid) = user_ids(inp)?;
    let selector = [(TIER_LABEL, v.tier_label())];
    let pod_labels = labels(
        inp,
        &[
            (TIER_LABEL, v.tier_label()),
            (SOURCE_LABEL, v.source.name()),
        ],
    );
    let models_volume = match v.source {
        Source::Download => map(vec![
            ("name", st("models")),
            (
                "emptyDir",
                map(vec![(
                    "sizeLimit",
                    st(format!("{}Gi", download_cache_gib(&MODEL_2B4T))),
                )]),
            ),
        ]),
        Source::Volume => map(vec![
            ("name", st("models")),
            (
                "persistentVolumeClaim",
                map(vec![
                    ("claimName", st(MODELS_CLAIM)),
                    ("readOnly", Y::Bool(true)),
                ]),
            ),
        ]),
    };
    let port = inp.port()?;
    let pod = map(vec![
        ("serviceAccountName", st(inp.image.clone())),
        ("automountServiceAccountToken", Y::Bool(false)),
        ("enableServiceLinks", Y::Bool(false)),
        (
            "terminationGracePeriodSeconds",
            Y::Int(PRESTOP_S + STOP_GRACE_S),
        ),
        (
            "securityContext",
            security_context(
                (uid, gid),
                vec![
                    ("fsGroup", Y::Int(gid)),
                    ("fsGroupChangePolicy", st("OnRootMismatch")),
                ],
            ),
        ),
        ("affinity", affinity),
        (
            "topologySpreadConstraints",
            Y::List(vec![map(vec![
                ("maxSkew", Y::Int(1)),
                ("topologyKey", st("kubernetes.io/hostname")),
                ("whenUnsatisfiable", st("ScheduleAnyway")),
                (
                    "labelSelector",
                    map(vec![("matchLabels", selector_labels(inp, &selector))]),
                ),
            ])]),
        ),
        ("containers", Y::List(vec![container(inp, v)?])),
        (
            "volumes",
            Y::List(vec![
                models_volume,
                map(vec![
                    ("name", st("tmp")),
                    ("emptyDir", map(vec![("sizeLimit", st("64Mi"))])),
                ]),
            ]),
        ),
    ]);
    let obj = object(
        inp,
        ("apps/v1", "Deployment"),
        &name,
        &[(TIER_LABEL, v.tier_label())],
        vec![(
            "spec",
            map(vec![
                // No replicas: the HPA owns the count, and re-applying must not reset it.
                (
                    "selector",
                    map(vec![("matchLabels", selector_labels(inp, &selector))]),
                ),
                (
                    "strategy",
                    map(vec![
                        ("type", st("RollingUpdate")),
                        (
                            "rollingUpdate",
                            map(vec![("maxSurge", Y::Int(1)), ("maxUnavailable", Y::Int(0))]),
                        ),
                    ]),
                ),
                (
                    "template",
                    map(vec![
                        (
                            "metadata",
                            map(vec![
                                ("labels", pod_labels),
                                (
                                    "annotations",
                                    map(vec![
                                        ("prometheus.io/scrape", st("true")),
                                        ("prometheus.io/port", st(port)),
                                        ("prometheus.io/path", st("/metrics")),
                                    ]),
                                ),
                            ]),
                        ),
                        ("spec", pod),
                    ]),
                ),
            ]),
        )],
    );
    Ok((obj, note))
}

fn selector_labels(inp: &Inputs, extra: &[(&str, &str)]) -> Y {
    let mut entries = vec![(NAME_LABEL, st(inp.image.clone()))];
    entries.extend(extra.iter().map(|(k, v)| (*k, st(*v))));
    map(entries)
}

fn hpa(inp: &Inputs, v: &Variant) -> Y {
    let name = v.name(inp);
    let min = if v.tier.is_some() { 1 } else { 2 };
    let policy = |kind: &str, value: u64, period: u64| {
        map(vec![
            ("type", st(kind)),
            ("value", Y::Int(value)),
            ("periodSeconds", Y::Int(period)),
        ])
    };
    object(
        inp,
        ("autoscaling/v2", "HorizontalPodAutoscaler"),
        &name,
        &[(TIER_LABEL, v.tier_label())],
        vec![(
            "spec",
            map(vec![
                (
                    "scaleTargetRef",
                    map(vec![
                        ("apiVersion", st("apps/v1")),
                        ("kind", st("Deployment")),
                        ("name", st(name.as_str())),
                    ]),
                ),
                ("minReplicas", Y::Int(min)),
                ("maxReplicas", Y::Int(MAX_REPLICAS)),
                (
                    "metrics",
                    Y::List(vec![map(vec![
                        ("type", st("Pods")),
                        (
                            "pods",
                            map(vec![
                                ("metric", map(vec![("name", st(LOAD_METRIC))])),
                                (
                                    "target",
                                    map(vec![
                                        ("type", st("AverageValue")),
                                        ("averageValue", st(LOAD_TARGET)),
                                    ]),
                                ),
                            ]),
                        ),
                    ])]),
                ),
                (
                    "behavior",
                    map(vec![
                        (
                            "scaleUp",
                            map(vec![
                                ("stabilizationWindowSeconds", Y::Int(0)),
                                ("policies", Y::List(vec![policy("Pods", 2, 60)])),
                            ]),
                        ),
                        (
                            "scaleDown",
                            map(vec![
                                ("stabilizationWindowSeconds", Y::Int(600)),
                                ("policies", Y::List(vec![policy("Pods", 1, 120)])),
                            ]),
                        ),
                    ]),
                ),
            ]),
        )],
    )
}

fn service_account(inp: &Inputs) -> Y {
    object(
        inp,
        ("v1", "ServiceAccount"),
        &inp.image,
        &[],
        vec![("automountServiceAccountToken", Y::Bool(false))],
    )
}

fn service(inp: &Inputs) -> Result<Y> {
    Ok(object(
        inp,
        ("v1", "Service"),
        &inp.image,
        &[],
        vec![(
            "spec",
            map(vec![
                ("type", st("ClusterIP")),
                ("selector", selector_labels(inp, &[])),
                (
                    "ports",
                    Y::List(vec![map(vec![
                        ("name", st("http")),
                        ("port", Y::Int(inp.port()?.parse()?)),
                        ("targetPort", st("http")),
                        ("protocol", st("TCP")),
                    ])]),
                ),
            ]),
        )],
    ))
}

fn pdb(inp: &Inputs) -> Y {
    object(
        inp,
        ("policy/v1", "PodDisruptionBudget"),
        &inp.image,
        &[],
        vec![(
            "spec",
            map(vec![
                ("maxUnavailable", Y::Int(1)),
                (
                    "selector",
                    map(vec![("matchLabels", selector_labels(inp, &[]))]),
                ),
            ]),
        )],
    )
}

fn port_rule(port: u64, protocol: &str) -> Y {
    map(vec![("port", Y::Int(port)), ("protocol", st(protocol))])
}

fn network_policies(inp: &Inputs) -> Result<Vec<Y>> {
    let api = map(vec![
        (
            "podSelector",
            map(vec![("matchLabels", selector_labels(inp, &[]))]),
        ),
        ("policyTypes", flow(&["Ingress", "Egress"])),
        (
            "ingress",
            Y::List(vec![map(vec![
                (
                    "from",
                    Y::List(vec![map(vec![("namespaceSelector", map(vec![]))])]),
                ),
                (
                    "ports",
                    Y::List(vec![port_rule(inp.port()?.parse()?, "TCP")]),
                ),
            ])]),
        ),
        (
            "egress",
            Y::List(vec![map(vec![(
                "ports",
                Y::List(vec![port_rule(53, "UDP"), port_rule(53, "TCP")]),
            )])]),
        ),
    ]);
    let download = map(vec![
        (
            "podSelector",
            map(vec![(
                "matchLabels",
                selector_labels(inp, &[(SOURCE_LABEL, Source::Download.name())]),
            )]),
        ),
        ("policyTypes", flow(&["Egress"])),
        (
            "egress",
            Y::List(vec![map(vec![(
                "ports",
                Y::List(vec![port_rule(443, "TCP")]),
            )])]),
        ),
    ]);
    let policy = |name: &str, spec: Y| {
        object(
            inp,
            ("networking.k8s.io/v1", "NetworkPolicy"),
            name,
            &[],
            vec![("spec", spec)],
        )
    };
    Ok(vec![
        policy(&inp.image, api),
        policy(&format!("{}-download", inp.image), download),
    ])
}

// ---------------------------------------------------------------------------------------------
// Files.

/// A file of YAML documents, each under its own comment.
fn file(about: &str, docs: &[(String, Y)]) -> String {
    let mut out = deploy::header("#", REFRESH, "k8s.rs");
    for paragraph in about.split('\n') {
        for line in deploy::wrap(paragraph, 96) {
            out.push_str(&format!("# {line}\n"));
        }
    }
    for (note, doc) in docs {
        out.push_str("---\n");
        for line in note.lines() {
            out.push_str(&format!("# {line}\n"));
        }
        out.push_str(&document(doc));
    }
    out
}

fn deployment_file(inp: &Inputs, v: &Variant) -> Result<String> {
    let (dep, placement_note) = deployment(inp, v)?;
    let source_note = match v.source {
        Source::Download => format!(
            "Model: {HF_REPO} {HF_FILE}, downloaded by the server at start into an emptyDir of \
             its pod (sha256-checked; a container restart resumes it). HF_TOKEN and \
             BITNET_API_KEY come from the optional Secret {SECRET:?} (keys hf-token, api-key)."
        ),
        Source::Volume => format!(
            "Model: {MODEL_FILE} from the PersistentVolumeClaim {MODELS_CLAIM:?} (made by you, \
             files readable by uid 65532), mounted read-only. BITNET_API_KEY comes from the \
             optional Secret {SECRET:?} (key api-key)."
        ),
    };
    let about = format!(
        "{placement_note}\n{source_note}\n\
         Probes: GET /health (200 only when the model is ready). terminationGracePeriodSeconds \
         ({}) = preStop sleep ({PRESTOP_S}s) + drain (BITNET_SHUTDOWN_TIMEOUT \
         {SHUTDOWN_TIMEOUT_S}s) + 5s.",
        PRESTOP_S + STOP_GRACE_S
    );
    Ok(file(
        &about,
        &[
            ("Deployment".into(), dep),
            (
                format!(
                    "Scales on the Prometheus-adapter metric {LOAD_METRIC} (README \"Deploy on \
                     Kubernetes\")."
                ),
                hpa(inp, v),
            ),
        ],
    ))
}

fn kustomization(files: &[(String, String)]) -> String {
    let resources: Vec<Y> = files
        .iter()
        .map(|(name, _)| name)
        .filter(|n| n.starts_with("common/") || n.as_str() == "default/download.yaml")
        .map(|n| st(n.clone()))
        .collect();
    let mut out = deploy::header("#", REFRESH, "k8s.rs");
    out.push_str(
        "# `kubectl apply -k deploy/kubernetes`: the common objects and the multi-arch Deployment\n\
         # with the downloaded model. For another set, list default/volume.yaml or files of\n\
         # tiers/download/ or tiers/volume/ instead of default/download.yaml.\n",
    );
    out.push_str(&document(&map(vec![
        ("apiVersion", st("kustomize.config.k8s.io/v1beta1")),
        ("kind", st("Kustomization")),
        ("resources", Y::List(resources)),
    ])));
    out
}

/// The generated files: (path relative to the output directory, contents), sorted by path.
fn generate(inp: &Inputs) -> Result<Vec<(String, String)>> {
    let mut files = vec![
        (
            "common/serviceaccount.yaml".to_string(),
            file(
                "The pods' identity: no API token is mounted (the server never calls the API).",
                &[("ServiceAccount".into(), service_account(inp))],
            ),
        ),
        (
            "common/service.yaml".to_string(),
            file(
                "One ClusterIP Service over every tier's pods; readiness keeps loading pods out.",
                &[("Service".into(), service(inp)?)],
            ),
        ),
        (
            "common/poddisruptionbudget.yaml".to_string(),
            file(
                "Voluntary evictions (drains) take one server pod at a time, across all tiers.",
                &[("PodDisruptionBudget".into(), pdb(inp))],
            ),
        ),
        (
            "common/networkpolicy.yaml".to_string(),
            file(
                "Ingress: the API port from pods in any namespace. Egress: DNS; and HTTPS for pods\n\
                 that download their model (a mirror on another port needs its own rule).",
                &network_policies(inp)?
                    .into_iter()
                    .zip(["API and DNS", "Model download"])
                    .map(|(y, n)| (n.to_string(), y))
                    .collect::<Vec<_>>(),
            ),
        ),
    ];
    for source in [Source::Download, Source::Volume] {
        let v = Variant { tier: None, source };
        files.push((
            format!("default/{}.yaml", source.name()),
            deployment_file(inp, &v)?,
        ));
        for p in &inp.profiles {
            let v = Variant {
                tier: Some(p),
                source,
            };
            files.push((
                format!("tiers/{}/{}.yaml", source.name(), p.name),
                deployment_file(inp, &v)?,
            ));
        }
    }
    files.sort();
    let k = kustomization(&files);
    files.push(("kustomization.yaml".into(), k));
    files.sort();
    Ok(files)
}

pub fn run(args: &Args) -> Result<()> {
    let out = deploy::workspace_path(&args.out);
    let inp = Inputs::read_with_profiles(
        &crate::workspace_root(),
        &deploy::workspace_path(&args.profiles),
    )?;
    let files = generate(&inp)?;
    deploy::write_or_check(&out, &files, args.check, REFRESH, Some("yaml"))?;
    if !args.check {
        println!(
            "next: kubectl apply -f {0}/common -f {0}/default/download.yaml   (README \"Deploy on \
             Kubernetes\")",
            out.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> Inputs {
        Inputs::read(&crate::workspace_root()).unwrap()
    }

    #[test]
    fn generation_is_deterministic_and_secret_free() {
        let inp = inputs();
        let a = generate(&inp).unwrap();
        assert_eq!(a, generate(&inputs()).unwrap());
        for (name, text) in &a {
            assert!(!text.contains("HF_TOKEN="), "{name}");
            assert!(!text.contains("kind: Secret"), "{name}");
        }
        let tiers: Vec<&String> = a
            .iter()
            .map(|(n, _)| n)
            .filter(|n| n.starts_with("tiers/download/"))
            .collect();
        assert_eq!(tiers.len(), inp.profiles.len());
    }

    #[test]
    fn every_profile_feature_has_a_node_sign_and_blacklisted_ones_are_not_required() {
        for p in &inputs().profiles {
            let place = placement(p).unwrap();
            for l in &place.labels {
                // NFD's default attributeBlacklist: these labels are never on a node by default.
                for hidden in ["SSE4", "SSE42", "POPCNT", "BMI1", "BMI2", "F16C", "LZCNT"] {
                    assert_ne!(l, &format!("{NFD_CPUID}{hidden}"), "{}", p.name);
                }
            }
        }
        let mut p = inputs().profiles.remove(0);
        p.required_features.push("amx-tile".into());
        let err = placement(&p).unwrap_err().to_string();
        assert!(
            err.contains("amx-tile") && err.contains("node_sign"),
            "{err}"
        );
    }

    #[test]
    fn the_v3_tier_requires_avx2_and_prefers_nodes_without_avx512() {
        let inp = inputs();
        let v3 = inp.profiles.iter().find(|p| p.name == "x86-64-v3").unwrap();
        let (aff, place) = tier_affinity(v3, &inp.profiles).unwrap();
        assert!(place.labels.contains(&format!("{NFD_CPUID}AVX2")));
        assert!(!place.labels.iter().any(|l| l.contains("AVX512")));
        let text = document(&aff);
        assert!(
            text.contains("key: feature.node.kubernetes.io/cpu-cpuid.AVX512F\n"),
            "{text}"
        );
        assert!(text.contains("operator: DoesNotExist"), "{text}");
    }
}
