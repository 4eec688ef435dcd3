//! What the builds need from the machine: rustup targets, a linker driver, and — only when a crate
//! in a tier's graph compiles C — a C compiler for that target (Debian packages). Installs what is
//! missing when allowed and possible (rustup; apt-get as root), otherwise stops with the exact
//! command to run. It does NOT run cargo builds.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

fn say(msg: &str) {
    eprintln!("build-images: {msg}");
}

/// `rustc -vV` (toolchain identity for fingerprints) and `rustc -V`.
pub fn rustc_version() -> Result<(String, String)> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(&rustc)
        .arg("-vV")
        .output()
        .context("cannot run rustc -vV")?;
    if !out.status.success() {
        bail!("rustc -vV failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let verbose = String::from_utf8_lossy(&out.stdout).into_owned();
    let short = verbose.lines().next().unwrap_or("rustc").to_string();
    Ok((verbose, short))
}

/// `rustc --print sysroot`.
pub fn sysroot() -> Result<PathBuf> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(&rustc).args(["--print", "sysroot"]).output()?;
    if !out.status.success() {
        bail!("rustc --print sysroot failed");
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// True if `prog` is on PATH.
pub fn on_path(prog: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(prog).is_file()))
}

/// Effective uid 0?
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .is_some_and(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2))
                .is_some_and(|euid| euid == "0")
        })
}

/// Make sure the rustup targets are installed.
pub fn ensure_targets(targets: &[&str], install: bool) -> Result<()> {
    let out = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    let installed = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        // No rustup (e.g. a distro toolchain): let cargo report missing targets itself.
        _ => return Ok(()),
    };
    let missing: Vec<&str> = targets
        .iter()
        .copied()
        .filter(|t| !installed.lines().any(|l| l.trim() == *t))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !install {
        bail!(
            "missing Rust targets; run: rustup target add {}",
            missing.join(" ")
        );
    }
    say(&format!(
        "installing Rust targets: rustup target add {}",
        missing.join(" ")
    ));
    let status = Command::new("rustup")
        .args(["target", "add"])
        .args(&missing)
        .status()?;
    if !status.success() {
        bail!("`rustup target add {}` failed", missing.join(" "));
    }
    Ok(())
}

/// Installed Debian packages among `pkgs`.
fn dpkg_missing(pkgs: &[&str]) -> Vec<String> {
    pkgs.iter()
        .filter(|p| {
            let out = Command::new("dpkg-query").args(["-W", "-f=${Status}", p]).output();
            !matches!(out, Ok(o) if String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .map(|p| p.to_string())
        .collect()
}

/// Make sure Debian packages are installed (apt-get as root), or stop with the command to run.
pub fn ensure_debian(pkgs: &[&str], why: &str, install: bool) -> Result<()> {
    if !on_path("dpkg-query") {
        bail!(
            "{why} needs {}; this is not a Debian-based machine: install the equivalent",
            pkgs.join(" ")
        );
    }
    let missing = dpkg_missing(pkgs);
    if missing.is_empty() {
        return Ok(());
    }
    let cmd = format!(
        "apt-get install -y --no-install-recommends {}",
        missing.join(" ")
    );
    if !install || !is_root() {
        bail!("{why} needs Debian packages that are missing; run: sudo {cmd}");
    }
    say(&format!("{why}: installing {}", missing.join(" ")));
    let run = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
    };
    let mut args = vec!["install", "-y", "--no-install-recommends"];
    args.extend(missing.iter().map(String::as_str));
    if !run(&args).is_ok_and(|s| s.success()) {
        // Stale package lists are the usual cause; refresh once and retry.
        run(&["update"]).context("apt-get update")?;
        if !run(&args)?.success() {
            bail!("`{cmd}` failed");
        }
    }
    Ok(())
}

/// The linker driver for x86_64 musl targets is the host `cc` (with Rust's self-contained crt
/// objects); aarch64 profiles use rust-lld, shipped with rustc.
pub fn ensure_linker(target: &str, rustflags: &[String], install: bool) -> Result<()> {
    let uses_lld = rustflags.iter().any(|f| f.contains("linker=rust-lld"));
    if uses_lld || on_path("cc") {
        return Ok(());
    }
    if target.starts_with("x86_64-") {
        return ensure_debian(
            &["gcc"],
            &format!("linking {target} with the host cc"),
            install,
        );
    }
    bail!("no linker for {target}: add `-C linker=rust-lld` to the profile's rustflags")
}

/// Environment for the `cc` crate when a tier's graph compiles C: `CC_<triple>`/`AR_<triple>`,
/// after making sure the compiler *and its headers* are installed.
///
/// Verified here with rustls + ring 0.17 (the crypto provider we recommend for the server's HTTPS
/// downloads): x86_64 musl with `musl-gcc`; aarch64 musl with `aarch64-linux-gnu-gcc` plus the
/// cross libc headers, linked by rust-lld, running under qemu-aarch64. (aws-lc-rs, reqwest's
/// default provider, needs a much larger C build and is not set up here.)
pub fn c_compiler_env(target: &str, install: bool) -> Result<Vec<(String, String)>> {
    let key = target.replace('-', "_");
    if std::env::var_os(format!("CC_{key}")).is_some() {
        return Ok(Vec::new()); // the user chose one
    }
    let (cc, ar, pkgs): (&str, &str, &[&str]) = match target {
        "x86_64-unknown-linux-musl" => ("musl-gcc", "ar", &["musl-tools"]),
        "aarch64-unknown-linux-musl" => (
            "aarch64-linux-gnu-gcc",
            "aarch64-linux-gnu-ar",
            &["gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross"],
        ),
        other => bail!("no known C cross compiler for {other}; set CC_{key} and AR_{key}"),
    };
    if on_path("dpkg-query") {
        ensure_debian(pkgs, &format!("C code for {target}"), install)?;
    } else if !on_path(cc) {
        bail!("C code for {target} needs {cc}; install it or set CC_{key} and AR_{key}");
    }
    Ok(vec![
        (format!("CC_{key}"), cc.to_string()),
        (format!("AR_{key}"), ar.to_string()),
    ])
}
