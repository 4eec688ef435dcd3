//! What the deployment generators share (`cargo xtask compose` in `compose.rs`, `cargo xtask k8s`
//! in `k8s.rs`): their inputs (the image spec `images/image.toml`, the tier profiles
//! `profiles/*.toml`, the server crate's version), the server's environment variables they may
//! set ([`SERVER_ENV`]), the default model source, the drain timing, the memory rule (model file
//! + KV cache + headroom), and writing or `--check`ing a set of generated files.
//!
//! This module does NOT know any file format: the YAML writer is `yaml.rs`, the files are the
//! generators' own.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::images::profile::{self, Profile};
use crate::images::project::PackageInfo;
use crate::images::spec::ImageSpec;

/// Environment variables of `bitnet-server serve` that the generated files may set (the server
/// reads each one; `xtask/tests/compose.rs` checks this list against `serve --help`).
pub const SERVER_ENV: &[&str] = &[
    "BITNET_HOST",
    "BITNET_PORT",
    "BITNET_API_KEY",
    "BITNET_SHUTDOWN_TIMEOUT",
    "BITNET_MODEL",
    "BITNET_HF_REPO",
    "BITNET_HF_FILE",
    "BITNET_REVISION",
    "BITNET_MODEL_URL",
    "BITNET_SHA256",
    "BITNET_MODEL_DIR",
    "BITNET_MODEL_ID",
    "HF_ENDPOINT",
    "HF_TOKEN",
    "BITNET_CTX_SIZE",
    "BITNET_PARALLEL",
    "BITNET_LOG_FORMAT",
];

/// Fail unless every name is one of [`SERVER_ENV`] or of `extra` (variables set for others).
pub fn check_server_env<'a>(
    names: impl IntoIterator<Item = &'a str>,
    extra: &[&str],
) -> Result<()> {
    for name in names {
        if !(SERVER_ENV.contains(&name) || extra.contains(&name)) {
            bail!("{name} is not in deploy::SERVER_ENV, the server variables a generator may set");
        }
    }
    Ok(())
}

/// The default model source: the published 2B-4T I2_S file on the Hugging Face hub.
pub const HF_REPO: &str = "microsoft/bitnet-b1.58-2B-4T-gguf";
pub const HF_FILE: &str = "ggml-model-i2_s.gguf";
pub const REVISION: &str = "main";
pub const HF_ENDPOINT: &str = "https://huggingface.co";
/// The file name a mounted model directory is expected to hold.
pub const MODEL_FILE: &str = "model.gguf";

/// The embedding model of the full-stack deployment: Microsoft's published BitNet embedding file
/// (GGUF arch `qwen3`, 1024-dimensional pooled output).
pub const EMBED_HF_REPO: &str = "microsoft/bitnet-embedding-0.6b";
pub const EMBED_HF_FILE: &str = "bitnet-embeddings-0.6b-bf16-i2_s.gguf";
/// Width of the vectors [`EMBED_HF_FILE`] returns (its `n_embd`). The smaller published
/// embedding model (gemma3, 270m) returns [`EMBED_DIM_270M`].
pub const EMBED_DIM: u64 = 1024;
pub const EMBED_DIM_270M: u64 = 640;

/// Seconds the server drains in-flight requests after SIGTERM (`BITNET_SHUTDOWN_TIMEOUT`, set
/// explicitly so the grace periods below always exceed it).
/// The server's own default (`serve --shutdown-timeout`), which fits Docker's 10 s stop window.
pub const SHUTDOWN_TIMEOUT_S: u64 = 8;
/// After the timeout the server gives connections 1 s more (`serve::FINAL_WRITE_GRACE`); then a
/// margin before SIGKILL.
pub const STOP_GRACE_S: u64 = SHUTDOWN_TIMEOUT_S + 1 + 3;

/// The model the memory rule is sized for: the published BitNet b1.58 2B-4T I2_S file.
pub struct ModelSize {
    pub file_bytes: u64,
    pub n_layer: u64,
    pub n_kv_head: u64,
    pub head_dim: u64,
}

pub const MODEL_2B4T: ModelSize = ModelSize {
    file_bytes: 1_187_801_280,
    n_layer: 30,
    n_kv_head: 5,
    head_dim: 128,
};
/// The 0.6b embedding model ([`EMBED_HF_FILE`]): 28 layers, 8 KV heads, head_dim 128. The file
/// size, 0.7 GB, is an ESTIMATE, not the published file's measured size. The converter's tensor
/// list with an F16 token embedding (151936 × 1024 × 2 B = 0.31 GB) and I2_S projections (28 × 7,
/// 0.11 GB) gives 0.43 GB (`cargo xtask gen-model --preset qwen3-embed-0.6b` writes 425,237,728
/// bytes); an F32 token embedding would make it 0.74 GB. The rule gives 3072 MiB for any size
/// above 0.54 GB up to 0.81 GB and 2816 MiB at 0.43 GB, so the estimate errs on the safe side.
pub const MODEL_EMBED_0_6B: ModelSize = ModelSize {
    file_bytes: 700_000_000,
    n_layer: 28,
    n_kv_head: 8,
    head_dim: 128,
};
/// Default context and batch of the generated deployments (they size the KV cache).
pub const CTX: u64 = 4096;
pub const PARALLEL: u64 = 4;
const HEADROOM: u64 = 512 << 20;
const MIB: u64 = 1 << 20;

/// Memory limit rule: mapped model file + worst-case f16 KV cache (K and V, every layer, `ctx`
/// tokens for each of `parallel` sequences) + headroom (activations, buffers, HTTP), rounded up
/// to 256 MiB. Returns MiB.
pub fn memory_limit_mib(m: &ModelSize, ctx: u64, parallel: u64) -> u64 {
    let kv = 2 * m.n_layer * m.n_kv_head * m.head_dim * 2 * ctx * parallel;
    let total = m.file_bytes + kv + HEADROOM;
    total.div_ceil(256 * MIB) * 256
}

/// How long a start may take when the server downloads the model: the file at a slow 1 MB/s,
/// plus loading, rounded up to 5 minutes.
pub fn download_start_period_s(m: &ModelSize) -> u64 {
    let secs = m.file_bytes.div_ceil(1_000_000) + 120;
    secs.div_ceil(300) * 300
}

/// Room for a downloaded model in a cache directory: the file plus a quarter (a partial file and
/// the cache's metadata), rounded up to a GiB. Returns GiB.
pub fn download_cache_gib(m: &ModelSize) -> u64 {
    (m.file_bytes + m.file_bytes / 4).div_ceil(1 << 30)
}

/// Everything the generators read.
pub struct Inputs {
    pub spec: ImageSpec,
    pub profiles: Vec<Profile>,
    /// The image name (`bitnet-server`).
    pub image: String,
    /// The server crate's version, the default image tag.
    pub version: String,
}

impl Inputs {
    pub fn read(root: &Path) -> Result<Inputs> {
        Inputs::read_with_profiles(root, &root.join("profiles"))
    }

    /// As [`Inputs::read`], with the tier profiles from `profiles` instead of `profiles/`.
    pub fn read_with_profiles(root: &Path, profiles: &Path) -> Result<Inputs> {
        let spec = ImageSpec::load(&root.join("images"))?;
        let profiles = profile::load_all(profiles)?;
        let version = PackageInfo::read(root, &spec.app.package)?.version;
        let image = spec.image.title.clone().unwrap_or(spec.app.bin.clone());
        Ok(Inputs {
            spec,
            profiles,
            image,
            version,
        })
    }

    /// The API port inside the container (`config.exposed_ports`, first entry).
    pub fn port(&self) -> Result<&str> {
        self.spec
            .config
            .exposed_ports
            .first()
            .and_then(|p| p.split('/').next())
            .context("images/image.toml: config.exposed_ports is empty")
    }

    /// Where the image expects the model directory (`config.volumes`, first entry).
    pub fn model_mount(&self) -> Result<&str> {
        self.spec
            .config
            .volumes
            .first()
            .map(String::as_str)
            .context("images/image.toml: config.volumes is empty")
    }

    /// The multi-arch tag (`bitnet-server:0.1.0`).
    pub fn multi_arch_tag(&self) -> String {
        format!("{}:{}", self.image, self.version)
    }

    /// The tag that pins one tier (`bitnet-server:0.1.0-amd64-v3`).
    pub fn tier_tag(&self, p: &Profile) -> String {
        format!("{}:{}-{}", self.image, self.version, p.tag_suffix)
    }
}

/// The comment that opens every generated file (`c` is the comment marker).
pub fn header(c: &str, refresh: &str, generator: &str) -> String {
    format!(
        "{c} Generated by `{refresh}` from images/image.toml, profiles/*.toml and the server's\n\
         {c} flags (xtask/src/{generator}). Do not edit: change the inputs and run `{refresh}`.\n"
    )
}

/// `text` as lines of at most `width` characters (longer words stay whole).
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// `path` relative to the workspace root unless absolute.
pub fn workspace_path(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        crate::workspace_root().join(path)
    }
}

/// Write `files` (paths relative to `out`) or, with `check`, fail naming every stale one and the
/// command that refreshes them. With `owned_ext`, files of that extension under `out` that the
/// generator no longer writes count as stale too, and a write removes them.
pub fn write_or_check(
    out: &Path,
    files: &[(String, String)],
    check: bool,
    refresh: &str,
    owned_ext: Option<&str>,
) -> Result<()> {
    let leftovers: Vec<PathBuf> = match owned_ext {
        Some(ext) => files_under(out, ext)?
            .into_iter()
            .filter(|f| !files.iter().any(|(name, _)| out.join(name) == *f))
            .collect(),
        None => Vec::new(),
    };
    if check {
        let mut stale: Vec<String> = files
            .iter()
            .filter(|(name, text)| {
                std::fs::read_to_string(out.join(name)).ok().as_deref() != Some(text.as_str())
            })
            .map(|(name, _)| out.join(name).display().to_string())
            .collect();
        stale.extend(
            leftovers
                .iter()
                .map(|f| format!("{} (no longer generated)", f.display())),
        );
        if !stale.is_empty() {
            bail!(
                "stale generated files: {}\nrefresh them with `{refresh}` and commit the result",
                stale.join(", ")
            );
        }
        println!("{} is up to date", out.display());
        return Ok(());
    }
    for (name, text) in files {
        let path = out.join(name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    for f in leftovers {
        std::fs::remove_file(&f).with_context(|| format!("cannot remove {}", f.display()))?;
        println!("removed {} (no longer generated)", f.display());
    }
    Ok(())
}

/// Every file under `dir` (recursively) whose name ends in `.ext`, sorted; none if `dir` is absent.
fn files_under(dir: &Path, ext: &str) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(out);
    };
    for e in entries {
        let path = e
            .with_context(|| format!("reading {}", dir.display()))?
            .path();
        if path.is_dir() {
            out.extend(files_under(&path, ext)?);
        } else if path.extension().is_some_and(|e| e == ext) {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_rule_for_the_published_model() {
        // 1.19 GB file + 1.26 GB KV (4 × 4096 tokens) + 0.5 GiB → 2.78 GiB → 3 GiB.
        assert_eq!(memory_limit_mib(&MODEL_2B4T, 4096, 4), 3072);
        assert_eq!(memory_limit_mib(&MODEL_2B4T, 2048, 1), 2048);
        assert_eq!(download_start_period_s(&MODEL_2B4T), 1500);
        assert_eq!(download_cache_gib(&MODEL_2B4T), 2);
    }

    #[test]
    fn memory_rule_for_the_embedding_model() {
        // KV: 2 × 28 × 8 × 128 × 2 B = 112 KiB per token; × 4 × 4096 = 1.75 GiB. With the
        // 0.7 GB file and 0.5 GiB headroom: 2.90 GiB → 3 GiB.
        let kv_per_token = 2 * 28 * 8 * 128 * 2;
        assert_eq!(kv_per_token, 112 << 10);
        assert_eq!(memory_limit_mib(&MODEL_EMBED_0_6B, 4096, 4), 3072);
        // One sequence of 2048 tokens: 0.7 GB + 224 MiB + 512 MiB = 1.37 GiB → 1536 MiB.
        assert_eq!(memory_limit_mib(&MODEL_EMBED_0_6B, 2048, 1), 1536);
    }

    #[test]
    fn check_names_stale_and_leftover_files_and_write_removes_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let files = vec![("a/x.yaml".to_string(), "x: 1\n".to_string())];
        let err = write_or_check(dir.path(), &files, true, "refresh-me", Some("yaml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("a/x.yaml") && err.contains("refresh-me"),
            "{err}"
        );
        std::fs::create_dir_all(dir.path().join("b")).unwrap();
        std::fs::write(dir.path().join("b/old.yaml"), "old").unwrap();
        std::fs::write(dir.path().join("b/notes.txt"), "kept").unwrap();
        write_or_check(dir.path(), &files, false, "refresh-me", Some("yaml")).unwrap();
        assert!(!dir.path().join("b/old.yaml").exists());
        assert!(dir.path().join("b/notes.txt").exists());
        write_or_check(dir.path(), &files, true, "refresh-me", Some("yaml")).unwrap();
        std::fs::write(dir.path().join("b/new.yaml"), "hand-made").unwrap();
        let err = write_or_check(dir.path(), &files, true, "refresh-me", Some("yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("new.yaml (no longer generated)"), "{err}");
    }
}
