//! OCI image-spec v1.1 types (descriptor, manifest, index, config), canonical JSON, and the
//! content-addressed blob store of an OCI image layout (`oci-layout`, `index.json`,
//! `blobs/sha256/*`). Own small serde structs: every map is a `BTreeMap` and every document is
//! written by [`canonical_json`] (keys sorted, no whitespace), so bytes — and digests — are stable.
//! It does NOT decide what goes into an image (see `assemble`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::layer::sha256_digest;

/// `application/vnd.oci.image.index.v1+json`.
pub const MT_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// `application/vnd.oci.image.manifest.v1+json`.
pub const MT_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// `application/vnd.oci.image.config.v1+json`.
pub const MT_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// `application/vnd.oci.image.layer.v1.tar+gzip`.
pub const MT_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Annotation naming a tag in an OCI layout's `index.json`.
pub const ANN_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Annotation containerd (and Docker's containerd store) reads as the full image name on import.
pub const ANN_CONTAINERD_NAME: &str = "io.containerd.image.name";

/// An OCI platform object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// GOARCH.
    pub architecture: String,
    /// GOOS.
    pub os: String,
    /// e.g. `v3`, `v8`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub variant: Option<String>,
}

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced content.
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// For index entries.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub platform: Option<Platform>,
    /// Annotations.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub annotations: BTreeMap<String, String>,
}

/// An image manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    /// Always [`MT_MANIFEST`] (registry 2.8 needs the field).
    pub media_type: String,
    /// The config blob.
    pub config: Descriptor,
    /// Layer blobs, bottom first.
    pub layers: Vec<Descriptor>,
    /// Annotations.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub annotations: BTreeMap<String, String>,
}

/// An image index.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Always 2.
    pub schema_version: u32,
    /// Always [`MT_INDEX`].
    pub media_type: String,
    /// Entries.
    pub manifests: Vec<Descriptor>,
    /// Annotations.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub annotations: BTreeMap<String, String>,
}

/// Docker's HEALTHCHECK in the image config (durations in nanoseconds).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Healthcheck {
    /// `["CMD", …]`.
    pub test: Vec<String>,
    /// Nanoseconds.
    pub interval: u64,
    /// Nanoseconds.
    pub timeout: u64,
    /// Nanoseconds.
    pub start_period: u64,
    /// Failures before unhealthy.
    pub retries: u32,
}

/// The execution parameters of an image config (`config.config`).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ExecConfig {
    /// `uid:gid`.
    pub user: String,
    /// `{"8080/tcp": {}}`.
    pub exposed_ports: BTreeMap<String, BTreeMap<String, String>>,
    /// `KEY=VALUE`.
    pub env: Vec<String>,
    /// Entrypoint.
    pub entrypoint: Vec<String>,
    /// Cmd.
    pub cmd: Vec<String>,
    /// `{"/models": {}}`.
    pub volumes: BTreeMap<String, BTreeMap<String, String>>,
    /// Working dir.
    pub working_dir: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Stop signal.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub stop_signal: Option<String>,
    /// Docker extension, honoured by Docker and Podman (docker format).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub healthcheck: Option<Healthcheck>,
}

/// `rootfs` of an image config.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Uncompressed layer digests, bottom first.
    pub diff_ids: Vec<String>,
}

/// One `history` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct History {
    /// RFC 3339.
    pub created: String,
    /// What made the layer.
    pub created_by: String,
    /// Free text.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub comment: Option<String>,
}

/// An image config.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageConfig {
    /// RFC 3339 (from SOURCE_DATE_EPOCH).
    pub created: String,
    /// GOARCH.
    pub architecture: String,
    /// GOOS.
    pub os: String,
    /// e.g. `v3`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub variant: Option<String>,
    /// Execution parameters.
    pub config: ExecConfig,
    /// Layer diff ids.
    pub rootfs: RootFs,
    /// One entry per layer.
    pub history: Vec<History>,
}

/// Serialise `value` as canonical JSON: object keys sorted (by bytes), no insignificant
/// whitespace, serde_json's number and string encoding. Independent of serde_json's
/// `preserve_order` feature, because keys are sorted here, not by the map type.
pub fn canonical_json<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    let v = serde_json::to_value(value).context("serialising JSON")?;
    let mut out = Vec::new();
    write_canonical(&v, &mut out)?;
    Ok(out)
}

fn write_canonical(v: &Value, out: &mut Vec<u8>) -> Result<()> {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, k)?;
                out.push(b':');
                write_canonical(&map[k.as_str()], out)?;
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out)?;
            }
            out.push(b']');
        }
        other => serde_json::to_writer(&mut *out, other)?,
    }
    Ok(())
}

/// RFC 3339 UTC timestamp (`2026-11-25T09:44:33Z`) for seconds since the Unix epoch.
pub fn rfc3339(epoch: u64) -> String {
    let days = (epoch / 86_400) as i64;
    let secs = epoch % 86_400;
    // Civil-from-days (proleptic Gregorian), valid for all dates after 1970.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The blob store and top-level files of an OCI image layout directory.
#[derive(Debug)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// Open (creating if needed) a layout at `root`.
    pub fn open(root: &Path) -> Result<Self> {
        let blobs = root.join("blobs/sha256");
        std::fs::create_dir_all(&blobs)
            .with_context(|| format!("cannot create {}", blobs.display()))?;
        Ok(Layout {
            root: root.to_path_buf(),
        })
    }

    /// The layout directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of a blob (`sha256:<hex>`).
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        let hex = digest
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .with_context(|| format!("malformed digest {digest:?}"))?;
        Ok(self.root.join("blobs/sha256").join(hex))
    }

    /// True if the blob exists with the right size.
    pub fn has_blob(&self, digest: &str, size: u64) -> bool {
        self.blob_path(digest)
            .ok()
            .and_then(|p| std::fs::metadata(p).ok())
            .is_some_and(|m| m.len() == size)
    }

    /// Store bytes as a blob (atomic rename; no-op if present) and describe them.
    pub fn put(&self, media_type: &str, bytes: &[u8]) -> Result<Descriptor> {
        let digest = sha256_digest(bytes);
        let size = bytes.len() as u64;
        if !self.has_blob(&digest, size) {
            let path = self.blob_path(&digest)?;
            write_atomic(&path, bytes)?;
        }
        Ok(Descriptor {
            media_type: media_type.to_string(),
            digest,
            size,
            platform: None,
            annotations: BTreeMap::new(),
        })
    }

    /// Read a blob, verifying its digest.
    pub fn read(&self, digest: &str) -> Result<Vec<u8>> {
        let path = self.blob_path(digest)?;
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        if sha256_digest(&bytes) != digest {
            bail!(
                "blob {} is corrupt (digest mismatch); delete it and rebuild",
                path.display()
            );
        }
        Ok(bytes)
    }

    /// Write `oci-layout` and `index.json` (canonical JSON of `index`).
    pub fn write_index(&self, index: &Index) -> Result<Vec<u8>> {
        write_atomic(
            &self.root.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )?;
        let bytes = canonical_json(index)?;
        write_atomic(&self.root.join("index.json"), &bytes)?;
        Ok(bytes)
    }

    /// Delete blobs not in `keep`; returns how many were removed.
    pub fn gc(&self, keep: &BTreeSet<String>) -> Result<usize> {
        let dir = self.root.join("blobs/sha256");
        let mut removed = 0;
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if !keep.contains(&format!("sha256:{name}")) {
                std::fs::remove_file(e.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Write a file via a temporary sibling and rename, so readers never see half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.sync_all().ok();
    drop(f);
    std::fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_recursively_and_is_compact() {
        let v = serde_json::json!({"b": 1, "a": {"z": [true, null], "y": "é\"x"}, "A": 2.5});
        let out = String::from_utf8(canonical_json(&v).unwrap()).unwrap();
        assert_eq!(out, r#"{"A":2.5,"a":{"y":"é\"x","z":[true,null]},"b":1}"#);
    }

    #[test]
    fn canonical_json_of_a_hashmap_is_stable() {
        // HashMap iteration order differs between instances; the output must not.
        let outs: BTreeSet<Vec<u8>> = (0..8)
            .map(|_| {
                let m: std::collections::HashMap<String, u32> =
                    (0..20).map(|k| (format!("key{k}"), k)).collect();
                canonical_json(&m).unwrap()
            })
            .collect();
        assert_eq!(outs.len(), 1);
    }

    #[test]
    fn manifest_json_has_media_type_and_camel_case_fields() {
        let d = Descriptor {
            media_type: MT_CONFIG.into(),
            digest: sha256_digest(b"{}"),
            size: 2,
            platform: None,
            annotations: BTreeMap::new(),
        };
        let m = Manifest {
            schema_version: 2,
            media_type: MT_MANIFEST.into(),
            config: d.clone(),
            layers: vec![],
            annotations: BTreeMap::new(),
        };
        let s = String::from_utf8(canonical_json(&m).unwrap()).unwrap();
        assert!(
            s.starts_with(r#"{"config":{"digest":"sha256:44136fa3"#),
            "{s}"
        );
        assert!(s.contains(r#""mediaType":"application/vnd.oci.image.manifest.v1+json""#));
        assert!(s.contains(r#""schemaVersion":2"#) && !s.contains("annotations"));
    }

    #[test]
    fn rfc3339_matches_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_598_706), "2026-11-25T09:25:06Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn layout_put_read_and_gc() {
        let d = tempfile::tempdir().unwrap();
        let l = Layout::open(d.path()).unwrap();
        let a = l.put(MT_CONFIG, b"a").unwrap();
        let b = l.put(MT_CONFIG, b"b").unwrap();
        assert_eq!(l.read(&a.digest).unwrap(), b"a");
        let keep: BTreeSet<String> = [a.digest.clone()].into();
        assert_eq!(l.gc(&keep).unwrap(), 1);
        assert!(l.has_blob(&a.digest, 1) && !l.has_blob(&b.digest, 1));
        std::fs::write(l.blob_path(&a.digest).unwrap(), b"x").unwrap();
        assert!(
            l.read(&a.digest)
                .unwrap_err()
                .to_string()
                .contains("corrupt")
        );
        assert!(l.blob_path("sha256:../../etc").is_err());
    }
}
