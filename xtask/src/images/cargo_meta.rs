//! The server's resolved dependency graph for one target: `cargo metadata --filter-platform`
//! (packages, licences, normal-dependency edges) plus `Cargo.lock` checksums. Feeds the SBOM and
//! the third-party licence layer. It does NOT run builds; which packages were really compiled for
//! the target comes from the build (`cargo_build`), because `cargo metadata` unifies features
//! across the whole workspace and would list crates only xtask pulls in.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// One package of the graph.
#[derive(Debug, Clone)]
pub struct Package {
    /// Cargo package id (`registry+…#name@version`).
    pub id: String,
    /// Crate name.
    pub name: String,
    /// Version.
    pub version: String,
    /// SPDX-ish licence expression from Cargo.toml.
    pub license: Option<String>,
    /// `license-file` from Cargo.toml, relative to the manifest directory.
    pub license_file: Option<String>,
    /// `registry+https://…`, `git+…`, or `None` for path packages.
    pub source: Option<String>,
    /// Directory of its Cargo.toml.
    pub manifest_dir: PathBuf,
    /// `repository` from Cargo.toml.
    pub repository: Option<String>,
    /// `description` from Cargo.toml.
    pub description: Option<String>,
    /// Names of the crates it needs a build-dependency on (to spot C toolchains: `cc`, `cmake`).
    pub build_deps: Vec<String>,
    /// `links` key (native library).
    pub links: Option<String>,
}

/// The graph for one target.
#[derive(Debug, Clone)]
pub struct Graph {
    /// All packages by id.
    pub packages: BTreeMap<String, Package>,
    /// Normal (non-dev, non-build) dependency edges by package id.
    pub deps: BTreeMap<String, Vec<String>>,
    /// Id of the server package.
    pub root: String,
}

#[derive(Deserialize)]
struct RawMeta {
    packages: Vec<RawPackage>,
    resolve: Option<RawResolve>,
}

#[derive(Deserialize)]
struct RawPackage {
    id: String,
    name: String,
    version: String,
    license: Option<String>,
    license_file: Option<String>,
    source: Option<String>,
    manifest_path: PathBuf,
    repository: Option<String>,
    description: Option<String>,
    links: Option<String>,
    dependencies: Vec<RawDep>,
}

#[derive(Deserialize)]
struct RawDep {
    name: String,
    kind: Option<String>,
}

#[derive(Deserialize)]
struct RawResolve {
    nodes: Vec<RawNode>,
}

#[derive(Deserialize)]
struct RawNode {
    id: String,
    deps: Vec<RawNodeDep>,
}

#[derive(Deserialize)]
struct RawNodeDep {
    pkg: String,
    dep_kinds: Vec<RawDepKind>,
}

#[derive(Deserialize)]
struct RawDepKind {
    kind: Option<String>,
}

/// Run `cargo metadata` for `target` in the workspace at `root`, rooted at package `package`.
pub fn load(root: &Path, target: &str, package: &str) -> Result<Graph> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(root)
        .args([
            "metadata",
            "--locked",
            "--format-version",
            "1",
            "--filter-platform",
            target,
        ])
        .output()
        .context("cannot run `cargo metadata`")?;
    if !out.status.success() {
        bail!(
            "`cargo metadata` failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse(&out.stdout, package)
}

/// Parse `cargo metadata` JSON.
pub fn parse(json: &[u8], package: &str) -> Result<Graph> {
    let raw: RawMeta =
        serde_json::from_slice(json).context("unexpected `cargo metadata` output")?;
    let resolve = raw
        .resolve
        .context("`cargo metadata` output has no resolve graph")?;
    let mut packages = BTreeMap::new();
    let mut root = None;
    for p in raw.packages {
        if p.name == package && p.source.is_none() {
            root = Some(p.id.clone());
        }
        let build_deps = p
            .dependencies
            .iter()
            .filter(|d| d.kind.as_deref() == Some("build"))
            .map(|d| d.name.clone())
            .collect();
        let manifest_dir = p
            .manifest_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        packages.insert(
            p.id.clone(),
            Package {
                id: p.id,
                name: p.name,
                version: p.version,
                license: p.license,
                license_file: p.license_file,
                source: p.source,
                manifest_dir,
                repository: p.repository,
                description: p.description,
                build_deps,
                links: p.links,
            },
        );
    }
    let root = root.with_context(|| format!("package {package:?} is not in this workspace"))?;
    let deps = resolve
        .nodes
        .into_iter()
        .map(|n| {
            let normal = n
                .deps
                .into_iter()
                .filter(|d| d.dep_kinds.iter().any(|k| k.kind.is_none()))
                .map(|d| d.pkg)
                .collect();
            (n.id, normal)
        })
        .collect();
    Ok(Graph {
        packages,
        deps,
        root,
    })
}

impl Graph {
    /// Packages reachable from the root over normal edges, restricted to `compiled` (if given).
    pub fn runtime_closure(&self, compiled: Option<&BTreeSet<String>>) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![self.root.clone()];
        while let Some(id) = stack.pop() {
            if compiled.is_some_and(|c| !c.contains(&id) && id != self.root) {
                continue;
            }
            if !seen.insert(id.clone()) {
                continue;
            }
            if let Some(ds) = self.deps.get(&id) {
                stack.extend(ds.iter().cloned());
            }
        }
        seen
    }

    /// Packages in `set` that compile C/C++ or link a native library (so a cross C compiler is
    /// needed for foreign targets).
    pub fn needs_c_toolchain<'a>(&'a self, set: &BTreeSet<String>) -> Vec<&'a str> {
        set.iter()
            .filter_map(|id| self.packages.get(id))
            .filter(|p| p.links.is_some() || p.build_deps.iter().any(|d| d == "cc" || d == "cmake"))
            .map(|p| p.name.as_str())
            .collect()
    }
}

/// `Cargo.lock` checksums (sha256 of the `.crate` file) by (name, version).
pub fn lock_checksums(lock_file: &Path) -> Result<BTreeMap<(String, String), String>> {
    #[derive(Deserialize)]
    struct Lock {
        #[serde(default)]
        package: Vec<LockPkg>,
    }
    #[derive(Deserialize)]
    struct LockPkg {
        name: String,
        version: String,
        checksum: Option<String>,
    }
    let text = std::fs::read_to_string(lock_file)
        .with_context(|| format!("cannot read {}", lock_file.display()))?;
    let lock: Lock =
        toml::from_str(&text).with_context(|| format!("invalid {}", lock_file.display()))?;
    Ok(lock
        .package
        .into_iter()
        .filter_map(|p| p.checksum.map(|c| ((p.name, p.version), c)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const META: &str = r#"{
      "packages": [
        {"id": "path+file:///w/server#app@0.1.0", "name": "app", "version": "0.1.0",
         "license": "MIT", "license_file": null, "source": null,
         "manifest_path": "/w/server/Cargo.toml", "repository": null, "description": "d",
         "links": null,
         "dependencies": [{"name": "a", "kind": null}, {"name": "t", "kind": "dev"}]},
        {"id": "registry+r#a@1.0.0", "name": "a", "version": "1.0.0", "license": "MIT/Apache-2.0",
         "license_file": null, "source": "registry+r", "manifest_path": "/c/a-1.0.0/Cargo.toml",
         "repository": null, "description": null, "links": null,
         "dependencies": [{"name": "cc", "kind": "build"}]},
        {"id": "registry+r#t@1.0.0", "name": "t", "version": "1.0.0", "license": "MIT",
         "license_file": null, "source": "registry+r", "manifest_path": "/c/t/Cargo.toml",
         "repository": null, "description": null, "links": null, "dependencies": []},
        {"id": "registry+r#cc@1.0.0", "name": "cc", "version": "1.0.0", "license": "MIT",
         "license_file": null, "source": "registry+r", "manifest_path": "/c/cc/Cargo.toml",
         "repository": null, "description": null, "links": null, "dependencies": []}
      ],
      "resolve": {"nodes": [
        {"id": "path+file:///w/server#app@0.1.0", "deps": [
          {"pkg": "registry+r#a@1.0.0", "dep_kinds": [{"kind": null}]},
          {"pkg": "registry+r#t@1.0.0", "dep_kinds": [{"kind": "dev"}]}]},
        {"id": "registry+r#a@1.0.0", "deps": [
          {"pkg": "registry+r#cc@1.0.0", "dep_kinds": [{"kind": "build"}]}]},
        {"id": "registry+r#t@1.0.0", "deps": []},
        {"id": "registry+r#cc@1.0.0", "deps": []}
      ]}
    }"#;

    #[test]
    fn closure_follows_normal_edges_only() {
        let g = parse(META.as_bytes(), "app").unwrap();
        let c = g.runtime_closure(None);
        let names: Vec<&str> = c.iter().map(|id| g.packages[id].name.as_str()).collect();
        assert_eq!(names, ["app", "a"]);
        assert_eq!(g.needs_c_toolchain(&c), ["a"]);
        // Restricting to what was compiled drops the rest.
        let only_root: BTreeSet<String> = BTreeSet::new();
        assert_eq!(g.runtime_closure(Some(&only_root)).len(), 1);
    }

    #[test]
    fn missing_package_is_named() {
        let e = parse(META.as_bytes(), "nope").unwrap_err().to_string();
        assert!(e.contains("\"nope\""), "{e}");
    }

    #[test]
    fn workspace_lock_has_checksums_for_registry_crates() {
        let sums = lock_checksums(&crate::workspace_root().join("Cargo.lock")).unwrap();
        let (_, sum) = sums.iter().find(|((n, _), _)| n == "serde").unwrap();
        assert_eq!(sum.len(), 64);
    }
}
