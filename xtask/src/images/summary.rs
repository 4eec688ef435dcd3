//! `<out>/summary.json` and the table printed at the end: per tier the platform, manifest and
//! config digests, compressed size, and whether the build and assembly were skipped.
//! It does NOT compute any of it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::assemble::{Meta, TierImage};
use super::cargo_build::Built;

/// `<out>/summary.json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Summary {
    /// Image name.
    pub name: String,
    /// Version.
    pub version: String,
    /// OCI layout directory.
    pub layout: PathBuf,
    /// Hybrid tarball.
    pub tarball: PathBuf,
    /// Digest of the multi-platform index.
    pub index_digest: String,
    /// Per tier.
    pub tiers: Vec<SummaryTier>,
    /// SOURCE_DATE_EPOCH used.
    pub source_date_epoch: u64,
}

/// One tier in `summary.json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct SummaryTier {
    /// Tier name.
    pub tier: String,
    /// Tag suffix.
    pub suffix: String,
    /// `os/arch/variant`.
    pub platform: String,
    /// Manifest digest.
    pub manifest_digest: String,
    /// Config digest (= Docker image id on the classic store).
    pub config_digest: String,
    /// Layers + config + manifest, compressed.
    pub compressed_bytes: u64,
    /// The built binary on this machine.
    pub binary: PathBuf,
    /// Whether the cargo build was skipped (unchanged).
    pub build_skipped: bool,
    /// Seconds the cargo build took (0 if skipped).
    pub build_seconds: f64,
    /// Whether assembly was skipped (unchanged).
    pub assembly_skipped: bool,
}

impl Summary {
    /// Collect the summary of a run.
    pub fn new(
        meta: &Meta,
        layout: PathBuf,
        tarball: PathBuf,
        index_digest: &str,
        tiers: &[(&TierImage, &Built, bool)],
    ) -> Self {
        Summary {
            name: meta.name.clone(),
            version: meta.version.clone(),
            layout,
            tarball,
            index_digest: index_digest.to_string(),
            source_date_epoch: meta.epoch,
            tiers: tiers
                .iter()
                .map(|(i, b, assembled)| SummaryTier {
                    tier: i.tier.clone(),
                    suffix: i.suffix.clone(),
                    platform: format!(
                        "{}/{}{}",
                        i.platform.os,
                        i.platform.architecture,
                        i.platform
                            .variant
                            .as_deref()
                            .map(|v| format!("/{v}"))
                            .unwrap_or_default()
                    ),
                    manifest_digest: i.manifest.digest.clone(),
                    config_digest: i.config.digest.clone(),
                    compressed_bytes: i.compressed_size(),
                    binary: b.binary.clone(),
                    build_skipped: b.skipped,
                    build_seconds: b.seconds,
                    assembly_skipped: !assembled,
                })
                .collect(),
        }
    }

    /// Print the table to stdout.
    pub fn print(&self) {
        println!();
        println!(
            "{:<11} {:<16} {:<73} {:>10}",
            "TIER", "PLATFORM", "MANIFEST DIGEST", "COMPRESSED"
        );
        for t in &self.tiers {
            println!(
                "{:<11} {:<16} {:<73} {:>10}",
                t.tier,
                t.platform,
                t.manifest_digest,
                human(t.compressed_bytes)
            );
        }
        println!(
            "{:<11} {:<16} {:<73}",
            "index", "multi-platform", self.index_digest
        );
        println!();
        println!(
            "OCI layout  {}  (tags {}, {}-<tier>)",
            self.layout.display(),
            self.version,
            self.version
        );
        let size = std::fs::metadata(&self.tarball)
            .map(|m| m.len())
            .unwrap_or(0);
        println!(
            "tarball     {}  ({}; `docker load -i` it)",
            self.tarball.display(),
            human(size)
        );
        if let Some(dir) = self.layout.parent() {
            println!(
                "context     {}  (`docker build -f images/Dockerfile --build-arg TIER=<tier>`)",
                dir.join("context").display()
            );
        }
    }
}

/// Bytes as MB with two decimals.
pub fn human(bytes: u64) -> String {
    format!("{:.2} MB", bytes as f64 / 1e6)
}
