//! `images/Dockerfile` for people who prefer `docker build`: rendered from `images/image.toml` so it
//! says exactly what the daemonless images say (a unit test fails when the checked-in file is out
//! of date; `UPDATE_DOCKERFILE=1 cargo test -p xtask dockerfile` rewrites it). Its build context
//! is `<out>/context`, which `build-images` fills with the very layers of the OCI images.
//! It does NOT run docker.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;

use super::spec::ImageSpec;

/// Layer file names inside the build context.
pub const BASE: &str = "base.tar.gz";
/// Per-tier licence layer (`<tier>/licences.tar.gz`).
pub const LICENCES: &str = "licences.tar.gz";
/// Per-tier app layer (`<tier>/app.tar.gz`).
pub const APP: &str = "app.tar.gz";

fn json_list(items: &[String]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".into())
}

/// Render the Dockerfile. `default_tier` is the `TIER` build-arg default.
pub fn render(spec: &ImageSpec, default_tier: &str) -> String {
    let c = &spec.config;
    let h = &c.healthcheck;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Generated from images/image.toml; do not edit (a test keeps it in sync:"
    );
    let _ = writeln!(s, "# UPDATE_DOCKERFILE=1 cargo test -p xtask dockerfile).");
    let _ = writeln!(s, "#");
    let _ = writeln!(
        s,
        "# The same image as `cargo xtask build-images` assembles, for `docker build` users."
    );
    let _ = writeln!(
        s,
        "# The build context is the directory build-images fills with the image layers:"
    );
    let _ = writeln!(s, "#");
    let _ = writeln!(s, "#   cargo xtask build-images");
    let _ = writeln!(
        s,
        "#   docker build -f images/Dockerfile --build-arg TIER=x86-64-v3 \\"
    );
    let _ = writeln!(s, "#       -t bitnet-server:local-v3 target/images/context");
    let _ = writeln!(s, "#");
    let _ = writeln!(
        s,
        "# TIER is a profile name (profiles/*.toml). No shell, no package manager: FROM scratch."
    );
    let _ = writeln!(s, "FROM scratch");
    let _ = writeln!(s, "ARG TIER={default_tier}");
    let _ = writeln!(s, "ADD {BASE} /");
    let _ = writeln!(s, "ADD ${{TIER}}/{LICENCES} /");
    let _ = writeln!(s, "ADD ${{TIER}}/{APP} /");
    let _ = writeln!(s, "USER {}", c.user);
    let _ = writeln!(s, "WORKDIR {}", c.workdir);
    for e in &c.env {
        let (k, v) = e.split_once('=').unwrap_or((e, ""));
        let _ = writeln!(
            s,
            "ENV {k}={}",
            serde_json::to_string(v).unwrap_or_default()
        );
    }
    for p in &c.exposed_ports {
        let _ = writeln!(s, "EXPOSE {p}");
    }
    let _ = writeln!(s, "VOLUME {}", json_list(&c.volumes));
    if let Some(sig) = &c.stop_signal {
        let _ = writeln!(s, "STOPSIGNAL {sig}");
    }
    let _ = writeln!(
        s,
        "HEALTHCHECK --interval={} --timeout={} --start-period={} --retries={} \\\n    CMD {}",
        h.interval,
        h.timeout,
        h.start_period,
        h.retries,
        json_list(&h.test[1..])
    );
    let pre = &spec.image.label_prefix;
    let _ = writeln!(s, "LABEL {pre}.cpu.tier=\"${{TIER}}\"");
    for (k, v) in &c.labels {
        let _ = writeln!(
            s,
            "LABEL {k}={}",
            serde_json::to_string(v).unwrap_or_default()
        );
    }
    let _ = writeln!(s, "ENTRYPOINT {}", json_list(&c.entrypoint));
    let _ = writeln!(s, "CMD {}", json_list(&c.cmd));
    s
}

/// Fill `<context>` with hard links (or copies) of the layer blobs: `base.tar.gz` and
/// `<tier>/{licences,app}.tar.gz`. `tiers` = (tier name, [base, licences, app] blob paths).
pub fn write_context(context: &Path, tiers: &[(String, [std::path::PathBuf; 3])]) -> Result<()> {
    let link = |src: &Path, dst: &Path| -> Result<()> {
        if let Some(d) = dst.parent() {
            std::fs::create_dir_all(d)?;
        }
        let _ = std::fs::remove_file(dst);
        if std::fs::hard_link(src, dst).is_err() {
            std::fs::copy(src, dst)?;
        }
        Ok(())
    };
    for (tier, [base, licences, app]) in tiers {
        link(base, &context.join(BASE))?;
        link(licences, &context.join(tier).join(LICENCES))?;
        link(app, &context.join(tier).join(APP))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerfile_in_repository_matches_image_toml() {
        let root = crate::workspace_root();
        let spec = ImageSpec::load(&root.join("images")).unwrap();
        let profiles = super::super::profile::load_all(&root.join("profiles")).unwrap();
        let default = profiles
            .iter()
            .find(|p| p.default_for_arch && p.platform.architecture == "amd64")
            .map(|p| p.name.clone())
            .unwrap_or_default();
        let want = render(&spec, &default);
        let path = root.join("images/Dockerfile");
        if std::env::var_os("UPDATE_DOCKERFILE").is_some() {
            std::fs::write(&path, &want).unwrap();
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "images/Dockerfile is out of date with images/image.toml; run \
             UPDATE_DOCKERFILE=1 cargo test -p xtask dockerfile\n--- expected:\n{want}"
        );
        assert!(want.contains("USER 65532:65532") && want.contains("FROM scratch"));
    }
}
