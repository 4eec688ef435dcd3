//! `images/image.toml`: what goes into every image (config, healthcheck, labels, base-layer files,
//! app-layer files). Parses and validates the data and resolves file sources to bytes. It does NOT
//! assemble layers or talk to any tool besides reading files (and `dpkg-query` for provenance).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// The whole `images/image.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    /// Descriptive metadata.
    pub image: ImageMeta,
    /// The image config (user, entrypoint, …).
    pub config: ConfigSpec,
    /// Base-layer entries.
    pub base: Vec<EntrySpec>,
    /// The app layer.
    pub app: AppSpec,
}

/// `[image]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageMeta {
    /// `org.opencontainers.image.title` (default: the server package name).
    pub title: Option<String>,
    /// `org.opencontainers.image.description` (default: the package description).
    pub description: Option<String>,
    /// `org.opencontainers.image.licenses` (default: the package licence).
    pub licenses: Option<String>,
    /// `org.opencontainers.image.source` (default: the package repository).
    pub source: Option<String>,
    /// `org.opencontainers.image.vendor`.
    pub vendor: Option<String>,
    /// `org.opencontainers.image.documentation`.
    pub documentation: Option<String>,
    /// Prefix for project keys (`<prefix>.cpu.tier`, `<prefix>.cpu.features`).
    pub label_prefix: String,
    /// Fail the build if a tier image (layers + config + manifest, compressed) is larger.
    pub size_budget_mb: Option<f64>,
}

/// `[config]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigSpec {
    /// `uid:gid`, numeric.
    pub user: String,
    /// Working directory.
    pub workdir: String,
    /// Entrypoint (exec form).
    pub entrypoint: Vec<String>,
    /// Default arguments.
    pub cmd: Vec<String>,
    /// `KEY=VALUE` entries.
    pub env: Vec<String>,
    /// e.g. `8080/tcp`.
    pub exposed_ports: Vec<String>,
    /// Volume mount points.
    pub volumes: Vec<String>,
    /// Stop signal.
    pub stop_signal: Option<String>,
    /// Docker HEALTHCHECK.
    pub healthcheck: HealthcheckSpec,
    /// Extra labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// `[config.healthcheck]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthcheckSpec {
    /// `["CMD", …]` (no shell in the image, so `CMD-SHELL` is refused).
    pub test: Vec<String>,
    /// e.g. `30s`.
    pub interval: String,
    /// e.g. `5s`.
    pub timeout: String,
    /// e.g. `120s`.
    pub start_period: String,
    /// Consecutive failures before unhealthy.
    pub retries: u32,
}

/// One filesystem entry of a layer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntrySpec {
    /// Absolute path in the image.
    pub path: String,
    /// A directory (no source).
    #[serde(default)]
    pub dir: bool,
    /// Source relative to `images/`.
    pub src: Option<String>,
    /// Absolute source path on the build machine.
    pub host: Option<String>,
    /// Source relative to the Rust sysroot.
    pub sysroot: Option<String>,
    /// Debian package the host file comes from (recorded in the SBOM).
    pub debian_package: Option<String>,
    /// Octal mode string; default 0755 for directories, 0644 for files.
    pub mode: Option<String>,
    /// Owner uid (default 0).
    #[serde(default)]
    pub uid: u64,
    /// Owner gid (default 0).
    #[serde(default)]
    pub gid: u64,
}

/// `[app]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSpec {
    /// Cargo package built per tier.
    pub package: String,
    /// Its binary target.
    pub bin: String,
    /// Where the binary goes in the image.
    pub binary_path: String,
    /// Where the SPDX SBOM goes.
    pub sbom_path: String,
    /// Directory for third-party licence texts.
    pub third_party_dir: String,
    /// Extra files of the app layer.
    #[serde(default)]
    pub files: Vec<EntrySpec>,
}

/// Where a resolved file came from (for provenance in the SBOM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    /// Debian package name.
    pub package: String,
    /// Its installed version (`dpkg-query`), if known.
    pub version: Option<String>,
    /// The host path the bytes were read from.
    pub host_path: String,
}

/// An entry with its content read.
#[derive(Debug, Clone)]
pub struct ResolvedEntry {
    /// Path in the image, without the leading `/`.
    pub path: String,
    /// File bytes; `None` for a directory.
    pub data: Option<Vec<u8>>,
    /// Permission bits (incl. sticky etc.).
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Set for host files with a `debian_package`.
    pub provenance: Option<Provenance>,
}

impl ImageSpec {
    /// Read and validate `images/image.toml` under `images_dir`.
    pub fn load(images_dir: &Path) -> Result<Self> {
        let file = images_dir.join("image.toml");
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let spec: ImageSpec =
            toml::from_str(&text).with_context(|| format!("invalid {}", file.display()))?;
        spec.validate()
            .with_context(|| format!("invalid {}", file.display()))?;
        Ok(spec)
    }

    fn validate(&self) -> Result<()> {
        parse_user(&self.config.user)?;
        let h = &self.config.healthcheck;
        if h.test.first().map(String::as_str) != Some("CMD") || h.test.len() < 2 {
            bail!(
                "config.healthcheck.test must be [\"CMD\", \"/path/to/binary\", …]: the image has \
                 no shell, so CMD-SHELL cannot work"
            );
        }
        for d in [&h.interval, &h.timeout, &h.start_period] {
            parse_duration(d)?;
        }
        for e in &self.config.env {
            if !e.contains('=') {
                bail!("config.env entry {e:?} is not KEY=VALUE");
            }
        }
        for p in &self.config.exposed_ports {
            let (port, proto) = p.split_once('/').unwrap_or((p, "tcp"));
            if port.parse::<u16>().is_err() || !["tcp", "udp", "sctp"].contains(&proto) {
                bail!("config.exposed_ports entry {p:?} is not PORT/tcp|udp|sctp");
            }
        }
        if self.config.entrypoint.is_empty() {
            bail!("config.entrypoint is empty");
        }
        for e in self.base.iter().chain(&self.app.files) {
            e.validate()?;
        }
        for p in [
            &self.app.binary_path,
            &self.app.sbom_path,
            &self.app.third_party_dir,
        ] {
            clean_path(p)?;
        }
        if self.image.label_prefix.is_empty() {
            bail!("image.label_prefix is empty");
        }
        Ok(())
    }
}

impl EntrySpec {
    fn validate(&self) -> Result<()> {
        clean_path(&self.path)?;
        let sources = [&self.src, &self.host, &self.sysroot]
            .iter()
            .filter(|s| s.is_some())
            .count();
        match (self.dir, sources) {
            (true, 0) | (false, 1) => {}
            (true, _) => bail!("{}: a directory takes no src/host/sysroot", self.path),
            (false, _) => {
                bail!(
                    "{}: a file needs exactly one of src, host, sysroot",
                    self.path
                )
            }
        }
        if let Some(h) = &self.host
            && !h.starts_with('/')
        {
            bail!("{}: host = {h:?} must be an absolute path", self.path);
        }
        if self.debian_package.is_some() && self.host.is_none() {
            bail!("{}: debian_package only applies to host files", self.path);
        }
        if let Some(m) = &self.mode {
            parse_mode(m).with_context(|| format!("{}: mode", self.path))?;
        }
        Ok(())
    }

    /// Read the entry's content. `images_dir` resolves `src`, `sysroot` resolves `sysroot`.
    pub fn resolve(&self, images_dir: &Path, sysroot: &Path) -> Result<ResolvedEntry> {
        let path = clean_path(&self.path)?;
        let default_mode = if self.dir { 0o755 } else { 0o644 };
        let mode = self
            .mode
            .as_deref()
            .map(parse_mode)
            .transpose()?
            .unwrap_or(default_mode);
        let (data, provenance) = if self.dir {
            (None, None)
        } else {
            let (file, prov) = match (&self.src, &self.host, &self.sysroot) {
                (Some(s), _, _) => (images_dir.join(s), None),
                (_, Some(h), _) => {
                    let prov = self.debian_package.as_ref().map(|pkg| Provenance {
                        package: pkg.clone(),
                        version: dpkg_version(pkg),
                        host_path: h.clone(),
                    });
                    (PathBuf::from(h), prov)
                }
                (_, _, Some(s)) => (sysroot.join(s), None),
                _ => unreachable!("validated: exactly one source"),
            };
            let bytes = std::fs::read(&file).with_context(|| {
                let hint = match &self.debian_package {
                    Some(p) => format!(" (install the Debian package `{p}`)"),
                    None => String::new(),
                };
                format!("{}: cannot read source {}{hint}", self.path, file.display())
            })?;
            (Some(bytes), prov)
        };
        Ok(ResolvedEntry {
            path,
            data,
            mode,
            uid: self.uid,
            gid: self.gid,
            provenance,
        })
    }
}

/// The installed version of a Debian package, if dpkg knows it.
fn dpkg_version(package: &str) -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", package])
        .output()
        .ok()?;
    let v = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !v.trim().is_empty()).then(|| v.trim().to_string())
}

/// `/a/b/` → `a/b`; refuses relative paths, `..`, empty components.
pub fn clean_path(p: &str) -> Result<String> {
    let Some(rest) = p.strip_prefix('/') else {
        bail!("image path {p:?} must be absolute");
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty()
        || rest
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        bail!("image path {p:?} must be a clean absolute path (no empty, . or .. components)");
    }
    Ok(rest.to_string())
}

/// `"1777"` → 0o1777.
pub fn parse_mode(m: &str) -> Result<u32> {
    let v = u32::from_str_radix(m, 8).with_context(|| format!("{m:?} is not an octal mode"))?;
    if v > 0o7777 {
        bail!("mode {m:?} is larger than 7777");
    }
    Ok(v)
}

/// `"65532:65532"` → (65532, 65532). Names are refused (nothing resolves them in a distroless image).
pub fn parse_user(u: &str) -> Result<(u64, u64)> {
    let (a, b) = u.split_once(':').unwrap_or((u, u));
    match (a.parse(), b.parse()) {
        (Ok(uid), Ok(gid)) => Ok((uid, gid)),
        _ => bail!("config.user {u:?} must be numeric uid:gid (e.g. \"65532:65532\")"),
    }
}

/// `"30s"`, `"500ms"`, `"2m"`, `"1h"` → Duration.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .with_context(|| format!("duration {s:?} has no number"))?;
    Ok(match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => bail!("duration {s:?}: unit must be ms, s, m or h"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_spec_is_valid_and_resolves() {
        let dir = crate::workspace_root().join("images");
        let spec = ImageSpec::load(&dir).unwrap();
        assert_eq!(parse_user(&spec.config.user).unwrap(), (65532, 65532));
        let tmp = spec.base.iter().find(|e| e.path == "/tmp").unwrap();
        let r = tmp.resolve(&dir, Path::new("/nonexistent")).unwrap();
        assert_eq!(
            (r.path.as_str(), r.mode, r.data.is_none()),
            ("tmp", 0o1777, true)
        );
        let passwd = spec.base.iter().find(|e| e.path == "/etc/passwd").unwrap();
        let r = passwd.resolve(&dir, Path::new("/nonexistent")).unwrap();
        let text = String::from_utf8(r.data.unwrap()).unwrap();
        assert!(text.contains("nonroot:x:65532:65532:"), "{text}");
    }

    #[test]
    fn helpers_reject_bad_input_with_a_reason() {
        assert_eq!(parse_duration("120s").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(
            parse_duration("5 parsecs")
                .unwrap_err()
                .to_string()
                .contains("unit")
        );
        assert_eq!(parse_mode("1777").unwrap(), 0o1777);
        assert!(parse_mode("999").is_err());
        assert!(
            parse_user("nonroot")
                .unwrap_err()
                .to_string()
                .contains("numeric")
        );
        assert_eq!(clean_path("/usr/local/bin/").unwrap(), "usr/local/bin");
        assert!(clean_path("etc/passwd").is_err());
        assert!(clean_path("/etc/../passwd").is_err());
    }

    #[test]
    fn entries_need_exactly_one_source() {
        let e: EntrySpec = toml::from_str("path = \"/x\"\nsrc = \"a\"\nhost = \"/b\"").unwrap();
        assert!(
            e.validate()
                .unwrap_err()
                .to_string()
                .contains("exactly one")
        );
        let e: EntrySpec = toml::from_str("path = \"/x\"\nhost = \"rel\"").unwrap();
        assert!(e.validate().unwrap_err().to_string().contains("absolute"));
    }
}
