//! Turning a tier profile into a fully decided cargo build: target, flags
//! (CARGO_ENCODED_RUSTFLAGS with `+crt-static` and path remapping), the `BITNET_TIER*`
//! environment the CPU guard bakes in, its own target directory, and the fingerprint of all of it.
//! It does NOT run cargo (see `cargo_build`).

use std::path::Path;

use super::assemble::Meta;
use super::cargo_build::Plan;
use super::fingerprint::Fingerprint;
use super::profile::Profile;
use super::project::cargo_home;
use super::spec::ImageSpec;

/// The tiers of `profile`'s architecture, best first, as the guard's ladder.
fn ladder(all: &[Profile], profile: &Profile) -> String {
    all.iter()
        .filter(|p| p.platform.architecture == profile.platform.architecture)
        .map(|p| {
            format!(
                "{}|{}|{}",
                p.name,
                p.tag_suffix,
                p.required_features.join(",")
            )
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// What every tier's plan shares.
pub struct PlanInputs<'a> {
    /// Workspace root.
    pub root: &'a Path,
    /// Base of the per-tier target directories.
    pub target_base: &'a Path,
    /// Output directory (logs).
    pub out: &'a Path,
    /// Every profile (for the guard's ladder), best first per architecture.
    pub all: &'a [Profile],
    /// The image data.
    pub spec: &'a ImageSpec,
    /// Image metadata (name and version go into the binary's guard message).
    pub meta: &'a Meta,
    /// `project::source_fingerprint`.
    pub sources: &'a str,
    /// `cargo --jobs` per build.
    pub jobs_per_build: usize,
    /// Ignore stamps.
    pub force: bool,
}

/// The build of one tier.
pub fn plan(p: &Profile, i: &PlanInputs<'_>) -> Plan {
    let target_dir = i.target_base.join(&p.name);
    let mut flags = p.rustflags.clone();
    flags.extend(["-C".into(), "target-feature=+crt-static".into()]);
    // Paths in panic messages: the same on every machine, so binaries are comparable.
    flags.extend([
        "--remap-path-prefix".into(),
        format!("{}=/bitnet-serve", i.root.display()),
    ]);
    if let Some(home) = cargo_home() {
        flags.extend([
            "--remap-path-prefix".into(),
            format!("{}=/cargo", home.display()),
        ]);
    }
    let env: Vec<(String, String)> = vec![
        ("CARGO_ENCODED_RUSTFLAGS".into(), flags.join("\x1f")),
        ("CARGO_PROFILE_RELEASE_STRIP".into(), "symbols".into()),
        ("CARGO_TERM_COLOR".into(), "never".into()),
        ("BITNET_TIER".into(), p.name.clone()),
        ("BITNET_TIER_SUFFIX".into(), p.tag_suffix.clone()),
        (
            "BITNET_TIER_IMAGE".into(),
            format!("{}:{}", i.meta.name, i.meta.version),
        ),
        ("BITNET_TIER_FEATURES".into(), p.required_features.join(",")),
        ("BITNET_TIER_LADDER".into(), ladder(i.all, p)),
    ];
    let mut args: Vec<String> = [
        "build",
        "--release",
        "--locked",
        "--package",
        &i.spec.app.package,
        "--bin",
        &i.spec.app.bin,
        "--target",
        &p.target,
        "--message-format=json-render-diagnostics",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(["--target-dir".into(), target_dir.display().to_string()])
    .collect();
    let mut f = Fingerprint::new("tier-build");
    f.str("sources", i.sources).bytes("profile", &p.raw);
    for a in &args {
        f.str("arg", a);
    }
    for (k, v) in &env {
        f.str(k, v);
    }
    // Parallelism does not change the output, so it is not fingerprinted.
    args.extend(["--jobs".into(), i.jobs_per_build.to_string()]);
    Plan {
        tier: p.name.clone(),
        target: p.target.clone(),
        args,
        env,
        env_remove: [
            "RUSTFLAGS",
            "CARGO_BUILD_RUSTFLAGS",
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_TARGET",
            "CARGO_ENCODED_RUSTFLAGS",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        bin: i.spec.app.bin.clone(),
        fingerprint: f.finish(),
        stamp: target_dir.join("build-images.stamp.json"),
        log: i.out.join("logs").join(format!("{}.log", p.name)),
        force: i.force,
    }
}
