//! The generated Kubernetes manifests (`cargo xtask k8s`), read back as YAML:
//! - the checked-in `deploy/kubernetes/` is what the generator writes, and `--check` catches a
//!   hand edit and a file the generator no longer writes;
//! - every object validates against the OpenAPI schemas of a current Kubernetes release
//!   (`kubernetes-validate --strict`, PyPI, in the project venv; the ci preflight installs it and
//!   `BITNET_REQUIRE_K8S_VALIDATE=1` turns a missing validator into a failure);
//! - every pod spec keeps the invariants: non-root, read-only root, all capabilities dropped, no
//!   privilege escalation, seccomp RuntimeDefault, no service-account token, the three probes on
//!   `/health`, a grace period longer than preStop + drain, no secret value;
//! - each tier's required node affinity admits exactly the model nodes (labelled the way
//!   node-feature-discovery labels them by default) that have its features, and its preferred
//!   affinity scores a node only when no better tier can run there.
//!
//! No cluster runs here (nothing can be pulled on this machine): these are static checks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

mod common;
use common::{check_catches_a_hand_edit, root, text, xtask, xtask_lock};

/// The Kubernetes release whose schemas the manifests must satisfy.
const KUBERNETES: &str = "1.37.0";
const NFD: &str = "feature.node.kubernetes.io/cpu-cpuid.";

/// Every generated file under `dir`: (path relative to it, its YAML documents as JSON values).
fn read_manifests(dir: &Path) -> Vec<(String, Vec<Value>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml") {
                let text = std::fs::read_to_string(&p).unwrap();
                let docs = serde_yaml_ng::Deserializer::from_str(&text)
                    .map(|d| {
                        Value::deserialize(d)
                            .unwrap_or_else(|e| panic!("{} is not YAML: {e}", p.display()))
                    })
                    .filter(|v| !v.is_null())
                    .collect();
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.push((rel, docs));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Render the manifests into a fresh directory.
fn render() -> (tempfile::TempDir, Vec<(String, Vec<Value>)>) {
    render_with(&["--profiles", root().join("profiles").to_str().unwrap()])
}

/// Render the manifests into a fresh directory with more arguments (e.g. `--profiles DIR`).
fn render_with(args: &[&str]) -> (tempfile::TempDir, Vec<(String, Vec<Value>)>) {
    let tmp = tempfile::tempdir().unwrap();
    let mut all = vec!["k8s", "--out", tmp.path().to_str().unwrap()];
    all.extend_from_slice(args);
    let (o, _) = xtask(&all, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let files = read_manifests(tmp.path());
    (tmp, files)
}

fn objects<'a>(files: &'a [(String, Vec<Value>)], kind: &str) -> Vec<(&'a str, &'a Value)> {
    files
        .iter()
        .flat_map(|(f, docs)| docs.iter().map(move |d| (f.as_str(), d)))
        .filter(|(_, d)| d["kind"] == kind)
        .collect()
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

fn labels_of(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), s(v).to_string()))
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Node affinity, evaluated the way the scheduler does.

type Node = BTreeMap<String, String>;

fn expr_matches(e: &Value, node: &Node) -> bool {
    let key = s(&e["key"]);
    let values: Vec<&str> = e["values"]
        .as_array()
        .map(|a| a.iter().map(s).collect())
        .unwrap_or_default();
    match s(&e["operator"]) {
        "In" => node.get(key).is_some_and(|v| values.contains(&v.as_str())),
        "NotIn" => node.get(key).is_none_or(|v| !values.contains(&v.as_str())),
        "Exists" => node.contains_key(key),
        "DoesNotExist" => !node.contains_key(key),
        op => panic!("operator {op} not modelled"),
    }
}

fn term_matches(term: &Value, node: &Node) -> bool {
    term["matchExpressions"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| expr_matches(e, node))
}

/// Required node affinity: any term matches.
fn admits(pod: &Value, node: &Node) -> bool {
    let req = &pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"];
    req["nodeSelectorTerms"]
        .as_array()
        .expect("every pod has a required node affinity")
        .iter()
        .any(|t| term_matches(t, node))
}

/// Preferred node affinity: the sum of the weights of the matching terms.
fn score(pod: &Value, node: &Node) -> u64 {
    pod["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        .as_array()
        .map(|terms| {
            terms
                .iter()
                .filter(|t| term_matches(&t["preference"], node))
                .map(|t| t["weight"].as_u64().unwrap())
                .sum()
        })
        .unwrap_or(0)
}

/// A node as the kubelet and node-feature-discovery (default configuration) label it.
fn node(arch: &str, cpuid: &[&str]) -> Node {
    let mut n: Node = [
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), arch.to_string()),
    ]
    .into();
    for f in cpuid {
        n.insert(format!("{NFD}{f}"), "true".into());
    }
    n
}

/// Model nodes: (name, labels, tiers whose pods may run there). The labels are what NFD shows
/// by default: no SSE*/POPCNT/CX16/BMI*/F16C/LZCNT labels (its attributeBlacklist).
fn model_nodes() -> Vec<(&'static str, Node, &'static [&'static str])> {
    const AVX512: &[&str] = &[
        "AVX", "AVX2", "FMA3", "AVX512F", "AVX512BW", "AVX512CD", "AVX512DQ", "AVX512VL", "AESNI",
        "ADX",
    ];
    vec![
        ("nehalem", node("amd64", &["AESNI"]), &["x86-64-v2"]),
        (
            "sandy-bridge",
            node("amd64", &["AVX", "AESNI"]),
            &["x86-64-v2"],
        ),
        (
            "haswell",
            node("amd64", &["AVX", "AVX2", "FMA3", "ADX"]),
            &["x86-64-v2", "x86-64-v3"],
        ),
        (
            "skylake-sp",
            node("amd64", AVX512),
            &["x86-64-v2", "x86-64-v3", "x86-64-v4"],
        ),
        // AMD Piledriver: AVX and FMA3 but no AVX2.
        (
            "piledriver",
            node("amd64", &["AVX", "FMA3", "FMA4", "AESNI"]),
            &["x86-64-v2"],
        ),
        // Xeon Phi (Knights Landing): AVX-512 F/CD/ER/PF, but not BW/DQ/VL.
        (
            "knights-landing",
            node(
                "amd64",
                &[
                    "AVX", "AVX2", "FMA3", "AVX512F", "AVX512CD", "AVX512ER", "AVX512PF",
                ],
            ),
            &["x86-64-v2", "x86-64-v3"],
        ),
        (
            "graviton",
            node("arm64", &["ASIMD", "ATOMICS", "ASIMDDP"]),
            &["aarch64"],
        ),
    ]
}

// ---------------------------------------------------------------------------------------------

#[test]
fn check_passes_on_the_checked_in_files_and_fails_on_a_hand_edit_or_a_leftover() {
    let _l = xtask_lock();
    let (o, _) = xtask(&["k8s", "--check"], &[]);
    assert!(o.status.success(), "{}", text(&o));

    let (tmp, _) = render();
    let out = tmp.path().to_str().unwrap();
    let (o, _) = xtask(&["k8s", "--check", "--out", out], &[]);
    assert!(o.status.success(), "{}", text(&o));

    check_catches_a_hand_edit(
        "k8s",
        tmp.path(),
        "common/service.yaml",
        "type: ClusterIP",
        "type: NodePort",
    );

    let (o, _) = xtask(&["k8s", "--out", out], &[]);
    assert!(o.status.success(), "{}", text(&o));
    std::fs::write(tmp.path().join("tiers/download/x86-64-v9.yaml"), "{}\n").unwrap();
    let (o, _) = xtask(&["k8s", "--check", "--out", out], &[]);
    let msg = text(&o);
    assert!(!o.status.success(), "{msg}");
    assert!(
        msg.contains("x86-64-v9.yaml (no longer generated)"),
        "{msg}"
    );
}

/// The validator from the project venv, or why there is none.
fn validator() -> Result<PathBuf, String> {
    let venv = std::env::var_os("BITNET_PYENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/pyenv"));
    let exe = venv.join("bin/kubernetes-validate");
    if exe.exists() {
        Ok(exe)
    } else {
        Err(format!(
            "{} is missing (`cargo xtask doctor --install` puts the PyPI pin from \
             xtask/src/prereq.rs there)",
            exe.display()
        ))
    }
}

fn validate(exe: &Path, files: &[PathBuf]) -> std::process::Output {
    Command::new(exe)
        .args(["--strict", "--kubernetes-version", KUBERNETES])
        .args(files)
        .output()
        .expect("run kubernetes-validate")
}

#[test]
fn every_manifest_validates_against_the_kubernetes_schemas() {
    let exe = match validator() {
        Ok(exe) => exe,
        Err(why) if std::env::var_os("BITNET_REQUIRE_K8S_VALIDATE").is_some() => {
            panic!("schema validation required but {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    let dir = root().join("deploy/kubernetes");
    let manifests = read_manifests(&dir);
    // The kustomization is kustomize's own file, not an API object (checked below instead).
    let files: Vec<PathBuf> = manifests
        .iter()
        .filter(|(f, _)| f != "kustomization.yaml")
        .map(|(f, _)| dir.join(f))
        .collect();
    let kinds: usize = manifests
        .iter()
        .filter(|(f, _)| f != "kustomization.yaml")
        .map(|(_, d)| d.len())
        .sum();
    let o = validate(&exe, &files);
    let report = text(&o);
    eprintln!(
        "kubernetes-validate --strict --kubernetes-version {KUBERNETES} on {} files, {kinds} \
         objects:\n{report}",
        files.len()
    );
    assert!(o.status.success(), "{report}");
    assert_eq!(
        report.matches("INFO").count(),
        kinds,
        "one INFO (passed) line per object:\n{report}"
    );

    // The validator does reject what the API server would: an unknown field and a wrong type.
    let tmp = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(dir.join("default/download.yaml")).unwrap();
    for (what, bad) in [
        (
            "unknown field",
            good.replace("readOnlyRootFilesystem", "readOnlyRootFileSystem"),
        ),
        (
            "string for an integer",
            good.replace("maxReplicas: 8", "maxReplicas: \"8\""),
        ),
    ] {
        assert_ne!(bad, good, "{what}: the edit must apply");
        let f = tmp.path().join("bad.yaml");
        std::fs::write(&f, bad).unwrap();
        let o = validate(&exe, &[f]);
        assert!(!o.status.success(), "{what} passed:\n{}", text(&o));
    }
}

#[test]
fn every_pod_spec_keeps_the_hardening_and_lifecycle_invariants() {
    let (_tmp, files) = render();
    let deployments = objects(&files, "Deployment");
    // default/{download,volume} + tiers/{download,volume}/<tier> for every profile.
    let tiers = std::fs::read_dir(root().join("profiles")).unwrap().count();
    assert_eq!(deployments.len(), 2 + 2 * tiers);
    for (file, d) in &deployments {
        let pod = &d["spec"]["template"]["spec"];
        let ctx = format!("{file}: {}", d["metadata"]["name"]);
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{ctx}");
        assert_eq!(pod["securityContext"]["runAsUser"], 65532, "{ctx}");
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{ctx}"
        );
        assert_eq!(pod["automountServiceAccountToken"], false, "{ctx}");
        // Selector ⊆ pod labels, or the API server refuses the Deployment.
        let pod_labels = labels_of(&d["spec"]["template"]["metadata"]["labels"]);
        for (k, v) in labels_of(&d["spec"]["selector"]["matchLabels"]) {
            assert_eq!(pod_labels.get(&k), Some(&v), "{ctx}: selector {k}");
        }
        let containers = pod["containers"].as_array().unwrap();
        assert!(!containers.is_empty(), "{ctx}");
        for c in containers {
            let sc = &c["securityContext"];
            assert_eq!(sc["runAsNonRoot"], true, "{ctx}");
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{ctx}");
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{ctx}");
            assert_eq!(
                sc["capabilities"]["drop"],
                serde_json::json!(["ALL"]),
                "{ctx}"
            );
            assert!(sc["capabilities"]["add"].is_null(), "{ctx}");
            let port_names: Vec<&str> = c["ports"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| s(&p["name"]))
                .collect();
            for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
                let get = &c[probe]["httpGet"];
                assert_eq!(get["path"], "/health", "{ctx}: {probe}");
                assert!(port_names.contains(&s(&get["port"])), "{ctx}: {probe}");
            }
            let env: BTreeMap<&str, &Value> = c["env"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| (s(&e["name"]), e))
                .collect();
            for secret in ["HF_TOKEN", "BITNET_API_KEY"] {
                if let Some(e) = env.get(secret) {
                    assert!(e["value"].is_null(), "{ctx}: {secret} has a value");
                    assert_eq!(e["valueFrom"]["secretKeyRef"]["optional"], true, "{ctx}");
                }
            }
            // SIGTERM comes after preStop; the drain must end before SIGKILL.
            let drain: u64 = s(&env["BITNET_SHUTDOWN_TIMEOUT"]["value"]).parse().unwrap();
            let pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
                .as_u64()
                .unwrap();
            let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
            assert!(grace > pre_stop + drain, "{ctx}: grace {grace}");
            // A download may take as long as the 1.19 GB file at 1 MB/s.
            let startup = &c["startupProbe"];
            let window = startup["periodSeconds"].as_u64().unwrap()
                * startup["failureThreshold"].as_u64().unwrap();
            if env.contains_key("BITNET_HF_REPO") {
                assert!(window >= 1_188, "{ctx}: startup window {window}s");
            }
            // Memory: requests = limits, at least the mapped file.
            let res = &c["resources"];
            assert_eq!(res["requests"]["memory"], res["limits"]["memory"], "{ctx}");
            let mib: u64 = s(&res["limits"]["memory"])
                .trim_end_matches("Mi")
                .parse()
                .unwrap();
            assert!(mib * (1 << 20) > 1_187_801_280, "{ctx}: {mib}Mi");
        }
        // Every mount of the model directory is read-only unless the server downloads into it.
        let downloads = file.contains("download");
        let models = c_mount(&containers[0], "models");
        assert_eq!(models["readOnly"] == true, !downloads, "{ctx}");
    }
    for (file, sa) in objects(&files, "ServiceAccount") {
        assert_eq!(sa["automountServiceAccountToken"], false, "{file}");
    }
    for (file, text) in files
        .iter()
        .map(|(f, d)| (f, serde_json::to_string(d).unwrap()))
    {
        assert!(!text.contains("\"kind\":\"Secret\""), "{file}");
    }
}

fn c_mount<'a>(c: &'a Value, name: &str) -> &'a Value {
    c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("no mount {name}"))
}

#[test]
fn each_tier_lands_only_on_nodes_with_its_features_and_prefers_none_a_better_tier_can_use() {
    let (_tmp, files) = render();
    check_placement(&files);
}

/// A tier set without x86-64-v3: v2 then steers away from v4's nodes only, and the multi-arch
/// default covers amd64 alone. A feature with no known node label stops generation.
#[test]
fn a_smaller_tier_set_places_the_same_way_and_an_unmapped_feature_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for tier in ["x86-64-v2", "x86-64-v4"] {
        let f = format!("{tier}.toml");
        std::fs::copy(root().join("profiles").join(&f), dir.path().join(&f)).unwrap();
    }
    let profiles = dir.path().to_str().unwrap();
    let (_tmp, files) = render_with(&["--profiles", profiles]);
    let names: Vec<&str> = files.iter().map(|(f, _)| f.as_str()).collect();
    assert!(
        names.contains(&"tiers/download/x86-64-v4.yaml"),
        "{names:?}"
    );
    assert!(
        !names
            .iter()
            .any(|n| n.contains("x86-64-v3") || n.contains("aarch64"))
    );
    check_placement(&files);

    let v4 = dir.path().join("x86-64-v4.toml");
    let edited = std::fs::read_to_string(&v4)
        .unwrap()
        .replace("\"avx512vl\",", "\"avx512vl\", \"avx512vnni\",");
    std::fs::write(&v4, edited).unwrap();
    let out = tempfile::tempdir().unwrap();
    let (o, _) = xtask(
        &[
            "k8s",
            "--out",
            out.path().to_str().unwrap(),
            "--profiles",
            profiles,
        ],
        &[],
    );
    let msg = text(&o);
    assert!(!o.status.success(), "{msg}");
    assert!(
        msg.contains("avx512vnni") && msg.contains("node_sign"),
        "{msg}"
    );
}

/// The placement invariants over every Deployment of a rendered set, against the model nodes.
fn check_placement(files: &[(String, Vec<Value>)]) {
    let deployments = objects(files, "Deployment");
    let nodes = model_nodes();
    let tier_of = |d: &Value| {
        s(&d["spec"]["template"]["metadata"]["labels"]["bitnet-serve/tier"]).to_string()
    };
    for (file, d) in &deployments {
        let pod = &d["spec"]["template"]["spec"];
        let tier = tier_of(d);
        let image = s(&pod["containers"][0]["image"]);
        for (name, labels, runs) in &nodes {
            // The default runs wherever some tier of the set runs.
            let want = if tier == "multi-arch" {
                deployments
                    .iter()
                    .any(|(_, o)| tier_of(o) != "multi-arch" && runs.contains(&tier_of(o).as_str()))
            } else {
                runs.contains(&tier.as_str())
            };
            assert_eq!(admits(pod, labels), want, "{file} ({tier}) on {name}");
        }
        assert!(!admits(pod, &node("s390x", &[])), "{file} on s390x");
        let mut windows = node("amd64", &["AVX", "AVX2", "FMA3"]);
        windows.insert("kubernetes.io/os".into(), "windows".into());
        assert!(!admits(pod, &windows), "{file} on a Windows node");
        if tier == "multi-arch" {
            assert!(
                !image.contains("-amd64-") && !image.ends_with("-arm64"),
                "{image}"
            );
            assert_eq!(score(pod, &nodes[0].1), 0, "{file}: no preference");
            continue;
        }
        assert!(
            image.ends_with(&format!("-{}", tier_suffix(&tier))),
            "{file}: {image}"
        );
        // Taking away any one CPU label this tier requires keeps its pods off that node.
        let req =
            &pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"];
        let cpu_keys: Vec<&str> = req["nodeSelectorTerms"][0]["matchExpressions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| s(&e["key"]))
            .filter(|k| k.starts_with(NFD))
            .collect();
        // (skylake-sp carries every x86 label the model nodes know.)
        assert_eq!(nodes[3].0, "skylake-sp");
        for key in &cpu_keys {
            let mut without = nodes[3].1.clone();
            assert!(admits(pod, &without), "{file}: {tier} on skylake-sp");
            without.remove(*key);
            assert!(!admits(pod, &without), "{file}: admitted without {key}");
        }
        // Best tier preferred: on a node it may use, a tier scores only if no better tier of the
        // same architecture may use that node too.
        for (name, labels, runs) in &nodes {
            if !runs.contains(&tier.as_str()) {
                continue;
            }
            let better_fits = deployments.iter().any(|(_, other)| {
                let o = &other["spec"]["template"]["spec"];
                tier_of(other) != tier
                    && tier_of(other) != "multi-arch"
                    && admits(o, labels)
                    && required_count(o) > required_count(pod)
            });
            // The best tier of an architecture has no preference to express.
            let prefers =
                !pod["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
                    .is_null();
            assert_eq!(
                score(pod, labels) > 0,
                prefers && !better_fits,
                "{file} ({tier}) on {name}: score {}",
                score(pod, labels)
            );
        }
    }
}

fn required_count(pod: &Value) -> usize {
    pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"][0]["matchExpressions"]
        .as_array()
        .unwrap()
        .len()
}

/// The tag suffix of a tier, from its profile.
fn tier_suffix(tier: &str) -> String {
    let text = std::fs::read_to_string(root().join(format!("profiles/{tier}.toml"))).unwrap();
    let v: toml::Value = toml::from_str(&text).unwrap();
    v["tag_suffix"].as_str().unwrap().to_string()
}

#[test]
fn services_budgets_and_autoscalers_cover_every_deployment() {
    let (tmp, files) = render();
    let deployments = objects(&files, "Deployment");
    let services = objects(&files, "Service");
    let pdbs = objects(&files, "PodDisruptionBudget");
    let hpas = objects(&files, "HorizontalPodAutoscaler");
    let policies = objects(&files, "NetworkPolicy");
    assert_eq!((services.len(), pdbs.len()), (1, 1));
    let selects = |sel: &Value, d: &Value| {
        let pod = labels_of(&d["spec"]["template"]["metadata"]["labels"]);
        labels_of(sel).iter().all(|(k, v)| pod.get(k) == Some(v))
    };
    for (file, d) in &deployments {
        let name = s(&d["metadata"]["name"]);
        assert!(selects(&services[0].1["spec"]["selector"], d), "{file}");
        assert!(
            selects(&pdbs[0].1["spec"]["selector"]["matchLabels"], d),
            "{file}"
        );
        assert!(
            policies
                .iter()
                .any(|(_, p)| selects(&p["spec"]["podSelector"]["matchLabels"], d)),
            "{file}"
        );
        let hpa: Vec<_> = hpas
            .iter()
            .filter(|(f, h)| f == file && h["spec"]["scaleTargetRef"]["name"] == name)
            .collect();
        assert_eq!(hpa.len(), 1, "{file}: one HPA for {name}");
        let metric = &hpa[0].1["spec"]["metrics"][0];
        assert_eq!(metric["type"], "Pods", "{file}");
        assert_eq!(metric["pods"]["metric"]["name"], "bitnet_load", "{file}");
        assert!(
            d["spec"]["replicas"].is_null(),
            "{file}: the HPA owns replicas"
        );
    }
    // The service targets the containers' named port.
    let port = s(&services[0].1["spec"]["ports"][0]["targetPort"]);
    assert_eq!(port, "http");
    // The kustomization lists files that exist, the default set's among them.
    let k = &files
        .iter()
        .find(|(f, _)| f == "kustomization.yaml")
        .unwrap()
        .1[0];
    let resources: Vec<&str> = k["resources"].as_array().unwrap().iter().map(s).collect();
    assert!(
        resources.contains(&"default/download.yaml"),
        "{resources:?}"
    );
    for r in resources {
        assert!(tmp.path().join(r).is_file(), "{r}");
    }
}
