//! `--load`: streams the hybrid tarball into the Docker Engine (`POST /images/load` through
//! bollard, API version negotiated so Docker 20.10's API 1.41 works, long timeout), checks that
//! each `<name>:<version>-<suffix>` tag now names our image, and tags `<name>:<version>` with the
//! best tier this host's CPU can run. It does NOT build or push.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bollard::Docker;
use bollard::query_parameters::{ImportImageOptions, TagImageOptions};
use futures_util::StreamExt;

use super::assemble::{Meta, TierImage};

/// Architecture of this machine in OCI (GOARCH) spelling.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The first (best) tier of this machine's architecture whose CPU features the host has.
/// `tiers` are (image, required features) in best-first order.
pub fn best_for_host<'a>(tiers: &[(&'a TierImage, &[String])]) -> Option<&'a TierImage> {
    let arch = host_architecture();
    tiers.iter().find_map(|(img, feats)| {
        let names: Vec<&str> = feats.iter().map(String::as_str).collect();
        let ok = img.platform.architecture == arch
            && bitnet_cpu_guard::missing_on_host(&names).is_ok_and(|m| m.is_empty());
        ok.then_some(*img)
    })
}

/// Load the tarball and tag. Returns the tags now present, and the tier tagged `<name>:<version>`.
pub async fn load(
    tarball: &Path,
    meta: &Meta,
    images: &[TierImage],
    best: Option<&TierImage>,
) -> Result<Vec<String>> {
    let docker = Docker::connect_with_local_defaults()
        .context("cannot reach the Docker daemon (is it running? is DOCKER_HOST right?)")?
        .with_timeout(Duration::from_secs(1800));
    let docker = docker
        .negotiate_version()
        .await
        .context("cannot talk to the Docker daemon (API version negotiation failed)")?;
    if std::env::var("DOCKER_HOST").is_ok_and(|h| !h.starts_with("unix://")) {
        eprintln!(
            "build-images: note: DOCKER_HOST points at another machine; `{}:{}` is chosen for \
             this machine's CPU",
            meta.name, meta.version
        );
    }
    let file = tokio::fs::File::open(tarball)
        .await
        .with_context(|| format!("cannot open {}", tarball.display()))?;
    let body = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20);
    let mut stream = docker.import_image_stream(
        ImportImageOptions {
            quiet: false,
            platform: None,
        },
        body,
        None,
    );
    while let Some(msg) = stream.next().await {
        let msg = msg.context("docker load failed")?;
        if let Some(line) = msg
            .stream
            .as_deref()
            .map(str::trim)
            .filter(|l| !l.is_empty())
        {
            eprintln!("build-images: docker: {line}");
        }
    }
    let mut tags = Vec::new();
    for img in images {
        let tag = format!("{}:{}-{}", meta.name, meta.version, img.suffix);
        let inspect = docker
            .inspect_image(&tag)
            .await
            .with_context(|| format!("{tag} is missing after docker load"))?;
        let id = inspect.id.unwrap_or_default();
        // Classic store: image id = config digest. containerd store: manifest (or index) digest.
        if id != img.config.digest && id != img.manifest.digest {
            bail!(
                "{tag} is {id} after docker load, expected {}",
                img.config.digest
            );
        }
        tags.push(tag);
    }
    match best {
        Some(best) => {
            let source = format!("{}:{}-{}", meta.name, meta.version, best.suffix);
            docker
                .tag_image(
                    &source,
                    Some(TagImageOptions {
                        repo: Some(meta.name.clone()),
                        tag: Some(meta.version.clone()),
                    }),
                )
                .await
                .with_context(|| {
                    format!("cannot tag {source} as {}:{}", meta.name, meta.version)
                })?;
            tags.push(format!("{}:{} -> {}", meta.name, meta.version, best.tier));
        }
        None => eprintln!(
            "build-images: no loaded tier runs on this CPU ({}); `{}:{}` was not tagged",
            host_architecture(),
            meta.name,
            meta.version
        ),
    }
    Ok(tags)
}
