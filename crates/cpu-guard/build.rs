//! Build script: bakes the CPU tier this binary is built for into the crate, for the CPU guard
//! (`src/lib.rs`).
//!
//! Inputs (set by `cargo xtask build-images`, all optional):
//! - `BITNET_TIER`           tier name, e.g. `x86-64-v3`
//! - `BITNET_TIER_SUFFIX`    image tag suffix, e.g. `amd64-v3`
//! - `BITNET_TIER_IMAGE`     image reference without the suffix, e.g. `bitnet-server:0.1.0`
//! - `BITNET_TIER_FEATURES`  comma-separated rustc feature names the tier requires
//! - `BITNET_TIER_LADDER`    the tiers of this architecture, best first, to recommend a fallback:
//!   `name|suffix|feat,feat;name|suffix|feat,…`
//!
//! The required set is the declared features plus every feature the compiler is allowed to use
//! (`CARGO_CFG_TARGET_FEATURE`, e.g. from `-C target-cpu`), so even a plain
//! `RUSTFLAGS=-Ctarget-cpu=native cargo build` gets a guard.
//!
//! Outputs:
//! - `$OUT_DIR/cpu_tier.rs`: a single `static` with bit masks over `src/features.rs`;
//! - `$OUT_DIR/bitnet_cpu_guard.o`: `src/baseline.rs` compiled by `$RUSTC` for the
//!   target's *baseline* CPU (never the tier's flags), linked into every binary that uses the
//!   library (`static:-bundle,+verbatim`), so the guard itself cannot contain the instructions it
//!   checks for.
//!
//! It does NOT detect anything about the build machine.

#[path = "src/features.rs"]
#[allow(dead_code)]
mod features;

use std::env;
use std::fmt::Write as _;
use std::path::PathBuf;

const VARS: [&str; 5] = [
    "BITNET_TIER",
    "BITNET_TIER_SUFFIX",
    "BITNET_TIER_IMAGE",
    "BITNET_TIER_FEATURES",
    "BITNET_TIER_LADDER",
];

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    for f in [
        "features.rs",
        "tier.rs",
        "report.rs",
        "detect.rs",
        "baseline.rs",
    ] {
        println!("cargo::rerun-if-changed=src/{f}");
    }
    for v in VARS {
        println!("cargo::rerun-if-env-changed={v}");
    }
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let result = generate().and_then(|code| {
        std::fs::write(out.join("cpu_tier.rs"), code)
            .map_err(|e| format!("cannot write cpu_tier.rs in {}: {e}", out.display()))?;
        compile_guard_object(&out)
    });
    match result {
        Ok(()) => {
            println!("cargo::rustc-link-search=native={}", out.display());
            println!("cargo::rustc-link-lib=static:-bundle,+verbatim={OBJECT}");
        }
        Err(msg) => println!("cargo::error={msg}"),
    }
}

const OBJECT: &str = "bitnet_cpu_guard.o";

/// Compile `src/baseline.rs` to an object for the baseline CPU of the target.
fn compile_guard_object(out: &std::path::Path) -> Result<(), String> {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let target = var("TARGET");
    let baseline_cpu = match var("CARGO_CFG_TARGET_ARCH").as_str() {
        "x86_64" => "x86-64",
        _ => "generic",
    };
    let obj = out.join(OBJECT);
    let status = std::process::Command::new(&rustc)
        .args([
            "--crate-name",
            "bitnet_cpu_guard",
            "--crate-type",
            "lib",
            "--edition",
            "2024",
        ])
        .arg(format!("--emit=obj={}", obj.display()))
        .args(["--target", &target])
        .args([
            "-C",
            "opt-level=2",
            "-C",
            "panic=abort",
            "-C",
            "codegen-units=1",
        ])
        .args([
            "-C",
            "overflow-checks=off",
            "-C",
            "debug-assertions=off",
            "-C",
            "debuginfo=0",
        ])
        .args(["-C", &format!("target-cpu={baseline_cpu}")])
        .arg("src/baseline.rs")
        .env("OUT_DIR", out)
        .status()
        .map_err(|e| {
            format!(
                "cannot run {} to build the CPU guard object: {e}",
                rustc.display()
            )
        })?;
    if !status.success() {
        return Err(format!(
            "compiling src/baseline.rs for {target} failed ({status}); see the rustc \
             errors above"
        ));
    }
    Ok(())
}

fn var(name: &str) -> String {
    env::var(name).unwrap_or_default()
}

/// Bit mask over the feature table for `names`; unknown names are an error naming the fix.
fn mask(arch: &str, names: &[&str], what: &str) -> Result<u64, String> {
    let known = features::names_for_arch(arch);
    let mut m = 0u64;
    for n in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        match known.iter().position(|k| *k == n) {
            Some(i) => m |= 1 << i,
            None if known.is_empty() => {}
            None => {
                return Err(format!(
                    "{what}: unknown CPU feature `{n}` for {arch}; the guard knows: {}. \
                     Fix the profile in profiles/*.toml or add the feature to \
                     crates/cpu-guard/src/features.rs",
                    known.join(", ")
                ));
            }
        }
    }
    Ok(m)
}

fn generate() -> Result<String, String> {
    let arch = var("CARGO_CFG_TARGET_ARCH");
    let known = features::names_for_arch(&arch);
    // Features the compiler may use anywhere in this build: only those the table can detect.
    let enabled: Vec<String> = var("CARGO_CFG_TARGET_FEATURE")
        .split(',')
        .filter(|f| known.contains(f))
        .map(str::to_string)
        .collect();
    let enabled_refs: Vec<&str> = enabled.iter().map(String::as_str).collect();
    let compiled = mask(&arch, &enabled_refs, "CARGO_CFG_TARGET_FEATURE")?;

    let declared_list = var("BITNET_TIER_FEATURES");
    let declared: Vec<&str> = declared_list.split(',').collect();
    let declared = mask(&arch, &declared, "BITNET_TIER_FEATURES")?;

    let mut ladder = String::new();
    let ladder_var = var("BITNET_TIER_LADDER");
    for rung in ladder_var.split(';').filter(|r| !r.trim().is_empty()) {
        let parts: Vec<&str> = rung.split('|').collect();
        let [name, suffix, feats] = parts[..] else {
            return Err(format!(
                "BITNET_TIER_LADDER entry `{rung}` is not `name|suffix|feat,feat`"
            ));
        };
        let feats: Vec<&str> = feats.split(',').collect();
        let m = mask(&arch, &feats, "BITNET_TIER_LADDER")?;
        let _ = writeln!(
            ladder,
            "        Rung {{ name: {name:?}, suffix: {suffix:?}, required: {m:#x} }},"
        );
    }

    let name = var("BITNET_TIER");
    let name = if name.is_empty() {
        "unlabelled".to_string()
    } else {
        name
    };
    let mut code = String::new();
    let _ = write!(
        code,
        "// Generated by crates/cpu-guard/build.rs for target arch `{arch}`; do not edit.\n\
         pub(crate) static BUILD_TIER: BuildTier = BuildTier {{\n    \
         name: {name:?},\n    suffix: {suffix:?},\n    image: {image:?},\n    \
         declared: {declared:#x},\n    required: {required:#x},\n    ladder: &[\n{ladder}    ],\n}};\n",
        suffix = var("BITNET_TIER_SUFFIX"),
        image = var("BITNET_TIER_IMAGE"),
        required = declared | compiled,
    );
    Ok(code)
}
