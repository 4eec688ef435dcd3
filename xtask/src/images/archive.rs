//! The hybrid image tarball `docker load` accepts on both Docker image stores: an OCI layout
//! (`oci-layout`, `index.json` with `io.containerd.image.name`/`ref.name` annotations,
//! `blobs/sha256/*`) read by the containerd store, plus `manifest.json` (`Config`, `RepoTags`,
//! `Layers` per tier) read by the classic store (Docker ≤ 28 and upgraded hosts; this machine's
//! 20.10). Entries sorted, fixed mtime, numeric owners: the tarball is reproducible too.
//! It does NOT talk to Docker (see `docker`).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use super::assemble::{Meta, TierImage};
use super::oci::{Layout, canonical_json};

/// One `manifest.json` entry (Docker's `docker save` format).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifest {
    config: String,
    repo_tags: Vec<String>,
    layers: Vec<String>,
}

fn blob_name(digest: &str) -> String {
    format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))
}

/// `manifest.json` bytes: one entry per tier, tagged `<name>:<version>-<suffix>`.
pub fn docker_manifest(meta: &Meta, images: &[TierImage]) -> Result<Vec<u8>> {
    let entries: Vec<DockerManifest> = images
        .iter()
        .map(|i| DockerManifest {
            config: blob_name(&i.config.digest),
            repo_tags: vec![format!("{}:{}-{}", meta.name, meta.version, i.suffix)],
            layers: i.layers.iter().map(|l| blob_name(&l.digest)).collect(),
        })
        .collect();
    canonical_json(&entries)
}

/// Write the tarball to `path` (atomically): `index_json` is the layout's top-level index,
/// `blobs` every digest it needs.
pub fn write(
    path: &Path,
    layout: &Layout,
    index_json: &[u8],
    manifest_json: &[u8],
    blobs: &BTreeSet<String>,
    epoch: u64,
) -> Result<()> {
    let tmp = path.with_extension(format!("tar.tmp{}", std::process::id()));
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
    let header = |size: u64, dir: bool| -> Result<tar::Header> {
        let mut h = tar::Header::new_gnu();
        h.set_mode(if dir { 0o755 } else { 0o644 });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(epoch);
        h.set_username("")?;
        h.set_groupname("")?;
        h.set_size(size);
        h.set_entry_type(if dir {
            tar::EntryType::Directory
        } else {
            tar::EntryType::Regular
        });
        Ok(h)
    };
    // Sorted by path: blobs/ < blobs/sha256/ < blobs/sha256/* < index.json < manifest.json < oci-layout
    tar.append_data(&mut header(0, true)?, "blobs/", std::io::empty())?;
    tar.append_data(&mut header(0, true)?, "blobs/sha256/", std::io::empty())?;
    for digest in blobs {
        let src = layout.blob_path(digest)?;
        let f =
            std::fs::File::open(&src).with_context(|| format!("missing blob {}", src.display()))?;
        let size = f.metadata()?.len();
        tar.append_data(&mut header(size, false)?, blob_name(digest), f)?;
    }
    tar.append_data(
        &mut header(index_json.len() as u64, false)?,
        "index.json",
        index_json,
    )?;
    tar.append_data(
        &mut header(manifest_json.len() as u64, false)?,
        "manifest.json",
        manifest_json,
    )?;
    let layout_file = br#"{"imageLayoutVersion":"1.0.0"}"#;
    tar.append_data(
        &mut header(layout_file.len() as u64, false)?,
        "oci-layout",
        &layout_file[..],
    )?;
    let mut w = tar.into_inner()?;
    w.flush()?;
    w.into_inner().map_err(|e| e.into_error())?.sync_all().ok();
    std::fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))
}
