//! Facts about the workspace that the build depends on, read without running cargo: members,
//! the server package's version/description/licence/repository, git revision and
//! SOURCE_DATE_EPOCH, and the fingerprint of every source a tier build compiles.
//! It does NOT build or assemble anything.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::fingerprint::Fingerprint;

/// The server package's Cargo metadata we need (read from its Cargo.toml, no cargo call).
pub struct PackageInfo {
    /// Version.
    pub version: String,
    /// Description.
    pub description: String,
    /// Licence expression.
    pub license: String,
    /// Repository URL.
    pub repository: String,
}

pub fn workspace_members(root: &Path) -> Result<Vec<PathBuf>> {
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
    /// Find `package` among the workspace members.
    pub fn read(root: &Path, package: &str) -> Result<Self> {
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
            return Ok(info);
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
pub fn source_date_epoch(root: &Path) -> Result<u64> {
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

pub fn revision(root: &Path) -> String {
    let Some(rev) = git(root, &["rev-parse", "HEAD"]) else {
        return "unknown".into();
    };
    let dirty = git(root, &["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|s| !s.is_empty());
    if dirty { format!("{rev}-dirty") } else { rev }
}

/// Inputs every tier's cargo build depends on: toolchain, workspace manifests, lock file, cargo
/// config, and the sources of every workspace member except xtask.
pub fn source_fingerprint(root: &Path, rustc_vv: &str) -> Result<String> {
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

pub fn cargo_home() -> Option<PathBuf> {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
}
