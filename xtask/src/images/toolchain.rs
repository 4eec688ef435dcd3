//! The Rust toolchain's identity and sysroot, for fingerprints and the image's licence files.
//! What the builds need from the machine is checked in `crate::prereq`.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

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
