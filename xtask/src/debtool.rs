//! Programs taken from a newer Debian release than the host's, into `target/tools/`.
//!
//! Debian 12 ships docker-compose 1.29 (the Python v1); users of Docker Desktop and current
//! Docker Engine packages run Compose v2 (Go), which reads the same file with stricter rules
//! (e.g. an unknown `--profile` is an error there, silently nothing in v1). The compose tests run
//! both. Compose v2 is Debian 13's `docker-compose` package; installing it system-wide would
//! replace the host's v1, so the one binary in it is unpacked under `target/tools/` instead.
//!
//! The package is fetched from the Debian archive over plain HTTP, exactly like apt does, and
//! trusted by the SHA-256 pinned here (copied from the release's signed `Packages` index, the
//! same digest apt checks). `dpkg-deb` unpacks it. A pin that the archive no longer serves fails
//! with the URL and what to update.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

/// One program out of one pinned Debian package.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DebTool {
    /// Short name for messages and the directory under `target/tools/`.
    pub name: &'static str,
    /// `pool/…` path of the package without the `_<arch>.deb` suffix.
    pub pool_stem: &'static str,
    /// (Debian architecture, SHA-256 of its .deb) for every architecture we run on.
    pub sha256: &'static [(&'static str, &'static str)],
    /// The program's path inside the package.
    pub member: &'static str,
}

/// Compose v2 from Debian 13 (trixie) `docker-compose 2.26.1-4`.
pub const COMPOSE_V2: DebTool = DebTool {
    name: "compose-v2",
    pool_stem: "pool/main/d/docker-compose/docker-compose_2.26.1-4",
    sha256: &[
        (
            "amd64",
            "47681197cb2b1ab88206b42a1a92fc75f50d9530a6322d03494a473eed0408ea",
        ),
        (
            "arm64",
            "bbafaa666f3e7fa00ad36f2a8bab889f1c791ca8743d674e7267a3d07203869c",
        ),
    ],
    member: "usr/libexec/docker/cli-plugins/docker-compose",
};

const MIRROR: &str = "http://deb.debian.org/debian";

/// Debian's name for the host architecture.
fn debian_arch() -> Result<&'static str> {
    Ok(match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => bail!("no Debian package pinned for {other}"),
    })
}

impl DebTool {
    /// Where the program lives once fetched (inside the workspace's `target/`).
    pub fn path(&self) -> PathBuf {
        let file = Path::new(self.member)
            .file_name()
            .expect("member names a file");
        crate::workspace_root()
            .join("target/tools")
            .join(self.name)
            .join(file)
    }

    /// `name (package version)` for messages.
    pub fn label(&self) -> String {
        let pkg = self.pool_stem.rsplit('/').next().unwrap_or(self.pool_stem);
        format!("{} (Debian {})", self.name, pkg.replace('_', " "))
    }

    fn pin(&self) -> Result<(&'static str, &'static str)> {
        let arch = debian_arch()?;
        self.sha256
            .iter()
            .copied()
            .find(|(a, _)| *a == arch)
            .with_context(|| format!("{}: no package pinned for {arch}", self.name))
    }

    /// The program's version line, if it is present and runs.
    pub fn version(&self) -> Option<String> {
        let o = Command::new(self.path()).arg("version").output().ok()?;
        o.status
            .success()
            .then(|| crate::prereq::first_line(&o.stdout))
    }

    /// Download the package, check its digest, unpack the program to [`DebTool::path`].
    pub fn fetch(&self, who: &str) -> Result<()> {
        let (arch, want) = self.pin()?;
        let url = format!("{MIRROR}/{}_{arch}.deb", self.pool_stem);
        let dir = self.path().parent().unwrap().to_path_buf();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let deb = dir.join(format!("{}.deb.part", self.name));
        eprintln!("{who}: fetching {url}");
        download(who, &url, &deb)?;
        let got = hex::encode(Sha256::digest(std::fs::read(&deb)?));
        if got != want {
            let _ = std::fs::remove_file(&deb);
            bail!(
                "{url}: sha256 {got}, expected {want} (the pin in xtask/src/debtool.rs); if \
                 Debian replaced the package, update the pin from the release's Packages index"
            );
        }
        let unpacked = dir.join("unpacked");
        let _ = std::fs::remove_dir_all(&unpacked);
        crate::ci::run_cmd(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))
            .context("unpacking with dpkg-deb")?;
        std::fs::rename(unpacked.join(self.member), self.path())
            .with_context(|| format!("{} not in {url}", self.member))?;
        std::fs::remove_dir_all(&unpacked)?;
        std::fs::remove_file(&deb)?;
        eprintln!("{who}: {} → {}", self.label(), self.path().display());
        Ok(())
    }
}

/// GET `url` into `dest`, with a log line every few seconds (these are 10–20 MB).
fn download(who: &str, url: &str, dest: &Path) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(20))
            .read_timeout(Duration::from_secs(60))
            .build()?;
        let mut resp = client
            .get(url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        if !resp.status().is_success() {
            bail!(
                "GET {url}: {} (update the pin in xtask/src/debtool.rs if Debian moved the \
                 package)",
                resp.status()
            );
        }
        let total = resp.content_length();
        let mut file = std::fs::File::create(dest)?;
        let (mut got, mut last) = (0u64, Instant::now());
        while let Some(chunk) = resp.chunk().await? {
            file.write_all(&chunk)?;
            got += chunk.len() as u64;
            if last.elapsed() >= Duration::from_secs(3) {
                last = Instant::now();
                match total {
                    Some(t) => eprintln!("{who}: {} of {} MB", got >> 20, t >> 20),
                    None => eprintln!("{who}: {} MB", got >> 20),
                }
            }
        }
        file.sync_all()?;
        Ok(())
    })
}
