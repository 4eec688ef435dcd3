//! CPU tier profiles: one TOML file per tier in `profiles/` (target triple, codegen flags, required
//! CPU features, OCI platform, tag suffix). Loads, validates and orders them (best tier of each
//! architecture first). It does NOT build anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// The OCI platform of a tier's image.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// GOARCH spelling: `amd64`, `arm64`.
    pub architecture: String,
    /// `v2`/`v3`/`v4` for amd64, `v8` for arm64.
    #[serde(default)]
    pub variant: Option<String>,
}

/// One `profiles/<tier>.toml`.
#[derive(Debug, Clone, Deserialize)]
pub struct Profile {
    /// Tier name, e.g. `x86-64-v3` (the file stem must match).
    pub name: String,
    /// Rust target triple; must be a static musl target.
    pub target: String,
    /// Extra rustc flags for this tier (e.g. `-C target-cpu=x86-64-v3`).
    #[serde(default)]
    pub rustflags: Vec<String>,
    /// rustc target-feature names the CPU guard checks.
    pub required_features: Vec<String>,
    /// Image tag suffix, e.g. `amd64-v3`.
    pub tag_suffix: String,
    /// This tier also serves the plain (variant-less) entry of its architecture in the index.
    #[serde(default)]
    pub default_for_arch: bool,
    /// OCI platform.
    pub platform: Platform,
    /// The file it was read from.
    #[serde(skip)]
    pub file: PathBuf,
    /// The file's bytes (fingerprinted).
    #[serde(skip)]
    pub raw: Vec<u8>,
}

impl Profile {
    /// The target's architecture as rustc spells it (`x86_64`, `aarch64`).
    pub fn target_arch(&self) -> &str {
        self.target.split('-').next().unwrap_or("")
    }
}

/// Read every `*.toml` in `dir`, validate, and order: by architecture, best tier first (more
/// required features = higher tier), then by name.
pub fn load_all(dir: &Path) -> Result<Vec<Profile>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the tier profiles in {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!(
            "no tier profiles (*.toml) in {}; add one per CPU tier",
            dir.display()
        );
    }
    let mut profiles = Vec::new();
    for file in files {
        let raw = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
        let text = String::from_utf8(raw.clone())
            .with_context(|| format!("{} is not UTF-8", file.display()))?;
        let mut p: Profile =
            toml::from_str(&text).with_context(|| format!("invalid profile {}", file.display()))?;
        p.file = file;
        p.raw = raw;
        profiles.push(p);
    }
    validate(&profiles)?;
    profiles.sort_by(|a, b| {
        (
            &a.platform.architecture,
            std::cmp::Reverse(a.required_features.len()),
            &a.name,
        )
            .cmp(&(
                &b.platform.architecture,
                std::cmp::Reverse(b.required_features.len()),
                &b.name,
            ))
    });
    Ok(profiles)
}

fn validate(profiles: &[Profile]) -> Result<()> {
    let mut names = BTreeSet::new();
    let mut suffixes = BTreeSet::new();
    let mut defaults: BTreeMap<&str, &str> = BTreeMap::new();
    for p in profiles {
        let f = p.file.display();
        let stem = p.file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        if stem != p.name {
            bail!("{f}: name = {:?} must match the file name ({stem})", p.name);
        }
        if !names.insert(&p.name) {
            bail!("{f}: tier name {:?} is used twice", p.name);
        }
        if !suffixes.insert(&p.tag_suffix) {
            bail!(
                "{f}: tag_suffix {:?} is used by another profile",
                p.tag_suffix
            );
        }
        if p.tag_suffix.is_empty()
            || !p
                .tag_suffix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            bail!(
                "{f}: tag_suffix {:?} must be non-empty [A-Za-z0-9._-]",
                p.tag_suffix
            );
        }
        if !p.target.ends_with("-linux-musl") {
            bail!(
                "{f}: target {:?} is not a static musl target (e.g. x86_64-unknown-linux-musl); \
                 the images have no libc",
                p.target
            );
        }
        if p.platform.os != "linux" {
            bail!("{f}: platform.os must be \"linux\"");
        }
        if p.platform.variant.as_deref() == Some("v1") {
            bail!("{f}: variant \"v1\" is not matched by Docker 20.10; omit it (plain entry)");
        }
        let expected_arch = match p.target_arch() {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => bail!("{f}: target architecture {other:?} is not supported (x86_64, aarch64)"),
        };
        if p.platform.architecture != expected_arch {
            bail!(
                "{f}: platform.architecture {:?} does not match target {:?} (expected {expected_arch:?})",
                p.platform.architecture,
                p.target
            );
        }
        let known = bitnet_cpu_guard::known_features(p.target_arch());
        for feat in &p.required_features {
            if !known.contains(&feat.as_str()) {
                bail!(
                    "{f}: unknown CPU feature {feat:?}; the CPU guard knows: {}",
                    known.join(", ")
                );
            }
        }
        if p.default_for_arch
            && let Some(other) = defaults.insert(&p.platform.architecture, &p.name)
        {
            bail!(
                "{f}: default_for_arch is set by both {other} and {} for {}; only one tier can \
                 serve the plain linux/{} entry",
                p.name,
                p.platform.architecture,
                p.platform.architecture
            );
        }
    }
    Ok(())
}

/// Keep only the named tiers (all if `wanted` is empty); unknown names are an error listing the
/// known ones.
pub fn select(all: Vec<Profile>, wanted: &[String]) -> Result<Vec<Profile>> {
    if wanted.is_empty() {
        return Ok(all);
    }
    for w in wanted {
        if !all.iter().any(|p| &p.name == w) {
            let known: Vec<&str> = all.iter().map(|p| p.name.as_str()).collect();
            bail!(
                "--tiers: no profile named {w:?}; known tiers: {}",
                known.join(", ")
            );
        }
    }
    Ok(all
        .into_iter()
        .filter(|p| wanted.contains(&p.name))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, body: &str) {
        std::fs::write(dir.join(format!("{name}.toml")), body).unwrap();
    }

    fn tier(name: &str, feats: &str, suffix: &str, variant: &str, default: bool) -> String {
        format!(
            "name = \"{name}\"\ntarget = \"x86_64-unknown-linux-musl\"\n\
             required_features = [{feats}]\ntag_suffix = \"{suffix}\"\n\
             default_for_arch = {default}\n[platform]\nos = \"linux\"\n\
             architecture = \"amd64\"\nvariant = \"{variant}\"\n"
        )
    }

    #[test]
    fn repository_profiles_load_best_first() {
        let all = load_all(&crate::workspace_root().join("profiles")).unwrap();
        let amd: Vec<&str> = all
            .iter()
            .filter(|p| p.platform.architecture == "amd64")
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(amd, ["x86-64-v4", "x86-64-v3", "x86-64-v2"]);
        assert!(all.iter().any(|p| p.platform.architecture == "arm64"));
    }

    #[test]
    fn rejects_unknown_feature_duplicate_default_and_glibc_target() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "a", &tier("a", "\"avx9\"", "a", "v2", false));
        let e = load_all(d.path()).unwrap_err().to_string();
        assert!(e.contains("unknown CPU feature \"avx9\""), "{e}");

        let d = tempfile::tempdir().unwrap();
        write(d.path(), "a", &tier("a", "\"sse3\"", "a", "v2", true));
        write(d.path(), "b", &tier("b", "\"avx2\"", "b", "v3", true));
        let e = format!("{:#}", load_all(d.path()).unwrap_err());
        assert!(e.contains("default_for_arch is set by both"), "{e}");

        let d = tempfile::tempdir().unwrap();
        let body = tier("a", "\"sse3\"", "a", "v2", false).replace("musl", "gnu");
        write(d.path(), "a", &body);
        let e = load_all(d.path()).unwrap_err().to_string();
        assert!(e.contains("not a static musl target"), "{e}");
    }

    #[test]
    fn select_names_unknown_tiers() {
        let all = load_all(&crate::workspace_root().join("profiles")).unwrap();
        let e = select(all, &["x86-64-v9".into()]).unwrap_err().to_string();
        assert!(
            e.contains("no profile named \"x86-64-v9\"") && e.contains("x86-64-v3"),
            "{e}"
        );
    }
}
